// The OpenAI-compatible HTTP front end over any GenerationService: routes
// (/v1/models, /v1/completions, /v1/chat/completions, /health, /metrics,
// /version), tokenization, streaming (SSE) and cancellation. It never touches
// an Engine: the local single-process service and the distributed coordinator
// plug in through GenerationService alone.
//
// Lifecycle: construct → serve HTTP at once (generation answers 503 while
// loading) → set_ready(service, tokenizer) → … → begin_shutdown() (new
// generation requests get 503) → wait_idle(drain) → the owner shuts the
// service down (in-flight requests then end as aborted) → exit.
#pragma once

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "runtime/generation_service.h"
#include "serve/http_server.h"
#include "serve/metrics.h"

namespace shardlm {
class Tokenizer;
}

namespace shardlm::serve {

struct OpenAiServerConfig {
  std::vector<std::string> served_model_names;  // the first is reported in responses
  std::string model_root;                       // the model directory (in /v1/models "root")
  double request_timeout_s = 0;                 // 0: none; whole request, submit to last token
  double queue_timeout_s = 0;                   // 0: none; submit to first token
};

class OpenAiServer {
 public:
  explicit OpenAiServer(OpenAiServerConfig config);
  ~OpenAiServer();

  void set_ready(std::shared_ptr<GenerationService> service, std::shared_ptr<const Tokenizer> tokenizer);
  void begin_shutdown();
  // Waits until no generation request is in flight or `seconds` pass; true when idle.
  bool wait_idle(double seconds);
  int64_t in_flight() const;

  // The HttpHandler.
  void handle(const HttpRequest& req, HttpResponseWriter& w);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace shardlm::serve
