#include "tokenizer/normalizer.h"

#include <cstdlib>
#include <vector>

#include <utf8proc.h>

#include "tokenizer/bytes_char.h"
#include "tokenizer/json_util.h"
#include "tokenizer/regex.h"
#include "tokenizer/utf8.h"

namespace shardlm {

using nlohmann::json;

Expected<std::string> unicode_normalize(const std::string& text, UnicodeForm form) {
  if (text.empty()) return std::string();
  // Pure ASCII is invariant under every form.
  bool ascii = true;
  for (char c : text) {
    if (static_cast<unsigned char>(c) >= 0x80) {
      ascii = false;
      break;
    }
  }
  if (ascii) return text;
  int opts = UTF8PROC_STABLE;
  switch (form) {
    case UnicodeForm::kNFC: opts |= UTF8PROC_COMPOSE; break;
    case UnicodeForm::kNFD: opts |= UTF8PROC_DECOMPOSE; break;
    case UnicodeForm::kNFKC: opts |= UTF8PROC_COMPOSE | UTF8PROC_COMPAT; break;
    case UnicodeForm::kNFKD: opts |= UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT; break;
  }
  utf8proc_uint8_t* out = nullptr;
  utf8proc_ssize_t n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(text.data()),
                                    static_cast<utf8proc_ssize_t>(text.size()), &out,
                                    static_cast<utf8proc_option_t>(opts));
  if (n < 0) {
    return make_error(ErrorCode::kInvalidArgument, "unicode normalization failed: {}", utf8proc_errmsg(n));
  }
  std::string r(reinterpret_cast<char*>(out), static_cast<size_t>(n));
  std::free(out);
  return r;
}

namespace {

class UnicodeNormalizer final : public Normalizer {
 public:
  explicit UnicodeNormalizer(UnicodeForm f) : form_(f) {}
  Status normalize(std::string& text) const override {
    SHARDLM_ASSIGN_OR_RETURN(text, unicode_normalize(text, form_));
    return Status::Ok();
  }

 private:
  UnicodeForm form_;
};

class LowercaseNormalizer final : public Normalizer {
 public:
  Status normalize(std::string& text) const override {
    std::string out;
    out.reserve(text.size());
    size_t i = 0;
    while (i < text.size()) {
      char32_t c = utf8::decode_at(text, i);
      if (c == 0x130) {  // Rust: 'İ'.to_lowercase() == "i\u{307}"
        out.append("i\xCC\x87");
        continue;
      }
      utf8::append(out, static_cast<char32_t>(utf8proc_tolower(static_cast<utf8proc_int32_t>(c))));
    }
    text = std::move(out);
    return Status::Ok();
  }
};

class StripNormalizer final : public Normalizer {
 public:
  StripNormalizer(bool left, bool right) : left_(left), right_(right) {}
  Status normalize(std::string& text) const override {
    size_t b = 0, e = text.size();
    if (left_) {
      while (b < e) {
        size_t j = b;
        char32_t c = utf8::decode_at(text, j);
        if (!utf8::is_white_space(c)) break;
        b = j;
      }
    }
    if (right_) {
      while (e > b) {
        size_t j = e - 1;
        while (j > b && (static_cast<unsigned char>(text[j]) & 0xC0) == 0x80) --j;
        size_t k = j;
        char32_t c = utf8::decode_at(text, k);
        if (!utf8::is_white_space(c)) break;
        e = j;
      }
    }
    text = text.substr(b, e - b);
    return Status::Ok();
  }

 private:
  bool left_, right_;
};

class StripAccentsNormalizer final : public Normalizer {
 public:
  Status normalize(std::string& text) const override {
    std::string out;
    out.reserve(text.size());
    size_t i = 0;
    while (i < text.size()) {
      char32_t c = utf8::decode_at(text, i);
      if (utf8proc_category(static_cast<utf8proc_int32_t>(c)) == UTF8PROC_CATEGORY_MN) continue;
      utf8::append(out, c);
    }
    text = std::move(out);
    return Status::Ok();
  }
};

class PrependNormalizer final : public Normalizer {
 public:
  explicit PrependNormalizer(std::string p) : prepend_(std::move(p)) {}
  Status normalize(std::string& text) const override {
    if (!text.empty()) text.insert(0, prepend_);
    return Status::Ok();
  }

