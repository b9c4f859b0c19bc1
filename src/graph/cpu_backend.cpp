// CPU backend: runs each op of a Program with the reference kernels in f32.
// Weights are converted to f32 once at load (bf16/f16 checkpoints are widened:
// simple, exact, and fast enough for the small models CI runs). Activation
// buffers grow to the largest step seen and are reused.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "graph/backend.h"
#include "kernels/cpu/cpu_kernels.h"

namespace shardlm::graph {
namespace {

namespace k = shardlm::kernels::cpu;

class CpuBackend final : public Backend {
 public:
  const char* name() const override { return "cpu"; }

  Status set_weight(int id, const Tensor& host) override {
    if (id < 0) return make_error(ErrorCode::kInternal, "negative weight id");
    if (static_cast<size_t>(id) >= weights_.size()) weights_.resize(id + 1);
    weights_[id] = host.dtype() == DType::kF32 && host.is_contiguous() && owned(host)
                       ? host
                       : host.to(DType::kF32);
    return Status::Ok();
  }

  Status set_random_weight_blocks(int id, const Shape& shape, const std::vector<RandomBlock>& blocks,
                                  float scale) override {
    if (id < 0) return make_error(ErrorCode::kInternal, "negative weight id");
    const int64_t rows = shape.empty() ? 1 : shape[0];
    const int64_t cols = shape.size() >= 2 ? shape_numel(shape) / std::max<int64_t>(1, shape[0]) : 1;
    std::vector<float> v(static_cast<size_t>(shape_numel(shape)), 0.0f);
    for (const RandomBlock& b : blocks) {
      if (b.cols != cols || b.dst_row < 0 || b.dst_row + b.rows > rows || b.col0 + b.cols > b.full_cols)
        return make_error(ErrorCode::kInvalidArgument, "random weight {}: a block does not fit [{}, {}]", id, rows,
                          cols);
      k::fill_random_block(v.data(), b.dst_row, b.rows, b.cols, b.full_cols, b.row0, b.col0, b.seed, scale);
    }
    return set_weight(id, Tensor::from_f32(v, shape));
  }

  Status allocate_kv_cache(const KvCacheShape& s) override {
    kv_ = s;
    const int64_t per_layer = s.num_blocks * s.block_size * s.nkv_heads * s.head_dim;
    k_cache_.assign(s.num_layers, std::vector<float>());
    v_cache_.assign(s.num_layers, std::vector<float>());
    for (int64_t l = 0; l < s.num_layers; ++l) {
      k_cache_[l].assign(per_layer, 0.0f);
      v_cache_[l].assign(per_layer, 0.0f);
    }
    return Status::Ok();
  }

  void set_tp_communicator(Communicator* comm) override { tp_comm_ = comm; }

  Status forward_sample(const Program& p, const StepInput& step, const std::vector<float>* stage_input,
                        const std::vector<k::CounterSampling>& rows, std::vector<int32_t>* tokens) override {
    if (rows.size() != step.logit_rows.size())
      return make_error(ErrorCode::kInternal, "forward_sample: {} sampling rows for {} logit rows", rows.size(),
                        step.logit_rows.size());
    std::vector<float> logits;
    SHARDLM_TRY(forward(p, step, stage_input, nullptr, &logits));
    tokens->resize(rows.size());
    for (size_t r = 0; r < rows.size(); ++r) (*tokens)[r] = k::sample_row_counter(&logits[r * p.vocab], p.vocab, rows[r]);
    return Status::Ok();
  }
  bool samples_on_device() const override { return false; }
  bool stage_io_on_device() const override { return false; }

  Status forward(const Program& p, const StepInput& step, const std::vector<float>* stage_input,
                 std::vector<float>* stage_output, std::vector<float>* logits) override;

 private:
  static bool owned(const Tensor& t) { return t.buffer() && t.buffer()->device() == Device::kCpu; }
  const float* w(const Op& op, size_t i) const {
    if (i >= op.weights.size()) return nullptr;
    return weights_[op.weights[i]].data<float>();
  }
  float* buf(int id) { return bufs_[id].data(); }
  Status all_reduce(float* data, int64_t n) {
    if (!tp_comm_ || tp_comm_->size() == 1) return Status::Ok();
    return tp_comm_->all_reduce_sum(data, static_cast<size_t>(n), DType::kF32);
  }

