// Internals of the CUDA backend shared by its .cc files (not a public header:
// only graph/cuda_backend*.cc include it; it needs the CUDA toolkit headers).
//
// Memory: weights live in a DevicePool (first-fit bump allocation over 512 MiB
// cudaMalloc chunks: one malloc per chunk, not per tensor, and no
// fragmentation from frees since weights live as long as the backend). The KV
// cache is one cudaMalloc ([2][layers][blocks, nkv, block_size, hd] bf16).
// Activations are one allocation per buffer, sized for the largest step seen
// (or reserved); growing them invalidates captured graphs, which hold pointers.
//
// A step: the host packs its int32 metadata (token ids, positions, slots,
// token→sequence, q_start, ctx_len, block tables, logit rows) into pinned
// memory, one H2D copy moves it, the ops run (eagerly, or as a captured CUDA
// graph for decode buckets), and the f32 logits come back through pinned
// memory with one D2H copy.
#pragma once

#include <cuda_runtime.h>

#include <map>
#include <string>
#include <tuple>
#include <vector>

#include "graph/cuda_backend.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/gemm.h"

namespace shardlm::graph::cuda_detail {

namespace kc = shardlm::kernels::cuda;

#define SHARDLM_CUDA_TRY(expr, what)                                                              \
  do {                                                                                            \
    cudaError_t _e = (expr);                                                                      \
    if (_e != cudaSuccess)                                                                        \
      return ::shardlm::make_error(::shardlm::ErrorCode::kInternal, "CUDA {}: {}", what,          \
                                   cudaGetErrorString(_e));                                       \
  } while (0)

class DevicePool {
 public:
  ~DevicePool();
  Expected<void*> alloc(size_t bytes);
  int64_t allocated_bytes() const { return used_; }

 private:
  struct Chunk {
    char* base = nullptr;
    size_t size = 0, used = 0;
  };
  std::vector<Chunk> chunks_;
  int64_t used_ = 0;
};

struct DevWeight {
  void* ptr = nullptr;  // bf16
  Shape shape;
};

// Offsets (in int32 elements) of the step metadata arrays inside one buffer.
struct MetaLayout {
  int64_t T = 0, S = 0, MB = 0, R = 0;  // tokens, sequences, block-table width, logit rows
  int64_t token_ids = 0, positions = 0, slots = 0, token_seq = 0, q_start = 0, ctx_len = 0, tables = 0,
          logit_rows = 0, total = 0;
  static MetaLayout make(int64_t T, int64_t S, int64_t MB, int64_t R);
};

// What one run of the op list needs besides the program.
struct RunShape {
  int64_t T = 0, R = 0, max_context = 0;
  int64_t max_q_len = 1;  // the most query rows of one sequence (attention kernel choice)
  MetaLayout meta;
};

class CudaBackendImpl final : public CudaBackend {
 public:
  explicit CudaBackendImpl(const CudaBackendOptions& o) : opt_(o) {}
  ~CudaBackendImpl() override;
  Status init();

  const char* name() const override { return "cuda"; }
  Status set_weight(int id, const Tensor& host) override;
  Status allocate_kv_cache(const KvCacheShape& shape) override;
  void set_tp_communicator(Communicator* comm) override { tp_comm_ = comm; }
  void set_gpu_collectives(GpuCollectives* group) override { gpu_ = group; }
  Status set_random_weight_blocks(int id, const Shape& shape, const std::vector<RandomBlock>& blocks,
                                  float scale) override;
  Status forward(const Program& program, const StepInput& step, const std::vector<float>* stage_input,
                 std::vector<float>* stage_output, std::vector<float>* logits) override {
    return forward_impl(program, step, stage_input, stage_output, logits, nullptr, nullptr);
  }
  Status forward_sample(const Program& program, const StepInput& step, const std::vector<float>* stage_input,
                        const std::vector<kernels::cpu::CounterSampling>& rows, std::vector<int32_t>* tokens) override;
  bool samples_on_device() const override { return true; }
  void set_stage_links(GpuStageLink* prev, GpuStageLink* next) override {
    prev_link_ = prev;
    next_link_ = next;
  }
  bool stage_io_on_device() const override { return prev_link_ || next_link_; }

  Status reserve(const Program& p, int64_t max_tokens, int64_t max_logit_rows, int64_t max_context) override;
  Status fill_kv_random(uint64_t seed) override;
  Expected<CudaMemoryInfo> memory_info() const override;
  std::string device_name() const override { return device_name_; }
  int64_t weight_bytes() const override { return weight_bytes_; }
  int num_graphs() const override { return static_cast<int>(graphs_.size()); }
  void set_profiling(bool on) override { profiling_ = on; }
  std::vector<CudaOpTime> take_profile() override;
  Expected<double> measure_copy_bandwidth(int64_t bytes) override;
  Expected<double> measure_gemm_flops(int64_t m, int64_t n, int64_t k) override;

