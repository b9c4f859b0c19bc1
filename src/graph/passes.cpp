#include "graph/passes.h"

namespace shardlm::graph {
namespace {

// ops[i, i + n) → the one fused op.
void replace_ops(std::vector<Op>& ops, size_t i, size_t n, const Op& fused) {
  ops[i] = fused;
  ops.erase(ops.begin() + i + 1, ops.begin() + i + n);
}

// add(out = residual += x) immediately followed by rmsnorm(in = residual).
bool is_add_then_norm(const std::vector<Op>& ops, size_t i) {
  return i + 1 < ops.size() && ops[i].kind == OpKind::kAdd && ops[i + 1].kind == OpKind::kRMSNorm &&
         ops[i + 1].in == ops[i].out;
}

int fuse_allreduce_add_rmsnorm(std::vector<Op>& ops) {
  int n = 0;
  for (size_t i = 0; i + 2 < ops.size(); ++i) {
    const Op& ar = ops[i];
    if (ar.kind != OpKind::kAllReduce || ar.fused_allreduce_disabled) continue;
    // The all-reduced buffer must be what the add folds into the residual.
    if (!is_add_then_norm(ops, i + 1) || ops[i + 1].in != ar.in) continue;
    Op fused;
    fused.kind = OpKind::kAllReduceAddRMSNorm;
    fused.layer = ops[i + 1].layer;
    fused.in = ar.in;
    fused.in2 = ops[i + 1].out;  // the residual
    fused.out = ops[i + 2].out;
    fused.weights = ops[i + 2].weights;
    fused.eps = ops[i + 2].eps;
    replace_ops(ops, i, 3, fused);
    ++n;
  }
  return n;
}

int fuse_rope_attention(std::vector<Op>& ops) {
  int n = 0;
  for (size_t i = 0; i + 1 < ops.size(); ++i) {
    const Op& rope = ops[i];
    const Op& attn = ops[i + 1];
    if (rope.kind != OpKind::kRoPE || attn.kind != OpKind::kAttention || attn.in != rope.out) continue;
    Op fused = attn;  // attention's buffers, layer and sliding window
    fused.kind = OpKind::kRoPEAttention;
    replace_ops(ops, i, 2, fused);
    ++n;
  }
  return n;
}

int fuse_linear_silu_mul(std::vector<Op>& ops) {
  int n = 0;
  for (size_t i = 0; i + 1 < ops.size(); ++i) {
    const Op& lin = ops[i];
    const Op& act = ops[i + 1];
    if (lin.kind != OpKind::kLinear || act.kind != OpKind::kSiLUMul || act.in != lin.out) continue;
    // The [rows, 2·inter] output must be read by nothing else before it is
    // written again (every layer reuses the buffer): once fused, only the
    // unfused fallback of a backend writes it, as scratch.
    bool read_later = false;
    for (size_t j = i + 2; j < ops.size(); ++j) {
      const Op& o = ops[j];
      const bool scratch = o.kind == OpKind::kLinearSiLUMul && o.in2 == lin.out;
      if (o.in == lin.out || (o.in2 == lin.out && !scratch)) {
        read_later = true;
        break;
      }
      if (o.out == lin.out || scratch) break;
    }
    if (read_later) continue;
    Op fused = lin;  // linear's input, weights and layer
    fused.kind = OpKind::kLinearSiLUMul;
    fused.in2 = lin.out;
    fused.out = act.out;
    replace_ops(ops, i, 2, fused);
    ++n;
  }
  return n;
}

int fuse_add_rmsnorm(std::vector<Op>& ops) {
  int n = 0;
  for (size_t i = 0; i + 1 < ops.size(); ++i) {
    if (!is_add_then_norm(ops, i)) continue;
    Op fused;
    fused.kind = OpKind::kAddRMSNorm;
    fused.layer = ops[i].layer;
    fused.in = ops[i].in;
    fused.in2 = ops[i].out;
    fused.out = ops[i + 1].out;
    fused.weights = ops[i + 1].weights;
    fused.eps = ops[i + 1].eps;
    replace_ops(ops, i, 2, fused);
    ++n;
  }
  return n;
}

}  // namespace

PassStats run_fusion_passes(Program& program, const PassOptions& options) {
  PassStats stats;
  // Each pass runs until it reaches a fixed point (a rewrite can expose another).
  if (options.fuse_allreduce) {
    for (int k; (k = fuse_allreduce_add_rmsnorm(program.ops)) > 0;) stats.allreduce_add_rmsnorm += k;
  }
  if (options.fuse_rope_attention) {
    for (int k; (k = fuse_rope_attention(program.ops)) > 0;) stats.rope_attention += k;
  }
  if (options.fuse_linear_silu_mul) {
    for (int k; (k = fuse_linear_silu_mul(program.ops)) > 0;) stats.linear_silu_mul += k;
  }
  if (options.fuse_add_rmsnorm) {
    for (int k; (k = fuse_add_rmsnorm(program.ops)) > 0;) stats.add_rmsnorm += k;
  }
  return stats;
}

}  // namespace shardlm::graph
