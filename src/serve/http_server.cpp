// HTTP/1.1 over POSIX sockets: one accept thread, one thread per connection.
// A connection loops: read a request (headers up to "\r\n\r\n", then a body by
// Content-Length or chunked transfer coding) → handler → keep-alive or close.
// Waits are poll() slices of 200 ms so stop_accepting() is noticed promptly.
#include "serve/http_server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <thread>

#include "base/clock.h"
#include "base/log.h"

namespace shardlm::serve {
namespace {

constexpr int kPollSliceMs = 200;            // how often blocked reads look at the stop flag
constexpr size_t kMaxHeaderBytes = 64 << 10; // larger header blocks get 431
constexpr int kSendTimeoutS = 30;            // a peer that stops reading for this long is dropped

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string trim(std::string_view s) {
  size_t a = s.find_first_not_of(" \t"), b = s.find_last_not_of(" \t\r");
  if (a == std::string_view::npos) return {};
  return std::string(s.substr(a, b - a + 1));
}

}  // namespace

const std::string* HttpRequest::header(const std::string& lower_name) const {
  auto it = headers.find(lower_name);
  return it == headers.end() ? nullptr : &it->second;
}

const char* http_status_text(int status) {
  switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 411: return "Length Required";
    case 413: return "Payload Too Large";
    case 422: return "Unprocessable Entity";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    default: return "Unknown";
  }
}

// ---- HttpResponseWriter

