#include "comm/rendezvous.h"

#include <unistd.h>

#include <chrono>

#include "base/clock.h"
#include "base/env.h"
#include "base/log.h"
#include "comm/rendezvous_server.h"
#include "comm/rendezvous_wire.h"

namespace shardlm {

using rdzv::Msg;
using rdzv::Reader;
using rdzv::Writer;

namespace {

std::string hostname() {
  char buf[256] = {0};
  if (gethostname(buf, sizeof(buf) - 1) != 0) return "?";
  return buf;
}

bool is_loopback(const std::string& a) {
  return a == "localhost" || a == "::1" || a.rfind("127.", 0) == 0;
}

}  // namespace

Expected<std::unique_ptr<Rendezvous>> Rendezvous::create(const RendezvousOptions& opts) {
  if (opts.world < 1 || opts.rank < 0 || opts.rank >= opts.world)
    return make_error(ErrorCode::kInvalidArgument, "rendezvous: rank {} outside [0, world {})", opts.rank, opts.world);
  if (opts.job_key.empty())
    return make_error(ErrorCode::kInvalidArgument, "rendezvous: empty job key (use resolve_job_key())");
  if (opts.heartbeat_interval_s <= 0 || opts.heartbeat_timeout_s <= opts.heartbeat_interval_s)
    return make_error(ErrorCode::kInvalidArgument, "rendezvous: heartbeat timeout must exceed the interval");
  rdzv::ignore_sigpipe();
  std::unique_ptr<Rendezvous> rv(new Rendezvous(opts));
  rv->port_ = opts.master_port;
  if (opts.rank == 0 && opts.serve) {
    auto server = rdzv::Server::start(opts.master_port, opts.world, opts.job_key, opts.heartbeat_timeout_s,
                                        opts.close_grace_s);
    if (!server.ok())
      return server.status().with_context(fmt::format("rendezvous at {}:{}", opts.master_addr, opts.master_port));
    rv->server_ = std::move(server).value();
    rv->port_ = rv->server_->port();
  }
  Deadline d(opts.connect_timeout_s);
  auto fd = rdzv::tcp_connect(opts.master_addr, rv->port_, d);
  if (!fd.ok())
    return make_error(ErrorCode::kTimeout,
                      "rank {}: cannot reach the rendezvous at {} within {:.0f} s ({}): is rank 0 running, "
                      "and are MASTER_ADDR/MASTER_PORT the rank-0 host and a port it can bind?",
                      opts.rank, rv->master(), opts.connect_timeout_s, fd.status().message());
  rv->fd_ = *fd;
  rv->local_addr_ = env_get("SHARDLM_HOST_ADDR").value_or(rdzv::local_ip(rv->fd_));
  if (opts.rank == 0 && opts.world > 1 && is_loopback(rv->local_addr_) && !is_loopback(opts.master_addr))
    SLOG_WARN("rendezvous: MASTER_ADDR '{}' resolves to loopback on rank 0, so its endpoints bind {}; if "
              "ranks on other hosts cannot connect, set SHARDLM_HOST_ADDR to this host's address",
              opts.master_addr, rv->local_addr_);
  Rendezvous* raw = rv.get();
  rv->reader_ = std::thread([raw] { raw->reader_loop(); });

  uint64_t id = rv->next_id_++;
  Writer w(Msg::kHello, id);
  w.u32(static_cast<uint32_t>(opts.rank)).u32(static_cast<uint32_t>(opts.world)).str(hostname());
  auto hello = rv->request("hello", fmt::format("rank {}", opts.rank), w.body(),
                           std::max(10.0, d.remaining_seconds()), false);
  if (!hello.ok()) return hello.status();
  rv->joined_ = true;
  SLOG_DEBUG("rendezvous: rank {} of {} joined {} (local address {})", opts.rank, opts.world, rv->master(),
             rv->local_addr_);
  return rv;
}

Rendezvous::Rendezvous(const RendezvousOptions& opts) : opts_(opts) {}

Rendezvous::~Rendezvous() {
  if (fd_ >= 0) {
    bool lost;
    {
      std::lock_guard<std::mutex> lk(mu_);
      lost = lost_.has_value();
    }
    if (!lost) {
      // Wait for the answer: the server must have read the goodbye before the
      // socket closes, or it would report this rank dead.
      uint64_t id = next_id_++;
      (void)request("bye", "", Writer(Msg::kBye, id).body(), 2.0, false);
    }
    stop_ = true;
    if (reader_.joinable()) reader_.join();
    close(fd_);
  }
  server_.reset();
}

std::string Rendezvous::master() const { return fmt::format("{}:{}", opts_.master_addr, port_); }

Status Rendezvous::send_frame(const std::string& body, double timeout_s) {
  std::string frame = rdzv::seal(opts_.job_key, body);
  std::lock_guard<std::mutex> lk(write_mu_);
  return rdzv::write_all(fd_, frame, Deadline(timeout_s));
}

Expected<std::string> Rendezvous::request(const std::string& op, const std::string& what, const std::string& body,
                                          double timeout_s, bool blocking) {
  Reader hr(body);
  Msg type;
  uint64_t id;
  rdzv::parse_header(hr, &type, &id);
  auto context = [&] {
    return fmt::format("rendezvous {} '{}' (rank {}, master {})", op, what, opts_.rank, master());
  };
  Pending p;
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (lost_) return lost_->with_context(context());
    pending_[id] = &p;
  }
  // A blocking request is timed by the server (it answers kTimeout); the client
  // allows a grace period on top before it calls rank 0 unresponsive.
  double grace = blocking ? opts_.heartbeat_timeout_s + 2.0 : 0.0;
  Status sent = send_frame(body, std::max(timeout_s, 1.0));
  std::unique_lock<std::mutex> lk(mu_);
  if (sent.ok()) {
    auto until = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                    std::chrono::duration<double>(std::max(timeout_s, 0.0) + grace));
    cv_.wait_until(lk, until, [&] { return p.done; });
  }
  pending_.erase(id);
  if (!sent.ok()) return sent.with_context(context());
  if (!p.done)
    return make_error(ErrorCode::kTimeout, "{}: no answer from rank 0 within {:.1f} s", context(),
                      timeout_s + grace);
  if (p.status.ok()) return std::move(p.value);
  if (p.status.code() == ErrorCode::kTimeout)
    return make_error(ErrorCode::kTimeout, "{} timed out after {:.1f} s: {}", context(), timeout_s,
                      p.status.message());
  return p.status.with_context(context());
}

