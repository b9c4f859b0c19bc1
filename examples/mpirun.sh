#!/usr/bin/env bash
# shardlm under OpenMPI's mpirun: ranks come from OMPI_COMM_WORLD_RANK/SIZE/
# LOCAL_RANK. On one node the master defaults to 127.0.0.1; across nodes pass
# MASTER_ADDR (-x exports it to every rank).
#
#   bash examples/mpirun.sh            # 4 local ranks, tp 2 × pp 2
#   HOSTS=node01:4,node02:4 TP=4 PP=2 MASTER_ADDR=node01 bash examples/mpirun.sh
set -euo pipefail
MODEL=${MODEL:-models/kjv}
TP=${TP:-2}
PP=${PP:-2}
N=$(( TP * PP ))
EXTRA=()
[ -n "${HOSTS:-}" ] && EXTRA+=(--host "$HOSTS")
[ -n "${MASTER_ADDR:-}" ] && EXTRA+=(-x MASTER_ADDR)
[ -n "${MASTER_PORT:-}" ] && EXTRA+=(-x MASTER_PORT)
[ "$(id -u)" -eq 0 ] && EXTRA+=(--allow-run-as-root)
exec mpirun -n "$N" --oversubscribe --bind-to none "${EXTRA[@]}" \
  ./build/shardlm generate --model "$MODEL" --tp "$TP" --pp "$PP" --prompt "And God said" --max-tokens 40