 private:
  // forward() and forward_sample(): `sampling` non-null draws one token per
  // logit row on the device (kernels/cuda sample_rows) into `tokens`.
  Status forward_impl(const Program& p, const StepInput& step, const std::vector<float>* stage_input,
                      std::vector<float>* stage_output, std::vector<float>* logits,
                      const std::vector<kernels::cpu::CounterSampling>* sampling, std::vector<int32_t>* tokens);
  Status check_program(const Program& p);
  Status ensure_buffers(const Program& p, int64_t T, int64_t R, int64_t max_context);
  Status ensure_meta(int64_t ints);
  void pack_meta(const StepInput& step, const MetaLayout& L, bool pad_decode);
  Status run_ops(const Program& p, const RunShape& rs);
  Status capture(const Program& p, const RunShape& rs, cudaGraphExec_t* exec);
  Status run_op(const Program& p, const Op& op, const RunShape& rs);
  // A batch-1 linear whose output the next op (add+RMSNorm) takes as x: one
  // gemv_add_rmsnorm kernel for both (CudaBackendOptions::fuse_gemv_norm).
  bool gemv_norm_fusable(const Program& p, const Op& lin, const Op& norm, const RunShape& rs) const;
  Status run_gemv_add_rmsnorm(const Program& p, const Op& lin, const Op& norm, const RunShape& rs);
  // Linear chains (cuda_backend_chain.cc): a run of ops i … i + n_ops − 1 that
  // is linear, then (add+RMSNorm?, linear)+, each taking the previous output.
  struct ChainPlan {
    std::vector<int> linear_ops;  // op index of each stage's linear
    std::vector<int> norm_ops;    // op index of the add+RMSNorm before it, or −1
    size_t n_ops = 0;
  };
  void plan_linear_chains(const Program& p);
  // Launches the chain when this step's shapes allow it; *ran = false: run the ops one by one.
  Status run_linear_chain(const Program& p, const ChainPlan& c, const RunShape& rs, bool* ran);
  void invalidate_graphs();
  Expected<void*> weight_slot(int id, const Shape& shape);
  bool buffer_is_f32(const Program& p, int id) const;
  int64_t rows_of(const Program& p, int buf, const RunShape& rs) const {
    return p.buffers[buf].rows == RowSpace::kTokens ? rs.T : rs.R;
  }
  const void* w(const Op& op, size_t i) const {
    return i < op.weights.size() ? weights_[op.weights[i]].ptr : nullptr;
  }

  CudaBackendOptions opt_;
  std::string device_name_;
  cudaStream_t stream_ = nullptr;
  std::unique_ptr<kc::Gemm> gemm_;
  DevicePool pool_;
  std::vector<DevWeight> weights_;
  int64_t weight_bytes_ = 0;
  Communicator* tp_comm_ = nullptr;  // unused (host collectives); kept for the interface
  GpuCollectives* gpu_ = nullptr;    // tp > 1: all-reduce / all-gather on device buffers
  GpuStageLink* prev_link_ = nullptr;  // pp > 1, device transport: residual stream in / out
  GpuStageLink* next_link_ = nullptr;

  KvCacheShape kv_;
  void* kv_base_ = nullptr;  // bf16 [2][layers][blocks·nkv·block_size·hd]

  const Program* checked_ = nullptr;  // the program the buffers/inv_freq were made for
  std::vector<void*> bufs_;           // activation buffers by id
  int64_t cap_T_ = 0, cap_R_ = 0, cap_ctx_ = 0;
  float* inv_freq_ = nullptr;         // [head_dim / 2]
  float* attn_ws_ = nullptr;          // split-K scratch
  size_t attn_ws_bytes_ = 0;
  float* stage_f32_ = nullptr;        // stage input/output staging [T, hidden] f32
  float* gather_ = nullptr;           // tp > 1: all-gathered logits [tp][R][vocab / tp] f32
  int64_t gather_bytes_ = 0;
  int32_t* meta_dev_ = nullptr;
  int32_t* meta_host_ = nullptr;      // pinned
  int64_t meta_cap_ = 0;
  float* logits_host_ = nullptr;      // pinned
  int64_t logits_host_cap_ = 0;
  // forward_sample: per-row parameters and drawn tokens, pinned + device.
  kc::SamplingRow* sample_params_host_ = nullptr;
  kc::SamplingRow* sample_params_dev_ = nullptr;
  int32_t* sample_tokens_host_ = nullptr;
  int32_t* sample_tokens_dev_ = nullptr;
  int64_t sample_cap_ = 0;

  // Decode graphs by (batch bucket, block-table bucket).
  std::map<std::pair<int64_t, int64_t>, cudaGraphExec_t> graphs_;
  const Program* graph_program_ = nullptr;

  bool profiling_ = false;
  // The last op of run_ops launched a gemv kernel (ordinary launch that lets
  // its dependents start early): the next attention or add+RMSNorm may be
  // launched programmatically (CudaBackendOptions::prelaunch_after_gemv).
  bool after_gemv_ = false;
  int gemv_out_ = -1;  // that gemv's output buffer
  bool after_small_ = false;  // the last op launched a decode attention or add+RMSNorm (prelaunch_gemv)
  bool after_attention_ = false;  // the last op launched a decode attention (gemv_smem_after_attention)
  // Whether a batch-1 gemv launched now (behind a decode attention or not)
  // copies its first wave's weights into shared memory: the one rule for its
  // launch (run_op) and for the L2 prefetch it then does without (run_ops).
  bool gemv_smem_prologue_for(bool behind_attention) const {
    return !profiling_ && (opt_.gemv_smem_prologue || (opt_.gemv_smem_after_attention && behind_attention));
  }
  // The weights of the op after the one run_op launches (one row of all its
  // bytes), when that op is a linear of ≤ l2_prefetch_max_rows rows (else
  // empty): what a decode attention or add+RMSNorm pulls into L2
  // (CudaBackendOptions::l2_prefetch_*).
  kc::L2Prefetch next_linear_weights_;
  std::vector<std::pair<cudaEvent_t, cudaEvent_t>> ev_pool_;
  std::vector<std::pair<std::string, size_t>> ev_used_;  // (op name, index into ev_pool_)
  std::map<std::string, CudaOpTime> profile_;

  std::map<size_t, ChainPlan> chains_;  // by first op index, for checked_
  unsigned* chain_ws_ = nullptr;        // the chain kernel's barrier counters (kLinearChainWorkspaceBytes)
  int32_t* gemv_norm_counter_ = nullptr;  // gemv_add_rmsnorm's arrival counter (one int32, left zero)
};

}  // namespace shardlm::graph::cuda_detail
