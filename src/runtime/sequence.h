// A request as the engine tracks it: its tokens, sampling settings, RNG and
// progress through the KV cache. Owned by the engine; the scheduler and sampler
// see raw pointers. Identical on every rank (DESIGN §3.2: all ranks hold the same
// request state), so nothing here may depend on rank-local facts.
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <utility>
#include <vector>

namespace shardlm {

struct SamplingParams {
  float temperature = 1.0f;          // 0 → greedy
  int32_t top_k = 0;                 // 0 or -1 → off
  float top_p = 1.0f;                // 1 → off
  float min_p = 0.0f;                // 0 → off
  float repetition_penalty = 1.0f;   // 1 → off (HF/vLLM semantics: over prompt + output)
  float presence_penalty = 0.0f;     // OpenAI semantics: over output tokens
  float frequency_penalty = 0.0f;
  uint64_t seed = 0;
  bool has_seed = false;             // without a seed the engine draws one
  int32_t max_tokens = 16;
  std::vector<int32_t> stop_token_ids;
  std::vector<std::string> stop;     // stop strings (checked on decoded text)
  bool ignore_eos = false;
  int32_t logprobs = -1;             // -1 off; 0 chosen token only; N chosen + top-N
};

enum class SeqStatus : uint8_t { kWaiting, kRunning, kFinished };
enum class FinishReason : uint8_t { kNone, kStopToken, kStopString, kLength, kAborted };
const char* finish_reason_name(FinishReason r);  // "stop", "length", "abort", ...

struct TokenLogprob {
  int32_t token = 0;
  float logprob = 0.0f;
  std::vector<std::pair<int32_t, float>> top;  // (token, logprob), best first
};

struct Sequence {
  int64_t id = 0;
  std::vector<int32_t> prompt;
  std::vector<int32_t> output;
  SamplingParams params;
  SeqStatus status = SeqStatus::kWaiting;
  FinishReason finish_reason = FinishReason::kNone;
  int64_t num_computed = 0;   // tokens whose K/V are in the cache
  double arrival_time = 0.0;  // seconds; earlier = higher priority
  int32_t num_preemptions = 0;
  std::mt19937_64 rng;
  uint64_t sample_seed = 0;  // the seed rng was seeded with (key of the counter-based device sampler)
  std::vector<TokenLogprob> logprobs;  // one per output token when params.logprobs >= 0
  std::string output_text;             // decoded so far (filled by the caller that has a tokenizer)

  int64_t total_len() const { return static_cast<int64_t>(prompt.size() + output.size()); }
  int32_t token_at(int64_t i) const {
    return i < static_cast<int64_t>(prompt.size()) ? prompt[i] : output[i - prompt.size()];
  }
  bool finished() const { return status == SeqStatus::kFinished; }
};

}  // namespace shardlm
