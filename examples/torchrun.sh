#!/usr/bin/env bash
# shardlm under torchrun: torchrun sets RANK, WORLD_SIZE, LOCAL_RANK,
# MASTER_ADDR and MASTER_PORT; shardlm reads them (DESIGN §1). One process per
# rank; the world size must equal tp × pp.
#
#   single node, 4 ranks (tp 2 × pp 2):
#     bash examples/torchrun.sh
#   two nodes, 8 ranks: run on each node with its --node-rank, e.g.
#     NNODES=2 NODE_RANK=0 MASTER_ADDR=node01 bash examples/torchrun.sh
set -euo pipefail
MODEL=${MODEL:-models/kjv}
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
NPROC=${NPROC:-4}
TP=${TP:-2}
PP=${PP:-$(( NNODES * NPROC / TP ))}
# torchrun only starts the processes: --no-python runs the binary directly.
exec torchrun --nnodes "$NNODES" --node-rank "$NODE_RANK" --nproc-per-node "$NPROC" \
  --master-addr "${MASTER_ADDR:-127.0.0.1}" --master-port "${MASTER_PORT:-29500}" --no-python \
  ./build/shardlm generate --model "$MODEL" --tp "$TP" --pp "$PP" --prompt "And God said" --max-tokens 40
