#!/usr/bin/env bash
# The issue-6 device run (2 GPUs: nvidia-h200-x2), in two halves, because the
# GPU image has CUDA, NCCL (PyTorch's wheel) and PyTorch but not shardlm's C++
# dependencies (spdlog, fmt, Gloo, ZeroMQ, gtest) and no registry to fetch them:
#
#   here:    bench/run_gpu_comm.sh carry [build-dir]
#            builds shardlm + gpu_comm_test + gpu_comm_strategy_test (Release,
#            sm_90a) and copies them, stripped, with the non-glibc, non-CUDA,
#            non-NCCL shared libraries they load into .gpu-comm-carry/ (~30 MiB);
#   device:  run(kind="nvidia-h200-x2", carry=[".gpu-comm-carry"],
#                command="bash bench/run_gpu_comm.sh device")
#            runs, logs under $OUT: the gpu comm tests (NCCL communicator; the
#            Lamport all-reduce against float64 and NCCL, CUDA graphs, 10 000
#            calls, fused, timeout), `shardlm bench allreduce --fused --table`,
#            and torch symmetric memory (torchrun) in the same call.
# NVLink multicast stays off everywhere (NCCL_NVLS_ENABLE=0,
# TORCH_SYMM_MEM_DISABLE_MULTICAST=1, NVSHMEM_DISABLE_NVLS=1); nothing here
# calls cuMulticastCreate. libnccl.so.2 is not carried (218 MB): the device
# uses the nvidia-nccl wheel PyTorch ships (NCCL 2.x ABI).
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
C=.gpu-comm-carry
mode=${1:-device}

if [ "$mode" = carry ]; then
  set -e
  bash bench/make_gpu_carry.sh $C "${2:-build-gpucomm}" shardlm tests/gpu_comm/gpu_comm_test \
    tests/gpu_comm/gpu_comm_strategy_test tests/cuda/cuda_layouts_test
  exit 0
fi

OUT=${OUT:-$PWD/gpu_comm_out}
mkdir -p "$OUT"
start=$(date +%s)
left() { echo $(( ${BUDGET:-400} - ($(date +%s) - start) )); }
{ nvidia-smi -L; nvidia-smi topo -m; } > "$OUT/machine.log" 2>&1
head -3 "$OUT/machine.log"
NCCL_DIR=$(dirname "$(python3 -c 'import nvidia.nccl, os; print(os.path.join(list(nvidia.nccl.__path__)[0], "lib", "libnccl.so.2"))' 2>/dev/null)" 2>/dev/null)
[ -e "$NCCL_DIR/libnccl.so.2" ] || NCCL_DIR=$(dirname "$(find / -xdev -name 'libnccl.so.2' 2>/dev/null | head -1)")
RT=$(dirname "$(ls /usr/local/cuda/lib64/libcudart.so.13 2>/dev/null || find / -xdev -name 'libcudart.so.13' 2>/dev/null | head -1)")
LT=$(dirname "$(ls /usr/local/cuda/lib64/libcublasLt.so.13 2>/dev/null || find / -xdev -name 'libcublasLt.so.13' 2>/dev/null | head -1)")
echo "nccl: $NCCL_DIR  cudart: $RT  cublasLt: $LT"
export LD_LIBRARY_PATH=$PWD/$C/lib:$NCCL_DIR:$RT:$LT${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
ldd $C/bin/shardlm $C/bin/gpu_comm_test | grep -E "not found|nccl" | sort -u

step() {  # name, seconds cap, command...
  local name=$1 cap=$2; shift 2
  local l; l=$(left); [ "$l" -lt 15 ] && { echo "== $name: skipped, $l s left"; return; }
  [ "$cap" -gt "$l" ] && cap=$l
  echo "== $name (cap ${cap}s)"
  timeout "$cap" "$@" > "$OUT/$name.log" 2>&1; echo "rc=$?" >> "$OUT/$name.log"
}
step strategy_test 20 $C/bin/gpu_comm_strategy_test
step nccl_test 60 $C/bin/gpu_comm_test --gtest_filter='NcclCommunicator.*'
step lamport_timeout_test 40 $C/bin/gpu_comm_test --gtest_filter='*PeerThatNeverJoins*'
step lamport_tests 150 $C/bin/gpu_comm_test --gtest_filter='LamportAllReduce.*:-*PeerThatNeverJoins*'
W=${SHARDLM_GPU_TEST_WORLD:-2}
step bench_allreduce 120 $C/bin/shardlm bench allreduce --world "$W" --fused --table --json "$OUT/bench.json"
PYTHONUNBUFFERED=1 step torch_symm_mem 90 torchrun --nproc-per-node "$W" bench/torch_symm_mem_allreduce.py --json "$OUT/torch.json"

echo "== summary"
for t in strategy_test nccl_test lamport_timeout_test lamport_tests; do
  echo "-- $t"; grep -E "^\[ +(OK|FAILED|SKIPPED|PASSED) |FAILED:|peer never joined|dead peer|^rc=" "$OUT/$t.log" | head -20; done
echo "-- bench_allreduce"; grep -v "^\[" "$OUT/bench_allreduce.log" | grep -v " info\]" | tail -50
echo "-- torch_symm_mem"; grep -vE "^W|warn" "$OUT/torch_symm_mem.log" | tail -25