 private:
  std::string prepend_;
};

class ReplaceNormalizer final : public Normalizer {
 public:
  ReplaceNormalizer(std::shared_ptr<const Regex> re, std::string content)
      : re_(std::move(re)), content_(std::move(content)) {}
  Status normalize(std::string& text) const override {
    std::vector<std::pair<size_t, size_t>> m;
    SHARDLM_TRY(re_->find_all(text, m));
    if (m.empty()) return Status::Ok();
    std::string out;
    out.reserve(text.size());
    size_t prev = 0;
    for (auto [s, e] : m) {
      out.append(text, prev, s - prev);
      out.append(content_);
      prev = e;
    }
    out.append(text, prev, std::string::npos);
    text = std::move(out);
    return Status::Ok();
  }

 private:
  std::shared_ptr<const Regex> re_;
  std::string content_;
};

class ByteLevelNormalizer final : public Normalizer {
 public:
  Status normalize(std::string& text) const override {
    text = bytes_to_unicode(text);
    return Status::Ok();
  }
};

class BertNormalizer final : public Normalizer {
 public:
  BertNormalizer(bool clean, bool chinese, std::optional<bool> strip, bool lower)
      : clean_(clean), chinese_(chinese), strip_(strip), lower_(lower) {}
  Status normalize(std::string& text) const override {
    std::string out;
    out.reserve(text.size());
    size_t i = 0;
    while (i < text.size()) {
      char32_t c = utf8::decode_at(text, i);
      if (clean_) {
        if (c == 0 || c == 0xFFFD) continue;
        auto cat = utf8proc_category(static_cast<utf8proc_int32_t>(c));
        bool ws = c == '\t' || c == '\n' || c == '\r' || utf8::is_white_space(c);
        if (!ws && (cat == UTF8PROC_CATEGORY_CC || cat == UTF8PROC_CATEGORY_CF || cat == UTF8PROC_CATEGORY_CN ||
                    cat == UTF8PROC_CATEGORY_CO))
          continue;
        if (ws) c = ' ';
      }
      bool cjk = (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) || (c >= 0x20000 && c <= 0x2A6DF) ||
                 (c >= 0x2A700 && c <= 0x2B73F) || (c >= 0x2B740 && c <= 0x2B81F) ||
                 (c >= 0x2B920 && c <= 0x2CEAF) || (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
      if (chinese_ && cjk) {
        out.push_back(' ');
        utf8::append(out, c);
        out.push_back(' ');
      } else {
        utf8::append(out, c);
      }
    }
    text = std::move(out);
    bool strip = strip_.value_or(lower_);
    if (strip) {
      SHARDLM_ASSIGN_OR_RETURN(text, unicode_normalize(text, UnicodeForm::kNFD));
      SHARDLM_TRY(StripAccentsNormalizer().normalize(text));
    }
    if (lower_) SHARDLM_TRY(LowercaseNormalizer().normalize(text));
    return Status::Ok();
  }

 private:
  bool clean_, chinese_;
  std::optional<bool> strip_;
  bool lower_;
};

class SequenceNormalizer final : public Normalizer {
 public:
  explicit SequenceNormalizer(std::vector<std::unique_ptr<Normalizer>> v) : steps_(std::move(v)) {}
  Status normalize(std::string& text) const override {
    for (const auto& s : steps_) SHARDLM_TRY(s->normalize(text));
    return Status::Ok();
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> steps_;
};

bool get_bool(const json& j, const char* key, bool def) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_boolean()) return def;
  return it->get<bool>();
}

}  // namespace

