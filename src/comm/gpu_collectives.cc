// GpuCollectives over NCCL + the Lamport all-reduce (see gpu_collectives.h).
// The NCCL communicator and the Lamport workspace are made once per group;
// each call points the NCCL communicator at the caller's stream for the
// duration of the enqueue, so NCCL work lands in the same stream (and graph)
// as the backend's kernels.
#include "comm/gpu_collectives.h"

#include <cuda_runtime.h>

#include "base/log.h"
#include "comm/lamport_allreduce.h"
#include "comm/nccl_communicator.h"

namespace shardlm {
namespace {

cudaStream_t as_stream(void* s) { return static_cast<cudaStream_t>(s); }

// Runs f (one NCCL enqueue) with the communicator pointed at `stream`.
template <typename F>
Status on_stream(NcclCommunicator& nccl, void* stream, F&& f) {
  cudaStream_t old = nccl.stream();
  nccl.set_stream(as_stream(stream));
  Status st = f();
  nccl.set_stream(old);
  return st;
}

class NcclLamportCollectives final : public GpuCollectives {
 public:
  NcclLamportCollectives(std::unique_ptr<NcclCommunicator> nccl, std::unique_ptr<LamportAllReduce> lamport)
      : nccl_(std::move(nccl)), lamport_(std::move(lamport)) {}
  ~NcclLamportCollectives() override {
    lamport_.reset();  // holds a pointer to nccl_
    nccl_.reset();
  }

  int rank() const override { return nccl_->rank(); }
  int size() const override { return nccl_->size(); }

  Status all_reduce_sum(void* data, size_t count, DType dtype, void* stream) override {
    if (count == 0) return Status::Ok();
    if (dtype == lamport_->dtype()) return lamport_->all_reduce(data, data, count, as_stream(stream));
    return on_stream(*nccl_, stream, [&] { return nccl_->all_reduce_sum(data, count, dtype); });
  }

  bool can_fuse(int64_t rows, int64_t hidden, DType dtype) const override {
    if (dtype != lamport_->dtype() || rows <= 0 || hidden <= 0) return false;
    const int64_t vec = 16 / static_cast<int64_t>(dtype_size(dtype));
    const size_t bytes = static_cast<size_t>(rows * hidden) * dtype_size(dtype);
    return hidden % vec == 0 && lamport_->pick(static_cast<size_t>(rows * hidden)) != AllReduceAlgo::kNccl &&
           bytes <= lamport_->capacity_bytes();
  }

  Status all_reduce_add_rmsnorm(void* in, void* residual, const void* weight, float eps, void* out, int64_t rows,
                                int64_t hidden, DType dtype, void* stream) override {
    if (!can_fuse(rows, hidden, dtype))
      return make_error(ErrorCode::kUnsupported, "fused all-reduce of [{}, {}] {} does not fit the Lamport path", rows,
                        hidden, dtype_name(dtype));
    return lamport_->all_reduce_add_rmsnorm(in, residual, weight, eps, residual, out, static_cast<int>(rows),
                                            static_cast<int>(hidden), as_stream(stream));
  }

  Status all_gather(const void* in, void* out, size_t count, DType dtype, void* stream) override {
    return on_stream(*nccl_, stream, [&] { return nccl_->all_gather(in, out, count, dtype); });
  }

  Status check(void* stream) override {
    SHARDLM_TRY(lamport_->check(as_stream(stream)));
    return nccl_->health();
  }

  std::string describe() const override {
    return fmt::format("rank {} of {}: Lamport all-reduce ({}, {} MiB slots, {}) + NCCL", rank(), size(),
                       dtype_name(lamport_->dtype()), lamport_->capacity_bytes() >> 20,
                       lamport_->workspace().describe());
  }

 private:

  std::unique_ptr<NcclCommunicator> nccl_;
  std::unique_ptr<LamportAllReduce> lamport_;
};

class NcclStageLink final : public GpuStageLink {
 public:
  explicit NcclStageLink(std::unique_ptr<NcclCommunicator> nccl) : nccl_(std::move(nccl)) {}
  Status send(const void* data, size_t bytes, void* stream) override {
    return on_stream(*nccl_, stream, [&] { return nccl_->send(data, bytes, 1 - nccl_->rank(), 0); });
  }
  Status recv(void* data, size_t bytes, void* stream) override {
    return on_stream(*nccl_, stream, [&] { return nccl_->recv(data, bytes, 1 - nccl_->rank(), 0); });
  }
  Status health() const override { return nccl_->health(); }

