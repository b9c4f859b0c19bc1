// Rendezvous (DESIGN §1): rank 0 listens at MASTER_ADDR:MASTER_PORT and serves a
// small key-value store; every rank (rank 0 included, over TCP to itself) is a
// client. It is the one fixed port of a job: every other endpoint (Gloo pairs,
// ZeroMQ channels, NCCL ids) binds port 0 and is published here — never probe a
// free port and bind it later (vLLM #39015). The pattern:
//
//     bind("tcp://<rv.local_address()>:0") → read back the real endpoint →
//     rv.set("<what>/<rank>", endpoint) → peers rv.get("<what>/<rank>", timeout)
//
// Guarantees:
//   - every call is bounded: a wait that expires returns kTimeout naming the key
//     and the master address; clients retry the first connection until
//     connect_timeout_s (rank 0 may start after them);
//   - every message (both directions) carries HMAC-SHA256(job key, body); the
//     server rejects and logs a message with a bad MAC without applying it, and
//     the client reports a job-key mismatch (see resolve_job_key in
//     launch_env.h for where the key comes from — integrity, not secrecy);
//   - liveness: each client sends a heartbeat every heartbeat_interval_s on its
//     connection (from its own thread, so a rank busy computing still beats).
//     The server declares a rank dead when its connection closes without a
//     goodbye (kill -9 closes the socket: noticed at once) or when it is silent
//     for heartbeat_timeout_s (hung host, lost network), then pushes "rank r
//     died: why" to every client and fails every pending and later wait for
//     a missing key with kAborted (the job cannot continue; set/get of present
//     keys still work). A client that loses rank 0 (EOF, or no answer for
//     heartbeat_timeout_s) reports rank 0 dead and fails every call. With the
//     defaults (1 s, 5 s) every surviving rank learns of a death at once for a
//     killed process and within ~5.5 s for a hung one. A clean exit
//     (destructor) says goodbye and is no death; rank 0's destructor serves on
//     until the others have left (at most close_grace_s) and its close is
//     reported to the rest as a clean loss of rank 0.
// Thread-safe: calls from several threads run concurrently on one connection
// (requests carry ids), so a thread blocked in get() does not block a set().
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "base/status.h"

namespace shardlm {

namespace rdzv {
class Server;
}

struct RendezvousOptions {
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;  // rank 0 may pass 0 (ephemeral; read back with port())
  int rank = 0;
  int world = 1;
  std::string job_key;      // resolve_job_key(); must be identical on every rank
  double connect_timeout_s = 300;  // first connection + HELLO, retried until then
  double timeout_s = 300;          // default for calls given no timeout
  double heartbeat_interval_s = 1.0;
  double heartbeat_timeout_s = 5.0;
  bool serve = true;  // rank 0 starts the server (false: it is run elsewhere, tests)
  // Rank 0's destructor keeps serving until every other rank has said goodbye
  // or gone, at most this long, so ranks finishing a last barrier or get do
  // not see the store vanish under them.
  double close_grace_s = 3.0;
};

// A rank that is gone. `clean`: it left on purpose (only ever rank 0 closing
// the job: workers leaving cleanly are not reported).
struct PeerLoss {
  int rank = -1;
  bool clean = false;
  std::string reason;
};

class Rendezvous {
 public:
  // Rank 0 (with serve) binds the port and starts the server first; then every
  // rank connects (retrying until connect_timeout_s) and says HELLO, which fails
  // on a world-size mismatch, a rank claimed twice, or a job-key mismatch.
  static Expected<std::unique_ptr<Rendezvous>> create(const RendezvousOptions& opts);
  // Says goodbye (a clean leave) and stops the heartbeat thread; rank 0 then
  // serves until the others have left (at most close_grace_s), tells the rest
  // the rendezvous is closing, and stops the server.
  ~Rendezvous();
  Rendezvous(const Rendezvous&) = delete;
  Rendezvous& operator=(const Rendezvous&) = delete;

