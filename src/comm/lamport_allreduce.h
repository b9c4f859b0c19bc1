// LamportAllReduce: the host side of the Lamport all-reduce (DESIGN §3.3).
// Owns the symmetric workspace (3 groups × (W + 1) slots × capacity) and this
// rank's device flags, launches the kernels of
// kernels/cuda/allreduce/lamport_allreduce.h, and picks one-shot / two-shot /
// NCCL per message from the measured table (comm/allreduce_strategy.h).
//
// One instance serves one dtype: the workspace is cleared with that dtype's
// −0 pattern, and a group is cleared two calls before it is written again,
// when the dtype of that later call is not known yet. A model runs one
// activation dtype, so this costs nothing; tests make one instance per dtype.
//
// Errors: launches only enqueue. A wait in the kernel that outlives
// timeout_s records which op and which peer; check() (or any sync point that
// calls it) synchronises the stream (bounded) and returns kTimeout naming
// them. After a timeout the instance is poisoned (the rotation is no longer
// in step with the peers): every later call fails; make a new one.
#pragma once

#include <cuda_runtime.h>

#include <memory>
#include <optional>
#include <string>

#include "comm/allreduce_strategy.h"
#include "comm/symmetric_buffer.h"
#include "kernels/cuda/allreduce/lamport_allreduce.h"
#include "tensor/dtype.h"

namespace shardlm {

class NcclCommunicator;

struct LamportOptions {
  size_t capacity_bytes = 16 << 20;  // per slot: the largest Lamport message
  double timeout_s = 10;             // each spin-wait in the kernel
  bool pdl = true;                   // programmatic dependent launch
  int max_blocks = 0;                // 0: the device's SM count
  // Rows up to which the fused kernel keeps each row in registers, one vector
  // per thread (kernels/cuda/allreduce/lamport_allreduce.h); 0: never.
  int fused_reg_max_rows = 1 << 30;
  // ... and cuts a row over a cluster of blocks of about this many 16-byte
  // vectors each at small token counts (≥ 1024: one block per row).
  int fused_block_vectors = 128;
  // ... where every block of a row's cluster sums the whole row itself (no
  // Σ r² exchange between the blocks); false: the exchange.
  bool fused_whole_row = false;
};

class LamportAllReduce {
 public:
  // Collective over the group (allocates and maps the workspace, initialises
  // it to −0 and waits until every rank has). `nccl` (may be null) takes the
  // messages the strategy sends to NCCL; it must outlive this object.
  static Expected<std::unique_ptr<LamportAllReduce>> create(const CommGroup& group, DType dtype, int device,
                                                            LamportOptions opts = {},
                                                            NcclCommunicator* nccl = nullptr);
  ~LamportAllReduce();

  // out[count] = Σ in[count] over the group, enqueued on `stream`. algo:
  // nullopt = the strategy table's choice.
  Status all_reduce(const void* in, void* out, size_t count, cudaStream_t stream,
                    std::optional<AllReduceAlgo> algo = std::nullopt);
  // Fused: s = Σ in[rows × hidden]; out_residual = s + residual; out =
  // rmsnorm(out_residual; eps) · weight. Lamport only (one-/two-shot); a
  // message over the capacity returns kUnsupported (run it unfused).
  Status all_reduce_add_rmsnorm(const void* in, const void* residual, const void* weight, float eps,
                                void* out_residual, void* out, int rows, int hidden, cudaStream_t stream,
                                std::optional<AllReduceAlgo> algo = std::nullopt);
  // Synchronises `stream` (bounded by timeout_s + 30 s) and reads the error flag.
  Status check(cudaStream_t stream);
  AllReduceAlgo pick(size_t count) const;

  DType dtype() const { return dtype_; }
  size_t capacity_bytes() const { return params_.capacity_bytes; }
  const SymmetricBuffer& workspace() const { return *ws_; }
  int rank() const { return params_.rank; }
  int world() const { return params_.world; }

 private:
  LamportAllReduce() = default;
  Status launched(cudaError_t e, const char* what);

  DType dtype_ = DType::kBF16;
  kernels::cuda::LamportDType kdt_ = kernels::cuda::LamportDType::kBF16;
  LamportOptions opts_;
  kernels::cuda::LamportParams params_;
  std::unique_ptr<SymmetricBuffer> ws_;
  uint32_t* flags_ = nullptr;
  uint32_t* host_flags_ = nullptr;  // pinned: read after synchronising
  NcclCommunicator* nccl_ = nullptr;
  Status poisoned_;
};

}  // namespace shardlm
