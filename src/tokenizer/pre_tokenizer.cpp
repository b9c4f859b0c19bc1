#include "tokenizer/pre_tokenizer.h"

#include <functional>

#include "tokenizer/bytes_char.h"
#include "tokenizer/json_util.h"
#include "tokenizer/regex.h"
#include "tokenizer/utf8.h"

namespace shardlm {

using nlohmann::json;
using Segments = std::vector<std::pair<std::pair<size_t, size_t>, bool>>;

std::vector<std::pair<size_t, size_t>> apply_split_behavior(const Segments& segs, SplitBehavior behavior) {
  std::vector<std::pair<size_t, size_t>> out;
  out.reserve(segs.size());
  switch (behavior) {
    case SplitBehavior::kRemoved:
      for (const auto& [o, m] : segs)
        if (!m) out.push_back(o);
      break;
    case SplitBehavior::kIsolated:
      for (const auto& [o, m] : segs) out.push_back(o);
      break;
    case SplitBehavior::kMergedWithPrevious: {
      bool prev_match = false;
      for (const auto& [o, m] : segs) {
        if (m && !prev_match && !out.empty()) {
          out.back().second = o.second;
        } else {
          out.push_back(o);
        }
        prev_match = m;
      }
      break;
    }
    case SplitBehavior::kMergedWithNext: {
      bool prev_match = false;
      for (auto it = segs.rbegin(); it != segs.rend(); ++it) {
        const auto& [o, m] = *it;
        if (m && !prev_match && !out.empty()) {
          out.back().first = o.first;
        } else {
          out.push_back(o);
        }
        prev_match = m;
      }
      std::reverse(out.begin(), out.end());
      break;
    }
    case SplitBehavior::kContiguous: {
      bool prev_match = false;
      for (const auto& [o, m] : segs) {
        if (m == prev_match && !out.empty()) {
          out.back().second = o.second;
        } else {
          out.push_back(o);
        }
        prev_match = m;
      }
      break;
    }
  }
  return out;
}

namespace {

// Segments from regex matches (HF's Pattern::find_matches for a regex).
Status regex_segments(const Regex& re, std::string_view s, bool invert, Segments& segs) {
  segs.clear();
  std::vector<std::pair<size_t, size_t>> m;
  SHARDLM_TRY(re.find_all(s, m));
  size_t prev = 0;
  for (auto [st, en] : m) {
    if (prev != st) segs.push_back({{prev, st}, invert});
    segs.push_back({{st, en}, !invert});
    prev = en;
  }
  if (prev != s.size()) segs.push_back({{prev, s.size()}, invert});
  return Status::Ok();
}

// Segments where each character satisfying `pred` is a match of its own.
void char_segments(std::string_view s, const std::function<bool(char32_t)>& pred, Segments& segs) {
  segs.clear();
  size_t last = 0, i = 0;
  while (i < s.size()) {
    size_t b = i;
    char32_t c = utf8::decode_at(s, i);
    if (pred(c)) {
      if (last < b) segs.push_back({{last, b}, false});
      segs.push_back({{b, i}, true});
      last = i;
    }
  }
  if (i > last) segs.push_back({{last, i}, false});
}

// Replaces piece `p` by its ranges (dropping empty ones), appending to `out`.
void emit_ranges(Piece&& p, const std::vector<std::pair<size_t, size_t>>& ranges, std::vector<Piece>& out) {
  if (ranges.size() == 1 && ranges[0].first == 0 && ranges[0].second == p.text.size()) {
    out.push_back(std::move(p));
    return;
  }
  bool first = true;
  for (auto [s, e] : ranges) {
    if (e <= s) continue;
    Piece q;
    q.text.assign(p.text, s, e - s);
    q.at_start = p.at_start && first && s == 0;
    first = false;
    out.push_back(std::move(q));
  }
}

// Applies `fn` to every piece without an id; pieces with an id pass through.
template <typename Fn>
Status for_each_split(std::vector<Piece>& pieces, Fn&& fn) {
  std::vector<Piece> out;
  out.reserve(pieces.size() * 2);
  for (auto& p : pieces) {
    if (p.id >= 0) {
      out.push_back(std::move(p));
      continue;
    }
    if (p.text.empty()) continue;
    SHARDLM_TRY(fn(std::move(p), out));
  }
  pieces = std::move(out);
  return Status::Ok();
}

Expected<SplitBehavior> parse_behavior(const json& j) {
  std::string b = json_string(j, "behavior", "Isolated");
  if (b == "Removed") return SplitBehavior::kRemoved;
  if (b == "Isolated") return SplitBehavior::kIsolated;
  if (b == "MergedWithPrevious") return SplitBehavior::kMergedWithPrevious;
  if (b == "MergedWithNext") return SplitBehavior::kMergedWithNext;
  if (b == "Contiguous") return SplitBehavior::kContiguous;
  return make_error(ErrorCode::kFormat, "unknown split behavior \"{}\"", b);
}

class RegexSplit final : public PreTokenizer {
 public:
  RegexSplit(std::shared_ptr<const Regex> re, SplitBehavior b, bool invert)
      : re_(std::move(re)), behavior_(b), invert_(invert) {}
  Status pre_tokenize(std::vector<Piece>& pieces) const override {
    Segments segs;
    return for_each_split(pieces, [&](Piece&& p, std::vector<Piece>& out) -> Status {
      SHARDLM_TRY(regex_segments(*re_, p.text, invert_, segs));
      emit_ranges(std::move(p), apply_split_behavior(segs, behavior_), out);
      return Status::Ok();
    });
  }

