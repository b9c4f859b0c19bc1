// The regex engine behind Split pre-tokenizers and Replace normalizers: PCRE2
// in UTF + UCP mode with JIT. Patterns in tokenizer.json are written for
// Oniguruma (what HF tokenizers uses); the few escapes whose meaning differs
// are translated (\s is White_Space exactly, \h is a hex digit).
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "base/status.h"

namespace shardlm {

class Regex {
 public:
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Compiles an Oniguruma-style pattern (see translate_onig_pattern).
  static Expected<std::shared_ptr<const Regex>> compile(std::string_view pattern);
  // Compiles a pattern that matches `literal` exactly.
  static Expected<std::shared_ptr<const Regex>> literal(std::string_view literal);

  // All matches left to right as byte ranges [start, end) in `text`, which must
  // be valid UTF-8. Empty matches right after the previous match are skipped,
  // as Oniguruma's find_iter does.
  Status find_all(std::string_view text, std::vector<std::pair<size_t, size_t>>& out) const;

  const std::string& pattern() const { return pattern_; }

 private:
  Regex() = default;
  void* code_ = nullptr;  // pcre2_code_8*
  bool jit_ = false;
  std::string pattern_;
};

// Rewrites escapes whose Oniguruma meaning differs from PCRE2's.
std::string translate_onig_pattern(std::string_view pattern);

}  // namespace shardlm
