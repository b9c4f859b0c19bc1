#!/usr/bin/env bash
# Tensor / pipeline parallel on GPUs (issue 6 "TP and PP on GPUs", issue 9
# item 4), one device call on a machine of 2 or 4 GPUs:
#   here:    bash bench/run_gpu_comm.sh carry     (makes .gpu-comm-carry)
#   device:  run(kind="nvidia-h200-x4" or "nvidia-h200-x2", carry=[".gpu-comm-carry"],
#                command="BUDGET=<seconds> bash bench/run_gpu_tp.sh")
# Logs under $OUT:
#   layouts.log    cuda_layouts_test: the default model's held-out perplexity at
#                  tp × pp = 2×1, 1×2, 2×2, 4×1 on GPUs against one GPU and PyTorch
#   decode_tpN.log `shardlm bench decode --tp N` (8B shape, random weights that
#                  are the same model in every layout) + its logits dump
#   logits_tpN.log bench/compare_logits.py: tp N logits against tp 1
#   generate_tpN.log greedy generation from the default model at tp N
# Every step is capped by what is left of BUDGET. NVLink multicast stays off.
set -uo pipefail
export NCCL_NVLS_ENABLE=0
C=.gpu-comm-carry
OUT=${OUT:-$PWD/gpu_tp_out}
L=$OUT/logs  # tarred at the end: the device tool returns at most 8 files
mkdir -p "$L"
export SHARDLM_BIN=$PWD/$C/bin/shardlm SHARDLM_REPO=$PWD
start=$(date +%s)
left() { echo $(( ${BUDGET:-400} - ($(date +%s) - start) )); }
NCCL_DIR=$(dirname "$(python3 -c 'import nvidia.nccl, os; print(os.path.join(list(nvidia.nccl.__path__)[0], "lib", "libnccl.so.2"))' 2>/dev/null)" 2>/dev/null)
[ -e "$NCCL_DIR/libnccl.so.2" ] || NCCL_DIR=$(dirname "$(find / -xdev -name 'libnccl.so.2' 2>/dev/null | head -1)")
RT=$(dirname "$(ls /usr/local/cuda/lib64/libcudart.so.13 2>/dev/null || find / -xdev -name 'libcudart.so.13' 2>/dev/null | head -1)")
LT=$(dirname "$(ls /usr/local/cuda/lib64/libcublasLt.so.13 2>/dev/null || find / -xdev -name 'libcublasLt.so.13' 2>/dev/null | head -1)")
export LD_LIBRARY_PATH=$PWD/$C/lib:$NCCL_DIR:$RT:$LT${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
S=$C/bin/shardlm
NGPU=$(nvidia-smi -L | wc -l)
nvidia-smi -L | tee "$L/machine.log"
ldd $S | grep -E "not found" | sort -u

step() {  # name, seconds cap, command...
  local name=$1 cap=$2; shift 2
  local l; l=$(left); [ "$l" -lt 12 ] && { echo "== $name: skipped, $l s left"; return; }
  [ "$cap" -gt "$l" ] && cap=$l
  echo "== $name (cap ${cap}s)"
  timeout -k 5 "$cap" "$@" > "$L/$name.log" 2>&1; echo "rc=$?" >> "$L/$name.log"
  # What the reply shows (the whole log is in the tarball): errors, results, the exit code.
  grep -E "${SHOW:-error|FAIL|rc=}" "$L/$name.log" | grep -v "\] \[info\]" | tail -${TAILN:-12}
}
SHOW="error|FAIL|^tp |OK \]|SKIPPED \]|rc=" step layouts 100 $C/bin/cuda_layouts_test
TP_LIST="1 2"; [ "$NGPU" -ge 4 ] && TP_LIST="1 2 4"
for tp in $TP_LIST; do
  SHOW="error|device:|^ +[0-9]+ +[0-9]+ |logits|time to|rc=" TAILN=12 step decode_tp$tp 60 $S bench decode --tp $tp --batches 1,8,64 --steps 20 --prefill-tokens 0 \
    --kv-cache-fraction 0.3 --dump-logits "$L/logits_tp$tp.bin" --json "$L/decode_tp$tp.json"
done
for tp in $TP_LIST; do
  [ "$tp" = 1 ] && continue
  SHOW="row|agree|rc=" step logits_tp$tp 20 python3 bench/compare_logits.py "$L/logits_tp1.bin" "$L/logits_tp$tp.bin"
done
for tp in $TP_LIST; do
  SHOW="." TAILN=4 step generate_tp$tp 40 $S generate --device cuda --kv-cache-fraction 0.05 --tp $tp --prompt "And God said" \
    --temperature 0 --max-tokens 40
done
rm -f "$L"/logits_tp*.bin  # 2.5 MB each; the comparison is in logits_tpN.log
tar -C "$OUT" -czf "$OUT/gpu_tp_logs.tgz" logs && rm -rf "$L"
echo "== done in $(( $(date +%s) - start )) s"