bool HttpResponseWriter::write_all(std::string_view data) {
  if (failed_) return false;
  while (!data.empty()) {
    ssize_t n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      failed_ = true;
      return false;
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

std::string HttpResponseWriter::head(int status, std::string_view content_type,
                                     const std::map<std::string, std::string>& extra, bool chunked,
                                     size_t content_length) const {
  std::string h = "HTTP/1.1 " + std::to_string(status) + " " + http_status_text(status) + "\r\n";
  if (!content_type.empty()) h += "Content-Type: " + std::string(content_type) + "\r\n";
  if (chunked) {
    h += "Transfer-Encoding: chunked\r\n";
  } else {
    h += "Content-Length: " + std::to_string(content_length) + "\r\n";
  }
  for (const auto& [k, v] : extra) h += k + ": " + v + "\r\n";
  h += keep_alive_ ? "Connection: keep-alive\r\n" : "Connection: close\r\n";
  h += "\r\n";
  return h;
}

bool HttpResponseWriter::send(int status, std::string_view content_type, std::string_view body,
                              const std::map<std::string, std::string>& extra_headers) {
  if (state_ != State::kNone) return false;
  state_ = State::kDone;
  std::string out = head(status, content_type, extra_headers, false, body.size());
  if (!head_only_) out.append(body);
  return write_all(out);
}

bool HttpResponseWriter::begin_chunked(int status, std::string_view content_type,
                                       const std::map<std::string, std::string>& extra_headers) {
  if (state_ != State::kNone) return false;
  state_ = State::kChunked;
  return write_all(head(status, content_type, extra_headers, true, 0));
}

bool HttpResponseWriter::write_chunk(std::string_view data) {
  if (state_ != State::kChunked) return false;
  if (data.empty()) return !failed_;  // an empty chunk would end the body
  char size[32];
  std::snprintf(size, sizeof size, "%zx\r\n", data.size());
  std::string out = size;
  out.append(data);
  out += "\r\n";
  return write_all(out);
}

bool HttpResponseWriter::end_chunked() {
  if (state_ != State::kChunked) return false;
  state_ = State::kDone;
  return write_all("0\r\n\r\n");
}

bool HttpResponseWriter::peer_closed() const {
  if (failed_) return true;
  pollfd p{fd_, static_cast<short>(POLLIN | POLLRDHUP), 0};
  if (::poll(&p, 1, 0) <= 0) return false;
  if (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) return true;
  if (p.revents & POLLIN) {
    char c;
    ssize_t n = ::recv(fd_, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
  }
  return false;
}

// ---- HttpServer

HttpServer::HttpServer(HttpServerOptions options, HttpHandler handler)
    : options_(std::move(options)), handler_(std::move(handler)) {}

HttpServer::~HttpServer() {
  stop_accepting();
  wait_no_connections(5);
  if (listen_fd_ >= 0) ::close(listen_fd_);
  for (int fd : wake_pipe_)
    if (fd >= 0) ::close(fd);
}

Status HttpServer::bind() {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  addrinfo* res = nullptr;
  const std::string port = std::to_string(options_.port);
  const char* host = options_.host.empty() ? nullptr : options_.host.c_str();
  if (int rc = ::getaddrinfo(host, port.c_str(), &hints, &res); rc != 0)
    return make_error(ErrorCode::kInvalidArgument, "cannot resolve --host {}: {}", options_.host, gai_strerror(rc));
  Status last = make_error(ErrorCode::kIo, "no address for {}:{}", options_.host, options_.port);
  for (addrinfo* ai = res; ai; ai = ai->ai_next) {
    int fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) continue;
    int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || ::listen(fd, SOMAXCONN) != 0) {
      last = make_error(ErrorCode::kIo, "cannot listen on {}:{}: {}", options_.host, options_.port, std::strerror(errno));
      ::close(fd);
      continue;
    }
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
    port_ = ntohs(ss.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port
                                           : reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
    listen_fd_ = fd;
    break;
  }
  ::freeaddrinfo(res);
  if (listen_fd_ < 0) return last;
  if (::pipe2(wake_pipe_, O_CLOEXEC | O_NONBLOCK) != 0)
    return make_error(ErrorCode::kIo, "pipe: {}", std::strerror(errno));
  return Status::Ok();
}

void HttpServer::stop_accepting() {
  if (stopping_.exchange(true)) return;
  if (wake_pipe_[1] >= 0) {
    char c = 1;
    [[maybe_unused]] ssize_t n = ::write(wake_pipe_[1], &c, 1);
  }
}

int HttpServer::connections() const {
  std::lock_guard<std::mutex> lk(mu_);
  return open_connections_;
}

bool HttpServer::wait_no_connections(double seconds) {
  std::unique_lock<std::mutex> lk(mu_);
  return conn_cv_.wait_for(lk, std::chrono::duration<double>(seconds), [this] { return open_connections_ == 0; });
}

void HttpServer::serve() {
  while (!stopping_.load()) {
    pollfd p[2] = {{listen_fd_, POLLIN, 0}, {wake_pipe_[0], POLLIN, 0}};
    int rc = ::poll(p, 2, -1);
    if (rc < 0) {
      if (errno == EINTR) continue;
      SLOG_ERROR("http: poll: {}", std::strerror(errno));
      break;
    }
    if (p[1].revents) break;
    if (!(p[0].revents & POLLIN)) continue;
    int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;  // EMFILE, ECONNABORTED, ...: keep serving
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);  // SSE events go out at once
    timeval tv{kSendTimeoutS, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    {
      std::lock_guard<std::mutex> lk(mu_);
      if (open_connections_ >= options_.max_connections) {
        HttpResponseWriter w(fd, false);
        const std::string body =
            R"J({"error":{"message":"too many open connections (--max-connections)","type":"server_error","param":null,"code":"too_many_connections"}})J";
        w.send(503, "application/json", body);
        ::close(fd);
        continue;
      }
      ++open_connections_;
    }
    try {
      std::thread([this, fd] { handle_connection(fd); }).detach();
    } catch (const std::system_error& e) {  // thread limit: answer nothing, drop the connection
      SLOG_WARN("http: cannot start a connection thread: {}", e.what());
      ::close(fd);
      std::lock_guard<std::mutex> lk(mu_);
      --open_connections_;
      conn_cv_.notify_all();
    }
  }
  ::close(listen_fd_);
  listen_fd_ = -1;
}

// Reads one request into `req`. `buf` carries bytes already read past the
// previous request (pipelining). False: connection over (closed, idle, error);
// `*error_status` then says which response to send first (0: none).
bool HttpServer::read_request(int fd, std::string& buf, HttpRequest& req, int* error_status) {
  *error_status = 0;
  const Deadline idle(options_.idle_timeout_s);
  auto fill = [&](bool idle_ok) -> bool {  // reads more bytes into buf
    char tmp[16384];
    for (;;) {
      if (stopping_.load() && idle_ok) return false;  // do not start new requests while stopping
      if (idle.expired()) return false;
      pollfd p{fd, POLLIN, 0};
      int rc = ::poll(&p, 1, kPollSliceMs);
      if (rc < 0 && errno != EINTR) return false;
      if (rc <= 0) continue;
      ssize_t n = ::recv(fd, tmp, sizeof tmp, 0);
      if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
      if (n <= 0) return false;
      buf.append(tmp, static_cast<size_t>(n));
      return true;
    }
  };

  size_t end;
  while ((end = buf.find("\r\n\r\n")) == std::string::npos) {
    if (buf.size() > kMaxHeaderBytes) {
      *error_status = 431;
      return false;
    }
    if (!fill(buf.empty())) return false;
  }
  std::string_view head(buf.data(), end);
  size_t line_end = head.find("\r\n");
  std::string_view line = head.substr(0, line_end);
  size_t sp1 = line.find(' '), sp2 = line.rfind(' ');
  if (sp1 == std::string_view::npos || sp2 == sp1) {
    *error_status = 400;
    return false;
  }
  req = HttpRequest{};
  req.method = std::string(line.substr(0, sp1));
  req.target = std::string(line.substr(sp1 + 1, sp2 - sp1 - 1));
  size_t q = req.target.find('?');
  req.path = req.target.substr(0, q);
  if (q != std::string::npos) req.query = req.target.substr(q + 1);
  if (line_end != std::string_view::npos) {
    std::string_view rest = head.substr(line_end + 2);
    while (!rest.empty()) {
      size_t e = rest.find("\r\n");
      std::string_view h = rest.substr(0, e);
      size_t colon = h.find(':');
      if (colon != std::string_view::npos)
        req.headers[lower(std::string(h.substr(0, colon)))] = trim(h.substr(colon + 1));
      if (e == std::string_view::npos) break;
      rest.remove_prefix(e + 2);
    }
  }
  buf.erase(0, end + 4);

  if (const std::string* expect = req.header("expect"); expect && lower(*expect) == "100-continue") {
    static constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
    ::send(fd, kContinue.data(), kContinue.size(), MSG_NOSIGNAL);
  }
  const std::string* te = req.header("transfer-encoding");
  if (te && lower(*te).find("chunked") != std::string::npos) {
    for (;;) {  // chunk-size [; ext] CRLF data CRLF ... 0 CRLF [trailers] CRLF
      size_t le;
      while ((le = buf.find("\r\n")) == std::string::npos)
        if (!fill(false)) return false;
      size_t size = std::strtoull(buf.c_str(), nullptr, 16);
      buf.erase(0, le + 2);
      if (size == 0) {
        while ((le = buf.find("\r\n")) == std::string::npos)
          if (!fill(false)) return false;
        while (le != 0) {  // skip trailers
          buf.erase(0, le + 2);
          while ((le = buf.find("\r\n")) == std::string::npos)
            if (!fill(false)) return false;
        }
        buf.erase(0, 2);
        break;
      }
      if (req.body.size() + size > options_.max_body_bytes) {
        *error_status = 413;
        return false;
      }
      while (buf.size() < size + 2)
        if (!fill(false)) return false;
      req.body.append(buf, 0, size);
      buf.erase(0, size + 2);
    }
    return true;
  }
  size_t length = 0;
  if (const std::string* cl = req.header("content-length")) {
    char* e = nullptr;
    unsigned long long v = std::strtoull(cl->c_str(), &e, 10);
    if (e == cl->c_str() || *e != '\0') {
      *error_status = 400;
      return false;
    }
    if (v > options_.max_body_bytes) {
      *error_status = 413;
      return false;
    }
    length = static_cast<size_t>(v);
  }
  while (buf.size() < length)
    if (!fill(false)) return false;
  req.body = buf.substr(0, length);
  buf.erase(0, length);
  return true;
}

void HttpServer::handle_connection(int fd) {
  std::string buf;
  for (;;) {
    HttpRequest req;
    int error_status = 0;
    if (!read_request(fd, buf, req, &error_status)) {
      if (error_status) {
        HttpResponseWriter w(fd, false);
        std::string body = std::string(R"({"error":{"message":")") + http_status_text(error_status) +
                           R"(","type":"invalid_request_error","param":null,"code":null}})";
        w.send(error_status, "application/json", body);
      }
      break;
    }
    bool keep_alive = true;
    if (const std::string* c = req.header("connection")) keep_alive = lower(*c).find("close") == std::string::npos;
    if (stopping_.load()) keep_alive = false;
    HttpResponseWriter w(fd, keep_alive, req.method == "HEAD");
    try {
      handler_(req, w);
    } catch (const std::exception& e) {
      SLOG_ERROR("http: handler threw on {} {}: {}", req.method, req.path, e.what());
    }
    if (!w.responded()) {
      w.send(500, "application/json",
             R"({"error":{"message":"internal error","type":"server_error","param":null,"code":null}})");
    }
    if (!w.keep_alive() || stopping_.load()) break;
  }
  ::shutdown(fd, SHUT_RDWR);
  ::close(fd);
  std::lock_guard<std::mutex> lk(mu_);
  --open_connections_;
  conn_cv_.notify_all();
}

}  // namespace shardlm::serve
