// Fault injection for tests, read from the environment once per process.
// Documented in README.md ("Testing failure handling"); never set in production.
//
//   SHARDLM_FAULT_LOW_MEMORY="R:N[,R:N…]"   rank R reports too little memory for
//                                           warmup shape N (tokens); R or N may be *
//   SHARDLM_FAULT_FORWARD_FAIL="R:K"        rank R's K-th forward (0-based,
//                                           warmup included) fails
//   SHARDLM_FAULT_SAMPLE_DELAY_MS="D"       the last stage sleeps D ms before
//                                           sampling each micro-batch
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

namespace shardlm {

struct FaultInjection {
  std::vector<std::pair<int, int64_t>> low_memory;  // (rank, shape); -1 = any
  int forward_fail_rank = -1;
  int64_t forward_fail_index = -1;
  int sample_delay_ms = 0;

  static const FaultInjection& get();
  bool low_memory_for(int rank, int64_t shape) const;
  bool forward_fails(int rank, int64_t forward_index) const {
    return forward_fail_rank == rank && forward_fail_index == forward_index;
  }
};

}  // namespace shardlm
