// A small fixed thread pool for the CPU kernels: parallel_for splits [0, n) into
// contiguous chunks, one per worker, and waits. Enough threading to keep tests
// fast; the CPU backend is a reference, not a competitor.
#pragma once

#include <cstdint>
#include <functional>

namespace shardlm {

// Runs fn(begin, end) over [0, n) in chunks on the shared pool. Work smaller
// than min_chunk per thread runs inline (thread hand-off costs more than it saves).
void parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn, int64_t min_chunk = 1);

// Threads in the pool (SHARDLM_NUM_THREADS, else hardware concurrency).
int num_pool_threads();

}  // namespace shardlm