Status Rendezvous::set(const std::string& key, std::string_view value, double timeout_s) {
  uint64_t id = next_id_++;
  return request("set", key, Writer(Msg::kSet, id).str(key).str(value).body(), pick_timeout(timeout_s), false)
      .status();
}

Expected<std::string> Rendezvous::get(const std::string& key, double timeout_s) {
  double t = pick_timeout(timeout_s);
  uint64_t id = next_id_++;
  return request("get", key, Writer(Msg::kGet, id).str(key).i64(static_cast<int64_t>(t * 1000)).body(), t, true);
}

Status Rendezvous::wait(const std::vector<std::string>& keys, double timeout_s) {
  double t = pick_timeout(timeout_s);
  uint64_t id = next_id_++;
  Writer w(Msg::kWait, id);
  w.u32(static_cast<uint32_t>(keys.size()));
  std::string what;
  for (const auto& k : keys) {
    w.str(k);
    what += (what.empty() ? "" : "', '") + k;
  }
  w.i64(static_cast<int64_t>(t * 1000));
  return request("wait", what, w.body(), t, true).status();
}

Expected<int64_t> Rendezvous::add(const std::string& key, int64_t delta, double timeout_s) {
  uint64_t id = next_id_++;
  SHARDLM_ASSIGN_OR_RETURN(std::string v, request("add", key, Writer(Msg::kAdd, id).str(key).i64(delta).body(),
                                                  pick_timeout(timeout_s), false));
  return static_cast<int64_t>(std::stoll(v));
}

Expected<bool> Rendezvous::check(const std::vector<std::string>& keys, double timeout_s) {
  uint64_t id = next_id_++;
  Writer w(Msg::kCheck, id);
  w.u32(static_cast<uint32_t>(keys.size()));
  for (const auto& k : keys) w.str(k);
  SHARDLM_ASSIGN_OR_RETURN(std::string v,
                           request("check", keys.empty() ? "" : keys[0], w.body(), pick_timeout(timeout_s), false));
  return v == "1";
}

