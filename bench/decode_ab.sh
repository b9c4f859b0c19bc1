#!/usr/bin/env bash
# Batch-1 decode (8B shape, dummy weights) of several flag sets and binaries,
# interleaved in one device call so that every figure shares the card and its
# copy bandwidth (the A/B method of bench/NOTES.md). Each line is one
# `bench decode --batches B --steps 30 --prefill-tokens 0 --workload none`
# process.
#   device: OUT=$OUT VARIANTS="default=;norm=--gemv-norm" ROUNDS=2 bash bench/decode_ab.sh
# VARIANTS: ';'-separated NAME=FLAGS; FLAGS may start with bin:NAME (runs
# .gpu-serve-carry/bin/shardlm_NAME, a carried older build) before the flags.
# BATCH (default 1); CAP seconds per process (default 90).
set -uo pipefail
C=${C:-.gpu-serve-carry}
OUT=${OUT:-$PWD/decode_ab_out}
mkdir -p "$OUT"
IFS=';' read -ra variants <<< "${VARIANTS:-default=}"
for round in $(seq 1 "${ROUNDS:-1}"); do
  for v in "${variants[@]}"; do
    name=${v%%=*} flags=${v#*=} bin=$C/bin/shardlm
    if [[ $flags == bin:* ]]; then
      b=${flags%% *}; b=${b#bin:}; bin=$C/bin/shardlm_$b
      [[ $flags == *" "* ]] && flags=${flags#* } || flags=""
    fi
    log="$OUT/b${BATCH:-1}_${name}_r$round.log"
    # shellcheck disable=SC2086
    timeout -k 5 "${CAP:-90}" "$bin" bench decode --batches "${BATCH:-1}" --steps 30 --prefill-tokens 0 \
      --workload none --kv-cache-fraction 0.3 $flags > "$log" 2>&1
    echo "rc=$?" >> "$log"
    printf '%-14s r%s  %s | %s\n' "$name" "$round" "$(grep -m1 -oE 'copy bandwidth [0-9]+ GB/s' "$log")" \
      "$(grep -E "^ +${BATCH:-1} +512" "$log" | tail -1)"
  done
done
