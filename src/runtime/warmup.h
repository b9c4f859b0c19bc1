// Warmup agreed across ranks (DESIGN §3.4). Ranks agree on the list of shapes
// (the intersection of every rank's list, in rank 0's order). Before each
// shape every rank checks that it has a batch for it and enough free memory,
// and the ranks combine that with an allreduce(MIN) of a CPU integer: if any
// rank is not ready, every rank skips the shape and logs why. A failure inside
// a warmup forward is fatal for the job (the caller reports it).
#pragma once

#include <cstdint>
#include <vector>

#include "runtime/dist_context.h"
#include "runtime/pipeline_worker.h"

namespace shardlm {

struct WarmupResult {
  std::vector<int64_t> ran;
  std::vector<int64_t> skipped;
};

// Token counts warmed up by default: powers of two up to max_tokens, then max_tokens.
std::vector<int64_t> default_warmup_shapes(int64_t max_tokens);

// Intersection of the lists, in the order of the first (rank 0's).
std::vector<int64_t> intersect_shapes(const std::vector<std::vector<int64_t>>& per_rank);

Expected<WarmupResult> run_agreed_warmup(DistContext& ctx, PipelineWorker& worker,
                                         const std::vector<int64_t>& my_shapes, int64_t num_kv_blocks,
                                         int64_t block_size, int64_t bytes_per_token);

}  // namespace shardlm