Status Rendezvous::del(const std::string& key, double timeout_s) {
  uint64_t id = next_id_++;
  return request("del", key, Writer(Msg::kDel, id).str(key).body(), pick_timeout(timeout_s), false).status();
}

Status Rendezvous::barrier(const std::string& name, double timeout_s, int count) {
  double t = pick_timeout(timeout_s);
  if (count < 0) count = opts_.world;
  int gen;
  {
    std::lock_guard<std::mutex> lk(mu_);
    gen = barrier_gen_[name]++;
  }
  Deadline d(t);
  std::string key = fmt::format("__barrier/{}/{}", name, gen);
  SHARDLM_ASSIGN_OR_RETURN(int64_t n, add(key, 1, t));
  if (n == count) SHARDLM_TRY(set(key + "/done", "1", d.remaining_seconds()));
  Status st = wait({key + "/done"}, std::max(0.0, d.remaining_seconds()));
  if (st.code() == ErrorCode::kTimeout) {
    auto arrived = add(key, 0, 5.0);
    return make_error(ErrorCode::kTimeout, "barrier '{}' timed out after {:.1f} s: {} of {} ranks arrived ({})", name,
                      t, arrived.ok() ? std::to_string(*arrived) : "?", count, st.message());
  }
  return st;
}

int Rendezvous::next_sequence(const std::string& name) {
  std::lock_guard<std::mutex> lk(mu_);
  return sequences_[name]++;
}

// ---- liveness ------------------------------------------------------------------

void Rendezvous::on_peer_lost(std::function<void(const PeerLoss&)> cb) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    callback_ = std::move(cb);
  }
  deliver_losses();
}

// Hands every recorded loss not yet delivered to the callback, in order, once.
void Rendezvous::deliver_losses() {
  std::lock_guard<std::mutex> serial(callback_mu_);
  while (true) {
    PeerLoss loss;
    std::function<void(const PeerLoss&)> cb;
    {
      std::lock_guard<std::mutex> lk(mu_);
      if (!callback_ || delivered_ >= losses_.size()) return;
      loss = losses_[delivered_++];
      cb = callback_;
    }
    cb(loss);
  }
}

std::vector<PeerLoss> Rendezvous::losses() const {
  std::lock_guard<std::mutex> lk(mu_);
  return losses_;
}

std::vector<int> Rendezvous::dead_ranks() const {
  std::lock_guard<std::mutex> lk(mu_);
  std::vector<int> out;
  for (const auto& l : losses_)
    if (!l.clean) out.push_back(l.rank);
  return out;
}

Status Rendezvous::health() const {
  std::lock_guard<std::mutex> lk(mu_);
  for (const auto& l : losses_)
    if (!l.clean) return make_error(ErrorCode::kAborted, "rank {} died: {}", l.rank, l.reason);
  return Status::Ok();
}

int Rendezvous::rejected_messages() const { return server_ ? server_->rejected() : 0; }

bool Rendezvous::record_loss_locked(const PeerLoss& loss) {
  for (const auto& l : losses_)
    if (l.rank == loss.rank) return false;
  losses_.push_back(loss);
  return true;
}

void Rendezvous::report_loss(const PeerLoss& loss) {
  if (loss.clean) {
    SLOG_INFO("rendezvous: {}", loss.reason);
  } else {
    SLOG_ERROR("rendezvous: rank {} is gone: {}", loss.rank, loss.reason);
  }
  deliver_losses();
}

void Rendezvous::add_loss(PeerLoss loss) {
  bool added;
  {
    std::lock_guard<std::mutex> lk(mu_);
    added = record_loss_locked(loss);
  }
  if (added) report_loss(loss);
}

void Rendezvous::connection_lost(const std::string& why, bool clean) {
  PeerLoss loss{0, clean, why};
  bool added = false;
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (lost_) return;
    lost_ = Status(ErrorCode::kAborted, why);
    // Recorded before any waiting caller wakes up, so it sees the loss. Before
    // HELLO was answered this is a failed join (create() reports it), not a loss.
    if (joined_ && (opts_.rank != 0 || clean)) added = record_loss_locked(loss);
    for (auto& [id, p] : pending_) {
      p->done = true;
      p->status = *lost_;
    }
  }
  cv_.notify_all();
  if (added) report_loss(loss);
}

