// Normalizers from tokenizer.json ("normalizer": {...}): NFC/NFD/NFKC/NFKD
// (utf8proc), Lowercase, Strip, StripAccents, Prepend, Replace, ByteLevel,
// BertNormalizer and Sequence. Input and output are valid UTF-8.
#pragma once

#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "base/status.h"

namespace shardlm {

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  virtual Status normalize(std::string& text) const = 0;
};

// `j` is the "normalizer" object; null gives nullptr (no normalization).
Expected<std::unique_ptr<Normalizer>> make_normalizer(const nlohmann::json& j);

// Unicode normalization forms, shared with the chat template and tests.
enum class UnicodeForm { kNFC, kNFD, kNFKC, kNFKD };
Expected<std::string> unicode_normalize(const std::string& text, UnicodeForm form);

}  // namespace shardlm
