// LamportAllReduce: see lamport_allreduce.h. create(): workspace of
// lamport_workspace_bytes(W, capacity) per rank through SymmetricBuffer, a
// kernel fills it with the dtype's −0 and resets the flags, the device is
// synchronised, and a rendezvous barrier makes sure no peer stores into a
// workspace that is not initialised yet.
#include "comm/lamport_allreduce.h"

#include <chrono>
#include <cstdint>
#include <thread>

#include "base/clock.h"
#include "base/log.h"
#include "comm/nccl_communicator.h"
#include "comm/rendezvous.h"

namespace shardlm {
namespace kc = kernels::cuda;
namespace {

const char* op_name(uint32_t op) {
  switch (op) {
    case kc::kOpOneShot: return "Lamport one-shot all-reduce";
    case kc::kOpTwoShot: return "Lamport two-shot all-reduce";
    case kc::kOpFusedOneShot: return "Lamport one-shot all-reduce+residual+RMSNorm";
    case kc::kOpFusedTwoShot: return "Lamport two-shot all-reduce+residual+RMSNorm";
  }
  return "Lamport all-reduce";
}

}  // namespace

Expected<std::unique_ptr<LamportAllReduce>> LamportAllReduce::create(const CommGroup& group, DType dtype, int device,
                                                                     LamportOptions opts, NcclCommunicator* nccl) {
  const int world = group.size();
  if (world < 1 || world > kc::kLamportMaxRanks)
    return make_error(ErrorCode::kUnsupported, "Lamport all-reduce: world {} outside 1..{}", world,
                      kc::kLamportMaxRanks);
  std::unique_ptr<LamportAllReduce> a(new LamportAllReduce());
  a->dtype_ = dtype;
  switch (dtype) {
    case DType::kF32: a->kdt_ = kc::LamportDType::kF32; break;
    case DType::kF16: a->kdt_ = kc::LamportDType::kF16; break;
    case DType::kBF16: a->kdt_ = kc::LamportDType::kBF16; break;
    default: return make_error(ErrorCode::kUnsupported, "Lamport all-reduce: dtype {}", dtype_name(dtype));
  }
  a->opts_ = opts;
  a->nccl_ = nccl;
  const size_t cap = (opts.capacity_bytes + 15) / 16 * 16;
  // kClearVecs is a uint32 count of 16-byte vectors.
  if (cap / 16 > 0xffffffffull) return make_error(ErrorCode::kInvalidArgument, "Lamport capacity too large");
  const size_t bytes = kc::lamport_workspace_bytes(world, cap);
  SHARDLM_ASSIGN_OR_RETURN(a->ws_, SymmetricBuffer::create(group, "lamport_" + std::string(dtype_name(dtype)), bytes,
                                                           device));
  if (cudaMalloc(&a->flags_, kc::kLamportFlagCount * sizeof(uint32_t)) != cudaSuccess ||
      cudaMallocHost(&a->host_flags_, kc::kLamportFlagCount * sizeof(uint32_t)) != cudaSuccess)
    return make_error(ErrorCode::kOutOfMemory, "Lamport all-reduce: flags allocation failed");
  int sms = 0;
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  auto& p = a->params_;
  for (int i = 0; i < world; ++i) p.peer_ws[i] = a->ws_->peer(i);
  p.flags = a->flags_;
  p.rank = group.index;
  p.world = world;
  p.capacity_bytes = cap;
  p.timeout_ns = static_cast<unsigned long long>(opts.timeout_s * 1e9);
  p.max_blocks = opts.max_blocks > 0 ? opts.max_blocks : (sms > 0 ? sms : 1);
  p.pdl = opts.pdl;
  p.fused_reg_max_rows = opts.fused_reg_max_rows;
  p.fused_block_vectors = opts.fused_block_vectors;
  p.fused_whole_row = opts.fused_whole_row;
  SHARDLM_TRY(a->launched(kc::lamport_init(a->ws_->local(), bytes, a->kdt_, a->flags_, cap, nullptr),
                          "lamport_init"));
  if (cudaError_t e = cudaDeviceSynchronize(); e != cudaSuccess)
    return make_error(ErrorCode::kInternal, "Lamport init: {}", cudaGetErrorString(e));
  SHARDLM_TRY(group.rv->barrier(group.prefix + "/lamport_ready", 120, world));
  SLOG_INFO("Lamport all-reduce ({}): rank {} of {}, capacity {} bytes, {} bytes of workspace per rank, {} blocks max",
            dtype_name(dtype), p.rank, world, cap, bytes, p.max_blocks);
  return a;
}

LamportAllReduce::~LamportAllReduce() {
  if (flags_) cudaFree(flags_);
  if (host_flags_) cudaFreeHost(host_flags_);
}

AllReduceAlgo LamportAllReduce::pick(size_t count) const {
  return pick_allreduce(params_.world, count * dtype_size(dtype_), params_.capacity_bytes);
}

Status LamportAllReduce::launched(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return Status::Ok();
  return make_error(ErrorCode::kInternal, "{}: {}", what, cudaGetErrorString(e));
}

Status LamportAllReduce::all_reduce(const void* in, void* out, size_t count, cudaStream_t stream,
                                    std::optional<AllReduceAlgo> algo) {
  SHARDLM_TRY(poisoned_);
  const size_t bytes = count * dtype_size(dtype_);
  AllReduceAlgo a = pick_allreduce(params_.world, bytes, params_.capacity_bytes, algo);
  if (params_.world == 1) {
    if (in != out && bytes) return launched(cudaMemcpyAsync(out, in, bytes, cudaMemcpyDeviceToDevice, stream), "copy");
    return Status::Ok();
  }
  const bool aligned = ((reinterpret_cast<uintptr_t>(in) | reinterpret_cast<uintptr_t>(out)) & 15) == 0;
  if (!aligned && a != AllReduceAlgo::kNccl) {
    // The kernels move 16-byte vectors; engine buffers are always aligned.
    if (algo || !nccl_)
      return make_error(ErrorCode::kInvalidArgument, "Lamport all-reduce needs 16-byte aligned in/out pointers");
    a = AllReduceAlgo::kNccl;
  }
  if (a == AllReduceAlgo::kNccl) {
    if (!nccl_)
      return make_error(ErrorCode::kUnsupported, "all-reduce of {} bytes needs NCCL (Lamport capacity {})", bytes,
                        params_.capacity_bytes);
    cudaStream_t old = nccl_->stream();
    nccl_->set_stream(stream);
    Status st = nccl_->all_reduce_sum(in, out, count, dtype_);
    nccl_->set_stream(old);
    return st;
  }
  return launched(kc::lamport_allreduce(params_, kdt_, in, out, count, a == AllReduceAlgo::kTwoShot, stream),
                  a == AllReduceAlgo::kTwoShot ? "lamport two-shot launch" : "lamport one-shot launch");
}

Status LamportAllReduce::all_reduce_add_rmsnorm(const void* in, const void* residual, const void* weight, float eps,
                                                void* out_residual, void* out, int rows, int hidden,
                                                cudaStream_t stream, std::optional<AllReduceAlgo> algo) {
  SHARDLM_TRY(poisoned_);
  const size_t bytes = static_cast<size_t>(rows) * hidden * dtype_size(dtype_);
  if (hidden % (16 / static_cast<int>(dtype_size(dtype_))) != 0)
    return make_error(ErrorCode::kUnsupported, "fused all-reduce: hidden {} not a multiple of a 16-byte vector",
                      hidden);
  for (const void* ptr : {in, residual, weight, static_cast<const void*>(out_residual), static_cast<const void*>(out)})
    if (reinterpret_cast<uintptr_t>(ptr) & 15)
      return make_error(ErrorCode::kInvalidArgument, "fused all-reduce needs 16-byte aligned pointers");
  AllReduceAlgo a = pick_allreduce(params_.world, bytes, params_.capacity_bytes, algo);
  if (a == AllReduceAlgo::kNccl)
    return make_error(ErrorCode::kUnsupported, "fused all-reduce of {} bytes exceeds the Lamport capacity {}", bytes,
                      params_.capacity_bytes);
  return launched(kc::lamport_allreduce_add_rmsnorm(params_, kdt_, in, residual, weight, eps, out_residual, out, rows,
                                                    hidden, a == AllReduceAlgo::kTwoShot, stream),
                  "lamport fused launch");
}

Status LamportAllReduce::check(cudaStream_t stream) {
  SHARDLM_TRY(poisoned_);
  Deadline d(opts_.timeout_s + 30);  // every kernel wait ends by timeout_s
  for (;;) {
    cudaError_t e = cudaStreamQuery(stream);
    if (e == cudaSuccess) break;
    if (e != cudaErrorNotReady) return make_error(ErrorCode::kInternal, "Lamport stream: {}", cudaGetErrorString(e));
    if (d.expired())
      return poisoned_ = make_error(ErrorCode::kTimeout, "Lamport all-reduce stream still busy after {:.0f} s",
                                    opts_.timeout_s + 30);
    std::this_thread::sleep_for(std::chrono::microseconds(20));
  }
  if (cudaError_t e = cudaMemcpy(host_flags_, flags_, kc::kLamportFlagCount * sizeof(uint32_t),
                                 cudaMemcpyDeviceToHost);
      e != cudaSuccess)
    return make_error(ErrorCode::kInternal, "reading Lamport flags: {}", cudaGetErrorString(e));
  const uint32_t err = host_flags_[kc::kError];
  if (err == 0) return Status::Ok();
  poisoned_ = make_error(ErrorCode::kTimeout,
                         "{} (rank {} of {}): timed out after {:.1f} s waiting for rank {}; the peer never joined "
                         "or died",
                         op_name(err >> 16), params_.rank, params_.world, opts_.timeout_s,
                         static_cast<int>(err & 0xffff) - 1);
  return poisoned_;
}

}  // namespace shardlm
