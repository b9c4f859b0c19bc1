// Internal: the key-value server rank 0 runs for the rendezvous (one background
// thread, poll() over every connection; see rendezvous.h for the protocol's
// guarantees). Only Rendezvous creates it.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "base/status.h"

namespace shardlm::rdzv {

class Server {
 public:
  // Binds every interface at `port` (0 = ephemeral) and starts serving.
  static Expected<std::unique_ptr<Server>> start(int port, int world, std::string job_key,
                                                 double heartbeat_timeout_s, double close_grace_s);
  // Keeps serving until every other rank has said goodbye or disconnected (at
  // most close_grace_s: a rank finishing its last barrier must not see the
  // store vanish), then tells the remaining clients the rendezvous is closing
  // (a clean shutdown, not a death), flushes for at most a second, and joins.
  ~Server();
  int port() const { return port_; }
  // Messages dropped for a bad HMAC (tests).
  int rejected() const { return rejected_.load(); }

 private:
  Server() = default;
  void run();

  int port_ = 0;
  int world_ = 0;
  std::string key_;
  double hb_timeout_s_ = 5;
  double close_grace_s_ = 3;
  std::atomic<bool> draining_{false};
  std::atomic<double> drain_deadline_{0};
  int listen_fd_ = -1;
  int wake_fd_ = -1;
  std::atomic<int> rejected_{0};
  std::thread thread_;
};

}  // namespace shardlm::rdzv
