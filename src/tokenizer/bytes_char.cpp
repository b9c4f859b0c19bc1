#include "tokenizer/bytes_char.h"

#include "tokenizer/utf8.h"

namespace shardlm {

namespace {

struct Tables {
  std::array<std::string, 256> chars;
  std::array<int16_t, 324> bytes;  // code points < 324 cover the whole table
  Tables() {
    bytes.fill(-1);
    int n = 0;
    for (int b = 0; b < 256; ++b) {
      bool keep = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      char32_t cp = keep ? static_cast<char32_t>(b) : static_cast<char32_t>(256 + n++);
      chars[b] = utf8::encode(cp);
      bytes[cp] = static_cast<int16_t>(b);
    }
  }
};

const Tables& tables() {
  static const Tables t;
  return t;
}

}  // namespace

const std::array<std::string, 256>& byte_level_chars() { return tables().chars; }

void append_bytes_to_unicode(std::string& out, std::string_view bytes) {
  const auto& t = tables().chars;
  for (char c : bytes) out.append(t[static_cast<unsigned char>(c)]);
}

std::string bytes_to_unicode(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size() * 2);
  append_bytes_to_unicode(out, bytes);
  return out;
}

int byte_level_byte(char32_t c) {
  if (c >= 324) return -1;
  return tables().bytes[c];
}

}  // namespace shardlm
