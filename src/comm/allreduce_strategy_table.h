// Measured all-reduce crossover points per world size (DESIGN §3.3 strategy):
// Lamport one-shot up to one_shot_max_bytes, two-shot up to two_shot_max_bytes,
// NCCL above (and above the Lamport workspace capacity in any case).
//
// Remade by (on the GPU machine, one process per GPU, self-spawned):
//   build-gpu/shardlm bench allreduce --world 2 --table
// which prints the row for its world size in this format (the fastest
// algorithm at each size, CUDA-graph latency); paste it below.
//
// STATUS: the rows are PROVISIONAL (not yet measured on our 2×H200: the device
// run of issue 6 did not happen in the session that wrote this). They follow
// the published TensorRT-LLM/FlashInfer crossovers for NVLink H100/H200: one-
// shot wins while the W-fold push is latency-bound, two-shot while the single
// reduction pass is cheaper than NCCL's ring. Replace with measured rows.
#pragma once

#include <cstddef>

namespace shardlm {

struct AllReduceStrategyRow {
  int world;
  size_t one_shot_max_bytes;
  size_t two_shot_max_bytes;
};

inline constexpr AllReduceStrategyRow kAllReduceStrategyTable[] = {
    {2, 512 << 10, 16 << 20},
    {4, 256 << 10, 8 << 20},
    {8, 128 << 10, 4 << 20},
    {16, 64 << 10, 2 << 20},
};

}  // namespace shardlm