// Shared with pre-tokenizers and decoders: {"String": "..."} or {"Regex": "..."}.
Expected<std::shared_ptr<const Regex>> make_pattern(const json& j) {
  if (j.is_object()) {
    if (auto it = j.find("Regex"); it != j.end() && it->is_string()) return Regex::compile(it->get<std::string>());
    if (auto it = j.find("String"); it != j.end() && it->is_string()) return Regex::literal(it->get<std::string>());
  }
  if (j.is_string()) return Regex::literal(j.get<std::string>());
  return make_error(ErrorCode::kFormat, "pattern must be {{\"String\": ...}} or {{\"Regex\": ...}}");
}

Expected<std::unique_ptr<Normalizer>> make_normalizer(const json& j) {
  if (j.is_null()) return std::unique_ptr<Normalizer>();
  if (!j.is_object() || !j.contains("type") || !j["type"].is_string())
    return make_error(ErrorCode::kFormat, "normalizer: expected an object with a \"type\"");
  const std::string type = j["type"].get<std::string>();
  if (type == "NFC") return std::unique_ptr<Normalizer>(new UnicodeNormalizer(UnicodeForm::kNFC));
  if (type == "NFD") return std::unique_ptr<Normalizer>(new UnicodeNormalizer(UnicodeForm::kNFD));
  if (type == "NFKC") return std::unique_ptr<Normalizer>(new UnicodeNormalizer(UnicodeForm::kNFKC));
  if (type == "NFKD") return std::unique_ptr<Normalizer>(new UnicodeNormalizer(UnicodeForm::kNFKD));
  if (type == "Lowercase") return std::unique_ptr<Normalizer>(new LowercaseNormalizer());
  if (type == "StripAccents") return std::unique_ptr<Normalizer>(new StripAccentsNormalizer());
  if (type == "ByteLevel") return std::unique_ptr<Normalizer>(new ByteLevelNormalizer());
  if (type == "Strip")
    return std::unique_ptr<Normalizer>(
        new StripNormalizer(get_bool(j, "strip_left", true), get_bool(j, "strip_right", true)));
  if (type == "Prepend") {
    if (!j.contains("prepend") || !j["prepend"].is_string())
      return make_error(ErrorCode::kFormat, "normalizer Prepend: missing \"prepend\"");
    return std::unique_ptr<Normalizer>(new PrependNormalizer(j["prepend"].get<std::string>()));
  }
  if (type == "Replace") {
    if (!j.contains("pattern") || !j.contains("content") || !j["content"].is_string())
      return make_error(ErrorCode::kFormat, "normalizer Replace: needs \"pattern\" and \"content\"");
    SHARDLM_ASSIGN_OR_RETURN(auto re, make_pattern(j["pattern"]));
    return std::unique_ptr<Normalizer>(new ReplaceNormalizer(std::move(re), j["content"].get<std::string>()));
  }
  if (type == "BertNormalizer") {
    std::optional<bool> strip;
    if (j.contains("strip_accents") && j["strip_accents"].is_boolean()) strip = j["strip_accents"].get<bool>();
    return std::unique_ptr<Normalizer>(new BertNormalizer(get_bool(j, "clean_text", true),
                                                          get_bool(j, "handle_chinese_chars", true), strip,
                                                          get_bool(j, "lowercase", true)));
  }
  if (type == "Sequence") {
    if (!j.contains("normalizers") || !j["normalizers"].is_array())
      return make_error(ErrorCode::kFormat, "normalizer Sequence: missing \"normalizers\" array");
    std::vector<std::unique_ptr<Normalizer>> v;
    for (const auto& n : j["normalizers"]) {
      SHARDLM_ASSIGN_OR_RETURN(auto step, make_normalizer(n));
      if (step) v.push_back(std::move(step));
    }
    return std::unique_ptr<Normalizer>(new SequenceNormalizer(std::move(v)));
  }
  return make_error(ErrorCode::kUnsupported, "normalizer type \"{}\" is not supported", type);
}

}  // namespace shardlm
