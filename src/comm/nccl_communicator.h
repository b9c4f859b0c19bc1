// NCCL behind the Communicator interface (DESIGN §1 GPU data plane, issue 6
// item 1). Pointers are device pointers; every op is enqueued on stream().
//
// Failure handling: the communicator is created non-blocking
// (ncclConfig_t.blocking = 0), so no NCCL call can hang the caller. A watchdog
// thread polls ncclCommGetAsyncError and the rendezvous' liveness every
// poll_interval_s; on an NCCL error or a dead peer it calls ncclCommAbort,
// which makes every kernel of this communicator return, and every later call
// fails with the recorded reason (kAborted). Waits are bounded:
// synchronize() polls cudaStreamQuery until timeout_s, then aborts and returns
// kTimeout naming the op that was last enqueued. NCCL_NVLS_ENABLE is set to 0
// before init when the environment does not set it (NVLink multicast can take
// a shared host's GPUs out of service; see the device notes).
//
// `tag` of send/recv is not used: NCCL orders point-to-point traffic per peer
// pair on one communicator, which is what the PP relay needs.
#pragma once

#include <cuda_runtime.h>
#include <nccl.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "comm/communicator.h"
#include "comm/symmetric_buffer.h"

namespace shardlm {

struct NcclOptions {
  double timeout_s = 300;          // init and synchronize()
  double poll_interval_s = 0.002;  // watchdog period
  bool synchronous = false;        // synchronize() after every op (tests, debugging)
};

class NcclCommunicator : public Communicator {
 public:
  // Collective over the group: group index 0 creates the ncclUniqueId and
  // publishes it under "<prefix>/nccl/<seq>/id". `stream` may be null (a
  // non-blocking stream of our own is created). The current device must be
  // `device`.
  static Expected<std::unique_ptr<NcclCommunicator>> create(const CommGroup& group, int device,
                                                            cudaStream_t stream = nullptr,
                                                            NcclOptions opts = {});
  ~NcclCommunicator() override;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  Status all_reduce_sum(void* data, size_t count, DType dtype) override;
  Status all_reduce_sum(const void* in, void* out, size_t count, DType dtype);  // out of place
  Status all_gather(const void* in, void* out, size_t count, DType dtype) override;
  Status broadcast(void* data, size_t bytes, int root) override;
  Status send(const void* data, size_t bytes, int peer, int tag) override;
  Status recv(void* data, size_t bytes, int peer, int tag) override;
  Status barrier() override;  // an all-reduce of one int, then synchronize()

  // Waits (bounded) for everything enqueued on stream(); aborts on timeout.
  Status synchronize();
  cudaStream_t stream() const { return stream_; }
  void set_stream(cudaStream_t s) { stream_ = s; }
  ncclComm_t comm() const { return comm_; }
  // Ok, or why the communicator was aborted.
  Status health() const;
  // Aborts now (tests; the watchdog's action).
  void abort(const std::string& why);

 private:
  NcclCommunicator() = default;
  Status wait_ready(const char* what, double timeout_s);  // ncclInProgress → done
  Status enqueued(ncclResult_t r, const char* what);
  void watchdog();
  void abort_locked(const std::string& why);

  CommGroup group_;
  int rank_ = 0, size_ = 1, device_ = 0;
  NcclOptions opts_;
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
  bool own_stream_ = false;
  int* barrier_buf_ = nullptr;  // device int for barrier()
  std::string last_op_ = "none";
  std::mutex nccl_mu_;  // serialises NCCL calls with the watchdog's abort
  mutable std::mutex status_mu_;
  Status failure_;
  std::atomic<bool> aborted_{false};
  std::atomic<bool> stop_{false};
  std::thread watchdog_;
};

ncclDataType_t to_nccl(DType t);

}  // namespace shardlm
