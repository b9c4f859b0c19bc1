// Gloo implementation of Communicator for CPU ranks (DESIGN §1 planes).
//
// A group is any list of global ranks (the TP group of a stage, a PP pair or
// ring: same tp position across stages, …). Every member calls
// make_gloo_communicator with the same group name and rank list, in the same
// order relative to its other group creations; the pairs are connected
// full-mesh over Gloo's TCP transport bound to the rank's host address (the
// interface that reaches rank 0, Rendezvous::local_address()), with the pair
// addresses exchanged through a gloo Store built on the rendezvous under
// "gloo/<name>#<generation>/<ranks hash>/".
//
// Bounded: the context timeout (timeout_s) applies to connecting and to every
// collective and send/recv. A Gloo error (timeout, peer gone) is returned as a
// Status naming the group, the operation and Gloo's detail (the peer address),
// and poisons the communicator: Gloo aborts the whole context on a timeout, so
// every later call returns the same error instead of hanging or mismatching.
//
// Semantics worth knowing:
//   - send() completes when the peer has posted the matching recv (Gloo's
//     unbound buffers rendezvous), so it is synchronous like MPI_Ssend; both
//     sides must agree on the byte count (a mismatch is a Gloo enforce error);
//   - tags are user p2p slots (any uint32), separate from collective slots;
//   - calls are serialised by a mutex: threads that must communicate at the same
//     time (e.g. a relay thread beside the main loop) should each own a
//     communicator (create two groups with different names);
//   - f16/bf16 all-reduce converts through f32; results are bitwise identical
//     on every rank (ring all-reduce reduces each chunk once and broadcasts it).
// Process-wide side effect: SIGPIPE is ignored (Gloo writes with writev, and a
// peer that died must become an error, not a silent kill of this rank).
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "comm/communicator.h"
#include "comm/rendezvous.h"

namespace gloo {
class Context;
}

namespace shardlm {

enum class ReduceOp { kSum, kMin, kMax };

class GlooCommunicator : public Communicator {
 public:
  ~GlooCommunicator() override;
  int rank() const override { return rank_; }
  int size() const override { return static_cast<int>(global_ranks_.size()); }

  Status all_reduce_sum(void* data, size_t count, DType dtype) override;
  Status all_gather(const void* in, void* out, size_t count, DType dtype) override;
  Status broadcast(void* data, size_t bytes, int root) override;
  Status send(const void* data, size_t bytes, int peer, int tag) override;
  Status recv(void* data, size_t bytes, int peer, int tag) override;
  Status barrier() override;

  // Beyond the interface: min/max (the warmup agreement is an allreduce(MIN)).
  Status all_reduce(void* data, size_t count, DType dtype, ReduceOp op);

  const std::string& name() const { return name_; }
  const std::vector<int>& global_ranks() const { return global_ranks_; }
  // The error that poisoned this communicator (Ok while healthy).
  Status health() const;

 private:
  friend Expected<std::unique_ptr<Communicator>> make_gloo_communicator(Rendezvous&, const std::string&,
                                                                         const std::vector<int>&, int, double);
  GlooCommunicator() = default;
  template <typename F>
  Status run(const char* op, F&& f);
  std::string describe() const;

  std::string name_;
  std::vector<int> global_ranks_;
  int rank_ = 0;
  double timeout_s_ = 0;
  std::shared_ptr<gloo::Context> ctx_;  // null for a group of one
  uint32_t tag_ = 0;                    // collective sequence number
  mutable std::mutex mu_;
  Status broken_;
};

// Creates (and connects) the group `group_name` made of `global_ranks` (in
// group-rank order; my_global_rank must be one of them). A group of one needs no
// connection and is the identity. Errors: invalid ranks, a member that does not
// join within timeout_s (kTimeout naming the group), transport failures.
Expected<std::unique_ptr<Communicator>> make_gloo_communicator(Rendezvous& rv, const std::string& group_name,
                                                              const std::vector<int>& global_ranks,
                                                              int my_global_rank, double timeout_s);

}  // namespace shardlm
