#!/usr/bin/env bash
# Serving and decode on GPUs with an 8B-shaped model on dummy weights (issue 6
# "TP = 2 decode", "PP = 2 throughput … non-blocking loop vs its synchronous
# switch"; issue 7 "bench serve on 2×H200, 8B-shaped, TP = 2"), one device call
# on nvidia-h200-x2 (or x4):
#   here:    bash bench/run_gpu_serve.sh carry   (makes .gpu-serve-carry: the
#            shardlm binary, the shared libraries the GPU image lacks, and
#            bench/models/llama3-8b-dummy + the Llama-3 tokenizer, gzipped)
#   device:  run(kind="nvidia-h200-x2", carry=[".gpu-serve-carry"],
#                command="BUDGET=<seconds> bash bench/run_gpu_serve.sh")
# First the GPU tests (kernels incl. the device sampler, the model on dummy
# weights and HF goldens, every tp × pp layout). Then, for each layout (tp 1;
# tp 2; pp 2; pp 2 with --pp-sync; pp 2 over NCCL) it starts
# `shardlm serve --device cuda --load-format dummy`, waits for /health, runs
# `shardlm bench serve` (NUM prompts, CONC concurrent, 128 in / 128 out,
# ignore_eos) and stops the server with SIGTERM. Before that, `bench decode
# --tp 2` with its per-op profile. Logs go to $OUT/logs, tarred at the end.
# A dry run of the orchestration on CPU: DEVICE=cpu MODEL=DIR bash bench/run_gpu_serve.sh
# STAGES (default "tests generate decode serve") picks the parts; with
# BASE_BIN=<an older shardlm> at carry time, the decode stage also runs that
# binary's `bench decode` in the same call (A/B of a kernel change; more with
# EXTRA_BINS="name=path …", run as shardlm_name); HF=1 adds
# the HF transformers peer (bench/hf_decode.py) to the decode stage; AB_FLAGS
# (e.g. "--pdl") runs the binary once more with those flags. STAGES=comm: the
# Lamport tests (gpu_comm_test) and `bench allreduce --fused` with each fused
# kernel (FUSED_VARIANTS: bench flags per run, ';'-separated). STAGES=gemv:
# `bench gemv` (the batch-1 linears per gemv kernel; GEMV_ARGS adds flags).
set -uo pipefail
export NCCL_NVLS_ENABLE=0
C=.gpu-serve-carry
mode=${1:-device}