  // timeout_s < 0 means options.timeout_s.
  Status set(const std::string& key, std::string_view value, double timeout_s = -1);
  // Waits until `key` is present, then returns its value.
  Expected<std::string> get(const std::string& key, double timeout_s = -1);
  // Waits until every key is present.
  Status wait(const std::vector<std::string>& keys, double timeout_s = -1);
  // Atomic counter (value kept as a decimal string, so get() reads it): adds
  // delta and returns the new value.
  Expected<int64_t> add(const std::string& key, int64_t delta, double timeout_s = -1);
  // true if every key is present (never waits for them).
  Expected<bool> check(const std::vector<std::string>& keys, double timeout_s = -1);
  Status del(const std::string& key, double timeout_s = -1);
  // Every one of `count` ranks (default: world) calls barrier(name); returns
  // when all have. Reusable: each call with the same name is a new generation.
  Status barrier(const std::string& name, double timeout_s = -1, int count = -1);

  // 0, 1, 2, … per name on this process: ranks that create the same objects in
  // the same order agree on it, so it makes store keys unique per generation.
  int next_sequence(const std::string& name);

  int rank() const { return opts_.rank; }
  int world() const { return opts_.world; }
  int port() const { return port_; }  // the real port (after an ephemeral bind)
  const std::string& job_key() const { return opts_.job_key; }
  // "host:port" of the master, for messages.
  std::string master() const;
  // This host's address on the interface that reaches rank 0 (the local end
  // of the rendezvous connection): what other endpoints should bind and
  // publish. SHARDLM_HOST_ADDR overrides it (like GLOO_SOCKET_IFNAME): needed
  // on rank 0 when MASTER_ADDR resolves to loopback there (Debian's 127.0.1.1
  // hostname entry) yet ranks on other hosts must reach it; a warning says so.
  const std::string& local_address() const { return local_addr_; }

  // ---- liveness ----
  // Called once per lost rank, in order (from the heartbeat thread, or from
  // this call for losses already known). Keep it short; never call back into
  // this Rendezvous's blocking methods or on_peer_lost from it.
  void on_peer_lost(std::function<void(const PeerLoss&)> cb);
  std::vector<PeerLoss> losses() const;
  std::vector<int> dead_ranks() const;  // unclean losses only
  // Ok while no rank died; else kAborted naming the first dead rank.
  Status health() const;
  // Messages the server rejected for a bad HMAC (rank 0 with serve only; tests).
  int rejected_messages() const;

 private:
  struct Pending {
    bool done = false;
    Status status;
    std::string value;
  };

  explicit Rendezvous(const RendezvousOptions& opts);
  Expected<std::string> request(const std::string& op, const std::string& what, const std::string& body,
                                double timeout_s, bool blocking);
  double pick_timeout(double t) const { return t < 0 ? opts_.timeout_s : t; }
  void reader_loop();
  void handle_frame(const std::string& body);
  void add_loss(PeerLoss loss);
  bool record_loss_locked(const PeerLoss& loss);  // requires mu_
  void report_loss(const PeerLoss& loss);         // log + callback, without mu_
  void deliver_losses();
  void connection_lost(const std::string& why, bool clean);
  Status send_frame(const std::string& body, double timeout_s);

  RendezvousOptions opts_;
  std::unique_ptr<rdzv::Server> server_;
  int port_ = 0;
  int fd_ = -1;
  std::string local_addr_;
  std::atomic<uint64_t> next_id_{1};
  std::atomic<bool> stop_{false};
  std::atomic<bool> joined_{false};  // HELLO answered: losses are reported from then on
  std::thread reader_;

  std::mutex write_mu_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::map<uint64_t, Pending*> pending_;
  std::optional<Status> lost_;  // set once the connection to rank 0 is gone
  std::vector<PeerLoss> losses_;
  std::function<void(const PeerLoss&)> callback_;
  std::mutex callback_mu_;  // serialises callback calls
  size_t delivered_ = 0;    // losses_ handed to callback_
  std::map<std::string, int> sequences_;
  std::map<std::string, int> barrier_gen_;
};

}  // namespace shardlm
