#!/usr/bin/env bash
# Batch-1 decode (8B shape) with the L2 prefetch of the next gemv's weights at
# several sizes, interleaved in one device call so that every figure shares the
# card and its copy bandwidth (bench/NOTES.md run 20). Each line:
# `bench decode --batches 1 --prefill-tokens 0 --l2-prefetch-mb ATTN,NORM`,
# batch 1 alone (a larger batch in the same process changes nothing since run
# 19's fix, but batch 1 alone is the figure the issue asks for).
#   device: OUT=$OUT SWEEP="0,0 16,0 …" ROUNDS=2 bash bench/l2_prefetch_sweep.sh
# BIN (default .gpu-serve-carry/bin/shardlm); BATCH (default 1); extra
# `bench decode` flags in FLAGS.
set -uo pipefail
BIN=${BIN:-.gpu-serve-carry/bin/shardlm}
OUT=${OUT:-$PWD/l2_prefetch_out}
mkdir -p "$OUT"
SWEEP=${SWEEP:-"0,0 8,0 16,0 24,0 32,0 16,2 16,4 16,8"}
for round in $(seq 1 "${ROUNDS:-1}"); do
  for mb in $SWEEP; do
    log="$OUT/b${BATCH:-1}_${mb/,/_}_r$round.log"
    timeout -k 5 90 "$BIN" bench decode --batches ${BATCH:-1} --steps 30 --prefill-tokens 0 --workload none \
      --kv-cache-fraction 0.3 --l2-prefetch-mb "$mb" ${FLAGS:-} > "$log" 2>&1
    echo "rc=$?" >> "$log"
    printf '%-6s r%s  %s | %s\n' "$mb" "$round" "$(grep -m1 -oE 'copy bandwidth[^,;]*' "$log")" \
      "$(grep -E "^ *${BATCH:-1} " "$log" | tail -1)"
  done
done
