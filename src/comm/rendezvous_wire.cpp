#include "comm/rendezvous_wire.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <thread>

#include "comm/hmac.h"

namespace shardlm::rdzv {

Writer::Writer(Msg type, uint64_t id) {
  u8(static_cast<uint8_t>(type));
  i64(static_cast<int64_t>(id));
}
Writer& Writer::u8(uint8_t v) {
  b_.push_back(static_cast<char>(v));
  return *this;
}
Writer& Writer::u32(uint32_t v) {
  for (int s = 24; s >= 0; s -= 8) b_.push_back(static_cast<char>((v >> s) & 0xff));
  return *this;
}
Writer& Writer::i64(int64_t v) {
  auto u = static_cast<uint64_t>(v);
  for (int s = 56; s >= 0; s -= 8) b_.push_back(static_cast<char>((u >> s) & 0xff));
  return *this;
}
Writer& Writer::str(std::string_view s) {
  u32(static_cast<uint32_t>(s.size()));
  b_.append(s);
  return *this;
}

bool Reader::u8(uint8_t* v) {
  if (s_.empty()) return false;
  *v = static_cast<uint8_t>(s_[0]);
  s_.remove_prefix(1);
  return true;
}
bool Reader::u32(uint32_t* v) {
  if (s_.size() < 4) return false;
  uint32_t x = 0;
  for (int i = 0; i < 4; ++i) x = (x << 8) | static_cast<uint8_t>(s_[i]);
  s_.remove_prefix(4);
  *v = x;
  return true;
}
bool Reader::i32(int32_t* v) {
  uint32_t x;
  if (!u32(&x)) return false;
  *v = static_cast<int32_t>(x);
  return true;
}
bool Reader::i64(int64_t* v) {
  if (s_.size() < 8) return false;
  uint64_t x = 0;
  for (int i = 0; i < 8; ++i) x = (x << 8) | static_cast<uint8_t>(s_[i]);
  s_.remove_prefix(8);
  *v = static_cast<int64_t>(x);
  return true;
}
bool Reader::str(std::string* v) {
  uint32_t n;
  if (!u32(&n) || s_.size() < n) return false;
  v->assign(s_.data(), n);
  s_.remove_prefix(n);
  return true;
}

bool parse_header(Reader& r, Msg* type, uint64_t* id) {
  uint8_t t;
  int64_t i;
  if (!r.u8(&t) || !r.i64(&i)) return false;
  *type = static_cast<Msg>(t);
  *id = static_cast<uint64_t>(i);
  return true;
}

std::string seal(std::string_view key, const std::string& body) {
  Mac mac = hmac_sha256(key, body);
  uint32_t len = static_cast<uint32_t>(kMacSize + body.size());
  std::string f;
  f.reserve(4 + len);
  for (int s = 24; s >= 0; s -= 8) f.push_back(static_cast<char>((len >> s) & 0xff));
  f.append(reinterpret_cast<const char*>(mac.data()), kMacSize);
  f.append(body);
  return f;
}

Take take_frame(std::string& buf, std::string_view key, std::string* body) {
  if (buf.size() < 4) return Take::kNeedMore;
  uint32_t len = 0;
  for (int i = 0; i < 4; ++i) len = (len << 8) | static_cast<uint8_t>(buf[i]);
  if (len < kMacSize + 9 || len > kMaxFrame) return Take::kGarbage;
  if (buf.size() < 4 + static_cast<size_t>(len)) return Take::kNeedMore;
  std::string_view b(buf.data() + 4 + kMacSize, len - kMacSize);
  bool ok = hmac_verify(key, buf.data() + 4, b);
  if (ok) body->assign(b);
  buf.erase(0, 4 + static_cast<size_t>(len));
  return ok ? Take::kFrame : Take::kBadMac;
}

// ---- sockets -----------------------------------------------------------------

void ignore_sigpipe() {
  struct sigaction sa;
  std::memset(&sa, 0, sizeof(sa));
  sigaction(SIGPIPE, nullptr, &sa);
  if (sa.sa_handler == SIG_DFL) {
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, nullptr);
  }
}

void set_nonblocking(int fd) {
  int fl = fcntl(fd, F_GETFL, 0);
  fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

static void set_common_opts(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  fcntl(fd, F_SETFD, FD_CLOEXEC);
}

Expected<int> tcp_listen(int port, int* bound) {
  int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
  bool v6 = fd >= 0;
  if (!v6) fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return make_error(ErrorCode::kIo, "socket(): {}", std::strerror(errno));
  int one = 1, zero = 0;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  int rc;
  if (v6) {
    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
    sockaddr_in6 a{};
    a.sin6_family = AF_INET6;
    a.sin6_addr = in6addr_any;
    a.sin6_port = htons(static_cast<uint16_t>(port));
    rc = bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  } else {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_ANY);
    a.sin_port = htons(static_cast<uint16_t>(port));
    rc = bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  }
  if (rc != 0 || listen(fd, 1024) != 0) {
    int e = errno;
    close(fd);
    return make_error(ErrorCode::kIo,
                      "rank 0 cannot listen on port {} ({}): another job or process is using it; set "
                      "MASTER_PORT to a free port",
                      port, std::strerror(e));
  }
  sockaddr_storage ss{};
  socklen_t sl = sizeof(ss);
  getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &sl);
  *bound = ss.ss_family == AF_INET6 ? ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port)
                                    : ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  set_nonblocking(fd);
  return fd;
}

