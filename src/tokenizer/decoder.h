// Decoders of tokenizer.json ("decoder": {...}): ByteLevel, ByteFallback, Fuse,
// Strip, Replace, Metaspace and Sequence. Like HF's decode_chain they map a
// list of token strings to a list of strings that are then concatenated.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/status.h"

namespace shardlm {

class Decoder {
 public:
  virtual ~Decoder() = default;
  virtual Status decode_chain(std::vector<std::string>& tokens) const = 0;
};

Expected<std::unique_ptr<Decoder>> make_decoder(const nlohmann::json& j);

// Bytes to text, one U+FFFD per invalid subpart (Rust's from_utf8_lossy).
std::string utf8_lossy(std::string_view bytes);

}  // namespace shardlm
