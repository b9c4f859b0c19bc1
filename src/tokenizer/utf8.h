// UTF-8 helpers shared by the tokenizer: decoding with the WHATWG / Rust
// `from_utf8_lossy` replacement rule (one U+FFFD per maximal invalid subpart),
// and the few Unicode properties the pre-tokenizers need (via utf8proc).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace shardlm::utf8 {

inline constexpr char32_t kReplacement = 0xFFFD;
inline constexpr std::string_view kReplacementUtf8 = "\xEF\xBF\xBD";

// Length of the valid UTF-8 sequence starting at s[i], or 0 if the bytes there
// do not start a valid sequence (including a truncated one at the end).
size_t valid_sequence_length(std::string_view s, size_t i);

// Length of the maximal subpart of an ill-formed sequence at s[i] (>= 1):
// the number of bytes one U+FFFD replaces. Only meaningful where
// valid_sequence_length(s, i) == 0.
size_t invalid_subpart_length(std::string_view s, size_t i);

bool is_valid(std::string_view s);

// Replaces every maximal invalid subpart with U+FFFD (what Rust's
// String::from_utf8_lossy, Python's errors="replace" and JS TextDecoder do).
std::string sanitize(std::string_view s);

// Decodes the code point at s[i] (s must be valid UTF-8 there); advances i.
char32_t decode_at(std::string_view s, size_t& i);

void append(std::string& out, char32_t cp);
inline std::string encode(char32_t cp) {
  std::string s;
  append(s, cp);
  return s;
}

// Number of bytes at the end of `s` that form an incomplete (but so far valid)
// UTF-8 sequence prefix: 0..3.
size_t incomplete_tail_length(std::string_view s);

// Unicode properties (Unicode version of the linked utf8proc).
bool is_white_space(char32_t cp);   // the White_Space property (Rust char::is_whitespace)
bool is_numeric(char32_t cp);       // general category N* (Rust char::is_numeric)
bool is_word_char(char32_t cp);     // Rust regex \w: Alphabetic, M, Nd, Pc, Join_Control
bool is_alphabetic_approx(char32_t cp);
bool is_punctuation(char32_t cp);   // general category P*

}  // namespace shardlm::utf8
