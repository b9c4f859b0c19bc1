// Fusion passes over a Program (DESIGN §3.5). The builder emits plain ops;
// passes run in order, each until nothing more matches:
//   1. all_reduce → add(residual) → rmsnorm  ⇒  all_reduce_add_rmsnorm
//   2. add → rmsnorm                          ⇒  add_rmsnorm
// The second must run last, or it would eat the add+rmsnorm pair that the
// first pattern needs. It is what keeps layers without an all-reduce fused
// (tp = 1, PP-only runs, layers with all-reduce fusion switched off).
#pragma once

#include "graph/program.h"

namespace shardlm::graph {

struct PassOptions {
  bool fuse_allreduce = true;  // pass 1 (off: all-reduces stay separate ops)
  bool fuse_add_rmsnorm = true;
};

// Returns how many rewrites each pass made.
struct PassStats {
  int allreduce_add_rmsnorm = 0;
  int add_rmsnorm = 0;
};

PassStats run_fusion_passes(Program& program, const PassOptions& options = {});

}  // namespace shardlm::graph