  std::vector<Tensor> weights_;           // f32, contiguous, by weight id
  KvCacheShape kv_;
  std::vector<std::vector<float>> k_cache_, v_cache_;  // per layer [blocks, kvh, bs, hd]
  std::vector<std::vector<float>> bufs_;  // activation buffers by id
  std::vector<float> inv_freq_;
  std::vector<float> q_, k_, v_;  // attention scratch: contiguous q/k/v split from qkv
  std::vector<float> gather_;     // all-gather scratch [tp, rows, n_local]
  Communicator* tp_comm_ = nullptr;
};

Status CpuBackend::forward(const Program& p, const StepInput& step,
                           const std::vector<float>* stage_input, std::vector<float>* stage_output,
                           std::vector<float>* logits) {
  const int64_t ntok = step.num_tokens();
  const int64_t nlog = static_cast<int64_t>(step.logit_rows.size());
  if (ntok == 0) return make_error(ErrorCode::kInvalidArgument, "forward with no tokens");
  bufs_.resize(p.buffers.size());
  for (size_t i = 0; i < p.buffers.size(); ++i) {
    const int64_t rows = p.buffers[i].rows == RowSpace::kTokens ? ntok : nlog;
    bufs_[i].resize(static_cast<size_t>(rows * p.buffers[i].width));
  }
  if (inv_freq_.empty() && p.rope.head_dim > 0) {
    inv_freq_.resize(p.rope.head_dim / 2);
    k::RopeParams rp;
    rp.head_dim = rp.rotary_dim = p.rope.head_dim;
    rp.theta = p.rope.theta;
    rp.llama3_scaling = p.rope.llama3;
    rp.factor = p.rope.factor;
    rp.low_freq_factor = p.rope.low_freq_factor;
    rp.high_freq_factor = p.rope.high_freq_factor;
    rp.original_max_position = p.rope.original_max_position;
    k::rope_inv_freq(rp, inv_freq_.data());
  }
  if (p.stage_in >= 0) {
    if (!stage_input || static_cast<int64_t>(stage_input->size()) != ntok * p.hidden)
      return make_error(ErrorCode::kInternal, "stage input has the wrong size");
    std::memcpy(buf(p.stage_in), stage_input->data(), stage_input->size() * 4);
  }

  const AttentionShape& a = p.attn;
  const int64_t q_width = a.nq_heads * a.head_dim, kv_width = a.nkv_heads * a.head_dim;
  for (const Op& op : p.ops) {
    switch (op.kind) {
      case OpKind::kEmbedding: {
        const Tensor& table = weights_[op.weights[0]];
        const int64_t vocab_local = table.dim(0);
        // Vocab-parallel shards are padded to equal size: rank r owns rows [r·v, (r+1)·v).
        const int64_t offset = vocab_local * p.mapping.tp_rank();
        k::embedding(table.data<float>(), vocab_local, p.hidden, step.token_ids.data(), ntok,
                     buf(op.out), offset);
        SHARDLM_TRY(all_reduce(buf(op.out), ntok * p.hidden));
        break;
      }
      case OpKind::kRMSNorm:
        k::rmsnorm(buf(op.in), w(op, 0), buf(op.out), ntok, p.buffers[op.in].width, op.eps);
        break;
      case OpKind::kAdd:
        k::add(buf(op.out), buf(op.in), buf(op.out), ntok * p.buffers[op.out].width);
        break;
      case OpKind::kAddRMSNorm:
        k::add_rmsnorm(buf(op.in), buf(op.in2), w(op, 0), buf(op.out), ntok, p.buffers[op.in2].width,
                       op.eps);
        break;
      case OpKind::kAllReduceAddRMSNorm:
        SHARDLM_TRY(all_reduce(buf(op.in), ntok * p.buffers[op.in].width));
        k::add_rmsnorm(buf(op.in), buf(op.in2), w(op, 0), buf(op.out), ntok, p.buffers[op.in2].width,
                       op.eps);
        break;
      case OpKind::kAllReduce:
        SHARDLM_TRY(all_reduce(buf(op.in), ntok * p.buffers[op.in].width));
        break;
      case OpKind::kLinear: {
        const Tensor& wt = weights_[op.weights[0]];
        const int64_t rows = p.buffers[op.in].rows == RowSpace::kTokens ? ntok : nlog;
        k::matmul(buf(op.in), wt.data<float>(), w(op, 1), buf(op.out), rows, wt.dim(0), wt.dim(1));
        break;
      }
      case OpKind::kHeadRMSNorm: {
        // qkv rows are [q heads | k heads | v heads]; normalise each q and k head.
        float* qkv = buf(op.in);
        const int64_t width = p.buffers[op.in].width;
        for (int64_t t = 0; t < ntok; ++t) {
          float* row = qkv + t * width;
          k::rmsnorm(row, w(op, 0), row, a.nq_heads, a.head_dim, op.eps);
          k::rmsnorm(row + q_width, w(op, 1), row + q_width, a.nkv_heads, a.head_dim, op.eps);
        }
        break;
      }
      case OpKind::kRoPE:
      case OpKind::kRoPEAttention: {
        // Rotate q and k in place, head by head, inside the packed qkv rows.
        float* qkv = buf(op.in);
        const int64_t width = p.buffers[op.in].width;
        for (int64_t t = 0; t < ntok; ++t) {
          float* row = qkv + t * width;
          k::rope(row, &step.positions[t], 1, a.nq_heads, a.head_dim, a.head_dim, inv_freq_.data());
          k::rope(row + q_width, &step.positions[t], 1, a.nkv_heads, a.head_dim, a.head_dim,
                  inv_freq_.data());
        }
        if (op.kind == OpKind::kRoPE) break;
      }
        [[fallthrough]];  // rope_attention: the fused pair runs as its two parts here
      case OpKind::kAttention: {
        const int64_t l = op.layer - p.first_layer;
        const float* qkv = buf(op.in);
        const int64_t width = p.buffers[op.in].width;
        // Split the packed rows into contiguous q, k, v for the kernels.
        q_.resize(ntok * q_width);
        k_.resize(ntok * kv_width);
        v_.resize(ntok * kv_width);
        for (int64_t t = 0; t < ntok; ++t) {
          std::memcpy(&q_[t * q_width], qkv + t * width, q_width * 4);
          std::memcpy(&k_[t * kv_width], qkv + t * width + q_width, kv_width * 4);
          std::memcpy(&v_[t * kv_width], qkv + t * width + q_width + kv_width, kv_width * 4);
        }
        k::kv_write(k_.data(), v_.data(), k_cache_[l].data(), v_cache_[l].data(),
                    step.slot_mapping.data(), ntok, a.nkv_heads, a.head_dim, kv_.block_size);
        k::PagedAttentionArgs args;
        args.num_seqs = step.num_seqs();
        args.q_start = step.q_start.data();
        args.ctx_len = step.ctx_len.data();
        args.block_tables = step.block_tables.data();
        args.max_blocks_per_seq = step.max_blocks_per_seq;
        args.block_size = kv_.block_size;
        args.nq_heads = a.nq_heads;
        args.nkv_heads = a.nkv_heads;
        args.head_dim = a.head_dim;
        args.scale = a.scale;
        args.sliding_window = op.sliding_window;
        k::paged_attention(q_.data(), k_cache_[l].data(), v_cache_[l].data(), buf(op.out), args);
        break;
      }
      case OpKind::kSiLUMul:
        k::silu_mul(buf(op.in), buf(op.out), ntok, p.buffers[op.out].width);
        break;
      case OpKind::kLinearSiLUMul: {
        // Unfused on the CPU: the linear into the gate|up scratch (in2), then silu·up.
        const Tensor& wt = weights_[op.weights[0]];
        k::matmul(buf(op.in), wt.data<float>(), w(op, 1), buf(op.in2), ntok, wt.dim(0), wt.dim(1));
        k::silu_mul(buf(op.in2), buf(op.out), ntok, p.buffers[op.out].width);
        break;
      }
      case OpKind::kGatherRows: {
        const int64_t width = p.buffers[op.in].width;
        for (int64_t r = 0; r < nlog; ++r)
          std::memcpy(buf(op.out) + r * width, buf(op.in) + step.logit_rows[r] * width, width * 4);
        break;
      }
      case OpKind::kAllGatherColumns: {
        const int64_t n_local = p.buffers[op.in].width;
        const int tp = p.mapping.tp;
        if (tp == 1) {
          std::memcpy(buf(op.out), buf(op.in), nlog * n_local * 4);
          break;
        }
        if (!tp_comm_) return make_error(ErrorCode::kInternal, "tp > 1 without a communicator");
        gather_.resize(tp * nlog * n_local);
        SHARDLM_TRY(tp_comm_->all_gather(buf(op.in), gather_.data(), nlog * n_local, DType::kF32));
        // gather_ is [tp][rows][n_local]; logits want [rows][tp · n_local], cut to vocab.
        const int64_t out_w = p.buffers[op.out].width;
        for (int r = 0; r < tp; ++r)
          for (int64_t i = 0; i < nlog; ++i)
            for (int64_t j = 0; j < n_local && r * n_local + j < out_w; ++j)
              buf(op.out)[i * out_w + r * n_local + j] = gather_[(r * nlog + i) * n_local + j];
        break;
      }
    }
  }
  if (p.stage_out >= 0 && stage_output) stage_output->assign(buf(p.stage_out), buf(p.stage_out) + ntok * p.hidden);
  if (p.logits_buffer >= 0 && logits)
    logits->assign(buf(p.logits_buffer), buf(p.logits_buffer) + nlog * p.vocab);
  return Status::Ok();
}

}  // namespace

std::unique_ptr<Backend> make_cpu_backend() { return std::make_unique<CpuBackend>(); }

}  // namespace shardlm::graph