 private:
  std::shared_ptr<const Regex> re_;
  SplitBehavior behavior_;
  bool invert_;
};

class CharSplit final : public PreTokenizer {
 public:
  CharSplit(std::function<bool(char32_t)> pred, SplitBehavior b) : pred_(std::move(pred)), behavior_(b) {}
  Status pre_tokenize(std::vector<Piece>& pieces) const override {
    Segments segs;
    return for_each_split(pieces, [&](Piece&& p, std::vector<Piece>& out) -> Status {
      char_segments(p.text, pred_, segs);
      emit_ranges(std::move(p), apply_split_behavior(segs, behavior_), out);
      return Status::Ok();
    });
  }

 private:
  std::function<bool(char32_t)> pred_;
  SplitBehavior behavior_;
};

constexpr const char* kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

class ByteLevelPre final : public PreTokenizer {
 public:
  ByteLevelPre(bool add_prefix_space, bool use_regex, std::shared_ptr<const Regex> re)
      : add_prefix_space_(add_prefix_space), use_regex_(use_regex), re_(std::move(re)) {}
  Status pre_tokenize(std::vector<Piece>& pieces) const override {
    Segments segs;
    std::vector<std::pair<size_t, size_t>> ranges;
    return for_each_split(pieces, [&](Piece&& p, std::vector<Piece>& out) -> Status {
      if (add_prefix_space_ && p.text[0] != ' ') p.text.insert(0, " ");
      size_t first = out.size();
      if (use_regex_) {
        SHARDLM_TRY(regex_segments(*re_, p.text, false, segs));
        emit_ranges(std::move(p), apply_split_behavior(segs, SplitBehavior::kIsolated), out);
      } else {
        out.push_back(std::move(p));
      }
      for (size_t i = first; i < out.size(); ++i) out[i].text = bytes_to_unicode(out[i].text);
      return Status::Ok();
    });
  }

 private:
  bool add_prefix_space_, use_regex_;
  std::shared_ptr<const Regex> re_;
};

class MetaspacePre final : public PreTokenizer {
 public:
  enum class Scheme { kAlways, kFirst, kNever };
  MetaspacePre(std::string rep, Scheme scheme, bool split) : rep_(std::move(rep)), scheme_(scheme), split_(split) {}
  Status pre_tokenize(std::vector<Piece>& pieces) const override {
    Segments segs;
    return for_each_split(pieces, [&](Piece&& p, std::vector<Piece>& out) -> Status {
      std::string t;
      t.reserve(p.text.size() + rep_.size());
      for (char c : p.text) {
        if (c == ' ')
          t.append(rep_);
        else
          t.push_back(c);
      }
      bool starts = t.compare(0, rep_.size(), rep_) == 0;
      if (!starts && (scheme_ == Scheme::kAlways || (scheme_ == Scheme::kFirst && p.at_start))) t.insert(0, rep_);
      p.text = std::move(t);
      if (!split_) {
        out.push_back(std::move(p));
        return Status::Ok();
      }
      // Split on the replacement character, merged with the next piece.
      segs.clear();
      size_t last = 0, pos = 0;
      while ((pos = p.text.find(rep_, pos)) != std::string::npos) {
        if (last < pos) segs.push_back({{last, pos}, false});
        segs.push_back({{pos, pos + rep_.size()}, true});
        pos += rep_.size();
        last = pos;
      }
      if (last < p.text.size()) segs.push_back({{last, p.text.size()}, false});
      emit_ranges(std::move(p), apply_split_behavior(segs, SplitBehavior::kMergedWithNext), out);
      return Status::Ok();
    });
  }

