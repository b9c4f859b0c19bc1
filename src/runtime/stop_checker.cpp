#include "runtime/stop_checker.h"

#include <algorithm>
#include <string>

namespace shardlm {

FinishReason check_stop(Sequence& seq, const std::vector<int32_t>& eos_ids) {
  const auto& sp = seq.params;
  // 1. Stop tokens, then EOS.
  if (!seq.output.empty()) {
    const int32_t last = seq.output.back();
    if (std::find(sp.stop_token_ids.begin(), sp.stop_token_ids.end(), last) !=
        sp.stop_token_ids.end()) {
      return FinishReason::kStopToken;
    }
    if (!sp.ignore_eos && std::find(eos_ids.begin(), eos_ids.end(), last) != eos_ids.end()) {
      return FinishReason::kStopToken;
    }
  }
  // 2. Stop strings: the earliest occurrence in the decoded text wins; the text
  // is cut just before it.
  size_t cut = std::string::npos;
  for (const std::string& s : sp.stop) {
    if (s.empty()) continue;
    const size_t pos = seq.output_text.find(s);
    if (pos != std::string::npos && pos < cut) cut = pos;
  }
  if (cut != std::string::npos) {
    seq.output_text.resize(cut);
    return FinishReason::kStopString;
  }
  // 3. Length.
  if (static_cast<int64_t>(seq.output.size()) >= static_cast<int64_t>(sp.max_tokens)) {
    return FinishReason::kLength;
  }
  return FinishReason::kNone;
}

}  // namespace shardlm
