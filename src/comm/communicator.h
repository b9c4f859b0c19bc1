// The data-plane interface every backend's collectives go through (DESIGN §1
// planes). Gloo implements it for CPU ranks, NCCL (+ the Lamport all-reduce)
// for GPUs. A single-rank group is the identity and needs no implementation.
// Every call is bounded: an expired wait returns kTimeout naming the peer.
#pragma once

#include <cstddef>
#include <cstdint>

#include "base/status.h"
#include "tensor/dtype.h"

namespace shardlm {

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;  // within this group
  virtual int size() const = 0;

  // In-place sum over the group; `data` holds `count` elements of `dtype`.
  virtual Status all_reduce_sum(void* data, size_t count, DType dtype) = 0;
  // out[size() × count] = concat of every rank's in[count], in rank order.
  virtual Status all_gather(const void* in, void* out, size_t count, DType dtype) = 0;
  virtual Status broadcast(void* data, size_t bytes, int root) = 0;
  virtual Status send(const void* data, size_t bytes, int peer, int tag) = 0;
  virtual Status recv(void* data, size_t bytes, int peer, int tag) = 0;
  virtual Status barrier() = 0;
};

}  // namespace shardlm