// One non-blocking connect attempt to a resolved address, bounded by `ms`.
static int connect_one(const addrinfo* ai, int ms, std::string* err) {
  int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
  if (fd < 0) {
    *err = std::strerror(errno);
    return -1;
  }
  set_nonblocking(fd);
  int rc = connect(fd, ai->ai_addr, ai->ai_addrlen);
  if (rc != 0 && errno == EINPROGRESS) {
    pollfd p{fd, POLLOUT, 0};
    rc = poll(&p, 1, ms);
    if (rc == 1) {
      int soerr = 0;
      socklen_t sl = sizeof(soerr);
      getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
      rc = soerr == 0 ? 0 : -1;
      errno = soerr;
    } else {
      rc = -1;
      errno = ETIMEDOUT;
    }
  }
  if (rc != 0) {
    *err = std::strerror(errno);
    close(fd);
    return -1;
  }
  set_common_opts(fd);
  return fd;
}

Expected<int> tcp_connect(const std::string& host, int port, const Deadline& d) {
  std::string err = "no attempt";
  int backoff_ms = 50;
  while (true) {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* res = nullptr;
    int gai = getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &res);
    if (gai != 0) {
      err = fmt::format("cannot resolve '{}': {}", host, gai_strerror(gai));
    } else {
      for (addrinfo* ai = res; ai; ai = ai->ai_next) {
        int ms = static_cast<int>(std::max(1.0, std::min(5.0, d.remaining_seconds()) * 1000));
        int fd = connect_one(ai, ms, &err);
        if (fd >= 0) {
          freeaddrinfo(res);
          return fd;
        }
      }
      freeaddrinfo(res);
    }
    if (d.expired()) break;
    // Rank 0 may start later than this rank: retry with a capped backoff.
    double sleep_s = std::min(backoff_ms / 1000.0, std::max(0.0, d.remaining_seconds()));
    std::this_thread::sleep_for(std::chrono::duration<double>(sleep_s));
    backoff_ms = std::min(backoff_ms * 2, 1000);
    if (d.expired()) break;
  }
  return make_error(ErrorCode::kTimeout, "cannot connect to {}:{} ({})", host, port, err);
}

Status write_all(int fd, std::string_view data, const Deadline& d) {
  while (!data.empty()) {
    ssize_t n = send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n > 0) {
      data.remove_prefix(static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      int ms = static_cast<int>(d.remaining_seconds() * 1000);
      if (ms <= 0) return make_error(ErrorCode::kTimeout, "send blocked (peer not reading)");
      pollfd p{fd, POLLOUT, 0};
      poll(&p, 1, std::min(ms, 1000));
      continue;
    }
    return make_error(ErrorCode::kIo, "send: {}", std::strerror(errno));
  }
  return Status::Ok();
}

Expected<size_t> read_some(int fd, std::string& buf, int timeout_ms) {
  pollfd p{fd, POLLIN, 0};
  int rc = poll(&p, 1, timeout_ms);
  if (rc < 0 && errno != EINTR) return make_error(ErrorCode::kIo, "poll: {}", std::strerror(errno));
  if (rc <= 0) return size_t{0};
  size_t total = 0;
  char tmp[65536];
  while (true) {
    ssize_t n = recv(fd, tmp, sizeof(tmp), 0);
    if (n > 0) {
      buf.append(tmp, static_cast<size_t>(n));
      total += static_cast<size_t>(n);
      if (static_cast<size_t>(n) < sizeof(tmp)) return total;
      continue;
    }
    if (n == 0) {
      if (total > 0) return total;  // report EOF on the next call
      return make_error(ErrorCode::kAborted, "connection closed by peer");
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return total;
    return make_error(ErrorCode::kAborted, "recv: {}", std::strerror(errno));
  }
}

static std::string addr_str(const sockaddr_storage& ss, bool with_port) {
  char host[INET6_ADDRSTRLEN] = "?";
  int port = 0;
  if (ss.ss_family == AF_INET) {
    auto* a = reinterpret_cast<const sockaddr_in*>(&ss);
    inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host));
    port = ntohs(a->sin_port);
  } else if (ss.ss_family == AF_INET6) {
    auto* a = reinterpret_cast<const sockaddr_in6*>(&ss);
    if (IN6_IS_ADDR_V4MAPPED(&a->sin6_addr)) {
      inet_ntop(AF_INET, &a->sin6_addr.s6_addr[12], host, sizeof(host));
    } else {
      inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host));
    }
    port = ntohs(a->sin6_port);
  }
  return with_port ? fmt::format("{}:{}", host, port) : std::string(host);
}

std::string local_ip(int fd) {
  sockaddr_storage ss{};
  socklen_t sl = sizeof(ss);
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &sl) != 0) return "127.0.0.1";
  return addr_str(ss, false);
}

std::string peer_str(int fd) {
  sockaddr_storage ss{};
  socklen_t sl = sizeof(ss);
  if (getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &sl) != 0) return "?";
  return addr_str(ss, true);
}

}  // namespace shardlm::rdzv