void Rendezvous::handle_frame(const std::string& body) {
  Reader r(body);
  Msg type;
  uint64_t id;
  if (!rdzv::parse_header(r, &type, &id)) return;
  switch (type) {
    case Msg::kReply: {
      uint8_t code;
      std::string msg, value;
      if (!r.u8(&code) || !r.str(&msg) || !r.str(&value)) return;
      {
        std::lock_guard<std::mutex> lk(mu_);
        auto it = pending_.find(id);
        if (it == pending_.end()) return;  // its caller gave up already
        it->second->done = true;
        it->second->status = code == 0 ? Status::Ok() : Status(static_cast<ErrorCode>(code), msg);
        it->second->value = std::move(value);
      }
      cv_.notify_all();
      return;
    }
    case Msg::kPong: {
      uint32_t n;
      if (!r.u32(&n)) return;
      for (uint32_t i = 0; i < n; ++i) {
        int32_t rank;
        std::string why;
        if (!r.i32(&rank) || !r.str(&why)) return;
        add_loss(PeerLoss{rank, false, why});
      }
      return;
    }
    case Msg::kDead: {
      int32_t rank;
      std::string why;
      if (r.i32(&rank) && r.str(&why)) add_loss(PeerLoss{rank, false, why});
      return;
    }
    case Msg::kClosing:
      connection_lost(fmt::format("rank 0 closed the rendezvous at {} (the job is shutting down)", master()), true);
      return;
    case Msg::kReject: {
      std::string msg;
      r.str(&msg);
      connection_lost(fmt::format("the rendezvous at {} rejected this rank's message ({}): every rank must use "
                                  "the same job key (SHARDLM_JOB_KEY / --job-key)",
                                  master(), msg),
                      false);
      return;
    }
    default:
      return;
  }
}

void Rendezvous::reader_loop() {
  std::string buf;
  double last_rx = now_seconds();
  double next_ping = last_rx + opts_.heartbeat_interval_s;
  while (!stop_) {
    double now = now_seconds();
    int wait_ms = static_cast<int>(std::clamp((next_ping - now) * 1000, 0.0, 100.0));
    auto n = rdzv::read_some(fd_, buf, wait_ms);
    if (stop_) return;
    if (!n.ok()) {
      connection_lost(fmt::format("lost the connection to the rendezvous at {} ({}): rank 0 died or was killed",
                                  master(), n.status().message()),
                      false);
      return;
    }
    now = now_seconds();
    if (*n > 0) last_rx = now;
    while (true) {
      std::string body;
      rdzv::Take t = rdzv::take_frame(buf, opts_.job_key, &body);
      if (t == rdzv::Take::kNeedMore) break;
      if (t == rdzv::Take::kBadMac) {
        connection_lost(fmt::format("a message from the rendezvous at {} failed the HMAC check: every rank must "
                                    "use the same job key (SHARDLM_JOB_KEY / --job-key)",
                                    master()),
                        false);
        return;
      }
      if (t == rdzv::Take::kGarbage) {
        connection_lost(fmt::format("the rendezvous at {} sent a malformed frame (not a shardlm rendezvous?)", master()),
                        false);
        return;
      }
      handle_frame(body);
      std::lock_guard<std::mutex> lk(mu_);
      if (lost_) return;  // closing or rejected
    }
    if (now >= next_ping) {
      next_ping = now + opts_.heartbeat_interval_s;
      Status st = send_frame(Writer(Msg::kPing, 0).body(), opts_.heartbeat_timeout_s);
      if (!st.ok() && !stop_) {
        connection_lost(fmt::format("heartbeat to the rendezvous at {} failed ({}): rank 0 died or is hung", master(),
                                    st.message()),
                        false);
        return;
      }
    }
    if (now - last_rx > opts_.heartbeat_timeout_s) {
      connection_lost(fmt::format("no answer from the rendezvous at {} for {:.1f} s: rank 0 hung or the network "
                                  "is down",
                                  master(), now - last_rx),
                      false);
      return;
    }
  }
}

}  // namespace shardlm
