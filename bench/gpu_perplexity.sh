#!/usr/bin/env bash
# On the GPU machine (after bench/run_gpu_comm.sh carry made .gpu-comm-carry):
# the trained default model's held-out perplexity on one GPU (bf16), next to
# the value PyTorch recorded (models/kjv/eval.json), and a sample generation.
set -uo pipefail
OUT=${OUT:-$PWD/gpu_out}
mkdir -p "$OUT"
C=.gpu-comm-carry
NCCL_DIR=$(dirname "$(python3 -c 'import nvidia.nccl, os; print(os.path.join(list(nvidia.nccl.__path__)[0], "lib", "libnccl.so.2"))' 2>/dev/null)")
RT=$(dirname "$(ls /usr/local/cuda/lib64/libcudart.so.13 2>/dev/null || find / -xdev -name 'libcudart.so.13' 2>/dev/null | head -1)")
LT=$(dirname "$(ls /usr/local/cuda/lib64/libcublasLt.so.13 2>/dev/null || find / -xdev -name 'libcublasLt.so.13' 2>/dev/null | head -1)")
export LD_LIBRARY_PATH=$PWD/$C/lib:$NCCL_DIR:$RT:$LT${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
S=$C/bin/shardlm
{
  echo "== recorded (PyTorch): excerpt f32 $(python3 -c 'import json;e=json.load(open("models/kjv/eval.json"));print(e["excerpt_ppl_f32"], "bf16-gpu", e["excerpt_ppl_bf16_gpu_sdpa"], "| heldout f32", e["heldout_ppl_f32"], "bf16-gpu", e["heldout_ppl_bf16_gpu_sdpa"])')"
  echo "== shardlm --device cuda, excerpt"
  timeout 60 $S perplexity --device cuda --kv-cache-fraction 0.05 --file models/kjv/heldout_excerpt.txt --window 512 --stride 256
  echo "== shardlm --device cuda, whole held-out text"
  timeout 90 $S perplexity --device cuda --kv-cache-fraction 0.05 --file models/kjv/heldout.txt --window 512 --stride 256
  echo "== shardlm --device cuda generate (greedy)"
  timeout 60 $S generate --device cuda --kv-cache-fraction 0.05 --prompt "And God said" --temperature 0 --max-tokens 40
} 2>&1 | grep -v "loading weights" | tee "$OUT/gpu_perplexity.log"
