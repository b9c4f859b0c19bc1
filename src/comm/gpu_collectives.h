// The GPU data plane of one tensor-parallel group, as the CUDA backend sees it
// (DESIGN §1 planes, §3.3). Pointers are device pointers; every call only
// enqueues work on the caller's stream, so a backend can capture it into its
// CUDA graphs. The implementation (gpu_collectives.cc, target
// shardlm_comm_cuda) sends each all-reduce where the measured strategy table
// (allreduce_strategy_table.h) says: Lamport one-shot or two-shot up to the
// Lamport capacity, NCCL above it; the fused all-reduce + residual + RMSNorm
// is one Lamport kernel; all-gather goes through NCCL.
//
// Every rank of the group must make the same calls in the same order with the
// same sizes (the choice between fused and unfused, Lamport and NCCL, is a
// function of the sizes alone, so it is the same on every rank).
//
// This header needs no CUDA: streams are passed as void* (a cudaStream_t).
// In a build without NCCL, make_gpu_collectives() returns kUnsupported
// (gpu_collectives_stub.cpp).
#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include "base/status.h"
#include "comm/symmetric_buffer.h"
#include "tensor/dtype.h"

namespace shardlm {

class GpuCollectives {
 public:
  virtual ~GpuCollectives() = default;
  virtual int rank() const = 0;  // within the group
  virtual int size() const = 0;

  // data[count] of `dtype` summed in place over the group.
  virtual Status all_reduce_sum(void* data, size_t count, DType dtype, void* stream) = 0;
  // Whether all_reduce_add_rmsnorm takes [rows, hidden] of `dtype` (fits the
  // Lamport capacity, hidden is whole 16-byte vectors). Same on every rank.
  virtual bool can_fuse(int64_t rows, int64_t hidden, DType dtype) const = 0;
  // One kernel: s = Σ in[rows, hidden]; residual += s; out = rmsnorm(residual) · weight.
  // `out` may alias `in`. Only when can_fuse().
  virtual Status all_reduce_add_rmsnorm(void* in, void* residual, const void* weight, float eps, void* out,
                                        int64_t rows, int64_t hidden, DType dtype, void* stream) = 0;
  // out[size() × count] = every rank's in[count], in rank order.
  virtual Status all_gather(const void* in, void* out, size_t count, DType dtype, void* stream) = 0;
  // Waits for `stream` (bounded) and reports a Lamport wait that timed out
  // (naming the rank it waited for) or an aborted NCCL communicator.
  virtual Status check(void* stream) = 0;
  virtual std::string describe() const = 0;
};

// The activations between two neighbouring pipeline stages, device to device
// (NCCL send/recv on a two-rank communicator; DESIGN §3.2). Calls enqueue on
// the caller's stream; a send completes once the peer has posted the matching
// recv, so both sides must transfer the micro-batches in the same order.
class GpuStageLink {
 public:
  virtual ~GpuStageLink() = default;
  virtual Status send(const void* data, size_t bytes, void* stream) = 0;
  virtual Status recv(void* data, size_t bytes, void* stream) = 0;
  virtual Status health() const = 0;  // Ok, or why the communicator was aborted
};

// Collective over the pair (both ranks call it; `pair.ranks` = {earlier stage,
// later stage}).
Expected<std::unique_ptr<GpuStageLink>> make_gpu_stage_link(const CommGroup& pair, int device, double timeout_s);

struct GpuCollectivesOptions {
  // Per slot: the largest Lamport message. 16 MiB covers a decode step of 512
  // tokens × hidden 8192 × bf16 (8 MiB) with room; larger (prefill) goes to NCCL.
  size_t lamport_capacity_bytes = 16 << 20;
  double lamport_timeout_s = 10;  // each spin-wait inside a Lamport kernel
  double nccl_timeout_s = 300;    // NCCL init and bounded synchronisation
};

// Collective over the group (every rank calls it): makes the NCCL
// communicator and the Lamport workspace for `activation_dtype` on `device`
// (made current on the calling thread).
Expected<std::unique_ptr<GpuCollectives>> make_gpu_collectives(const CommGroup& group, int device,
                                                               DType activation_dtype,
                                                               const GpuCollectivesOptions& options = {});

}  // namespace shardlm
