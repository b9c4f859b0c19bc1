// CUDA backend: the op list of one step on the device (the semantics of
// cpu_backend.cpp op by op, on bf16 buffers), and the hardware-ceiling
// measurements the benchmarks print next to their results.
//
// Row counts: a buffer in RowSpace::kTokens has T rows, one in kLogitRows R
// rows (T and R are the padded bucket sizes on the graph path). Buffers are
// bf16 except the logits (f32, written directly by the LM-head GEMM).
// With tp = 1 the all-reduce ops are no-ops and the all-gather a copy, as in
// the CPU backend. With tp > 1 they go through the GpuCollectives of the
// group (comm/gpu_collectives.h) on this backend's stream, inside the decode
// graphs too: the embedding (vocab-parallel, zeros outside the shard) is
// all-reduced, the fused all-reduce + residual + RMSNorm is one Lamport kernel
// when the message fits (else all-reduce, then add_rmsnorm), and the
// vocab-parallel logits are all-gathered into [tp][R][n] and copied to
// [R][tp · n] columns, cut at the vocabulary size.
#include <algorithm>
#include <chrono>

#include "graph/cuda_backend_impl.h"

namespace shardlm::graph::cuda_detail {

namespace {
kc::bf16* bf(void* p) { return static_cast<kc::bf16*>(p); }
const kc::bf16* cbf(const void* p) { return static_cast<const kc::bf16*>(p); }
}  // namespace

Status CudaBackendImpl::run_ops(const Program& p, const RunShape& rs) {
  // Profiling brackets each op (or linear chain) with a pair of events.
  auto begin = [&](std::string name) -> Expected<size_t> {
    const size_t ev = ev_used_.size();
    if (ev >= ev_pool_.size()) {
      std::pair<cudaEvent_t, cudaEvent_t> e;
      SHARDLM_CUDA_TRY(cudaEventCreate(&e.first), "event");
      SHARDLM_CUDA_TRY(cudaEventCreate(&e.second), "event");
      ev_pool_.push_back(e);
    }
    ev_used_.emplace_back(std::move(name), ev);
    cudaEventRecord(ev_pool_[ev].first, stream_);
    return ev;
  };
  after_gemv_ = after_small_ = after_attention_ = false;
  for (size_t i = 0; i < p.ops.size(); ++i) {
    const Op& op = p.ops[i];
    if (auto c = chains_.find(i); c != chains_.end() && opt_.linear_chain) {
      after_gemv_ = after_small_ = after_attention_ = false;
      size_t ev = 0;
      if (profiling_) {
        SHARDLM_ASSIGN_OR_RETURN(ev, begin("linear_chain"));
      }
      bool ran = false;
      Status st = run_linear_chain(p, c->second, rs, &ran);
      if (!st.ok()) return st.with_context("linear chain from op " + std::to_string(i) + " layer " + std::to_string(op.layer));
      if (ran) {
        if (profiling_) cudaEventRecord(ev_pool_[ev].second, stream_);
        i += c->second.n_ops - 1;
        continue;
      }
      if (profiling_) ev_used_.pop_back();  // not this step's shapes: the ops run one by one
    }
    if (!opt_.timing_skip_ops.empty()) {
      const std::string name = op.kind == OpKind::kLinear && op.out == p.logits_buffer ? "lm_head" : op_kind_name(op.kind);
      if (std::find(opt_.timing_skip_ops.begin(), opt_.timing_skip_ops.end(), name) != opt_.timing_skip_ops.end()) {
        after_gemv_ = after_small_ = after_attention_ = false;
        continue;
      }
    }
    if (i + 1 < p.ops.size() && gemv_norm_fusable(p, op, p.ops[i + 1], rs)) {
      Status st = run_gemv_add_rmsnorm(p, op, p.ops[i + 1], rs);
      if (!st.ok())
        return st.with_context("gemv_add_rmsnorm at op " + std::to_string(i) + " layer " + std::to_string(op.layer));
      ++i;
      continue;
    }
    size_t ev = 0;
    if (profiling_) {
      // Linears are split into the LM head and the rest (prefill FLOP/s of the layers).
      std::string name = op_kind_name(op.kind);
      if (op.kind == OpKind::kLinear && op.out == p.logits_buffer) name = "lm_head";
      SHARDLM_ASSIGN_OR_RETURN(ev, begin(std::move(name)));
    }
    next_linear_weights_ = {};
    if (i + 1 < p.ops.size()) {
      const Op& next = p.ops[i + 1];
      if (next.kind == OpKind::kLinear || next.kind == OpKind::kLinearSiLUMul) {
        const DevWeight& wt = weights_[next.weights[0]];
        const int64_t rows = rows_of(p, next.in, rs), bytes = wt.shape[0] * wt.shape[1] * 2;
        // A gemv that copies its first wave's weights into shared memory
        // itself gets no L2 prefetch: one of the rows after those measured
        // slower (16 MiB) or no faster (4–8 MiB) at batch 1 (bench/NOTES.md run 25).
        const bool smem_next =
            rows == 1 && gemv_smem_prologue_for(op.kind == OpKind::kAttention || op.kind == OpKind::kRoPEAttention);
        if (rows <= opt_.l2_prefetch_max_rows && !smem_next) next_linear_weights_ = {wt.ptr, 1, bytes, bytes};
      }
    }
    Status st = run_op(p, op, rs);
    if (!st.ok()) return st.with_context(std::string("op ") + op_kind_name(op.kind) + " layer " + std::to_string(op.layer));
    if (profiling_) cudaEventRecord(ev_pool_[ev].second, stream_);
  }
  return Status::Ok();
}

bool CudaBackendImpl::gemv_norm_fusable(const Program& p, const Op& lin, const Op& norm, const RunShape& rs) const {
  // Not on profiled steps (the per-op profile times the two apart) nor with
  // ops left out for timing.
  if (!opt_.fuse_gemv_norm || profiling_ || !opt_.timing_skip_ops.empty()) return false;
  if (lin.kind != OpKind::kLinear ||
      !(norm.kind == OpKind::kAddRMSNorm || (norm.kind == OpKind::kAllReduceAddRMSNorm && p.mapping.tp == 1)))
    return false;
  if (norm.in != lin.out || norm.in2 == lin.in || norm.in2 == lin.out || opt_.gemv_max_rows < 1) return false;
  if (rows_of(p, lin.in, rs) != 1 || rows_of(p, norm.in2, rs) != 1 || buffer_is_f32(p, lin.out)) return false;
  const DevWeight& wt = weights_[lin.weights[0]];
  return p.buffers[norm.in2].width == wt.shape[0] &&
         kc::gemv_add_rmsnorm_supported(wt.shape[0], wt.shape[1], bufs_[lin.in], wt.ptr, bufs_[lin.out],
                                        bufs_[norm.in2], w(norm, 0), bufs_[norm.out]);
}

Status CudaBackendImpl::run_gemv_add_rmsnorm(const Program& p, const Op& lin, const Op& norm, const RunShape& rs) {
  // Launched as run_op launches the gemv; what follows is launched as it
  // would be behind the add+RMSNorm (a gemv there: programmatic, waiting first).
  const bool programmatic = opt_.prelaunch_gemv && after_small_;
  const DevWeight& wt = weights_[lin.weights[0]];
  SHARDLM_CUDA_TRY(kc::gemv_add_rmsnorm(cbf(bufs_[lin.in]), cbf(wt.ptr), cbf(w(lin, 1)), bf(bufs_[lin.out]),
                                        wt.shape[0], wt.shape[1], bf(bufs_[norm.in2]), cbf(w(norm, 0)),
                                        bf(bufs_[norm.out]), norm.eps, gemv_norm_counter_, stream_, programmatic,
                                        opt_.gemv_smem_prologue),
                   "gemv_add_rmsnorm");
  after_gemv_ = false;
  after_small_ = true;
  gemv_out_ = -1;
  return Status::Ok();
}

Status CudaBackendImpl::run_op(const Program& p, const Op& op, const RunShape& rs) {
  const AttentionShape& a = p.attn;
  const int64_t q_width = a.nq_heads * a.head_dim, kv_width = a.nkv_heads * a.head_dim;
  const int64_t T = rs.T;
  const MetaLayout& M = rs.meta;
  cudaStream_t s = stream_;
  // A programmatic launch needs the kernel right before it to be that gemv:
  // with profiling an event sits between them, so only on unprofiled steps.
  const bool prelaunch = opt_.prelaunch_after_gemv && after_gemv_ && !profiling_;
  const int prev_out = gemv_out_;
  bool prelaunch_norm = prelaunch;
  const bool gemv_behind_small = opt_.prelaunch_gemv && after_small_ && !profiling_;
  // With the shared-memory prologue a gemv behind a gemv starts early too.
  const bool smem_prologue = gemv_smem_prologue_for(after_attention_);
  const bool gemv_programmatic = gemv_behind_small || (gemv_smem_prologue_for(false) && after_gemv_);
  after_gemv_ = after_small_ = after_attention_ = false;
  // The first ≤ cap bytes of the next linear's weights, its first rows whole
  // (the first part of every row instead measured slower, bench/NOTES.md run
  // 20). Nothing on profiled steps: events between the kernels would time the
  // prefetch apart.
  auto prefetch_part = [&](int64_t cap) -> kc::L2Prefetch {
    kc::L2Prefetch pf = next_linear_weights_;
    if (profiling_ || cap <= 0 || !pf.ptr) return {};
    pf.bytes_per_row = std::min(cap, pf.stride) & ~int64_t{15};
    return pf;
  };
  switch (op.kind) {
    case OpKind::kEmbedding: {
      const DevWeight& t = weights_[op.weights[0]];
      const int64_t vocab_local = t.shape[0];
      SHARDLM_CUDA_TRY(kc::embedding(cbf(t.ptr), vocab_local, p.hidden, meta_dev_ + M.token_ids, T, bf(bufs_[op.out]),
                                     vocab_local * p.mapping.tp_rank(), s),
                       "embedding");
      if (p.mapping.tp > 1) SHARDLM_TRY(gpu_->all_reduce_sum(bufs_[op.out], T * p.hidden, DType::kBF16, s));
      break;
    }
    case OpKind::kRMSNorm:
      SHARDLM_CUDA_TRY(kc::rmsnorm(cbf(bufs_[op.in]), cbf(w(op, 0)), bf(bufs_[op.out]), rows_of(p, op.in, rs),
                                   p.buffers[op.in].width, op.eps, s),
                       "rmsnorm");
      break;
    case OpKind::kAdd:
      SHARDLM_CUDA_TRY(kc::add(cbf(bufs_[op.out]), cbf(bufs_[op.in]), bf(bufs_[op.out]),
                               rows_of(p, op.out, rs) * p.buffers[op.out].width, s),
                       "add");
      break;
    case OpKind::kAllReduce:
      if (p.mapping.tp > 1)
        SHARDLM_TRY(gpu_->all_reduce_sum(bufs_[op.in], rows_of(p, op.in, rs) * p.buffers[op.in].width, DType::kBF16,
                                         s));
      break;
    case OpKind::kAllReduceAddRMSNorm:
      if (p.mapping.tp > 1) {
        // The all-reduce kernel launched here sits between the gemv and the norm below.
        prelaunch_norm = false;
        after_small_ = false;
        const int64_t rows = rows_of(p, op.in2, rs), hidden = p.buffers[op.in2].width;
        if (gpu_->can_fuse(rows, hidden, DType::kBF16)) {
          SHARDLM_TRY(gpu_->all_reduce_add_rmsnorm(bufs_[op.in], bufs_[op.in2], w(op, 0), op.eps, bufs_[op.out], rows,
                                                   hidden, DType::kBF16, s));
          break;
        }
        SHARDLM_TRY(gpu_->all_reduce_sum(bufs_[op.in], rows * hidden, DType::kBF16, s));
      }
      [[fallthrough]];
    case OpKind::kAddRMSNorm:
      SHARDLM_CUDA_TRY(kc::add_rmsnorm(cbf(bufs_[op.in]), bf(bufs_[op.in2]), cbf(w(op, 0)), bf(bufs_[op.out]),
                                       rows_of(p, op.in2, rs), p.buffers[op.in2].width, op.eps, s,
                                       prelaunch_norm && op.in2 != prev_out,
                                       prefetch_part(opt_.l2_prefetch_norm_bytes),
                                       opt_.trigger_dependents_early && !profiling_),
                       "add_rmsnorm");
      after_small_ = p.mapping.tp == 1 || op.kind == OpKind::kAddRMSNorm;
      break;
    case OpKind::kLinear:
    case OpKind::kLinearSiLUMul: {
      const DevWeight& wt = weights_[op.weights[0]];
      const int64_t rows = rows_of(p, op.in, rs);
      // linear_silu_mul: the linear's [rows, 2·inter] output is in2 (scratch of the cuBLASLt path).
      const bool silu = op.kind == OpKind::kLinearSiLUMul;
      const int lin_out = silu ? op.in2 : op.out;
      const bool f32 = buffer_is_f32(p, lin_out);
      // Decode-sized rows: one stream over the weights (gemv.cu) instead of cuBLASLt.
      if (rows <= opt_.gemv_max_rows && kc::gemv_supported(rows, wt.shape[1], bufs_[op.in], wt.ptr)) {
        // Every gemv launch mode lets its dependents start only once all that
        // precedes it has finished (ordinary: at its start; programmatic: after its wait).
        after_gemv_ = true;
        gemv_out_ = op.out;
        if (silu)
          SHARDLM_CUDA_TRY(kc::gemv_silu_mul(cbf(bufs_[op.in]), cbf(wt.ptr), cbf(w(op, 1)), bf(bufs_[op.out]), rows,
                                             wt.shape[0] / 2, wt.shape[1], s, opt_.gemv_overlap_prologue,
                                             gemv_programmatic, smem_prologue),
                           "gemv_silu_mul");
        else
          SHARDLM_CUDA_TRY(kc::gemv(cbf(bufs_[op.in]), cbf(wt.ptr), cbf(w(op, 1)), bufs_[op.out], f32, rows,
                                    wt.shape[0], wt.shape[1], s, opt_.gemv_overlap_prologue, gemv_programmatic,
                                    smem_prologue),
                           "gemv");
        break;
      }
      std::string err;
      if (!gemm_->matmul(bufs_[op.in], wt.ptr, w(op, 1), bufs_[lin_out], rows, wt.shape[0], wt.shape[1],
                         kc::GemmType::kBF16, f32 ? kc::GemmType::kF32 : kc::GemmType::kBF16, s, &err))
        return make_error(ErrorCode::kInternal, "linear {}: {}", p.weights[op.weights[0]], err);
      if (silu)
        SHARDLM_CUDA_TRY(kc::silu_mul(cbf(bufs_[op.in2]), bf(bufs_[op.out]), rows, p.buffers[op.out].width, s),
                         "silu_mul");
      break;
    }
    case OpKind::kHeadRMSNorm:
      SHARDLM_CUDA_TRY(kc::head_rmsnorm(bf(bufs_[op.in]), p.buffers[op.in].width, T, a.nq_heads, a.nkv_heads,
                                        a.head_dim, cbf(w(op, 0)), cbf(w(op, 1)), op.eps, s),
                       "head_rmsnorm");
      break;
    case OpKind::kRoPE:
      SHARDLM_CUDA_TRY(kc::rope_qk(bf(bufs_[op.in]), p.buffers[op.in].width, meta_dev_ + M.positions, T, a.nq_heads,
                                   a.nkv_heads, a.head_dim, inv_freq_, s),
                       "rope");
      break;
    case OpKind::kAttention:
    case OpKind::kRoPEAttention: {
      const int64_t l = op.layer - p.first_layer;
      const int64_t per_layer = kv_.num_blocks * kv_.block_size * kv_.nkv_heads * kv_.head_dim;
      kc::bf16* kcache = bf(kv_base_) + l * per_layer;
      kc::bf16* vcache = bf(kv_base_) + (kv_.num_layers + l) * per_layer;
      const int64_t width = p.buffers[op.in].width;
      const kc::bf16* qkv = cbf(bufs_[op.in]);
      kc::PagedAttentionParams ap;
      ap.num_tokens = T;
      ap.token_seq = meta_dev_ + M.token_seq;
      ap.positions = meta_dev_ + M.positions;
      ap.q_start = meta_dev_ + M.q_start;
      ap.ctx_len = meta_dev_ + M.ctx_len;
      ap.block_tables = meta_dev_ + M.tables;
      ap.max_blocks_per_seq = M.MB;
      ap.block_size = kv_.block_size;
      ap.nq_heads = a.nq_heads;
      ap.nkv_heads = a.nkv_heads;
      ap.head_dim = a.head_dim;
      ap.scale = a.scale;
      ap.sliding_window = op.sliding_window;
      ap.max_context = rs.max_context;
      ap.num_seqs = rs.meta.S;
      ap.max_q_len = rs.max_q_len;
      ap.slot_mapping = meta_dev_ + M.slots;
      ap.l2_prefetch = prefetch_part(opt_.l2_prefetch_attention_bytes);
      ap.trigger_dependents_early = opt_.trigger_dependents_early && !profiling_;
      ap.trigger_dependents_after_arrival = opt_.attention_trigger_after_arrival && !profiling_;
      if (op.kind == OpKind::kRoPEAttention && opt_.fuse_rope_attention && kc::decode_rope_fusable(ap)) {
        ap.rope_inv_freq = inv_freq_;  // decode rows: the attention kernel rotates and writes the new k/v
        ap.programmatic = prelaunch;
      } else if (op.kind == OpKind::kRoPEAttention)
        SHARDLM_CUDA_TRY(kc::rope_kv_write(bf(bufs_[op.in]), width, meta_dev_ + M.positions, meta_dev_ + M.slots, T,
                                           a.nq_heads, a.nkv_heads, a.head_dim, kv_.block_size, inv_freq_, kcache,
                                           vcache, s),
                         "rope_kv_write");
      else
        SHARDLM_CUDA_TRY(kc::kv_write(qkv, width, q_width, q_width + kv_width, kcache, vcache, meta_dev_ + M.slots,
                                      T, a.nkv_heads, a.head_dim, kv_.block_size, s),
                         "kv_write");
      SHARDLM_CUDA_TRY(kc::paged_attention(qkv, width, kcache, vcache, bf(bufs_[op.out]), ap, attn_ws_,
                                           attn_ws_bytes_, s),
                       "paged_attention");
      after_small_ = after_attention_ = true;
      break;
    }
    case OpKind::kSiLUMul:
      SHARDLM_CUDA_TRY(kc::silu_mul(cbf(bufs_[op.in]), bf(bufs_[op.out]), T, p.buffers[op.out].width, s), "silu_mul");
      break;
    case OpKind::kGatherRows: {
      const int64_t elem = buffer_is_f32(p, op.in) ? 4 : 2;
      SHARDLM_CUDA_TRY(kc::gather_rows(bufs_[op.in], bufs_[op.out], meta_dev_ + M.logit_rows, rs.R,
                                       p.buffers[op.in].width * elem, s),
                       "gather_rows");
      break;
    }
    case OpKind::kAllGatherColumns: {
      if (p.mapping.tp > 1) {
        const int64_t n = p.buffers[op.in].width, out_w = p.buffers[op.out].width, R = rs.R;
        SHARDLM_TRY(gpu_->all_gather(bufs_[op.in], gather_, static_cast<size_t>(R * n), DType::kF32, s));
        for (int r = 0; r < p.mapping.tp; ++r) {
          const int64_t cols = std::min(n, out_w - r * n);
          if (cols <= 0) break;
          SHARDLM_CUDA_TRY(cudaMemcpy2DAsync(static_cast<float*>(bufs_[op.out]) + r * n, out_w * 4,
                                             gather_ + static_cast<int64_t>(r) * R * n, n * 4, cols * 4, R,
                                             cudaMemcpyDeviceToDevice, s),
                           "logits columns");
        }
        break;
      }
      // tp == 1: the local logits are the logits.
      const int64_t n = std::min(p.buffers[op.in].width, p.buffers[op.out].width);
      SHARDLM_CUDA_TRY(cudaMemcpy2DAsync(bufs_[op.out], p.buffers[op.out].width * 4, bufs_[op.in],
                                         p.buffers[op.in].width * 4, n * 4, rs.R, cudaMemcpyDeviceToDevice, s),
                       "all_gather (tp = 1)");
      break;
    }
  }
  return Status::Ok();
}

Expected<double> CudaBackendImpl::measure_copy_bandwidth(int64_t bytes) {
  double bw = 0;
  SHARDLM_CUDA_TRY(kc::measure_copy_bandwidth(bytes, stream_, &bw), "copy-bandwidth run");
  return bw;
}

Expected<double> CudaBackendImpl::measure_gemm_flops(int64_t m, int64_t n, int64_t k) {
  void *x = nullptr, *w = nullptr, *y = nullptr;
  SHARDLM_CUDA_TRY(cudaMalloc(&x, m * k * 2), "gemm buffer");
  SHARDLM_CUDA_TRY(cudaMalloc(&w, n * k * 2), "gemm buffer");
  SHARDLM_CUDA_TRY(cudaMalloc(&y, m * n * 2), "gemm buffer");
  kc::fill_random_bf16(bf(x), m * k, 11, 1.0f, stream_);
  kc::fill_random_bf16(bf(w), n * k, 12, 1.0f, stream_);
  std::string err;
  bool ok = gemm_->matmul(x, w, nullptr, y, m, n, k, kc::GemmType::kBF16, kc::GemmType::kBF16, stream_, &err);
  for (int i = 0; ok && i < 3; ++i)
    ok = gemm_->matmul(x, w, nullptr, y, m, n, k, kc::GemmType::kBF16, kc::GemmType::kBF16, stream_, &err);
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0);
  cudaEventCreate(&e1);
  constexpr int kIters = 10;
  cudaEventRecord(e0, stream_);
  for (int i = 0; ok && i < kIters; ++i)
    ok = gemm_->matmul(x, w, nullptr, y, m, n, k, kc::GemmType::kBF16, kc::GemmType::kBF16, stream_, &err);
  cudaEventRecord(e1, stream_);
  cudaError_t e = cudaEventSynchronize(e1);
  float ms = 0;
  cudaEventElapsedTime(&ms, e0, e1);
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  cudaFree(x);
  cudaFree(w);
  cudaFree(y);
  if (!ok) return make_error(ErrorCode::kInternal, "gemm peak: {}", err);
  SHARDLM_CUDA_TRY(e, "gemm peak run");
  return 2.0 * m * n * k * kIters / (ms * 1e-3);
}

}  // namespace shardlm::graph::cuda_detail
