// Everything a rank of a tp × pp job holds to talk to the others (DESIGN §1):
// the rendezvous (store + liveness), Gloo groups (world, this stage's TP group,
// one pair per neighbouring stage at this tp position) and the ZeroMQ control
// channels of DESIGN §3.2 (one per flow). Creation order is the same on every
// rank, which is what makes the collective set-up calls line up.
//
// Failure handling: a watchdog thread watches the rendezvous for a dead rank
// or a fatal error published by any rank ("job/fatal"); the first it sees is
// handed to the on_fatal callback (the CLI logs it and exits non-zero), so no
// rank waits forever inside a collective for a peer that is gone.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "comm/communicator.h"
#include "comm/control_channel.h"
#include "comm/gloo_communicator.h"
#include "comm/launch_env.h"
#include "comm/mapping.h"
#include "comm/rendezvous.h"

namespace shardlm {

struct DistOptions {
  int tp = 1;
  int pp = 1;
  double collective_timeout_s = 60;  // every Gloo call is bounded by this
  double connect_timeout_s = 120;    // rendezvous + group set-up
  // Rank 0 only: called once its rendezvous listens, with the real port (a
  // self-spawning rank 0 binds port 0 and starts the other ranks here).
  std::function<Status(int port)> on_rendezvous_ready;
};

class DistContext {
 public:
  // Errors (before any collective) when world ≠ tp × pp, naming the fix.
  static Expected<std::unique_ptr<DistContext>> create(const LaunchInfo& launch, const DistOptions& opts);
  ~DistContext();

  const Mapping& mapping() const { return mapping_; }
  const LaunchInfo& launch() const { return launch_; }
  Rendezvous& rendezvous() { return *rv_; }
  GlooCommunicator& world() { return *world_; }
  Communicator* tp_group() { return tp_.get(); }       // null when tp == 1
  Communicator* prev_stage() { return prev_.get(); }   // pair with (tp_rank, pp_rank − 1)
  Communicator* next_stage() { return next_.get(); }   // pair with (tp_rank, pp_rank + 1)
  int prev_rank() const { return mapping_.rank_of(mapping_.tp_rank(), mapping_.pp_rank() - 1); }
  int next_rank() const { return mapping_.rank_of(mapping_.tp_rank(), mapping_.pp_rank() + 1); }

  ControlChannel& sched() { return *sched_; }  // schedules, stage to stage
  ControlChannel& count() { return *count_; }  // executed counts, stage to stage
  ControlChannel& relay() { return *relay_; }  // sampled tokens: last → 0 → … → pp−2
  ControlChannel& resp() { return *resp_; }    // sampled tokens into rank 0's coordinator
  ControlChannel& term() { return *term_; }    // shutdown

  // Publishes a fatal error of this rank for every other rank to see.
  void report_fatal(const std::string& message);
  // Starts the watchdog; on_fatal(message) is called at most once, from its thread.
  void start_watchdog(std::function<void(const std::string&)> on_fatal);

 private:
  DistContext() = default;
  LaunchInfo launch_;
  Mapping mapping_;
  std::unique_ptr<Rendezvous> rv_;
  std::unique_ptr<GlooCommunicator> world_;
  std::unique_ptr<Communicator> tp_, prev_, next_;
  std::unique_ptr<ControlChannel> sched_, count_, relay_, resp_, term_;
  std::thread watchdog_;
  std::atomic<bool> stop_{false};
};

}  // namespace shardlm
