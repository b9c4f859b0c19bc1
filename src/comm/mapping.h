// Where a rank sits in the parallel layout: world = tp × pp, ranks laid out
// tp-fastest (ranks 0..tp-1 form pipeline stage 0), as in Megatron/vLLM.
// Every layer of the engine takes a Mapping, so single-process runs are just
// the tp = pp = 1 case of the distributed code path.
#pragma once

#include <cstdint>
#include <string>

#include "base/status.h"

namespace shardlm {

struct Mapping {
  int rank = 0;
  int world = 1;
  int tp = 1;
  int pp = 1;

  int tp_rank() const { return rank % tp; }
  int pp_rank() const { return rank / tp; }
  bool is_first_stage() const { return pp_rank() == 0; }
  bool is_last_stage() const { return pp_rank() == pp - 1; }
  // The rank holding tp position `t` of stage `p`.
  int rank_of(int t, int p) const { return p * tp + t; }
  std::string str() const;

  // world must equal tp × pp; every size ≥ 1 and rank in range.
  static Expected<Mapping> make(int rank, int world, int tp, int pp);
};

// Contiguous split of `n` items over `parts`: the [begin, end) of part `i`.
// Earlier parts take the remainder (n = 10, parts = 4 → 3, 3, 2, 2).
struct Range {
  int64_t begin = 0;
  int64_t end = 0;
  int64_t size() const { return end - begin; }
};
Range split_range(int64_t n, int parts, int i);

}  // namespace shardlm
