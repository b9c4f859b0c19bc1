// Blocking HTTP/1.1 client: connect (getaddrinfo, first address that
// answers), send the request with Connection: close, parse the status line and
// headers, then decode the body (chunked / Content-Length / until close) and
// pass it on piece by piece. Every read waits in poll() against the call's
// deadline, so a silent server cannot hang the caller.
#include "serve/http_client.h"

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "base/clock.h"

namespace shardlm::serve {
namespace {

struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

}  // namespace

Expected<HttpUrl> parse_http_url(const std::string& url) {
  HttpUrl u;
  std::string rest;
  if (url.rfind("http://", 0) == 0) {
    rest = url.substr(7);
  } else if (url.rfind("https://", 0) == 0) {
    return make_error(ErrorCode::kUnsupported, "{}: https is not supported by this client; use http://", url);
  } else {
    return make_error(ErrorCode::kInvalidArgument, "{}: expected http://HOST[:PORT][/PATH]", url);
  }
  size_t slash = rest.find('/');
  std::string authority = rest.substr(0, slash);
  u.base_path = slash == std::string::npos ? "" : rest.substr(slash);
  while (!u.base_path.empty() && u.base_path.back() == '/') u.base_path.pop_back();
  std::string port;
  if (!authority.empty() && authority[0] == '[') {
    size_t close = authority.find(']');
    if (close == std::string::npos) return make_error(ErrorCode::kInvalidArgument, "{}: unclosed '['", url);
    u.host = authority.substr(1, close - 1);
    if (close + 1 < authority.size() && authority[close + 1] == ':') port = authority.substr(close + 2);
  } else {
    size_t colon = authority.rfind(':');
    u.host = authority.substr(0, colon);
    if (colon != std::string::npos) port = authority.substr(colon + 1);
  }
  if (u.host.empty()) return make_error(ErrorCode::kInvalidArgument, "{}: no host", url);
  if (!port.empty()) {
    char* end = nullptr;
    long p = std::strtol(port.c_str(), &end, 10);
    if (*end || p <= 0 || p > 65535) return make_error(ErrorCode::kInvalidArgument, "{}: bad port '{}'", url, port);
    u.port = static_cast<int>(p);
  }
  return u;
}

Expected<HttpResult> http_call(const HttpUrl& url, const HttpCall& call) {
  const Deadline deadline(call.timeout_s);
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  if (int rc = ::getaddrinfo(url.host.c_str(), std::to_string(url.port).c_str(), &hints, &res); rc != 0)
    return make_error(ErrorCode::kIo, "cannot resolve {}: {}", url.host, gai_strerror(rc));
  Fd sock;
  std::string last_err = "no address";
  for (addrinfo* ai = res; ai; ai = ai->ai_next) {
    int fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) continue;
    if (::connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
      sock.fd = fd;
      break;
    }
    last_err = std::strerror(errno);
    ::close(fd);
  }
  ::freeaddrinfo(res);
  if (sock.fd < 0) return make_error(ErrorCode::kIo, "cannot connect to {}:{}: {}", url.host, url.port, last_err);
  int one = 1;
  ::setsockopt(sock.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);

  const bool v6 = url.host.find(':') != std::string::npos;
  std::string req = call.method + " " + call.path + " HTTP/1.1\r\nHost: " + (v6 ? "[" + url.host + "]" : url.host) + ":" +
                    std::to_string(url.port) + "\r\nConnection: close\r\n";
  for (const auto& [k, v] : call.headers) req += k + ": " + v + "\r\n";
  if (!call.body.empty() || call.method == "POST") req += "Content-Length: " + std::to_string(call.body.size()) + "\r\n";
  req += "\r\n";
  req += call.body;
  for (std::string_view left = req; !left.empty();) {
    ssize_t n = ::send(sock.fd, left.data(), left.size(), MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return make_error(ErrorCode::kIo, "send to {}:{}: {}", url.host, url.port, std::strerror(errno));
    }
    left.remove_prefix(static_cast<size_t>(n));
  }

