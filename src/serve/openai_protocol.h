// The OpenAI API's request and response shapes for /v1/completions and
// /v1/chat/completions: parsing with validation (every bad field becomes a 400
// naming the field, as OpenAI and vLLM answer), and the JSON of responses,
// stream chunks, usage and errors. No engine or socket here, so it is tested
// on its own.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "runtime/sequence.h"

namespace shardlm::serve {

struct ApiError {
  int status = 400;
  std::string message;
  std::string type = "invalid_request_error";  // or "not_found_error", "server_error", ...
  std::string param;                           // empty → null
  std::string code;                            // empty → null
};
// {"error": {"message", "type", "param", "code"}}
nlohmann::json error_body(const ApiError& e);
ApiError bad_request(std::string message, std::string param = {});

enum class Endpoint { kCompletions, kChat };

struct ParsedRequest {
  Endpoint endpoint = Endpoint::kCompletions;
  std::string model;                  // as asked (empty: not given)
  // Completions: the prompt as text, or as token ids.
  std::optional<std::string> prompt_text;
  std::vector<int32_t> prompt_ids;
  // Chat: the messages, each {role, content} with content flattened to text.
  nlohmann::ordered_json messages;
  bool add_generation_prompt = true;
  SamplingParams params;              // params.max_tokens valid only when max_tokens_given
  bool max_tokens_given = false;
  bool stream = false;
  bool include_usage = false;         // stream_options.include_usage
  int32_t top_logprobs = -1;          // -1 off; completions: `logprobs`; chat: `top_logprobs` with logprobs=true
  bool skip_special_tokens = true;
};

// Parses and validates `body`; on failure fills `*err` and returns false.
bool parse_request(Endpoint endpoint, const std::string& body, ParsedRequest* out, ApiError* err);

// "This model's maximum context length is N tokens. However, you requested M
// tokens (P in the messages, C in the completion). ..." (vLLM's wording).
ApiError context_length_error(int64_t max_model_len, int64_t prompt_tokens, int64_t max_tokens);

// One token's logprob entry, with token strings already decoded.
struct TokenLogprobText {
  std::string token;
  float logprob = 0;
  std::vector<std::pair<std::string, float>> top;  // best first
};

// Logprobs accumulated over a response (completions shape needs text offsets).
struct LogprobsAccumulator {
  Endpoint endpoint = Endpoint::kCompletions;
  size_t text_offset = 0;  // bytes of completion text before the next token
  // Appends entries for `entries` to a fresh logprobs object (a stream chunk)
  // or to `into` (the whole response). Completions: {tokens, token_logprobs,
  // top_logprobs, text_offset}; chat: {content: [{token, logprob, bytes, top_logprobs}]}.
  void append(nlohmann::json& into, const std::vector<TokenLogprobText>& entries);
  static nlohmann::json empty(Endpoint endpoint);
};

nlohmann::json usage_json(int64_t prompt_tokens, int64_t completion_tokens);

// Non-streaming response bodies.
nlohmann::json completion_response(const std::string& id, int64_t created, const std::string& model,
                                   const std::string& text, const char* finish_reason,
                                   const nlohmann::json& logprobs, int64_t prompt_tokens, int64_t completion_tokens);
nlohmann::json chat_response(const std::string& id, int64_t created, const std::string& model,
                             const std::string& text, const char* finish_reason, const nlohmann::json& logprobs,
                             int64_t prompt_tokens, int64_t completion_tokens);

// One stream chunk's JSON (choices with one entry). `finish_reason` nullptr →
// null. Chat: `role_delta` adds "role":"assistant" to the delta.
nlohmann::json stream_chunk(Endpoint endpoint, const std::string& id, int64_t created, const std::string& model,
                            const std::string& text, const char* finish_reason, const nlohmann::json& logprobs,
                            bool role_delta, bool include_usage_null);
// The last chunk with include_usage: empty choices and the usage.
nlohmann::json usage_chunk(Endpoint endpoint, const std::string& id, int64_t created, const std::string& model,
                           int64_t prompt_tokens, int64_t completion_tokens);

// finish_reason as OpenAI spells it ("stop", "length"; "abort" for aborted).
const char* openai_finish_reason(FinishReason r);

// JSON text that never throws on invalid UTF-8 (replaced by U+FFFD).
std::string dump_json(const nlohmann::json& j);

}  // namespace shardlm::serve
