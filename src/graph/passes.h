// Fusion passes over a Program (DESIGN §3.5). The builder emits plain ops;
// passes run in order, each until nothing more matches:
//   1. all_reduce → add(residual) → rmsnorm  ⇒  all_reduce_add_rmsnorm
//   2. rope(qkv) → attention(qkv)             ⇒  rope_attention
//   3. linear → silu_mul(of its output)        ⇒  linear_silu_mul
//   4. add → rmsnorm                          ⇒  add_rmsnorm
// The last must run last, or it would eat the add+rmsnorm pair that the
// first pattern needs. It is what keeps layers without an all-reduce fused
// (tp = 1, PP-only runs, layers with all-reduce fusion switched off).
// 2 and 3 save a kernel boundary each per layer on GPUs (decode at small
// batch pays ~2–3 µs per boundary): the rotated k is written to the KV cache
// by the rope kernel, and the gate and up rows of one output are dotted by
// the same warp, which applies silu·up before writing.
#pragma once

#include "graph/program.h"

namespace shardlm::graph {

struct PassOptions {
  bool fuse_allreduce = true;  // pass 1 (off: all-reduces stay separate ops)
  bool fuse_add_rmsnorm = true;
  bool fuse_rope_attention = true;   // pass 2
  bool fuse_linear_silu_mul = true;  // pass 3
};

// Returns how many rewrites each pass made.
struct PassStats {
  int allreduce_add_rmsnorm = 0;
  int add_rmsnorm = 0;
  int rope_attention = 0;
  int linear_silu_mul = 0;
};

PassStats run_fusion_passes(Program& program, const PassOptions& options = {});

}  // namespace shardlm::graph
