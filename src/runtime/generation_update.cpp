#include <algorithm>

#include "runtime/generation_service.h"

namespace shardlm {

UpdateCursor make_update_cursor(const SamplingParams& params) {
  UpdateCursor c;
  for (const auto& s : params.stop) c.holdback = std::max(c.holdback, s.empty() ? size_t(0) : s.size() - 1);
  return c;
}

GenerationUpdate next_update(const Sequence& s, UpdateCursor& cursor, bool finished) {
  GenerationUpdate u;
  u.id = s.id;
  u.prompt_tokens = static_cast<int64_t>(s.prompt.size());
  for (size_t i = cursor.emitted_tokens; i < s.output.size(); ++i) {
    u.new_tokens.push_back(s.output[i]);
    if (s.params.logprobs >= 0 && i < s.logprobs.size()) u.new_logprobs.push_back(s.logprobs[i]);
  }
  cursor.emitted_tokens = s.output.size();
  u.completion_tokens = static_cast<int64_t>(s.output.size());
  const size_t n = s.output_text.size();
  const size_t visible = finished ? n : (n > cursor.holdback ? n - cursor.holdback : 0);
  if (visible > cursor.emitted_text) {
    u.new_text = s.output_text.substr(cursor.emitted_text, visible - cursor.emitted_text);
    cursor.emitted_text = visible;
  }
  u.finished = finished;
  return u;
}

}  // namespace shardlm
