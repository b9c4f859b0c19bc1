// Measured all-reduce crossover points per world size (DESIGN §3.3 strategy):
// Lamport one-shot up to one_shot_max_bytes, two-shot up to two_shot_max_bytes,
// NCCL above (and above the Lamport workspace capacity in any case).
//
// Remade by (on the GPU machine, one process per GPU, self-spawned):
//   build-gpu/shardlm bench allreduce --world 2 --table
// which prints the row for its world size in this format (the fastest
// algorithm at each size, CUDA-graph latency); paste it below.
//
// STATUS: world 2 is MEASURED on 2×H200 (2026-11-21, bf16, CUDA graphs;
// bench/results/allreduce_2xh200_20261121.log): one-shot is fastest up to
// 8 MB (3.4 µs at 4 KB, 6.7 µs at 1 MB), our two-shot never wins at world 2,
// NCCL wins from 16 MB. World 4 is MEASURED on 4×H200 the same day
// (bench/results/allreduce_4xh200_20261121.log): one-shot to 2 MB, then NCCL.
// Worlds ≥ 8 are PROVISIONAL (published TensorRT-LLM / FlashInfer crossovers
// for NVLink H100/H200) until an 8-GPU machine is lent.
#pragma once

#include <cstddef>

namespace shardlm {

struct AllReduceStrategyRow {
  int world;
  size_t one_shot_max_bytes;
  size_t two_shot_max_bytes;
};

inline constexpr AllReduceStrategyRow kAllReduceStrategyTable[] = {
    {2, 8 << 20, 8 << 20},  // measured
    {4, 2 << 20, 2 << 20},  // measured
    {8, 128 << 10, 4 << 20},
    {16, 64 << 10, 2 << 20},
};

}  // namespace shardlm
