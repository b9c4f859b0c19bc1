// What the edges (serve, generate) talk to: a running engine that takes
// requests and reports tokens as they are produced. The single-process engine
// (local_service) and the distributed coordinator (rank 0 of a tp × pp job)
// both implement it, so the HTTP server and the CLI do not care which runs.
//
// Threading: submit/abort/stats/health/shutdown may be called from any thread.
// Callbacks run on the engine's thread: keep them short (queue and return).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "base/status.h"
#include "runtime/sequence.h"

namespace shardlm {

struct GenerationUpdate {
  int64_t id = 0;
  std::vector<int32_t> new_tokens;          // appended since the last update
  std::vector<TokenLogprob> new_logprobs;   // one per new token when logprobs were asked
  std::string new_text;                     // text safe to show (stop strings withheld)
  bool finished = false;
  FinishReason reason = FinishReason::kNone;
  Status error;                             // set when the request failed
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;            // total so far
  std::vector<double> prompt_logprobs;      // with want_prompt_logprobs, in the final update
};

struct GenerationRequest {
  std::vector<int32_t> prompt;
  SamplingParams params;
  // Optional: decodes one more token of the sequence and returns the text it
  // completes (a StreamDecoder per request). Without it, stop strings and
  // new_text are unavailable.
  std::function<std::string(int32_t)> detokenize;
  bool want_prompt_logprobs = false;  // log p(prompt[i+1] | prompt[..i]) (perplexity)
  std::function<void(const GenerationUpdate&)> on_update;
};

struct ServiceStats {
  int64_t running = 0;
  int64_t waiting = 0;
  int64_t kv_blocks_total = 0;
  int64_t kv_blocks_free = 0;
  double kv_usage = 0;  // 0..1
  int64_t preemptions = 0;
  int64_t max_model_len = 0;
  int64_t vocab_size = 0;
};

class GenerationService {
 public:
  virtual ~GenerationService() = default;
  // Validates and queues; the error says what is wrong (never crashes). The
  // id is valid for abort() until the final update.
  virtual Expected<int64_t> submit(GenerationRequest request) = 0;
  // Aborts a queued or running request: its final update has reason kAborted
  // and its KV blocks go back to the pool. Unknown ids are ignored.
  virtual void abort(int64_t id) = 0;
  virtual ServiceStats stats() const = 0;
  // Ok while every rank is alive and the engine loop runs.
  virtual Status health() const = 0;
  // drain: finish in-flight requests first; else abort them. Idempotent.
  virtual void shutdown(bool drain) = 0;
};

// What one request has been told so far (engines keep one per live request).
struct UpdateCursor {
  size_t emitted_tokens = 0;
  size_t emitted_text = 0;  // bytes of output_text already sent
  size_t holdback = 0;      // longest stop string − 1: withheld while running
};
UpdateCursor make_update_cursor(const SamplingParams& params);
// The update carrying what `seq` produced since `cursor` (tokens, logprobs,
// text; the last `holdback` bytes of text stay back until finished), and
// advances the cursor. id, prompt/completion counts and finished are filled.
GenerationUpdate next_update(const Sequence& seq, UpdateCursor& cursor, bool finished);

// A GenerationService over a single-process Engine, stepping on its own thread.
class Engine;
std::unique_ptr<GenerationService> make_local_service(std::unique_ptr<Engine> engine);

}  // namespace shardlm
