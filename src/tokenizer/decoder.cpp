#include "tokenizer/decoder.h"

#include "tokenizer/bytes_char.h"
#include "tokenizer/json_util.h"
#include "tokenizer/regex.h"
#include "tokenizer/utf8.h"

namespace shardlm {

using nlohmann::json;

std::string utf8_lossy(std::string_view bytes) {
  if (utf8::is_valid(bytes)) return std::string(bytes);
  return utf8::sanitize(bytes);
}

namespace {

class ByteLevelDecoder final : public Decoder {
 public:
  Status decode_chain(std::vector<std::string>& tokens) const override {
    std::string bytes;
    for (const auto& t : tokens) {
      size_t start = bytes.size();
      bool ok = true;
      size_t i = 0;
      while (i < t.size()) {
        size_t len = utf8::valid_sequence_length(t, i);
        if (len == 0) {
          ok = false;
          break;
        }
        char32_t c = utf8::decode_at(t, i);
        int b = byte_level_byte(c);
        if (b < 0) {
          ok = false;
          break;
        }
        bytes.push_back(static_cast<char>(b));
      }
      if (!ok) {  // not a byte-level token (an added token): its own bytes
        bytes.resize(start);
        bytes.append(t);
      }
    }
    tokens.assign(1, utf8_lossy(bytes));
    return Status::Ok();
  }
};

class ByteFallbackDecoder final : public Decoder {
 public:
  Status decode_chain(std::vector<std::string>& tokens) const override {
    std::vector<std::string> out;
    out.reserve(tokens.size());
    std::string pending;
    auto flush = [&] {
      if (pending.empty()) return;
      if (utf8::is_valid(pending)) {
        out.push_back(pending);
      } else {
        for (size_t i = 0; i < pending.size(); ++i) out.emplace_back(utf8::kReplacementUtf8);
      }
      pending.clear();
    };
    for (auto& t : tokens) {
      int byte = -1;
      if (t.size() == 6 && t.compare(0, 3, "<0x") == 0 && t[5] == '>') {
        auto hex = [](char c) -> int {
          if (c >= '0' && c <= '9') return c - '0';
          if (c >= 'a' && c <= 'f') return c - 'a' + 10;
          if (c >= 'A' && c <= 'F') return c - 'A' + 10;
          return -1;
        };
        int h = hex(t[3]), l = hex(t[4]);
        if (h >= 0 && l >= 0) byte = h * 16 + l;
      }
      if (byte >= 0) {
        pending.push_back(static_cast<char>(byte));
      } else {
        flush();
        out.push_back(std::move(t));
      }
    }
    flush();
    tokens = std::move(out);
    return Status::Ok();
  }
};

class FuseDecoder final : public Decoder {
 public:
  Status decode_chain(std::vector<std::string>& tokens) const override {
    std::string all;
    for (const auto& t : tokens) all += t;
    tokens.assign(1, std::move(all));
    return Status::Ok();
  }
};

class StripDecoder final : public Decoder {
 public:
  StripDecoder(char32_t c, size_t start, size_t stop) : c_(c), start_(start), stop_(stop) {}
  Status decode_chain(std::vector<std::string>& tokens) const override {
    for (auto& t : tokens) {
      std::vector<char32_t> chars;
      size_t i = 0;
      while (i < t.size()) chars.push_back(utf8::decode_at(t, i));
      size_t b = 0;
      for (size_t k = 0; k < start_ && k < chars.size() && chars[k] == c_; ++k) b = k + 1;
      size_t e = chars.size();
      for (size_t k = 0; k < stop_ && k < chars.size(); ++k) {
        size_t idx = chars.size() - k - 1;
        if (chars[idx] != c_) break;
        e = idx;
      }
      std::string r;
      for (size_t k = b; k < e; ++k) utf8::append(r, chars[k]);
      t = std::move(r);
    }
    return Status::Ok();
  }

 private:
  char32_t c_;
  size_t start_, stop_;
};

class ReplaceDecoder final : public Decoder {
 public:
  ReplaceDecoder(std::shared_ptr<const Regex> re, std::string content) : re_(std::move(re)), content_(std::move(content)) {}
  Status decode_chain(std::vector<std::string>& tokens) const override {
    std::vector<std::pair<size_t, size_t>> m;
    for (auto& t : tokens) {
      m.clear();
      SHARDLM_TRY(re_->find_all(t, m));
      if (m.empty()) continue;
      std::string r;
      size_t prev = 0;
      for (auto [s, e] : m) {
        r.append(t, prev, s - prev);
        r.append(content_);
        prev = e;
      }
      r.append(t, prev, std::string::npos);
      t = std::move(r);
    }
    return Status::Ok();
  }

