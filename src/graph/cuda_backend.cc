// CUDA backend: setup, weights, KV cache, the step (metadata upload, eager
// run or CUDA-graph replay, logits download). The ops themselves are in
// cuda_backend_ops.cc; the layout of memory and of a step is described in
// cuda_backend_impl.h.
//
// Decode steps (every sequence contributes one token and is sampled) are
// padded to a batch bucket B ∈ {1, 2, 4, …, 512} and a block-table width
// bucket MB (a power of two ≥ 8): padding rows are sequences of one token at
// position 0 with slot −1 (no KV write) and block 0 in their table, so every
// kernel of the bucket sees the same shapes and pointers whatever the batch
// holds. The first step of a bucket runs eagerly (which also tunes its GEMM
// plans) and then captures the op list into a graph; later steps upload
// their metadata and replay it.
#include <algorithm>
#include <cstring>

#include "base/log.h"
#include "graph/cuda_backend_impl.h"
#include "kernels/cpu/cpu_kernels.h"

namespace shardlm::graph {
namespace cuda_detail {

namespace {
constexpr size_t kChunk = 512ull << 20;  // pool chunk: big enough for any 8B-class weight, small waste
constexpr size_t kAlign = 256;           // cudaMalloc's own alignment; keeps 16-byte vector loads legal
constexpr int64_t kMaxGraphBatch = 512;

int64_t next_pow2(int64_t v) {
  int64_t p = 1;
  while (p < v) p <<= 1;
  return p;
}
}  // namespace

DevicePool::~DevicePool() {
  for (auto& c : chunks_) cudaFree(c.base);
}

Expected<void*> DevicePool::alloc(size_t bytes) {
  bytes = (bytes + kAlign - 1) / kAlign * kAlign;
  for (auto& c : chunks_)
    if (c.size - c.used >= bytes) {
      void* p = c.base + c.used;
      c.used += bytes;
      used_ += static_cast<int64_t>(bytes);
      return p;
    }
  Chunk c;
  c.size = std::max(bytes, kChunk);
  cudaError_t e = cudaMalloc(reinterpret_cast<void**>(&c.base), c.size);
  if (e != cudaSuccess) {
    cudaGetLastError();
    return make_error(ErrorCode::kOutOfMemory, "device pool: cudaMalloc of {} bytes: {}", c.size,
                      cudaGetErrorString(e));
  }
  c.used = bytes;
  chunks_.push_back(c);
  used_ += static_cast<int64_t>(bytes);
  return static_cast<void*>(c.base);
}

MetaLayout MetaLayout::make(int64_t T, int64_t S, int64_t MB, int64_t R) {
  MetaLayout L;
  L.T = T, L.S = S, L.MB = MB, L.R = R;
  int64_t o = 0;
  auto take = [&](int64_t n) {
    const int64_t at = o;
    o += (n + 3) / 4 * 4;  // 16-byte aligned arrays
    return at;
  };
  L.token_ids = take(T);
  L.positions = take(T);
  L.slots = take(T);
  L.token_seq = take(T);
  L.q_start = take(S + 1);
  L.ctx_len = take(S);
  L.tables = take(S * MB);
  L.logit_rows = take(R);
  L.total = o;
  return L;
}

CudaBackendImpl::~CudaBackendImpl() {
  if (stream_) cudaStreamSynchronize(stream_);
  invalidate_graphs();
  for (void* b : bufs_) cudaFree(b);
  cudaFree(kv_base_);
  cudaFree(inv_freq_);
  cudaFree(attn_ws_);
  cudaFree(chain_ws_);
  cudaFree(gemv_norm_counter_);
  cudaFree(stage_f32_);
  cudaFree(gather_);
  cudaFree(meta_dev_);
  cudaFreeHost(meta_host_);
  cudaFreeHost(logits_host_);
  cudaFreeHost(sample_params_host_);
  cudaFreeHost(sample_tokens_host_);
  cudaFree(sample_params_dev_);
  cudaFree(sample_tokens_dev_);
  for (auto& [a, b] : ev_pool_) {
    cudaEventDestroy(a);
    cudaEventDestroy(b);
  }
  gemm_.reset();
  if (stream_) cudaStreamDestroy(stream_);
}

Status CudaBackendImpl::init() {
  int n = 0;
  SHARDLM_CUDA_TRY(cudaGetDeviceCount(&n), "cudaGetDeviceCount");
  if (opt_.device < 0 || opt_.device >= n)
    return make_error(ErrorCode::kInvalidArgument, "CUDA device {} requested but {} visible", opt_.device, n);
  SHARDLM_CUDA_TRY(cudaSetDevice(opt_.device), "cudaSetDevice");
  cudaDeviceProp prop{};
  SHARDLM_CUDA_TRY(cudaGetDeviceProperties(&prop, opt_.device), "cudaGetDeviceProperties");
  device_name_ = prop.name;
  if (prop.major < 8)
    return make_error(ErrorCode::kUnsupported, "CUDA device {} ({}) has compute capability {}.{}; bf16 kernels need ≥ 8.0",
                      opt_.device, device_name_, prop.major, prop.minor);
  SHARDLM_CUDA_TRY(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate");
  SHARDLM_CUDA_TRY(cudaMalloc(&chain_ws_, kc::kLinearChainWorkspaceBytes), "linear chain workspace");
  SHARDLM_CUDA_TRY(cudaMemsetAsync(chain_ws_, 0, kc::kLinearChainWorkspaceBytes, stream_), "linear chain workspace");
  SHARDLM_CUDA_TRY(cudaMalloc(&gemv_norm_counter_, sizeof(int32_t)), "gemv_add_rmsnorm counter");
  SHARDLM_CUDA_TRY(cudaMemsetAsync(gemv_norm_counter_, 0, sizeof(int32_t), stream_), "gemv_add_rmsnorm counter");
  kc::set_programmatic_launch(opt_.programmatic_launch);
  std::string err;
  gemm_ = kc::Gemm::create(static_cast<size_t>(opt_.gemm_workspace_bytes), &err);
  if (!gemm_) return make_error(ErrorCode::kInternal, "cuBLASLt: {}", err);
  return Status::Ok();
}

Expected<void*> CudaBackendImpl::weight_slot(int id, const Shape& shape) {
  if (id < 0) return make_error(ErrorCode::kInternal, "negative weight id");
  if (static_cast<size_t>(id) >= weights_.size()) weights_.resize(id + 1);
  const int64_t bytes = shape_numel(shape) * 2;
  SHARDLM_ASSIGN_OR_RETURN(void* p, pool_.alloc(static_cast<size_t>(std::max<int64_t>(bytes, 2))));
  weights_[id] = DevWeight{p, shape};
  weight_bytes_ += bytes;
  return p;
}

Status CudaBackendImpl::set_weight(int id, const Tensor& host) {
  SHARDLM_CUDA_TRY(cudaSetDevice(opt_.device), "cudaSetDevice");
  const Tensor bf = host.dtype() == DType::kBF16 && host.is_contiguous() ? host : host.to(DType::kBF16);
  SHARDLM_ASSIGN_OR_RETURN(void* p, weight_slot(id, bf.shape()));
  SHARDLM_CUDA_TRY(cudaMemcpy(p, bf.data<uint16_t>(), bf.nbytes(), cudaMemcpyHostToDevice), "weight upload");
  // A pageable H2D cudaMemcpy may return before its DMA lands, and our stream
  // is non-blocking (it does not wait for the legacy stream): finish it here.
  SHARDLM_CUDA_TRY(cudaDeviceSynchronize(), "weight upload");
  return Status::Ok();
}

Status CudaBackendImpl::set_random_weight_blocks(int id, const Shape& shape, const std::vector<RandomBlock>& blocks,
                                                 float scale) {
  SHARDLM_ASSIGN_OR_RETURN(void* p, weight_slot(id, shape));
  const int64_t cols = shape.size() >= 2 ? shape_numel(shape) / shape[0] : 1;
  const int64_t rows = shape.empty() ? 1 : shape[0];
  SHARDLM_CUDA_TRY(cudaMemsetAsync(p, 0, shape_numel(shape) * 2, stream_), "random weight clear");
  for (const RandomBlock& b : blocks) {
    if (b.cols != cols || b.dst_row < 0 || b.dst_row + b.rows > rows || b.col0 + b.cols > b.full_cols)
      return make_error(ErrorCode::kInvalidArgument, "random weight {}: block [{}+{}, {}+{}] of [·, {}] at row {} "
                        "does not fit [{}, {}]", id, b.row0, b.rows, b.col0, b.cols, b.full_cols, b.dst_row, rows,
                        cols);
    SHARDLM_CUDA_TRY(kc::fill_random_bf16_block(static_cast<kc::bf16*>(p), b.dst_row, b.rows, b.cols, b.full_cols,
                                                b.row0, b.col0, b.seed, scale, stream_),
                     "random weight block");
  }
  return Status::Ok();
}

Status CudaBackendImpl::allocate_kv_cache(const KvCacheShape& s) {
  if (!kc::attention_head_dim_supported(s.head_dim))
    return make_error(ErrorCode::kUnsupported,
                      "CUDA attention supports head_dim 16, 32, 40, 64, 80, 96, 128 and 256; this model has {}",
                      s.head_dim);
  if (s.num_blocks <= 0 || s.block_size <= 0)
    return make_error(ErrorCode::kInvalidArgument, "KV cache needs ≥ 1 block of ≥ 1 token");
  invalidate_graphs();
  cudaFree(kv_base_);
  kv_base_ = nullptr;
  kv_ = s;
  const size_t bytes = static_cast<size_t>(s.bytes(2));
  cudaError_t e = cudaMalloc(&kv_base_, std::max<size_t>(bytes, 16));
  if (e != cudaSuccess) {
    cudaGetLastError();
    return make_error(ErrorCode::kOutOfMemory, "KV cache: cudaMalloc of {:.2f} GiB ({} blocks): {}",
                      bytes / double(1ull << 30), s.num_blocks, cudaGetErrorString(e));
  }
  SHARDLM_CUDA_TRY(cudaMemsetAsync(kv_base_, 0, bytes, stream_), "KV cache clear");
  SHARDLM_CUDA_TRY(cudaStreamSynchronize(stream_), "KV cache clear");
  return Status::Ok();
}

Status CudaBackendImpl::fill_kv_random(uint64_t seed) {
  if (!kv_base_) return make_error(ErrorCode::kInternal, "fill_kv_random before allocate_kv_cache");
  SHARDLM_CUDA_TRY(kc::fill_random_bf16(static_cast<kc::bf16*>(kv_base_), kv_.bytes(2) / 2, seed, 1.0f, stream_),
                   "KV fill");
  SHARDLM_CUDA_TRY(cudaStreamSynchronize(stream_), "KV fill");
  return Status::Ok();
}

Expected<CudaMemoryInfo> CudaBackendImpl::memory_info() const {
  size_t f = 0, t = 0;
  SHARDLM_CUDA_TRY(cudaMemGetInfo(&f, &t), "cudaMemGetInfo");
  return CudaMemoryInfo{static_cast<int64_t>(f), static_cast<int64_t>(t)};
}

void CudaBackendImpl::invalidate_graphs() {
  for (auto& [k, g] : graphs_) cudaGraphExecDestroy(g);
  graphs_.clear();
}

bool CudaBackendImpl::buffer_is_f32(const Program& p, int id) const {
  if (id == p.logits_buffer) return true;
  for (const Op& op : p.ops)
    if (op.kind == OpKind::kAllGatherColumns && op.in == id) return true;
  return false;
}

Status CudaBackendImpl::check_program(const Program& p) {
  if (checked_ == &p) return Status::Ok();
  if (p.mapping.tp > 1 && !gpu_)
    return make_error(ErrorCode::kInternal,
                      "CUDA backend: tp = {} but no GPU collectives were set (make_gpu_collectives)", p.mapping.tp);
  if (p.mapping.tp > 1 && gpu_->size() != p.mapping.tp)
    return make_error(ErrorCode::kInternal, "CUDA backend: tp = {} but the GPU collectives group has {} ranks",
                      p.mapping.tp, gpu_->size());
  for (const Op& op : p.ops) {
    for (int wid : op.weights)
      if (wid < 0 || static_cast<size_t>(wid) >= weights_.size() || !weights_[wid].ptr)
        return make_error(ErrorCode::kInternal, "CUDA backend: weight {} ({}) was never set", wid,
                          wid >= 0 && static_cast<size_t>(wid) < p.weights.size() ? p.weights[wid] : "?");
  }
  if (p.attn.head_dim > 0 && !kc::attention_head_dim_supported(p.attn.head_dim))
    return make_error(ErrorCode::kUnsupported,
                      "CUDA attention supports head_dim 16, 32, 40, 64, 80, 96, 128 and 256; this model has {}",
                      p.attn.head_dim);
  // The program changed: buffers are re-made for it, graphs re-captured.
  invalidate_graphs();
  for (void* b : bufs_) cudaFree(b);
  bufs_.assign(p.buffers.size(), nullptr);
  cap_T_ = cap_R_ = 0;
  cudaFree(inv_freq_);
  inv_freq_ = nullptr;
  if (p.rope.head_dim > 0) {
    std::vector<float> f(p.rope.head_dim / 2);
    kernels::cpu::RopeParams rp;
    rp.head_dim = rp.rotary_dim = p.rope.head_dim;
    rp.theta = p.rope.theta;
    rp.llama3_scaling = p.rope.llama3;
    rp.factor = p.rope.factor;
    rp.low_freq_factor = p.rope.low_freq_factor;
    rp.high_freq_factor = p.rope.high_freq_factor;
    rp.original_max_position = p.rope.original_max_position;
    kernels::cpu::rope_inv_freq(rp, f.data());
    SHARDLM_CUDA_TRY(cudaMalloc(&inv_freq_, f.size() * 4), "inv_freq alloc");
    SHARDLM_CUDA_TRY(cudaMemcpy(inv_freq_, f.data(), f.size() * 4, cudaMemcpyHostToDevice), "inv_freq upload");
    SHARDLM_CUDA_TRY(cudaDeviceSynchronize(), "inv_freq upload");  // see set_weight
  }
  plan_linear_chains(p);
  checked_ = &p;
  return Status::Ok();
}

Status CudaBackendImpl::ensure_buffers(const Program& p, int64_t T, int64_t R, int64_t max_context) {
  const bool grow_rows = T > cap_T_ || R > cap_R_;
  if (grow_rows) {
    invalidate_graphs();
    SHARDLM_CUDA_TRY(cudaStreamSynchronize(stream_), "sync before growing buffers");
    const int64_t nT = std::max(T, cap_T_), nR = std::max(R, cap_R_);
    for (size_t i = 0; i < p.buffers.size(); ++i) {
      cudaFree(bufs_[i]);
      bufs_[i] = nullptr;
      const int64_t rows = p.buffers[i].rows == RowSpace::kTokens ? nT : nR;
      const size_t bytes = static_cast<size_t>(std::max<int64_t>(1, rows * p.buffers[i].width)) *
                           (buffer_is_f32(p, static_cast<int>(i)) ? 4 : 2);
      cudaError_t e = cudaMalloc(&bufs_[i], bytes);
      if (e != cudaSuccess) {
        cudaGetLastError();
        return make_error(ErrorCode::kOutOfMemory, "activation buffer {} ({} bytes): {}", p.buffers[i].name, bytes,
                          cudaGetErrorString(e));
      }
    }
    cudaFree(stage_f32_);
    stage_f32_ = nullptr;
    SHARDLM_CUDA_TRY(cudaMalloc(&stage_f32_, static_cast<size_t>(std::max<int64_t>(1, nT * p.hidden)) * 4),
                     "stage buffer");
    // tp > 1: the all-gather of the vocab-parallel logits lands here, [tp][R][vocab / tp].
    cudaFree(gather_);
    gather_ = nullptr;
    gather_bytes_ = 0;
    for (const Op& op : p.ops)
      if (op.kind == OpKind::kAllGatherColumns && p.mapping.tp > 1)
        gather_bytes_ = std::max<int64_t>(gather_bytes_, p.mapping.tp * nR * p.buffers[op.in].width * 4);
    if (gather_bytes_ > 0) SHARDLM_CUDA_TRY(cudaMalloc(&gather_, gather_bytes_), "logits gather buffer");
    cap_T_ = nT;
    cap_R_ = nR;
  }
  // Split-K scratch for the attention of this shape (grown, never shrunk).
  kc::PagedAttentionParams ap;
  ap.num_tokens = T;
  ap.nq_heads = p.attn.nq_heads;
  ap.nkv_heads = p.attn.nkv_heads;
  ap.head_dim = p.attn.head_dim;
  ap.max_context = max_context;
  size_t need = p.attn.nkv_heads > 0 ? kc::paged_attention_workspace_bytes(ap) : 0;
  for (const Op& op : p.ops)
    if ((op.kind == OpKind::kAttention || op.kind == OpKind::kRoPEAttention) && op.sliding_window > 0) {
      ap.sliding_window = op.sliding_window;
      need = std::max(need, kc::paged_attention_workspace_bytes(ap));
    }
  if (need > attn_ws_bytes_) {
    invalidate_graphs();
    SHARDLM_CUDA_TRY(cudaStreamSynchronize(stream_), "sync before growing scratch");
    cudaFree(attn_ws_);
    attn_ws_ = nullptr;
    SHARDLM_CUDA_TRY(cudaMalloc(&attn_ws_, need), "attention scratch");
    SHARDLM_CUDA_TRY(cudaMemset(attn_ws_, 0, need), "attention scratch (split counters start at zero)");
    attn_ws_bytes_ = need;
  }
  cap_ctx_ = std::max(cap_ctx_, max_context);
  return Status::Ok();
}

Status CudaBackendImpl::ensure_meta(int64_t ints) {
  if (ints <= meta_cap_) return Status::Ok();
  invalidate_graphs();
  SHARDLM_CUDA_TRY(cudaStreamSynchronize(stream_), "sync before growing metadata");
  cudaFree(meta_dev_);
  cudaFreeHost(meta_host_);
  meta_dev_ = nullptr;
  meta_host_ = nullptr;
  const int64_t cap = std::max<int64_t>(ints, 1 << 16);
  SHARDLM_CUDA_TRY(cudaMalloc(&meta_dev_, cap * 4), "metadata alloc");
  SHARDLM_CUDA_TRY(cudaMallocHost(&meta_host_, cap * 4), "pinned metadata alloc");
  meta_cap_ = cap;
  return Status::Ok();
}

Status CudaBackendImpl::reserve(const Program& p, int64_t max_tokens, int64_t max_logit_rows, int64_t max_context) {
  SHARDLM_TRY(check_program(p));
  SHARDLM_TRY(ensure_buffers(p, std::max<int64_t>(max_tokens, 1), std::max<int64_t>(max_logit_rows, 1),
                             std::max<int64_t>(max_context, 1)));
  return Status::Ok();
}

void CudaBackendImpl::pack_meta(const StepInput& st, const MetaLayout& L, bool pad) {
  int32_t* m = meta_host_;
  const int64_t n = st.num_tokens(), ns = st.num_seqs();
  for (int64_t t = 0; t < L.T; ++t) {
    const bool real = t < n;
    m[L.token_ids + t] = real && !st.token_ids.empty() ? st.token_ids[t] : 0;
    m[L.positions + t] = real ? st.positions[t] : 0;
    m[L.slots + t] = real ? st.slot_mapping[t] : -1;
  }
  for (int64_t s = 0; s < ns; ++s)
    for (int32_t t = st.q_start[s]; t < st.q_start[s + 1]; ++t) m[L.token_seq + t] = static_cast<int32_t>(s);
  for (int64_t s = 0; s <= ns; ++s) m[L.q_start + s] = st.q_start[s];
  for (int64_t s = 0; s < ns; ++s) m[L.ctx_len + s] = st.ctx_len[s];
  for (int64_t s = 0; s < ns; ++s)
    for (int64_t j = 0; j < L.MB; ++j)
      m[L.tables + s * L.MB + j] = j < st.max_blocks_per_seq ? st.block_tables[s * st.max_blocks_per_seq + j] : -1;
  for (size_t r = 0; r < st.logit_rows.size(); ++r) m[L.logit_rows + r] = st.logit_rows[r];
  if (!pad) return;
  // Padding rows of a decode bucket: one-token sequences at position 0 in block 0, no KV write.
  for (int64_t s = ns; s < L.S; ++s) {
    m[L.token_seq + s] = static_cast<int32_t>(s);
    m[L.q_start + s + 1] = static_cast<int32_t>(s + 1);
    m[L.ctx_len + s] = 1;
    for (int64_t j = 0; j < L.MB; ++j) m[L.tables + s * L.MB + j] = 0;
  }
  for (int64_t r = static_cast<int64_t>(st.logit_rows.size()); r < L.R; ++r) m[L.logit_rows + r] = static_cast<int32_t>(r);
}

Status CudaBackendImpl::forward_sample(const Program& p, const StepInput& step, const std::vector<float>* stage_input,
                                       const std::vector<kernels::cpu::CounterSampling>& rows,
                                       std::vector<int32_t>* tokens) {
  if (rows.size() != step.logit_rows.size())
    return make_error(ErrorCode::kInternal, "forward_sample: {} sampling rows for {} logit rows", rows.size(),
                      step.logit_rows.size());
  if (p.logits_buffer < 0) return make_error(ErrorCode::kInternal, "forward_sample on a stage without logits");
  return forward_impl(p, step, stage_input, nullptr, nullptr, &rows, tokens);
}

Status CudaBackendImpl::forward_impl(const Program& p, const StepInput& step, const std::vector<float>* stage_input,
                                     std::vector<float>* stage_output, std::vector<float>* logits,
                                     const std::vector<kernels::cpu::CounterSampling>* sampling,
                                     std::vector<int32_t>* tokens) {
  const int64_t ntok = step.num_tokens(), nseq = step.num_seqs();
  const int64_t nlog = static_cast<int64_t>(step.logit_rows.size());
  if (ntok == 0) return make_error(ErrorCode::kInvalidArgument, "forward with no tokens");
  if (static_cast<int64_t>(step.q_start.size()) != nseq + 1 || step.q_start[nseq] != ntok)
    return make_error(ErrorCode::kInvalidArgument, "q_start does not cover the step's tokens");
  SHARDLM_CUDA_TRY(cudaSetDevice(opt_.device), "cudaSetDevice");
  SHARDLM_TRY(check_program(p));
  if (p.num_layers_local > 0 && !kv_base_)
    return make_error(ErrorCode::kInternal, "CUDA backend: forward before allocate_kv_cache");

  // Decode steps are bucketed and replayed from graphs.
  bool decode = opt_.cuda_graphs && ntok == nseq && nlog == ntok && ntok <= kMaxGraphBatch && p.stage_in < 0 &&
                !profiling_;
  for (int64_t i = 0; decode && i < nlog; ++i) decode = step.logit_rows[i] == i;
  int64_t max_ctx = 1;
  for (int64_t s = 0; s < nseq; ++s) max_ctx = std::max<int64_t>(max_ctx, step.ctx_len[s]);
  RunShape rs;
  if (decode) {
    const int64_t B = next_pow2(ntok);
    const int64_t MB = std::max<int64_t>(8, next_pow2(std::max<int64_t>(1, step.max_blocks_per_seq)));
    rs.T = rs.R = B;
    rs.max_context = MB * kv_.block_size;
    rs.meta = MetaLayout::make(B, B, MB, B);
  } else {
    rs.T = ntok;
    rs.R = nlog;
    rs.max_context = max_ctx;
    for (int64_t s = 0; s < nseq; ++s) rs.max_q_len = std::max<int64_t>(rs.max_q_len, step.q_start[s + 1] - step.q_start[s]);
    rs.meta = MetaLayout::make(ntok, nseq, std::max<int64_t>(1, step.max_blocks_per_seq), nlog);
  }
  SHARDLM_TRY(ensure_buffers(p, rs.T, std::max<int64_t>(rs.R, 1), rs.max_context));
  SHARDLM_TRY(ensure_meta(rs.meta.total));
  if (graph_program_ != &p) {
    invalidate_graphs();
    graph_program_ = &p;
  }
  // The previous step's replay may still read the pinned metadata: wait before rewriting it.
  SHARDLM_CUDA_TRY(cudaStreamSynchronize(stream_), "sync");
  pack_meta(step, rs.meta, decode);
  SHARDLM_CUDA_TRY(cudaMemcpyAsync(meta_dev_, meta_host_, rs.meta.total * 4, cudaMemcpyHostToDevice, stream_),
                   "metadata upload");
  if (p.stage_in >= 0 && prev_link_) {
    // bf16 straight into the residual buffer (ntok rows; the buffer has cap_T_).
    SHARDLM_TRY(prev_link_->recv(bufs_[p.stage_in], static_cast<size_t>(ntok * p.hidden) * 2, stream_)
                    .with_context("receiving the previous stage's activations"));
  } else if (p.stage_in >= 0) {
    if (!stage_input || static_cast<int64_t>(stage_input->size()) != ntok * p.hidden)
      return make_error(ErrorCode::kInternal, "stage input has the wrong size");
    SHARDLM_CUDA_TRY(cudaMemcpyAsync(stage_f32_, stage_input->data(), stage_input->size() * 4,
                                     cudaMemcpyHostToDevice, stream_),
                     "stage input upload");
    SHARDLM_CUDA_TRY(kc::f32_to_bf16(stage_f32_, static_cast<kc::bf16*>(bufs_[p.stage_in]), ntok * p.hidden, stream_),
                     "stage input convert");
  }

  if (decode) {
    const auto key = std::make_pair(rs.T, rs.meta.MB);
    auto it = graphs_.find(key);
    if (it != graphs_.end()) {
      SHARDLM_CUDA_TRY(cudaGraphLaunch(it->second, stream_), "graph launch");
    } else {
      SHARDLM_TRY(run_ops(p, rs));  // eager: computes this step and tunes the GEMM plans
      cudaGraphExec_t exec = nullptr;
      Status st = capture(p, rs, &exec);
      if (!st.ok() && (opt_.gemv_overlap_prologue || opt_.programmatic_launch)) {
        // A driver that cannot capture programmatic launches: capture without them.
        SLOG_WARN("cuda: graph capture with programmatic launches failed ({}); capturing without", st.message());
        cudaGetLastError();
        opt_.gemv_overlap_prologue = false;
        opt_.programmatic_launch = false;
        kc::set_programmatic_launch(false);
        st = capture(p, rs, &exec);
      }
      SHARDLM_TRY(st);
      graphs_[key] = exec;
      SLOG_DEBUG("cuda: captured decode graph for batch {} × {} blocks", rs.T, rs.meta.MB);
    }
  } else {
    SHARDLM_TRY(run_ops(p, rs));
  }

  if (sampling && nlog > 0) {
    if (nlog > sample_cap_) {
      cudaFreeHost(sample_params_host_);
      cudaFreeHost(sample_tokens_host_);
      cudaFree(sample_params_dev_);
      cudaFree(sample_tokens_dev_);
      sample_params_host_ = sample_params_dev_ = nullptr;
      sample_tokens_host_ = sample_tokens_dev_ = nullptr;
      sample_cap_ = 0;
      SHARDLM_CUDA_TRY(cudaMallocHost(&sample_params_host_, nlog * sizeof(kc::SamplingRow)), "sampling params");
      SHARDLM_CUDA_TRY(cudaMallocHost(&sample_tokens_host_, nlog * sizeof(int32_t)), "sampled tokens");
      SHARDLM_CUDA_TRY(cudaMalloc(&sample_params_dev_, nlog * sizeof(kc::SamplingRow)), "sampling params");
      SHARDLM_CUDA_TRY(cudaMalloc(&sample_tokens_dev_, nlog * sizeof(int32_t)), "sampled tokens");
      sample_cap_ = nlog;
    }
    for (int64_t r = 0; r < nlog; ++r) {
      const kernels::cpu::CounterSampling& c = (*sampling)[r];
      sample_params_host_[r] = kc::SamplingRow{c.temperature, c.top_k, c.top_p, c.seed, c.offset};
    }
    SHARDLM_CUDA_TRY(cudaMemcpyAsync(sample_params_dev_, sample_params_host_, nlog * sizeof(kc::SamplingRow),
                                     cudaMemcpyHostToDevice, stream_),
                     "sampling params upload");
    SHARDLM_CUDA_TRY(kc::sample_rows(static_cast<const float*>(bufs_[p.logits_buffer]), nlog, p.vocab,
                                     sample_params_dev_, sample_tokens_dev_, stream_),
                     "sample_rows");
    SHARDLM_CUDA_TRY(cudaMemcpyAsync(sample_tokens_host_, sample_tokens_dev_, nlog * sizeof(int32_t),
                                     cudaMemcpyDeviceToHost, stream_),
                     "sampled tokens download");
  }
  if (p.logits_buffer >= 0 && logits && nlog > 0) {
    const int64_t n = nlog * p.vocab;
    if (n > logits_host_cap_) {
      cudaFreeHost(logits_host_);
      logits_host_ = nullptr;
      SHARDLM_CUDA_TRY(cudaMallocHost(&logits_host_, n * 4), "pinned logits alloc");
      logits_host_cap_ = n;
    }
    SHARDLM_CUDA_TRY(cudaMemcpyAsync(logits_host_, bufs_[p.logits_buffer], n * 4, cudaMemcpyDeviceToHost, stream_),
                     "logits download");
  }
  if (p.stage_out >= 0 && next_link_) {
    SHARDLM_TRY(next_link_->send(bufs_[p.stage_out], static_cast<size_t>(ntok * p.hidden) * 2, stream_)
                    .with_context("sending activations to the next stage"));
  } else if (p.stage_out >= 0 && stage_output) {
    SHARDLM_CUDA_TRY(kc::bf16_to_f32(static_cast<const kc::bf16*>(bufs_[p.stage_out]), stage_f32_, ntok * p.hidden,
                                     stream_),
                     "stage output convert");
    stage_output->resize(ntok * p.hidden);
    SHARDLM_CUDA_TRY(cudaMemcpyAsync(stage_output->data(), stage_f32_, ntok * p.hidden * 4, cudaMemcpyDeviceToHost,
                                     stream_),
                     "stage output download");
  }
  SHARDLM_CUDA_TRY(cudaStreamSynchronize(stream_), "step");
  SHARDLM_CUDA_TRY(cudaGetLastError(), "step");
  // A Lamport wait that timed out leaves its kernel finished but the sums wrong: fail the step.
  if (p.mapping.tp > 1) SHARDLM_TRY(gpu_->check(stream_));
  if (p.logits_buffer >= 0 && logits && nlog > 0) logits->assign(logits_host_, logits_host_ + nlog * p.vocab);
  if (sampling && tokens) tokens->assign(sample_tokens_host_, sample_tokens_host_ + nlog);
  if (profiling_) {
    for (auto& [name, idx] : ev_used_) {
      float ms = 0;
      cudaEventElapsedTime(&ms, ev_pool_[idx].first, ev_pool_[idx].second);
      CudaOpTime& t = profile_[name];
      t.op = name;
      t.ms += ms;
      t.calls += 1;
    }
    ev_used_.clear();
  }
  return Status::Ok();
}

Status CudaBackendImpl::capture(const Program& p, const RunShape& rs, cudaGraphExec_t* exec) {
  cudaGraph_t g = nullptr;
  SHARDLM_CUDA_TRY(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal), "begin capture");
  Status st = run_ops(p, rs);
  cudaError_t e = cudaStreamEndCapture(stream_, &g);
  if (!st.ok()) {
    if (g) cudaGraphDestroy(g);
    return st;
  }
  SHARDLM_CUDA_TRY(e, "end capture");
  e = cudaGraphInstantiate(exec, g, 0);
  cudaGraphDestroy(g);
  SHARDLM_CUDA_TRY(e, "graph instantiate");
  return Status::Ok();
}

std::vector<CudaOpTime> CudaBackendImpl::take_profile() {
  std::vector<CudaOpTime> out;
  for (auto& [k, v] : profile_) out.push_back(v);
  profile_.clear();
  std::sort(out.begin(), out.end(), [](const CudaOpTime& a, const CudaOpTime& b) { return a.ms > b.ms; });
  return out;
}

}  // namespace cuda_detail

std::string cuda_unavailable_reason() {
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    cudaGetLastError();
    return std::string("no CUDA device: ") + cudaGetErrorString(e);
  }
  if (n == 0) return "no CUDA device: cudaGetDeviceCount returned 0";
  return "";
}

int cuda_device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return n;
}

std::string cuda_device_bus_id(int device) {
  char id[32] = {};
  if (cudaDeviceGetPCIBusId(id, sizeof id, device) != cudaSuccess) {
    cudaGetLastError();
    return "";
  }
  return id;
}

Expected<std::unique_ptr<CudaBackend>> make_cuda_backend(const CudaBackendOptions& options) {
  const std::string why = cuda_unavailable_reason();
  if (!why.empty()) return make_error(ErrorCode::kUnsupported, "{}", why);
  auto b = std::make_unique<cuda_detail::CudaBackendImpl>(options);
  SHARDLM_TRY(b->init());
  return std::unique_ptr<CudaBackend>(std::move(b));
}

}  // namespace shardlm::graph
