#include "comm/rendezvous_server.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <map>
#include <unordered_map>
#include <vector>

#include "base/clock.h"
#include "base/log.h"
#include "comm/rendezvous_wire.h"

namespace shardlm::rdzv {
namespace {

struct Conn {
  int fd = -1;
  std::string peer;    // ip:port
  std::string in, out;
  int rank = -1;       // after HELLO
  std::string host;
  double last_seen = 0;
  bool bye = false;    // said goodbye: its EOF is a clean leave
  bool closing = false;  // close once `out` is flushed (after a reject)
  bool dead = false;     // closed; removed at the end of the iteration
};

struct Waiter {
  int conn;
  uint64_t id;
  std::vector<std::string> keys;
  bool want_value;  // GET (value) vs WAIT (ok)
  double deadline;
};

std::string int_str(int64_t v) { return std::to_string(v); }

// The whole server state, touched only by the server thread.
class Loop {
 public:
  Loop(int world, const std::string& key, double hb_timeout_s, std::atomic<int>* rejected)
      : world_(world), key_(key), hb_timeout_s_(hb_timeout_s), rejected_(rejected) {}

  void accept_all(int listen_fd) {
    while (true) {
      int fd = accept4(listen_fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) return;
      Conn c;
      c.fd = fd;
      c.peer = peer_str(fd);
      c.last_seen = now_seconds();
      conns_.emplace(next_conn_++, std::move(c));
    }
  }

  void fill_pollfds(std::vector<pollfd>& fds, std::vector<int>& ids) {
    for (auto& [id, c] : conns_) {
      short ev = POLLIN;
      if (!c.out.empty()) ev |= POLLOUT;
      fds.push_back(pollfd{c.fd, ev, 0});
      ids.push_back(id);
    }
  }

  int poll_timeout_ms() const {
    double t = 0.2;
    double now = now_seconds();
    for (const auto& w : waiters_) t = std::min(t, std::max(0.0, w.deadline - now));
    return static_cast<int>(t * 1000) + 1;
  }

  void on_readable(int id) {
    auto it = conns_.find(id);
    if (it == conns_.end() || it->second.dead) return;
    Conn& c = it->second;
    auto n = read_some(c.fd, c.in, 0);
    if (!n.ok()) {
      close_conn(id, "its connection closed without a goodbye (the process died or was killed)");
      return;
    }
    while (!c.dead && !c.closing) {
      std::string body;
      Take t = take_frame(c.in, key_, &body);
      if (t == Take::kNeedMore) break;
      if (t == Take::kGarbage) {
        SLOG_WARN("rendezvous: dropping connection from {}: not a shardlm frame", c.peer);
        close_conn(id, "it sent a malformed frame");
        return;
      }
      if (t == Take::kBadMac) {
        rejected_->fetch_add(1);
        SLOG_WARN("rendezvous: rejected a message with a bad HMAC from {}{}: not applied (is the job "
                  "key the same on every rank? SHARDLM_JOB_KEY / --job-key)",
                  c.peer, c.rank >= 0 ? fmt::format(" (rank {})", c.rank) : "");
        queue(c, Writer(Msg::kReject, 0).str("message rejected: bad HMAC (job key mismatch)").body());
        c.closing = true;
        return;
      }
      c.last_seen = now_seconds();
      handle(id, c, body);
    }
  }

