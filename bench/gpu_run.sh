#!/usr/bin/env bash
# One device call (the `run` tool): GPU tests + `shardlm bench decode` + the HF
# peer, logs under $OUT. The binaries are built on the development machine and
# carried in .gpu-carry/ (bin/ + the Debian shared libraries they need, lib/),
# because the GPU image has CUDA and PyTorch but not shardlm's C++ dependencies
# (spdlog, fmt, Gloo, ZeroMQ, …) and no package registry to fetch them from.
# Make the carry folder with bench/make_gpu_carry.sh.
set -u
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
ROOT=$(pwd)
C=$ROOT/.gpu-carry
start=$(date +%s)
left() { echo $(( ${BUDGET:-400} - ($(date +%s) - start) )); }

{
  echo "== machine"; nvidia-smi -L; nvidia-smi --query-gpu=clocks.sm,clocks.mem,memory.used,memory.total --format=csv
  head -2 /etc/os-release; ldd --version | head -1
  for p in libspdlog-dev libfmt-dev libgloo-dev libzmq3-dev libcli11-dev libgtest-dev; do
    dpkg -s $p >/dev/null 2>&1 && echo "has $p" || echo "lacks $p"; done
} > "$OUT/machine.log" 2>&1
cat "$OUT/machine.log"

# cuBLASLt / cudart of the image (CUDA 13, as the build machine).
LT=$(ls /usr/local/cuda/lib64/libcublasLt.so.13 2>/dev/null || find / -xdev -name 'libcublasLt.so.13' 2>/dev/null | head -1)
RT=$(ls /usr/local/cuda/lib64/libcudart.so.13 2>/dev/null || find / -xdev -name 'libcudart.so.13' 2>/dev/null | head -1)
echo "cublasLt: $LT  cudart: $RT"
export LD_LIBRARY_PATH=$C/lib:$(dirname "$LT"):$(dirname "$RT")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
# The test binaries look for their data under the source dir they were built in.
SRC=$(cat "$C/source_dir")
if [ "$SRC" != "$ROOT" ] && [ ! -e "$SRC" ]; then mkdir -p "$(dirname "$SRC")" && ln -s "$ROOT" "$SRC"; fi

run_step() {  # name, seconds cap, command...
  local name=$1 cap=$2; shift 2
  local l; l=$(left); [ "$l" -lt 15 ] && { echo "== $name: skipped, $l s left"; return; }
  [ "$cap" -gt "$l" ] && cap=$l
  echo "== $name (cap ${cap}s)"
  timeout "$cap" "$@" > "$OUT/$name.log" 2>&1; echo "rc=$?" >> "$OUT/$name.log"
}
run_step kernels_test 60 "$C/bin/cuda_kernels_test"
run_step model_test 80 "$C/bin/cuda_model_test"
run_step bench_decode 120 "$C/bin/shardlm" bench decode --json "$OUT/bench_decode.json"
[ -n "${NO_GRAPHS_RUN:-}" ] && run_step bench_decode_nographs 60 "$C/bin/shardlm" bench decode --batches 1,64 --steps 10 --prefill-tokens 0 --no-graphs
[ -n "${NO_GEMV_RUN:-}" ] && run_step bench_decode_nogemv 60 "$C/bin/shardlm" bench decode --batches 1,8 --steps 20 --prefill-tokens 0 --no-gemv
[ -n "${PDL_RUN:-}" ] && run_step bench_decode_pdl 60 "$C/bin/shardlm" bench decode --batches 1,64 --steps 30 --prefill-tokens 0 --pdl
# Counters of one decode attention launch at batch 256 (Firecracker machines let ncu read them).
[ -n "${NCU_RUN:-}" ] && run_step ncu_attention 60 ncu --clock-control none --kernel-name regex:paged_attention \
  --launch-skip 200 --launch-count 1 --section SpeedOfLight --section MemoryWorkloadAnalysis --section Occupancy \
  "$C/bin/shardlm" bench decode --batches 256 --steps 3 --prefill-tokens 0
[ -z "${SKIP_HF:-}" ] && PYTHONUNBUFFERED=1 run_step hf_decode 200 python3 bench/hf_decode.py --json "$OUT/hf_decode.json" ${HF_ARGS:-}

echo "== summary"
echo "-- kernels_test"; grep -E "^\[  (PASSED|FAILED) |^rc=" "$OUT/kernels_test.log" | tail -20
echo "-- model_test"; grep -E "^\[  (PASSED|FAILED) |rel L2|greedy:|Failure|^rc=" "$OUT/model_test.log" | tail -60
echo "-- bench_decode"; tail -30 "$OUT/bench_decode.log"
echo "-- bench_decode_nographs"; tail -8 "$OUT/bench_decode_nographs.log" 2>/dev/null
echo "-- bench_decode_nogemv"; tail -8 "$OUT/bench_decode_nogemv.log" 2>/dev/null
echo "-- bench_decode_pdl"; tail -6 "$OUT/bench_decode_pdl.log" 2>/dev/null
echo "-- ncu_attention"; grep -E "DRAM Throughput|Memory Throughput|Duration|Achieved Occupancy|Registers Per|Compute \(SM\)|rc=" "$OUT/ncu_attention.log" 2>/dev/null | head -12
echo "-- hf_decode"; tail -12 "$OUT/hf_decode.log" 2>/dev/null
