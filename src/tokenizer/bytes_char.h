// GPT-2's byte <-> printable-character table used by ByteLevel pre-tokenizer,
// normalizer and decoder.
#pragma once

#include <array>
#include <string>
#include <string_view>

namespace shardlm {

// UTF-8 of the character that stands for byte b.
const std::array<std::string, 256>& byte_level_chars();
// Maps every byte of `bytes` to its character.
std::string bytes_to_unicode(std::string_view bytes);
void append_bytes_to_unicode(std::string& out, std::string_view bytes);
// The byte a character stands for, or -1.
int byte_level_byte(char32_t c);

}  // namespace shardlm
