// NcclCommunicator: see nccl_communicator.h. Init sequence:
//   setenv NCCL_NVLS_ENABLE=0 (unless set) → index 0: ncclGetUniqueId, publish
//   hex(id) → others: get it (bounded) → ncclCommInitRankConfig(blocking = 0)
//   → poll ncclCommGetAsyncError until not ncclInProgress (bounded; a dead peer
//   seen by the rendezvous aborts the wait) → start the watchdog.
// Non-blocking mode: an enqueue may return ncclInProgress; we then poll the
// async error until ncclSuccess before returning (bounded), as NCCL requires
// before the next call on the communicator.
#include "comm/nccl_communicator.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <cstring>

#include "base/clock.h"
#include "base/log.h"
#include "comm/rendezvous.h"

namespace shardlm {
namespace {

std::string hex(const void* p, size_t n) {
  static const char* d = "0123456789abcdef";
  std::string s;
  for (size_t i = 0; i < n; ++i) {
    unsigned char c = static_cast<const unsigned char*>(p)[i];
    s.push_back(d[c >> 4]);
    s.push_back(d[c & 15]);
  }
  return s;
}
bool unhex(const std::string& s, void* out, size_t n) {
  if (s.size() != 2 * n) return false;
  for (size_t i = 0; i < n; ++i) {
    unsigned v = 0;
    if (std::sscanf(s.c_str() + 2 * i, "%2x", &v) != 1) return false;
    static_cast<unsigned char*>(out)[i] = static_cast<unsigned char>(v);
  }
  return true;
}

}  // namespace

ncclDataType_t to_nccl(DType t) {
  switch (t) {
    case DType::kF32: return ncclFloat32;
    case DType::kF16: return ncclFloat16;
    case DType::kBF16: return ncclBfloat16;
    case DType::kI32: return ncclInt32;
  }
  return ncclFloat32;
}

Expected<std::unique_ptr<NcclCommunicator>> NcclCommunicator::create(const CommGroup& group, int device,
                                                                     cudaStream_t stream, NcclOptions opts) {
  if (!group.rv) return make_error(ErrorCode::kInvalidArgument, "NCCL communicator: no rendezvous");
  setenv("NCCL_NVLS_ENABLE", "0", /*overwrite=*/0);
  if (const char* v = std::getenv("NCCL_NVLS_ENABLE"); v && std::string(v) != "0")
    SLOG_WARN("NCCL_NVLS_ENABLE={} from the environment: NVLink multicast may be used", v);

  std::unique_ptr<NcclCommunicator> c(new NcclCommunicator());
  c->group_ = group;
  c->rank_ = group.index;
  c->size_ = group.size();
  c->device_ = device;
  c->opts_ = opts;
  if (stream) {
    c->stream_ = stream;
  } else {
    if (cudaStreamCreateWithFlags(&c->stream_, cudaStreamNonBlocking) != cudaSuccess)
      return make_error(ErrorCode::kInternal, "NCCL communicator: cudaStreamCreate failed");
    c->own_stream_ = true;
  }
  if (cudaMalloc(&c->barrier_buf_, sizeof(int)) != cudaSuccess)
    return make_error(ErrorCode::kOutOfMemory, "NCCL communicator: cudaMalloc of the barrier int failed");

  const std::string key = fmt::format("{}/nccl/{}/id", group.prefix, group.rv->next_sequence(group.prefix + "/nccl"));
  ncclUniqueId id;
  if (group.index == 0) {
    ncclResult_t r = ncclGetUniqueId(&id);
    if (r != ncclSuccess)
      return make_error(ErrorCode::kInternal, "ncclGetUniqueId: {}", ncclGetErrorString(r));
    SHARDLM_TRY(group.rv->set(key, hex(&id, sizeof(id)), opts.timeout_s));
  } else {
    SHARDLM_ASSIGN_OR_RETURN(std::string v, group.rv->get(key, opts.timeout_s));
    if (!unhex(v, &id, sizeof(id))) return make_error(ErrorCode::kFormat, "NCCL id under {} is malformed", key);
  }
  ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
  cfg.blocking = 0;
  ncclResult_t r = ncclCommInitRankConfig(&c->comm_, c->size_, id, c->rank_, &cfg);
  if (r != ncclSuccess && r != ncclInProgress)
    return make_error(ErrorCode::kInternal, "ncclCommInitRankConfig (rank {} of {}): {}", c->rank_, c->size_,
                      ncclGetErrorString(r));
  SHARDLM_TRY(c->wait_ready("ncclCommInitRankConfig", opts.timeout_s));
  c->watchdog_ = std::thread([p = c.get()] { p->watchdog(); });
  SLOG_INFO("NCCL communicator {}: rank {} of {} on device {} (non-blocking, watchdog every {} ms)",
            group.prefix, c->rank_, c->size_, device, opts.poll_interval_s * 1e3);
  return c;
}

NcclCommunicator::~NcclCommunicator() {
  stop_ = true;
  if (watchdog_.joinable()) watchdog_.join();
  if (comm_) {
    if (aborted_) {
      // already aborted: the handle is gone
    } else if (cudaStreamQuery(stream_) == cudaSuccess) {
      ncclCommFinalize(comm_);
      Deadline d(10);  // finalize is non-blocking too: bounded wait, then abort
      ncclResult_t st = ncclInProgress;
      while (!d.expired() && ncclCommGetAsyncError(comm_, &st) == ncclSuccess && st == ncclInProgress)
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      if (st == ncclSuccess) ncclCommDestroy(comm_);
      else ncclCommAbort(comm_);
    } else {
      ncclCommAbort(comm_);  // work still queued: do not wait for peers
    }
  }
  if (barrier_buf_) cudaFree(barrier_buf_);
  if (own_stream_) cudaStreamDestroy(stream_);
}

Status NcclCommunicator::health() const {
  std::lock_guard<std::mutex> l(status_mu_);
  return failure_;
}

void NcclCommunicator::abort(const std::string& why) {
  std::lock_guard<std::mutex> l(nccl_mu_);
  abort_locked(why);
}

// Caller holds nccl_mu_ (or no other thread can touch comm_ yet).
void NcclCommunicator::abort_locked(const std::string& why) {
  if (aborted_.exchange(true)) return;
  {
    std::lock_guard<std::mutex> s(status_mu_);
    failure_ = make_error(ErrorCode::kAborted, "NCCL communicator {} aborted: {} (last op: {})", group_.prefix, why,
                          last_op_);
  }
  SLOG_ERROR("NCCL communicator {} rank {}: aborting: {}", group_.prefix, rank_, why);
  ncclCommAbort(comm_);
}

void NcclCommunicator::watchdog() {
  const auto period = std::chrono::duration<double>(opts_.poll_interval_s);
  while (!stop_ && !aborted_) {
    std::this_thread::sleep_for(period);
    ncclResult_t st = ncclSuccess;
    {
      std::lock_guard<std::mutex> l(nccl_mu_);
      if (aborted_) break;
      ncclCommGetAsyncError(comm_, &st);
    }
    if (st != ncclSuccess && st != ncclInProgress) {
      abort(fmt::format("asynchronous NCCL error: {} ({})", ncclGetErrorString(st), ncclGetLastError(comm_)));
      break;
    }
    if (group_.rv) {
      Status h = group_.rv->health();
      if (!h.ok()) {
        abort("the rendezvous reports a lost peer: " + h.message());
        break;
      }
    }
  }
}

// Polls until the last call left ncclInProgress; bounded; on error, a dead
// peer or the deadline it aborts (recording why) and returns the error.
Status NcclCommunicator::wait_ready(const char* what, double timeout_s) {
  Deadline d(timeout_s);
  for (;;) {
    ncclResult_t st = ncclSuccess;
    if (ncclCommGetAsyncError(comm_, &st) != ncclSuccess) st = ncclInternalError;
    if (st == ncclSuccess) return Status::Ok();
    Status e;
    if (st != ncclInProgress) {
      e = make_error(ErrorCode::kInternal, "{}: {}", what, ncclGetErrorString(st));
    } else if (group_.rv && !group_.rv->health().ok()) {
      e = group_.rv->health().with_context(what);
    } else if (d.expired()) {
      e = make_error(ErrorCode::kTimeout, "{}: not complete after {:.0f} s (rank {} of {})", what, timeout_s, rank_,
                     size_);
    } else {
      std::this_thread::sleep_for(std::chrono::microseconds(200));
      continue;
    }
    abort_locked(e.message());
    return e;
  }
}

Status NcclCommunicator::enqueued(ncclResult_t r, const char* what) {
  if (r == ncclInProgress) SHARDLM_TRY(wait_ready(what, opts_.timeout_s));
  else if (r != ncclSuccess) return make_error(ErrorCode::kInternal, "{}: {}", what, ncclGetErrorString(r));
  if (opts_.synchronous) return synchronize();
  return Status::Ok();
}

#define SHARDLM_NCCL_OP(name, call)                  \
  do {                                               \
    SHARDLM_TRY(health());                           \
    std::lock_guard<std::mutex> _l(nccl_mu_);        \
    if (aborted_) return health();                   \
    last_op_ = name;                                 \
    return enqueued((call), name);                   \
  } while (0)

Status NcclCommunicator::all_reduce_sum(void* data, size_t count, DType dtype) {
  return all_reduce_sum(data, data, count, dtype);
}
Status NcclCommunicator::all_reduce_sum(const void* in, void* out, size_t count, DType dtype) {
  SHARDLM_NCCL_OP("ncclAllReduce", ncclAllReduce(in, out, count, to_nccl(dtype), ncclSum, comm_, stream_));
}
Status NcclCommunicator::all_gather(const void* in, void* out, size_t count, DType dtype) {
  SHARDLM_NCCL_OP("ncclAllGather", ncclAllGather(in, out, count, to_nccl(dtype), comm_, stream_));
}
Status NcclCommunicator::broadcast(void* data, size_t bytes, int root) {
  SHARDLM_NCCL_OP("ncclBroadcast", ncclBroadcast(data, data, bytes, ncclUint8, root, comm_, stream_));
}
Status NcclCommunicator::send(const void* data, size_t bytes, int peer, int tag) {
  SHARDLM_NCCL_OP("ncclSend", ncclSend(data, bytes, ncclUint8, peer, comm_, stream_));
}
Status NcclCommunicator::recv(void* data, size_t bytes, int peer, int tag) {
  SHARDLM_NCCL_OP("ncclRecv", ncclRecv(data, bytes, ncclUint8, peer, comm_, stream_));
}
Status NcclCommunicator::barrier() {
  SHARDLM_TRY(all_reduce_sum(barrier_buf_, 1, DType::kI32));
  return synchronize();
}

Status NcclCommunicator::synchronize() {
  Deadline d(opts_.timeout_s);
  for (;;) {
    SHARDLM_TRY(health());
    cudaError_t e = cudaStreamQuery(stream_);
    if (e == cudaSuccess) return health();
    if (e != cudaErrorNotReady)
      return make_error(ErrorCode::kInternal, "NCCL stream after {}: {}", last_op_, cudaGetErrorString(e));
    if (d.expired()) {
      abort(fmt::format("synchronize timed out after {:.0f} s", opts_.timeout_s));
      return make_error(ErrorCode::kTimeout, "NCCL {} did not complete within {:.0f} s (rank {} of {}); aborted",
                        last_op_, opts_.timeout_s, rank_, size_);
    }
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
}

}  // namespace shardlm
