// A small HTTP/1.1 server over POSIX sockets: enough for the OpenAI API
// (JSON bodies, keep-alive, chunked streaming responses) and nothing more.
//
// Why our own: a streamed response holds its connection's thread for the whole
// generation, so the server runs one thread per connection (capped by
// max_connections) instead of a fixed pool that hundreds of streams would
// exhaust. Owning the socket also lets a handler ask, without blocking,
// whether the peer has hung up (poll POLLRDHUP + a peeked read), which is how a
// client disconnect turns into GenerationService::abort.
//
// Lifecycle: bind() (port 0 picks a free port; port() tells which) → serve()
// blocks, accepting, until stop_accepting(); in-flight connections finish
// their current request, idle keep-alive connections are closed.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <string_view>

#include "base/status.h"

namespace shardlm::serve {

struct HttpRequest {
  std::string method;   // "GET", "POST", ...
  std::string target;   // as sent: "/v1/models?x=1"
  std::string path;     // target without the query
  std::string query;    // after '?', undecoded
  std::map<std::string, std::string> headers;  // names lower-cased
  std::string body;
  const std::string* header(const std::string& lower_name) const;
};

// One response per request: either send() once, or begin_chunked() then
// write_chunk()… then end_chunked(). Writes return false once the peer is gone.
class HttpResponseWriter {
 public:
  HttpResponseWriter(int fd, bool keep_alive, bool head_only = false)
      : fd_(fd), keep_alive_(keep_alive), head_only_(head_only) {}

  bool send(int status, std::string_view content_type, std::string_view body,
            const std::map<std::string, std::string>& extra_headers = {});
  bool begin_chunked(int status, std::string_view content_type,
                     const std::map<std::string, std::string>& extra_headers = {});
  bool write_chunk(std::string_view data);
  bool end_chunked();
  // Sends nothing more and closes the connection (the peer is gone).
  void drop() {
    failed_ = true;
    state_ = State::kDone;
  }

  // Non-blocking: true when the peer closed or reset the connection.
  bool peer_closed() const;
  bool responded() const { return state_ != State::kNone; }
  bool failed() const { return failed_; }
  bool keep_alive() const { return keep_alive_ && !failed_ && state_ == State::kDone; }

 private:
  enum class State { kNone, kChunked, kDone };
  bool write_all(std::string_view data);
  std::string head(int status, std::string_view content_type, const std::map<std::string, std::string>& extra,
                   bool chunked, size_t content_length) const;

  int fd_;
  bool keep_alive_;
  bool head_only_;  // a HEAD request: headers only
  bool failed_ = false;
  State state_ = State::kNone;
};

using HttpHandler = std::function<void(const HttpRequest&, HttpResponseWriter&)>;

struct HttpServerOptions {
  std::string host = "0.0.0.0";
  int port = 8000;                   // 0: any free port
  int max_connections = 1024;        // concurrent connections (each holds a thread while open)
  double idle_timeout_s = 60;        // keep-alive connection with no request
  size_t max_body_bytes = 64u << 20; // a request body above this gets 413
};

const char* http_status_text(int status);

class HttpServer {
 public:
  HttpServer(HttpServerOptions options, HttpHandler handler);
  ~HttpServer();

  Status bind();
  int port() const { return port_; }
  const std::string& host() const { return options_.host; }
  // Accepts until stop_accepting(), then returns (open connections go on;
  // see wait_no_connections). Call once.
  void serve();
  // Thread-safe (not async-signal-safe): stop accepting; idle connections close.
  void stop_accepting();
  // Open connections right now.
  int connections() const;
  // Waits until no connection is open or `seconds` pass; true when none is open.
  bool wait_no_connections(double seconds);

 private:
  void handle_connection(int fd);
  bool read_request(int fd, std::string& buf, HttpRequest& req, int* error_status);

  HttpServerOptions options_;
  HttpHandler handler_;
  int listen_fd_ = -1;
  int wake_pipe_[2] = {-1, -1};
  int port_ = 0;
  std::atomic<bool> stopping_{false};
  mutable std::mutex mu_;
  std::condition_variable conn_cv_;
  int open_connections_ = 0;
};

}  // namespace shardlm::serve
