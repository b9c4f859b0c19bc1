// Pre-tokenizers from tokenizer.json ("pre_tokenizer": {...}): Sequence, Split,
// ByteLevel, Digits, Metaspace, Whitespace, WhitespaceSplit, CharDelimiterSplit,
// Punctuation. They cut the text into pieces that the model encodes one by one.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/status.h"

namespace shardlm {

// A piece of the input on its way through the pipeline. Pieces with id >= 0
// were matched as added tokens and are left alone by later stages.
struct Piece {
  std::string text;
  int32_t id = -1;
  bool at_start = false;  // begins at offset 0 of the original input
};

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  // Splits/rewrites every piece with id < 0; empty pieces are dropped.
  virtual Status pre_tokenize(std::vector<Piece>& pieces) const = 0;
};

// `j` is the "pre_tokenizer" object; null gives nullptr.
Expected<std::unique_ptr<PreTokenizer>> make_pre_tokenizer(const nlohmann::json& j);

// HF's SplitDelimiterBehavior.
enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

// Given segments covering a text (offsets, is_match), returns the pieces the
// behavior keeps, as [start, end) ranges (empty ones included; callers drop them).
std::vector<std::pair<size_t, size_t>> apply_split_behavior(
    const std::vector<std::pair<std::pair<size_t, size_t>, bool>>& segments, SplitBehavior behavior);

}  // namespace shardlm