 private:
  std::shared_ptr<const Regex> re_;
  std::string content_;
};

class MetaspaceDecoder final : public Decoder {
 public:
  MetaspaceDecoder(char32_t rep, bool strip_first) : rep_(rep), strip_first_(strip_first) {}
  Status decode_chain(std::vector<std::string>& tokens) const override {
    for (size_t k = 0; k < tokens.size(); ++k) {
      const std::string& t = tokens[k];
      std::string r;
      size_t i = 0;
      while (i < t.size()) {
        char32_t c = utf8::decode_at(t, i);
        if (c == rep_) {
          if (!(k == 0 && strip_first_)) r.push_back(' ');
        } else {
          utf8::append(r, c);
        }
      }
      tokens[k] = std::move(r);
    }
    return Status::Ok();
  }

 private:
  char32_t rep_;
  bool strip_first_;
};

class SequenceDecoder final : public Decoder {
 public:
  explicit SequenceDecoder(std::vector<std::unique_ptr<Decoder>> v) : steps_(std::move(v)) {}
  Status decode_chain(std::vector<std::string>& tokens) const override {
    for (const auto& s : steps_) SHARDLM_TRY(s->decode_chain(tokens));
    return Status::Ok();
  }

 private:
  std::vector<std::unique_ptr<Decoder>> steps_;
};

std::unique_ptr<Decoder> ud(Decoder* d) { return std::unique_ptr<Decoder>(d); }

Expected<char32_t> single_char(const json& j, const char* key, char32_t def) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_string()) return def;
  const std::string& s = it->get_ref<const std::string&>();
  size_t i = 0;
  if (s.empty() || !utf8::is_valid(s)) return make_error(ErrorCode::kFormat, "decoder: \"{}\" must be one character", key);
  char32_t c = utf8::decode_at(s, i);
  if (i != s.size()) return make_error(ErrorCode::kFormat, "decoder: \"{}\" must be one character", key);
  return c;
}

}  // namespace

Expected<std::unique_ptr<Decoder>> make_decoder(const json& j) {
  if (j.is_null()) return std::unique_ptr<Decoder>();
  if (!j.is_object() || !j.contains("type") || !j["type"].is_string())
    return make_error(ErrorCode::kFormat, "decoder: expected an object with a \"type\"");
  const std::string type = j["type"].get<std::string>();
  if (type == "ByteLevel") return ud(new ByteLevelDecoder());
  if (type == "ByteFallback") return ud(new ByteFallbackDecoder());
  if (type == "Fuse") return ud(new FuseDecoder());
  if (type == "Strip") {
    SHARDLM_ASSIGN_OR_RETURN(char32_t c, single_char(j, "content", U' '));
    auto num = [&](const char* k) -> size_t {
      auto it = j.find(k);
      return (it != j.end() && it->is_number_unsigned()) ? std::min<size_t>(it->get<size_t>(), 1 << 20) : 0;
    };
    return ud(new StripDecoder(c, num("start"), num("stop")));
  }
  if (type == "Replace") {
    if (!j.contains("pattern") || !j.contains("content") || !j["content"].is_string())
      return make_error(ErrorCode::kFormat, "decoder Replace: needs \"pattern\" and \"content\"");
    SHARDLM_ASSIGN_OR_RETURN(auto re, make_pattern(j["pattern"]));
    return ud(new ReplaceDecoder(std::move(re), j["content"].get<std::string>()));
  }
  if (type == "Metaspace") {
    SHARDLM_ASSIGN_OR_RETURN(char32_t c, single_char(j, "replacement", U'\u2581'));
    bool strip_first = true;
    if (j.contains("prepend_scheme") && j["prepend_scheme"].is_string())
      strip_first = j["prepend_scheme"].get<std::string>() != "never";
    else
      strip_first = json_bool(j, "add_prefix_space", true);
    return ud(new MetaspaceDecoder(c, strip_first));
  }
  if (type == "Sequence") {
    if (!j.contains("decoders") || !j["decoders"].is_array())
      return make_error(ErrorCode::kFormat, "decoder Sequence: missing \"decoders\" array");
    std::vector<std::unique_ptr<Decoder>> v;
    for (const auto& d : j["decoders"]) {
      SHARDLM_ASSIGN_OR_RETURN(auto step, make_decoder(d));
      if (step) v.push_back(std::move(step));
    }
    return ud(new SequenceDecoder(std::move(v)));
  }
  return make_error(ErrorCode::kUnsupported, "decoder type \"{}\" is not supported", type);
}

}  // namespace shardlm