  void flush(int id) {
    auto it = conns_.find(id);
    if (it == conns_.end() || it->second.dead) return;
    Conn& c = it->second;
    while (!c.out.empty()) {
      ssize_t n = send(c.fd, c.out.data(), c.out.size(), MSG_NOSIGNAL);
      if (n > 0) {
        c.out.erase(0, static_cast<size_t>(n));
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
      close_conn(id, "its connection broke (the process died or was killed)");
      return;
    }
    if (c.closing) close_conn(id, "it used the wrong job key");
  }

  void tick() {
    double now = now_seconds();
    // Expired waits reply kTimeout (the client adds the master address).
    for (size_t i = 0; i < waiters_.size();) {
      if (waiters_[i].deadline <= now) {
        Waiter w = std::move(waiters_[i]);
        waiters_.erase(waiters_.begin() + static_cast<long>(i));
        reply_to(w.conn, w.id, ErrorCode::kTimeout, fmt::format("key '{}' not set", first_missing(w.keys)));
      } else {
        ++i;
      }
    }
    // Silent ranks: no frame (heartbeats included) for hb_timeout_s_.
    for (auto& [id, c] : conns_) {
      if (c.dead || c.rank < 0 || c.bye) continue;
      if (now - c.last_seen > hb_timeout_s_)
        close_conn(id, fmt::format("no heartbeat for {:.1f} s (host hung or network lost)", now - c.last_seen));
    }
    for (auto it = conns_.begin(); it != conns_.end();) it = it->second.dead ? conns_.erase(it) : std::next(it);
  }

  // Registered ranks still connected that have not said goodbye.
  int live_clients() const {
    int n = 0;
    for (const auto& [id, c] : conns_) n += !c.dead && c.rank >= 0 && !c.bye;
    return n;
  }

  // Clean shutdown: tell everyone, flush briefly, close.
  void shutdown() {
    for (auto& [id, c] : conns_)
      if (!c.dead) queue(c, Writer(Msg::kClosing, 0).body());
    Deadline d(1.0);
    while (!d.expired()) {
      bool pending = false;
      for (auto& [id, c] : conns_) {
        if (c.dead || c.out.empty()) continue;
        ssize_t n = send(c.fd, c.out.data(), c.out.size(), MSG_NOSIGNAL);
        if (n > 0) c.out.erase(0, static_cast<size_t>(n));
        if (n < 0 && errno != EAGAIN && errno != EINTR) c.out.clear();
        pending |= !c.out.empty();
      }
      if (!pending) break;
      usleep(1000);
    }
    for (auto& [id, c] : conns_)
      if (!c.dead) close(c.fd);
    conns_.clear();
  }

 private:
  void queue(Conn& c, const std::string& body) { c.out += seal(key_, body); }

  void reply_to(int conn, uint64_t id, ErrorCode code, const std::string& msg, const std::string& value = "") {
    auto it = conns_.find(conn);
    if (it == conns_.end() || it->second.dead) return;
    queue(it->second, Writer(Msg::kReply, id).u8(static_cast<uint8_t>(code)).str(msg).str(value).body());
  }

  std::string first_missing(const std::vector<std::string>& keys) const {
    for (const auto& k : keys)
      if (!store_.count(k)) return k;
    return keys.empty() ? "" : keys[0];
  }

  bool all_present(const std::vector<std::string>& keys) const {
    return std::all_of(keys.begin(), keys.end(), [&](const std::string& k) { return store_.count(k) > 0; });
  }

  std::string dead_summary() const {
    auto it = dead_.begin();
    return fmt::format("rank {} died ({}); the job cannot continue", it->first, it->second);
  }

  void wake_waiters() {
    for (size_t i = 0; i < waiters_.size();) {
      if (all_present(waiters_[i].keys)) {
        Waiter w = std::move(waiters_[i]);
        waiters_.erase(waiters_.begin() + static_cast<long>(i));
        reply_to(w.conn, w.id, ErrorCode::kOk, "", w.want_value ? store_[w.keys[0]] : "");
      } else {
        ++i;
      }
    }
  }

  void close_conn(int id, const std::string& why) {
    auto it = conns_.find(id);
    if (it == conns_.end() || it->second.dead) return;
    Conn& c = it->second;
    close(c.fd);
    c.dead = true;
    waiters_.erase(std::remove_if(waiters_.begin(), waiters_.end(), [&](const Waiter& w) { return w.conn == id; }),
                   waiters_.end());
    if (c.rank < 0) return;
    if (rank_conn_.count(c.rank) && rank_conn_[c.rank] == id) rank_conn_.erase(c.rank);
    if (c.bye) return;
    mark_dead(c.rank, fmt::format("rank {} on {} ({}): {}", c.rank, c.host, c.peer, why));
  }

  void mark_dead(int rank, const std::string& reason) {
    if (dead_.count(rank)) return;
    dead_[rank] = reason;
    SLOG_ERROR("rendezvous: {}", reason);
    for (auto& [id, c] : conns_)
      if (!c.dead && c.rank >= 0) queue(c, Writer(Msg::kDead, 0).u32(static_cast<uint32_t>(rank)).str(reason).body());
    // Nothing that waits can succeed any more: fail every pending wait now.
    auto ws = std::move(waiters_);
    waiters_.clear();
    for (auto& w : ws) reply_to(w.conn, w.id, ErrorCode::kAborted, dead_summary());
  }

  void handle(int id, Conn& c, const std::string& body) {
    Reader r(body);
    Msg type;
    uint64_t rid;
    if (!parse_header(r, &type, &rid)) return;
    auto bad = [&] { reply_to(id, rid, ErrorCode::kFormat, "malformed request"); };
    if (c.rank < 0 && type != Msg::kHello) {
      reply_to(id, rid, ErrorCode::kInvalidArgument, "the first message must be HELLO");
      return;
    }
    switch (type) {
      case Msg::kHello: {
        int32_t rank, world;
        std::string host;
        if (!r.i32(&rank) || !r.i32(&world) || !r.str(&host)) return bad();
        if (world != world_)
          return reply_to(id, rid, ErrorCode::kInvalidArgument,
                          fmt::format("world size mismatch: rank 0 runs a world of {}, rank {} on {} says {} "
                                      "(every rank must be launched with the same world size)",
                                      world_, rank, host, world));
        if (rank < 0 || rank >= world_)
          return reply_to(id, rid, ErrorCode::kInvalidArgument, fmt::format("rank {} outside [0, {})", rank, world_));
        if (rank_conn_.count(rank))
          return reply_to(id, rid, ErrorCode::kInvalidArgument,
                          fmt::format("rank {} is already connected from {}: two processes claim the same "
                                      "rank (check the launcher's rank variables)",
                                      rank, conns_[rank_conn_[rank]].host));
        if (dead_.count(rank))
          return reply_to(id, rid, ErrorCode::kAborted, fmt::format("rank {} was already declared dead", rank));
        c.rank = rank;
        c.host = host;
        rank_conn_[rank] = id;
        return reply_to(id, rid, ErrorCode::kOk, "");
      }
      case Msg::kSet: {
        std::string k, v;
        if (!r.str(&k) || !r.str(&v)) return bad();
        store_[k] = std::move(v);
        reply_to(id, rid, ErrorCode::kOk, "");
        return wake_waiters();
      }
      case Msg::kGet:
      case Msg::kWait: {
        std::vector<std::string> keys;
        int64_t timeout_ms;
        if (type == Msg::kGet) {
          keys.emplace_back();
          if (!r.str(&keys[0])) return bad();
        } else {
          uint32_t n;
          if (!r.u32(&n) || n > 1000000) return bad();
          keys.resize(n);
          for (auto& k : keys)
            if (!r.str(&k)) return bad();
        }
        if (!r.i64(&timeout_ms)) return bad();
        if (all_present(keys))
          return reply_to(id, rid, ErrorCode::kOk, "", type == Msg::kGet ? store_[keys[0]] : "");
        if (!dead_.empty()) return reply_to(id, rid, ErrorCode::kAborted, dead_summary());
        if (timeout_ms <= 0)
          return reply_to(id, rid, ErrorCode::kTimeout, fmt::format("key '{}' not set", first_missing(keys)));
        waiters_.push_back(Waiter{id, rid, std::move(keys), type == Msg::kGet, now_seconds() + timeout_ms / 1000.0});
        return;
      }
      case Msg::kAdd: {
        std::string k;
        int64_t delta;
        if (!r.str(&k) || !r.i64(&delta)) return bad();
        int64_t cur = 0;
        auto it = store_.find(k);
        if (it != store_.end()) {
          const std::string& s = it->second;
          auto res = std::from_chars(s.data(), s.data() + s.size(), cur);
          if (res.ec != std::errc() || res.ptr != s.data() + s.size())
            return reply_to(id, rid, ErrorCode::kInvalidArgument,
                            fmt::format("add on key '{}' whose value is not an integer", k));
        }
        cur += delta;
        store_[k] = int_str(cur);
        reply_to(id, rid, ErrorCode::kOk, "", int_str(cur));
        return wake_waiters();
      }
      case Msg::kCheck: {
        uint32_t n;
        if (!r.u32(&n) || n > 1000000) return bad();
        std::vector<std::string> keys(n);
        for (auto& k : keys)
          if (!r.str(&k)) return bad();
        return reply_to(id, rid, ErrorCode::kOk, "", all_present(keys) ? "1" : "0");
      }
      case Msg::kDel: {
        std::string k;
        if (!r.str(&k)) return bad();
        store_.erase(k);
        return reply_to(id, rid, ErrorCode::kOk, "");
      }
      case Msg::kPing: {
        Writer w(Msg::kPong, rid);
        w.u32(static_cast<uint32_t>(dead_.size()));
        for (const auto& [rank, why] : dead_) w.u32(static_cast<uint32_t>(rank)).str(why);
        return queue(c, w.body());
      }
      case Msg::kBye:
        c.bye = true;
        return reply_to(id, rid, ErrorCode::kOk, "");
      default:
        return reply_to(id, rid, ErrorCode::kInvalidArgument, "unknown request type");
    }
  }

  int world_;
  const std::string& key_;
  double hb_timeout_s_;
  std::atomic<int>* rejected_;
  int next_conn_ = 0;
  std::map<int, Conn> conns_;
  std::unordered_map<std::string, std::string> store_;
  std::vector<Waiter> waiters_;
  std::map<int, int> rank_conn_;
  std::map<int, std::string> dead_;
};

}  // namespace

Expected<std::unique_ptr<Server>> Server::start(int port, int world, std::string job_key,
                                                double heartbeat_timeout_s, double close_grace_s) {
  ignore_sigpipe();
  std::unique_ptr<Server> s(new Server());
  SHARDLM_ASSIGN_OR_RETURN(s->listen_fd_, tcp_listen(port, &s->port_));
  s->wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (s->wake_fd_ < 0) {
    close(s->listen_fd_);
    return make_error(ErrorCode::kIo, "eventfd: {}", std::strerror(errno));
  }
  s->world_ = world;
  s->key_ = std::move(job_key);
  s->hb_timeout_s_ = heartbeat_timeout_s;
  s->close_grace_s_ = close_grace_s;
  Server* raw = s.get();
  s->thread_ = std::thread([raw] { raw->run(); });
  return s;
}

Server::~Server() {
  drain_deadline_ = now_seconds() + close_grace_s_;
  draining_ = true;
  uint64_t one = 1;
  if (write(wake_fd_, &one, sizeof(one)) < 0) { /* the loop also checks draining_ every 200 ms */ }
  if (thread_.joinable()) thread_.join();
  close(listen_fd_);
  close(wake_fd_);
}

void Server::run() {
  Loop loop(world_, key_, hb_timeout_s_, &rejected_);
  std::vector<pollfd> fds;
  std::vector<int> ids;
  while (true) {
    fds.clear();
    ids.clear();
    fds.push_back(pollfd{wake_fd_, POLLIN, 0});
    fds.push_back(pollfd{listen_fd_, POLLIN, 0});
    loop.fill_pollfds(fds, ids);
    int rc = poll(fds.data(), fds.size(), loop.poll_timeout_ms());
    if (rc < 0 && errno != EINTR) {
      SLOG_ERROR("rendezvous server: poll: {}", std::strerror(errno));
      break;
    }
    if (rc > 0) {
      if (fds[0].revents & POLLIN) {
        uint64_t v;
        if (read(wake_fd_, &v, sizeof(v)) < 0) { /* nothing to drain */ }
      }
      if (fds[1].revents & POLLIN) loop.accept_all(listen_fd_);
      for (size_t i = 0; i < ids.size(); ++i) {
        short re = fds[i + 2].revents;
        if (re & (POLLIN | POLLHUP | POLLERR)) loop.on_readable(ids[i]);
      }
    }
    for (int id : ids) loop.flush(id);
    loop.tick();
    if (draining_ && (loop.live_clients() == 0 || now_seconds() >= drain_deadline_.load())) break;
  }
  loop.shutdown();
}

}  // namespace shardlm::rdzv