 private:
  std::string rep_;
  Scheme scheme_;
  bool split_;
};

class SequencePre final : public PreTokenizer {
 public:
  explicit SequencePre(std::vector<std::unique_ptr<PreTokenizer>> v) : steps_(std::move(v)) {}
  Status pre_tokenize(std::vector<Piece>& pieces) const override {
    for (const auto& s : steps_) SHARDLM_TRY(s->pre_tokenize(pieces));
    return Status::Ok();
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> steps_;
};

std::unique_ptr<PreTokenizer> up(PreTokenizer* p) { return std::unique_ptr<PreTokenizer>(p); }

}  // namespace

Expected<std::unique_ptr<PreTokenizer>> make_pre_tokenizer(const json& j) {
  if (j.is_null()) return std::unique_ptr<PreTokenizer>();
  if (!j.is_object() || !j.contains("type") || !j["type"].is_string())
    return make_error(ErrorCode::kFormat, "pre_tokenizer: expected an object with a \"type\"");
  const std::string type = j["type"].get<std::string>();
  if (type == "Sequence") {
    if (!j.contains("pretokenizers") || !j["pretokenizers"].is_array())
      return make_error(ErrorCode::kFormat, "pre_tokenizer Sequence: missing \"pretokenizers\" array");
    std::vector<std::unique_ptr<PreTokenizer>> v;
    for (const auto& p : j["pretokenizers"]) {
      SHARDLM_ASSIGN_OR_RETURN(auto step, make_pre_tokenizer(p));
      if (step) v.push_back(std::move(step));
    }
    return up(new SequencePre(std::move(v)));
  }
  if (type == "Split") {
    if (!j.contains("pattern")) return make_error(ErrorCode::kFormat, "pre_tokenizer Split: missing \"pattern\"");
    SHARDLM_ASSIGN_OR_RETURN(auto re, make_pattern(j["pattern"]));
    SHARDLM_ASSIGN_OR_RETURN(auto behavior, parse_behavior(j));
    return up(new RegexSplit(std::move(re), behavior, json_bool(j, "invert", false)));
  }
  if (type == "ByteLevel") {
    std::shared_ptr<const Regex> re;
    bool use_regex = json_bool(j, "use_regex", true);
    if (use_regex) {
      static const auto gpt2 = Regex::compile(kGpt2Pattern);
      if (!gpt2.ok()) return gpt2.status();
      re = *gpt2;
    }
    return up(new ByteLevelPre(json_bool(j, "add_prefix_space", true), use_regex, std::move(re)));
  }
  if (type == "Digits") {
    bool individual = json_bool(j, "individual_digits", false);
    return up(new CharSplit(utf8::is_numeric, individual ? SplitBehavior::kIsolated : SplitBehavior::kContiguous));
  }
  if (type == "WhitespaceSplit") return up(new CharSplit(utf8::is_white_space, SplitBehavior::kRemoved));
  if (type == "Whitespace") {
    static const auto ws = Regex::compile(R"(\w+|[^\w\s]+)");
    if (!ws.ok()) return ws.status();
    return up(new RegexSplit(*ws, SplitBehavior::kRemoved, /*invert=*/true));
  }
  if (type == "Punctuation") {
    SHARDLM_ASSIGN_OR_RETURN(auto behavior, parse_behavior(j));
    return up(new CharSplit(
        [](char32_t c) { return (c < 0x80 && c > 0x20 && !std::isalnum(static_cast<int>(c))) || utf8::is_punctuation(c); },
        behavior));
  }
  if (type == "CharDelimiterSplit") {
    std::string d = json_string(j, "delimiter");
    size_t i = 0;
    if (d.empty() || !utf8::is_valid(d)) return make_error(ErrorCode::kFormat, "CharDelimiterSplit: bad delimiter");
    char32_t c = utf8::decode_at(d, i);
    return up(new CharSplit([c](char32_t x) { return x == c; }, SplitBehavior::kRemoved));
  }
  if (type == "Metaspace") {
    std::string rep = json_string(j, "replacement", "\xE2\x96\x81");
    if (rep.empty()) rep = "\xE2\x96\x81";
    MetaspacePre::Scheme scheme = MetaspacePre::Scheme::kAlways;
    if (j.contains("prepend_scheme") && j["prepend_scheme"].is_string()) {
      std::string s = j["prepend_scheme"].get<std::string>();
      scheme = s == "first" ? MetaspacePre::Scheme::kFirst
               : s == "never" ? MetaspacePre::Scheme::kNever
                              : MetaspacePre::Scheme::kAlways;
    } else if (!json_bool(j, "add_prefix_space", true)) {
      scheme = MetaspacePre::Scheme::kNever;
    }
    return up(new MetaspacePre(rep, scheme, json_bool(j, "split", true)));
  }
  return make_error(ErrorCode::kUnsupported, "pre_tokenizer type \"{}\" is not supported", type);
}

}  // namespace shardlm