 private:
  std::unique_ptr<NcclCommunicator> nccl_;
};

}  // namespace

Expected<std::unique_ptr<GpuStageLink>> make_gpu_stage_link(const CommGroup& pair, int device, double timeout_s) {
  if (pair.size() != 2) return make_error(ErrorCode::kInvalidArgument, "a stage link joins 2 ranks, not {}", pair.size());
  if (cudaError_t e = cudaSetDevice(device); e != cudaSuccess)
    return make_error(ErrorCode::kInternal, "stage link: cudaSetDevice({}): {}", device, cudaGetErrorString(e));
  NcclOptions no;
  no.timeout_s = timeout_s;
  SHARDLM_ASSIGN_OR_RETURN(auto nccl, NcclCommunicator::create(pair, device, nullptr, no));
  // Connect now, outside any capture (see make_gpu_collectives): one byte each way.
  {
    char* probe = nullptr;
    if (cudaMalloc(&probe, 16) != cudaSuccess) return make_error(ErrorCode::kOutOfMemory, "stage link: probe buffer");
    Status st = pair.index == 0 ? nccl->send(probe, 1, 1, 0) : nccl->recv(probe, 1, 0, 0);
    if (st.ok()) st = pair.index == 0 ? nccl->recv(probe + 8, 1, 1, 0) : nccl->send(probe + 8, 1, 0, 0);
    if (st.ok()) st = nccl->synchronize();
    cudaFree(probe);
    SHARDLM_TRY(st.with_context("stage link: first NCCL send/recv"));
  }
  SLOG_INFO("GPU stage link {}: rank {} of the pair (NCCL send/recv)", pair.prefix, pair.index);
  return std::unique_ptr<GpuStageLink>(std::make_unique<NcclStageLink>(std::move(nccl)));
}

Expected<std::unique_ptr<GpuCollectives>> make_gpu_collectives(const CommGroup& group, int device,
                                                               DType activation_dtype,
                                                               const GpuCollectivesOptions& o) {
  if (cudaError_t e = cudaSetDevice(device); e != cudaSuccess)
    return make_error(ErrorCode::kInternal, "GPU collectives: cudaSetDevice({}): {}", device, cudaGetErrorString(e));
  NcclOptions no;
  no.timeout_s = o.nccl_timeout_s;
  SHARDLM_ASSIGN_OR_RETURN(auto nccl, NcclCommunicator::create(group, device, nullptr, no));
  LamportOptions lo;
  lo.capacity_bytes = o.lamport_capacity_bytes;
  lo.timeout_s = o.lamport_timeout_s;
  SHARDLM_ASSIGN_OR_RETURN(auto lamport, LamportAllReduce::create(group, activation_dtype, device, lo, nccl.get()));
  // NCCL connects peers lazily, on a communicator's first operations, and a
  // non-blocking communicator may finish that work on a background thread:
  // inside a CUDA graph capture that launch would be lost. Run an all-gather
  // and an all-reduce now, outside any capture, so that later (captured) calls
  // find their connections made.
  {
    float* probe = nullptr;
    const int world = group.size();
    if (cudaMalloc(&probe, sizeof(float) * (1 + world) * 1024) != cudaSuccess)
      return make_error(ErrorCode::kOutOfMemory, "GPU collectives: probe buffer");
    cudaMemset(probe, 0, sizeof(float) * (1 + world) * 1024);
    cudaDeviceSynchronize();  // the memset ran on the legacy stream; NCCL uses its own
    Status st = nccl->all_gather(probe, probe + 1024, 1024, DType::kF32);
    if (st.ok()) st = nccl->all_reduce_sum(probe, 1024, DType::kF32);
    if (st.ok()) st = nccl->synchronize();
    cudaFree(probe);
    SHARDLM_TRY(st.with_context("GPU collectives: first NCCL operations"));
  }
  auto g = std::make_unique<NcclLamportCollectives>(std::move(nccl), std::move(lamport));
  SLOG_INFO("GPU collectives for {}: {}", group.prefix, g->describe());
  return std::unique_ptr<GpuCollectives>(std::move(g));
}

}  // namespace shardlm
