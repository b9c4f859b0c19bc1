// A small blocking HTTP/1.1 client (plain http://, one connection per
// request) for `shardlm bench serve` and tests: sends a request and hands the
// decoded response body to a callback as it arrives (chunked, Content-Length
// or read-to-close), so SSE streams can be timed token by token.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <string_view>

#include "base/status.h"

namespace shardlm::serve {

struct HttpUrl {
  std::string host;       // without brackets for IPv6
  int port = 80;
  std::string base_path;  // "" or "/v1" (no trailing slash)
};
// "http://host[:port][/path]"; https is refused with a clear error.
Expected<HttpUrl> parse_http_url(const std::string& url);

struct HttpResult {
  int status = 0;
  std::map<std::string, std::string> headers;  // names lower-cased
  std::string body;                            // empty when on_data consumed it
};

struct HttpCall {
  std::string method = "GET";
  std::string path = "/";  // full path including base_path
  std::string body;
  std::map<std::string, std::string> headers;
  double timeout_s = 600;  // whole call
  // Body bytes as they arrive; return false to hang up. Without it the body
  // is collected in HttpResult::body.
  std::function<bool(std::string_view)> on_data;
};

Expected<HttpResult> http_call(const HttpUrl& url, const HttpCall& call);

}  // namespace shardlm::serve
