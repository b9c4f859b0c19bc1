// Decides whether a sequence is finished after a token was appended: max_tokens,
// stop token ids (+ EOS unless ignore_eos), stop strings on the decoded text.
// A stop string is removed from output_text (OpenAI semantics).
#pragma once

#include <cstdint>
#include <vector>

#include "runtime/sequence.h"

namespace shardlm {

// eos_ids: the model's end-of-sequence ids. Returns kNone when not finished.
// Stop strings are searched in seq.output_text, which the caller keeps decoded;
// on a match output_text is truncated before the stop string.
FinishReason check_stop(Sequence& seq, const std::vector<int32_t>& eos_ids);

}  // namespace shardlm