  std::string buf;
  bool eof = false;
  auto fill = [&]() -> Status {  // more bytes into buf; eof at close
    for (;;) {
      const double left = deadline.remaining_seconds();
      if (left <= 0) return make_error(ErrorCode::kTimeout, "no complete response from {}:{} within {} s", url.host, url.port, call.timeout_s);
      pollfd p{sock.fd, POLLIN, 0};
      int rc = ::poll(&p, 1, static_cast<int>(std::min(left, 1.0) * 1000) + 1);
      if (rc < 0 && errno != EINTR) return make_error(ErrorCode::kIo, "poll: {}", std::strerror(errno));
      if (rc <= 0) continue;
      char tmp[16384];
      ssize_t n = ::recv(sock.fd, tmp, sizeof tmp, 0);
      if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
      if (n < 0) return make_error(ErrorCode::kIo, "recv from {}:{}: {}", url.host, url.port, std::strerror(errno));
      if (n == 0) eof = true;
      buf.append(tmp, static_cast<size_t>(n));
      return Status::Ok();
    }
  };

  HttpResult result;
  size_t end;
  while ((end = buf.find("\r\n\r\n")) == std::string::npos) {
    SHARDLM_TRY(fill());
    if (eof) return make_error(ErrorCode::kIo, "{}:{} closed the connection before a response", url.host, url.port);
  }
  {
    std::string_view head(buf.data(), end);
    size_t le = head.find("\r\n");
    std::string_view status_line = head.substr(0, le);
    size_t sp = status_line.find(' ');
    if (status_line.rfind("HTTP/", 0) != 0 || sp == std::string_view::npos)
      return make_error(ErrorCode::kFormat, "bad status line from {}:{}", url.host, url.port);
    result.status = std::atoi(std::string(status_line.substr(sp + 1, 3)).c_str());
    std::string_view rest = le == std::string_view::npos ? std::string_view() : head.substr(le + 2);
    while (!rest.empty()) {
      size_t e = rest.find("\r\n");
      std::string_view h = rest.substr(0, e);
      size_t colon = h.find(':');
      if (colon != std::string_view::npos) {
        std::string v(h.substr(colon + 1));
        v.erase(0, v.find_first_not_of(" \t"));
        result.headers[lower(std::string(h.substr(0, colon)))] = v;
      }
      if (e == std::string_view::npos) break;
      rest.remove_prefix(e + 2);
    }
    buf.erase(0, end + 4);
  }
  bool keep_going = true;
  auto deliver = [&](std::string_view data) {
    if (data.empty() || !keep_going) return;
    if (call.on_data) {
      keep_going = call.on_data(data);
    } else {
      result.body.append(data);
    }
  };
  auto te = result.headers.find("transfer-encoding");
  auto cl = result.headers.find("content-length");
  if (te != result.headers.end() && lower(te->second).find("chunked") != std::string::npos) {
    for (;;) {
      size_t le;
      while ((le = buf.find("\r\n")) == std::string::npos) {
        if (eof) return make_error(ErrorCode::kIo, "chunked body cut short by {}:{}", url.host, url.port);
        SHARDLM_TRY(fill());
      }
      const size_t size = std::strtoull(buf.c_str(), nullptr, 16);
      buf.erase(0, le + 2);
      if (size == 0) break;
      while (buf.size() < size + 2) {
        if (eof) return make_error(ErrorCode::kIo, "chunked body cut short by {}:{}", url.host, url.port);
        SHARDLM_TRY(fill());
      }
      deliver(std::string_view(buf).substr(0, size));
      buf.erase(0, size + 2);
      if (!keep_going) break;
    }
  } else if (cl != result.headers.end()) {
    size_t want = std::strtoull(cl->second.c_str(), nullptr, 10);
    while (buf.size() < want && !eof && keep_going) {
      SHARDLM_TRY(fill());
    }
    if (buf.size() < want) return make_error(ErrorCode::kIo, "body cut short by {}:{}", url.host, url.port);
    deliver(std::string_view(buf).substr(0, want));
  } else {
    while (!eof && keep_going) {
      deliver(buf);
      buf.clear();
      SHARDLM_TRY(fill());
    }
    deliver(buf);
  }
  return result;
}

}  // namespace shardlm::serve