if [ "$mode" = carry ]; then
  set -e
  bash bench/make_gpu_carry.sh $C "${2:-build-gpucomm}" shardlm tests/cuda/cuda_kernels_test \
    tests/cuda/cuda_model_test tests/cuda/cuda_layouts_test tests/gpu_comm/gpu_comm_test >/dev/null
  bash tests/tokenizer/fetch_tokenizers.sh >/dev/null
  mkdir -p $C/model
  { [ -z "${BASE_BIN:-}" ] || cp "$BASE_BIN" $C/bin/shardlm_base; }
  for nb in ${EXTRA_BINS:-}; do cp "${nb#*=}" "$C/bin/shardlm_${nb%%=*}"; done
  strip $C/bin/*
  # Binaries and libraries travel as one xz tarball (44 MB → 8 MB: the device
  # tool carries 64 MiB with the tree), unpacked on the device with Python.
  tar -C $C -cf - bin lib | xz -6 -T2 -c > $C/bin_lib.tar.xz && rm -rf $C/bin $C/lib
  cp bench/models/llama3-8b-dummy/config.json $C/model/
  cp tests/data/hf_tokenizers/llama3/tokenizer_config.json $C/model/
  gzip -c tests/data/hf_tokenizers/llama3/tokenizer.json > $C/model/tokenizer.json.gz
  du -sh $C
  exit 0
fi

if [ -f $C/bin_lib.tar.xz ] && [ ! -x $C/bin/shardlm ]; then
  python3 -c "import tarfile,sys; tarfile.open(sys.argv[1]).extractall(sys.argv[2])" $C/bin_lib.tar.xz $C
fi
OUT=${OUT:-$PWD/gpu_serve_out}
L=$OUT/logs
mkdir -p "$L"
start=$(date +%s)
left() { echo $(( ${BUDGET:-400} - ($(date +%s) - start) )); }
DEVICE=${DEVICE:-cuda}
S=${SHARDLM:-$PWD/$C/bin/shardlm}
MODEL=${MODEL:-}
if [ -z "$MODEL" ]; then
  MODEL=/tmp/llama3-8b-dummy
  mkdir -p $MODEL && cp $C/model/*.json $MODEL/ && gunzip -c $C/model/tokenizer.json.gz > $MODEL/tokenizer.json
fi
if [ "$DEVICE" = cuda ]; then
  NCCL_DIR=$(dirname "$(python3 -c 'import nvidia.nccl, os; print(os.path.join(list(nvidia.nccl.__path__)[0], "lib", "libnccl.so.2"))' 2>/dev/null)" 2>/dev/null)
  [ -e "$NCCL_DIR/libnccl.so.2" ] || NCCL_DIR=$(dirname "$(find / -xdev -name 'libnccl.so.2' 2>/dev/null | head -1)")
  RT=$(dirname "$(ls /usr/local/cuda/lib64/libcudart.so.13 2>/dev/null || find / -xdev -name 'libcudart.so.13' 2>/dev/null | head -1)")
  LT=$(dirname "$(ls /usr/local/cuda/lib64/libcublasLt.so.13 2>/dev/null || find / -xdev -name 'libcublasLt.so.13' 2>/dev/null | head -1)")
  export LD_LIBRARY_PATH=$PWD/$C/lib:$NCCL_DIR:$RT:$LT${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  nvidia-smi -L | tee "$L/machine.log"
fi
NUM=${NUM:-256} CONC=${CONC:-64} PORT=${PORT:-18231}
STAGES=${STAGES:-tests generate decode serve}
has() { [[ " $STAGES " == *" $1 "* ]]; }

if [ "$DEVICE" = cuda ] && has tests; then
  # GPU tests first: the device sampler against its CPU reference, dummy
  # weights GPU vs CPU and HF parity, every tp × pp layout (host and NCCL PP).
  SRC=$(cat $C/source_dir)
  if [ "$SRC" != "$PWD" ] && [ ! -e "$SRC" ]; then mkdir -p "$(dirname "$SRC")" && ln -s "$PWD" "$SRC"; fi
  export SHARDLM_BIN=$S SHARDLM_REPO=$PWD
  for t in cuda_kernels_test cuda_model_test cuda_layouts_test; do
    echo "== $t"
    timeout -k 5 150 $C/bin/$t > "$L/$t.log" 2>&1; echo "rc=$?" >> "$L/$t.log"
    grep -E "^\[  (FAILED|PASSED|SKIPPED) |^tp |device sampler|dummy weights|Failure|rc=" "$L/$t.log" | tail -24
  done
fi

if [ "$DEVICE" = cuda ] && has gemv; then
  # The decode-time linears per gemv kernel configuration vs copy bandwidth
  # (GEMV_ARGS: more `bench gemv` flags, e.g. --variants or --rows).
  echo "== bench gemv ${GEMV_ARGS:-}"
  timeout -k 5 150 $S bench gemv ${GEMV_ARGS:-} > "$L/bench_gemv.log" 2>&1; echo "rc=$?" >> "$L/bench_gemv.log"
  cat "$L/bench_gemv.log"
fi

if [ "$DEVICE" = cuda ] && has generate; then
  # Greedy tokens drawn on the device: the same text at tp 1, tp 2 and pp 2 over NCCL.
  NGPU=$(nvidia-smi -L | wc -l)
  lays=("--tp 1" "--tp 2" "--pp 2 --pp-transport nccl")
  [ "$NGPU" -ge 4 ] && lays+=("--tp 2 --pp 2" "--tp 2 --pp 2 --pp-transport nccl")
  for lay in "${lays[@]}"; do
    timeout -k 5 60 $S generate --device cuda --kv-cache-fraction 0.05 $lay --prompt "And God said" --temperature 0 \
      --max-tokens 40 2>/dev/null | tr '\n' ' ' | sed "s/^/$lay: /"; echo
  done | tee "$L/generate_device_sampling.log"
  # The 8B shape on dummy weights (one model in every layout): greedy token ids.
  lays8=("--tp 1" "--tp 2" "--pp 2")
  [ "$NGPU" -ge 4 ] && lays8+=("--tp 2 --pp 2" "--tp 4")
  for lay in "${lays8[@]}"; do
    timeout -k 5 90 $S generate --model "$MODEL" --load-format dummy --device cuda --kv-cache-fraction 0.1 $lay \
      --prompt "The capital of France is" --temperature 0 --max-tokens 24 2>/dev/null | tr '\n' ' ' | sed "s/^/8B dummy $lay: /"
    echo
  done | tee "$L/generate_8b_dummy.log"
fi

if [ "$DEVICE" = cuda ] && has decode && [ "$(left)" -gt 60 ]; then
  for b in $(cd $C/bin && ls shardlm*) ${AB_FLAGS:+shardlm_ab}; do
    bin=$b; flags=""
    [ $b = shardlm_ab ] && { bin=shardlm; flags=$AB_FLAGS; }
    [ -x $C/bin/$bin ] || continue
    echo "== $b $flags: bench decode tp 1, batches 1,8,64,256, prefill ${PREFILL:-4096}"
    timeout -k 5 120 $C/bin/$bin bench decode --batches 1,8,64,256 --steps 20 --prefill-tokens ${PREFILL:-4096} \
      --kv-cache-fraction 0.3 $flags --json "$L/decode_tp1_$b.json" > "$L/decode_tp1_$b.log" 2>&1
    echo "rc=$?" >> "$L/decode_tp1_$b.log"
    grep -vE "\] \[info\]" "$L/decode_tp1_$b.log" | tail -24
  done
  if [ -n "${HF:-}" ]; then  # the peer in the same run: HF transformers, eager and static cache
    echo "== HF transformers peer (bench/hf_decode.py)"
    PYTHONUNBUFFERED=1 timeout -k 5 ${HF_CAP:-180} python3 bench/hf_decode.py --batches ${HF_BATCHES:-1,64} \
      --workload "${HF_WORKLOAD-64:128+128}" --json "$L/hf_decode.json" > "$L/hf_decode.log" 2>&1
    echo "rc=$?" >> "$L/hf_decode.log"
    tail -10 "$L/hf_decode.log"
  fi
  echo "== bench decode --tp 2 (per-op profile)"
  timeout -k 5 90 $S bench decode --tp 2 --batches 1,8,64 --steps 20 --prefill-tokens ${PREFILL:-4096} --kv-cache-fraction 0.3 \
    --json "$L/decode_tp2.json" > "$L/decode_tp2.log" 2>&1; echo "rc=$?" >> "$L/decode_tp2.log"
  grep -vE "\] \[info\]" "$L/decode_tp2.log" | tail -22
  if [ -n "${AB_FLAGS:-}" ]; then
    echo "== bench decode --tp 2 $AB_FLAGS"
    timeout -k 5 90 $S bench decode --tp 2 --batches 1,8,64 --steps 20 --prefill-tokens ${PREFILL:-4096} \
      --kv-cache-fraction 0.3 $AB_FLAGS > "$L/decode_tp2_ab.log" 2>&1; echo "rc=$?" >> "$L/decode_tp2_ab.log"
    grep -vE "\] \[info\]" "$L/decode_tp2_ab.log" | tail -22
  fi
  if [ "$(nvidia-smi -L | wc -l)" -ge 4 ] && [ "$(left)" -gt 60 ]; then
    echo "== bench decode --tp 4"
    timeout -k 5 90 $S bench decode --tp 4 --batches 1,64 --steps 20 --prefill-tokens 0 --kv-cache-fraction 0.3 \
      --json "$L/decode_tp4.json" > "$L/decode_tp4.log" 2>&1; echo "rc=$?" >> "$L/decode_tp4.log"
    grep -vE "\] \[info\]" "$L/decode_tp4.log" | tail -8
  fi
fi

if [ "$DEVICE" = cuda ] && has comm; then
  echo "== gpu_comm_test (Lamport + NCCL on 2 GPUs)"
  timeout -k 5 240 $C/bin/gpu_comm_test > "$L/gpu_comm_test.log" 2>&1; echo "rc=$?" >> "$L/gpu_comm_test.log"
  grep -E "^\[  (FAILED|PASSED|SKIPPED) |^\[       OK|Failure|FAILED:|rc=" "$L/gpu_comm_test.log" | tail -24
  IFS=';' read -ra variants <<< "${FUSED_VARIANTS:-;--fused-whole-row;--fused-reg-rows 0}"
  for f in "${variants[@]}"; do
    tag=$(echo "default$f" | tr -c 'a-z0-9\n' '_')
    echo "== bench allreduce --world 2 --fused $f"
    timeout -k 5 150 $S bench allreduce --world 2 --min 4096 --max 4096 --fused $f \
      --json "$L/allreduce_fused_$tag.json" > "$L/allreduce_fused_$tag.log" 2>&1
    echo "rc=$?" >> "$L/allreduce_fused_$tag.log"
    grep -vE "\] \[info\]" "$L/allreduce_fused_$tag.log" | tail -23
  done
fi

if [ "$DEVICE" = cuda ] && has ncu; then
  # Nsight Compute on the decode kernels (Firecracker machines read the
  # counters; clocks left alone): the attention kernels at batch 64, the
  # gemvs of the first layers at batch 1. Eager steps, a small KV cache (the
  # replay saves and restores device memory: 4 layers keep that small).
  NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
  sec="--section SpeedOfLight --section MemoryWorkloadAnalysis --section Occupancy --section LaunchStats --section WarpStateStats"
  echo "== ncu: attention at batch 64"
  timeout -k 5 150 $NCU --clock-control none -k regex:'decode_tc_kernel|combine_kernel|rope_kv_write' -c 3 $sec \
    $S bench decode --layers 4 --batches 64 --steps 1 --prefill-tokens 0 --no-graphs --kv-cache-fraction 0.05 \
    > "$L/ncu_attention_b64.log" 2>&1
  echo "rc=$?" >> "$L/ncu_attention_b64.log"
  grep -E "^  [a-z_]+.*\(|Duration|DRAM Throughput|Memory Throughput|Achieved Occupancy|Registers Per|rc=" "$L/ncu_attention_b64.log" | head -40
  echo "== ncu: gemv at batch 1"
  timeout -k 5 120 $NCU --clock-control none -k regex:'gemv_kernel' -c 8 --section SpeedOfLight --section LaunchStats \
    $S bench decode --layers 4 --batches 1 --steps 1 --prefill-tokens 0 --no-graphs --kv-cache-fraction 0.05 \
    > "$L/ncu_gemv_b1.log" 2>&1
  echo "rc=$?" >> "$L/ncu_gemv_b1.log"
  grep -E "^  [a-z_]+.*\(|Duration|DRAM Throughput|Grid Size|rc=" "$L/ncu_gemv_b1.log" | head -40
fi

serve_and_bench() {  # name, serve flags...
  local name=$1; shift
  local l; l=$(left); [ "$l" -lt 45 ] && { echo "== $name: skipped, $l s left"; return; }
  echo "== $name: serve $*"
  $S serve --model "$MODEL" --device "$DEVICE" --load-format dummy --port $PORT --kv-cache-fraction 0.5 \
    --max-num-seqs 256 "$@" > "$L/serve_$name.log" 2>&1 &
  local pid=$! ok=0
  for _ in $(seq 1 240); do
    python3 -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:$PORT/health', timeout=1).status == 200 else 1)" \
      2>/dev/null && { ok=1; break; }
    kill -0 $pid 2>/dev/null || break
    sleep 0.5
  done
  if [ $ok = 1 ]; then
    local cap=$(( $(left) - 15 )); [ $cap -gt 180 ] && cap=180
    timeout -k 5 $cap $S bench serve --base-url http://127.0.0.1:$PORT --num-prompts $NUM --concurrency $CONC \
      --input-len 128 --output-len 128 --synthetic ids --json-out "$L/bench_$name.json" > "$L/bench_$name.log" 2>&1
    echo "rc=$?" >> "$L/bench_$name.log"
    grep -E "Successful|Failed|duration|Output token throughput|Mean TTFT|P99 TTFT|Mean TPOT|P99 TPOT|Mean ITL|error|rc=" \
      "$L/bench_$name.log"
  else
    echo "server did not become ready"; tail -5 "$L/serve_$name.log"
  fi
  kill -TERM $pid 2>/dev/null; timeout 40 tail --pid=$pid -f /dev/null; kill -9 $pid 2>/dev/null
  wait $pid 2>/dev/null; echo "server exit: $?" | tee -a "$L/serve_$name.log"
}
has serve || STAGES_SERVE_SKIP=1
[ -n "${STAGES_SERVE_SKIP:-}" ] && serve_and_bench() { :; }
serve_and_bench tp2 --tp 2
serve_and_bench tp1
serve_and_bench pp2 --pp 2 --pp-transport host
serve_and_bench pp2_sync --pp 2 --pp-sync --pp-transport host
serve_and_bench pp2_nccl --pp 2 --pp-transport nccl
[ "${NGPU:-0}" -ge 4 ] && serve_and_bench tp2pp2 --tp 2 --pp 2
tar -C "$OUT" -czf "$OUT/gpu_serve_logs.tgz" logs && rm -rf "$L"
echo "== done in $(( $(date +%s) - start )) s"
