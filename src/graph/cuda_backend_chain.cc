// CUDA backend: stretches of decode linears as one persistent kernel
// (kernels/cuda/linear_chain.cu). The op list is not rewritten (the CPU
// backend and `inspect` see the same ops); this backend recognises, once per
// program, each run of ops "linear, then (add+RMSNorm?, linear)+" where every
// op reads the previous one's output, and at steps of ≤ min(gemv_max_rows, 4)
// rows launches that run as one kernel instead of its ops. At tp 1 a run is a
// layer's o_proj … the next layer's qkv (6 ops); at tp > 1 the all-reduces
// split it and gate|up → down remains. The chain's results are bit for bit the
// per-op kernels' (tests/cuda/cuda_linear_chain_test.cpp).
#include <algorithm>

#include "base/log.h"
#include "graph/cuda_backend_impl.h"

namespace shardlm::graph::cuda_detail {

namespace {
bool is_linear(const Op& op) { return op.kind == OpKind::kLinear || op.kind == OpKind::kLinearSiLUMul; }
}  // namespace

void CudaBackendImpl::plan_linear_chains(const Program& p) {
  chains_.clear();
  auto token_rows = [&](int b) { return b >= 0 && p.buffers[b].rows == RowSpace::kTokens; };
  // A linear the chain can run: bf16 output over token rows, weight [n, k] with k the input's width.
  auto chainable = [&](const Op& op) {
    if (!is_linear(op) || op.weights.empty() || !token_rows(op.in) || !token_rows(op.out)) return false;
    if (buffer_is_f32(p, op.kind == OpKind::kLinearSiLUMul ? op.in2 : op.out)) return false;
    const Shape& ws = weights_[op.weights[0]].shape;
    return ws.size() == 2 && ws[1] == p.buffers[op.in].width;
  };
  for (size_t i = 0; i < p.ops.size();) {
    if (!chainable(p.ops[i])) {
      ++i;
      continue;
    }
    ChainPlan c;
    c.linear_ops.push_back(static_cast<int>(i));
    c.norm_ops.push_back(-1);
    size_t j = i + 1;
    while (j < p.ops.size() && static_cast<int>(c.linear_ops.size()) < kc::kLinearChainMaxStages) {
      const Op& prev = p.ops[c.linear_ops.back()];
      const Op& o = p.ops[j];
      if (chainable(o) && o.in == prev.out) {
        c.linear_ops.push_back(static_cast<int>(j));
        c.norm_ops.push_back(-1);
        j += 1;
      } else if (o.kind == OpKind::kAddRMSNorm && o.in == prev.out && token_rows(o.in2) && token_rows(o.out) &&
                 !o.weights.empty() && j + 1 < p.ops.size() && chainable(p.ops[j + 1]) && p.ops[j + 1].in == o.out &&
                 o.in2 != o.in && o.out != o.in && o.out != o.in2) {
        c.linear_ops.push_back(static_cast<int>(j + 1));
        c.norm_ops.push_back(static_cast<int>(j));
        j += 2;
      } else {
        break;
      }
    }
    if (c.linear_ops.size() >= 2) {
      c.n_ops = j - i;
      chains_[i] = std::move(c);
    }
    i = j;
  }
}

Status CudaBackendImpl::run_linear_chain(const Program& p, const ChainPlan& c, const RunShape& rs, bool* ran) {
  *ran = false;
  const int64_t rows = rs.T;
  if (!opt_.linear_chain || rows < 1 || rows > std::min<int64_t>(opt_.gemv_max_rows, kc::kLinearChainMaxRows))
    return Status::Ok();
  kc::LinearChainStage st[kc::kLinearChainMaxStages];
  const int n = static_cast<int>(c.linear_ops.size());
  auto bf = [&](int b) { return static_cast<kc::bf16*>(bufs_[b]); };
  for (int s = 0; s < n; ++s) {
    const Op& lin = p.ops[c.linear_ops[s]];
    const DevWeight& wt = weights_[lin.weights[0]];
    kc::LinearChainStage& S = st[s];
    S.silu = lin.kind == OpKind::kLinearSiLUMul;
    S.w = static_cast<const kc::bf16*>(wt.ptr);
    S.bias = static_cast<const kc::bf16*>(w(lin, 1));
    S.y = bf(lin.out);
    S.n = S.silu ? wt.shape[0] / 2 : wt.shape[0];
    S.k = wt.shape[1];
    S.x = bf(lin.in);
    if (c.norm_ops[s] >= 0) {
      const Op& nm = p.ops[c.norm_ops[s]];
      S.x = bf(nm.in);
      S.norm_w = static_cast<const kc::bf16*>(w(nm, 0));
      S.residual = bf(nm.in2);
      S.norm_out = bf(nm.out);
      S.eps = nm.eps;
    }
  }
  if (!kc::linear_chain_supported(st, n, rows)) return Status::Ok();
  // A cooperative launch the device refuses (e.g. shared with other work
  // under MPS) is not an error of the step: the ops run one by one from then
  // on. The first step of each batch bucket runs eagerly, so this is seen
  // before any graph capture.
  if (const cudaError_t e = kc::linear_chain(st, n, rows, chain_ws_, stream_); e != cudaSuccess) {
    cudaGetLastError();
    SLOG_WARN("cuda: linear chain launch failed ({}); running its ops one by one", cudaGetErrorString(e));
    opt_.linear_chain = false;
    return Status::Ok();
  }
  *ran = true;
  return Status::Ok();
}

}  // namespace shardlm::graph::cuda_detail
