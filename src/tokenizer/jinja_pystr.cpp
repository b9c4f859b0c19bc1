#include "tokenizer/jinja_pystr.h"

#include <algorithm>

#include <utf8proc.h>

#include "tokenizer/jinja_interp.h"
#include "tokenizer/utf8.h"

namespace shardlm::jinja {

bool py_space(char32_t c) { return utf8::is_white_space(c) || (c >= 0x1C && c <= 0x1F); }

std::vector<char32_t> to_cps(std::string_view s) {
  std::vector<char32_t> v;
  size_t i = 0;
  while (i < s.size()) v.push_back(utf8::valid_sequence_length(s, i) ? utf8::decode_at(s, i) : (++i, utf8::kReplacement));
  return v;
}

static std::string from_cps(const std::vector<char32_t>& v, size_t b, size_t e) {
  std::string out;
  for (size_t k = b; k < e; ++k) utf8::append(out, v[k]);
  return out;
}

// Python str.strip/lstrip/rstrip with optional chars. One pass over the code
// points that finds the kept range, one over the kept range that copies it
// (an invalid byte becomes U+FFFD, as everywhere in the interpreter).
std::string py_strip(const std::string& s, const Value* chars, bool left, bool right) {
  std::vector<char32_t> set;
  bool ws = !chars || chars->is_none() || chars->is_undefined();
  if (!ws) {
    set = to_cps(chars->str());
    std::sort(set.begin(), set.end());
  }
  auto strip_it = [&](char32_t c) { return ws ? py_space(c) : std::binary_search(set.begin(), set.end(), c); };
  auto next = [&](size_t& i) { return utf8::valid_sequence_length(s, i) ? utf8::decode_at(s, i) : (++i, utf8::kReplacement); };
  size_t first = std::string::npos, last_end = 0;  // first kept code point's start, last one's end
  for (size_t i = 0; i < s.size();) {
    size_t start = i;
    if (!strip_it(next(i))) {
      if (first == std::string::npos) first = start;
      last_end = i;
    }
  }
  if (first == std::string::npos) return std::string();
  const size_t b = left ? first : 0, e = right ? last_end : s.size();
  std::string out;
  out.reserve(e - b);
  for (size_t i = b; i < e;) utf8::append(out, next(i));
  return out;
}

std::string map_case(const std::string& s, bool upper) {
  std::string out;
  size_t i = 0;
  while (i < s.size()) {
    char32_t c = utf8::valid_sequence_length(s, i) ? utf8::decode_at(s, i) : (++i, utf8::kReplacement);
    auto m = upper ? utf8proc_toupper(static_cast<utf8proc_int32_t>(c)) : utf8proc_tolower(static_cast<utf8proc_int32_t>(c));
    utf8::append(out, static_cast<char32_t>(m));
  }
  return out;
}

bool is_cased_letter(char32_t c) {
  auto cat = utf8proc_category(static_cast<utf8proc_int32_t>(c));
  return cat == UTF8PROC_CATEGORY_LU || cat == UTF8PROC_CATEGORY_LL || cat == UTF8PROC_CATEGORY_LT;
}

// Python str.title(): a letter after a non-letter is upper-cased, others lowered.
std::string py_title(const std::string& s) {
  std::string out;
  bool prev_cased = false;
  for (char32_t c : to_cps(s)) {
    char32_t m = prev_cased ? utf8proc_tolower(static_cast<utf8proc_int32_t>(c)) : utf8proc_totitle(static_cast<utf8proc_int32_t>(c));
    utf8::append(out, m);
    prev_cased = is_cased_letter(c);
  }
  return out;
}

std::string py_capitalize(const std::string& s) {
  auto cps = to_cps(s);
  std::string out;
  for (size_t k = 0; k < cps.size(); ++k) {
    auto m = k == 0 ? utf8proc_totitle(static_cast<utf8proc_int32_t>(cps[k])) : utf8proc_tolower(static_cast<utf8proc_int32_t>(cps[k]));
    utf8::append(out, static_cast<char32_t>(m));
  }
  return out;
}

static std::string replace_all(const std::string& s, const std::string& from, const std::string& to, int64_t count) {
  if (from.empty()) {
    // Python inserts `to` between every character.
    std::string out;
    int64_t n = 0;
    auto starts = char_starts(s);
    for (size_t k = 0; k < starts.size(); ++k) {
      if (count < 0 || n < count) {
        out += to;
        ++n;
      }
      if (k + 1 < starts.size()) out.append(s, starts[k], starts[k + 1] - starts[k]);
    }
    return out;
  }
  std::string out;
  size_t pos = 0, prev = 0;
  int64_t n = 0;
  while ((count < 0 || n < count) && (pos = find_substr(s, from, prev)) != std::string::npos) {
    out.append(s, prev, pos - prev);
    out += to;
    prev = pos + from.size();
    ++n;
  }
  out.append(s, prev, std::string::npos);
  return out;
}

// replace_all with the interpreter's size bound.
Expected<std::string> replace_checked(const std::string& s, const std::string& from, const std::string& to, int64_t count) {
  size_t n = 0;
  if (from.empty()) {
    n = utf8_length(s) + 1;
  } else {
    for (size_t p = find_substr(s, from); p != std::string::npos; p = find_substr(s, from, p + from.size())) ++n;
  }
  if (count >= 0) n = std::min(n, static_cast<size_t>(count));
  if (to.size() > from.size()) SHARDLM_TRY(Interp::check_size(s.size() + n * (to.size() - from.size())));
  return replace_all(s, from, to, count);
}

List py_split(const std::string& s, const Value* sep_v, int64_t maxsplit) {
  List out;
  if (!sep_v || sep_v->is_none() || sep_v->is_undefined()) {
    auto cps = to_cps(s);
    size_t k = 0;
    int64_t n = 0;
    while (k < cps.size()) {
      while (k < cps.size() && py_space(cps[k])) ++k;
      if (k >= cps.size()) break;
      if (maxsplit >= 0 && n >= maxsplit) {
        size_t e = cps.size();
        while (e > k && py_space(cps[e - 1])) --e;
        out.push_back(Value::string(from_cps(cps, k, e)));
        return out;
      }
      size_t b = k;
      while (k < cps.size() && !py_space(cps[k])) ++k;
      out.push_back(Value::string(from_cps(cps, b, k)));
      ++n;
    }
    return out;
  }
  std::string sep = sep_v->str();
  size_t prev = 0, pos;
  int64_t n = 0;
  while ((maxsplit < 0 || n < maxsplit) && !sep.empty() && (pos = find_substr(s, sep, prev)) != std::string::npos) {
    out.push_back(Value::string(s.substr(prev, pos - prev)));
    prev = pos + sep.size();
    ++n;
  }
  out.push_back(Value::string(s.substr(prev)));
  return out;
}

bool prefix_match(const std::string& s, const Value& p, bool suffix) {
  auto one = [&](const std::string& x) {
    if (x.size() > s.size()) return false;
    return suffix ? s.compare(s.size() - x.size(), x.size(), x) == 0 : s.compare(0, x.size(), x) == 0;
  };
  if (p.is_list()) {
    for (const auto& x : *p.list)
      if (x.is_string() && one(x.s())) return true;
    return false;
  }
  return one(p.str());
}

}  // namespace shardlm::jinja
