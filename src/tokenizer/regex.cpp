#include "tokenizer/regex.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "tokenizer/utf8.h"

namespace shardlm {

namespace {

// White_Space, which is what both Oniguruma and Rust mean by \s. PCRE2's UCP \s
// also matches U+180E, so the class is spelled out.
constexpr std::string_view kSpaceClassBody =
    "\\t\\n\\x{0B}\\f\\r\\x{20}\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}"
    "\\x{202F}\\x{205F}\\x{3000}";

struct MatchScratch {
  pcre2_match_data* md = nullptr;
  pcre2_match_context* ctx = nullptr;
  pcre2_jit_stack* stack = nullptr;
  MatchScratch() {
    md = pcre2_match_data_create(1, nullptr);
    ctx = pcre2_match_context_create(nullptr);
    stack = pcre2_jit_stack_create(32 * 1024, 8 * 1024 * 1024, nullptr);
    if (ctx && stack) pcre2_jit_stack_assign(ctx, nullptr, stack);
    // Bounds backtracking on pathological patterns (an error, not a hang).
    if (ctx) pcre2_set_match_limit(ctx, 5'000'000);
  }
  ~MatchScratch() {
    if (md) pcre2_match_data_free(md);
    if (ctx) pcre2_match_context_free(ctx);
    if (stack) pcre2_jit_stack_free(stack);
  }
};

MatchScratch& scratch() {
  thread_local MatchScratch s;
  return s;
}

}  // namespace

std::string translate_onig_pattern(std::string_view p) {
  std::string out;
  out.reserve(p.size() + 32);
  int class_depth = 0;  // inside [...] (Oniguruma allows nested classes)
  for (size_t i = 0; i < p.size(); ++i) {
    char c = p[i];
    if (c == '\\' && i + 1 < p.size()) {
      char e = p[i + 1];
      if (e == 's') {
        if (class_depth > 0) {
          out.append(kSpaceClassBody);
        } else {
          out.append("[").append(kSpaceClassBody).append("]");
        }
        ++i;
        continue;
      }
      if (e == 'S' && class_depth == 0) {
        out.append("[^").append(kSpaceClassBody).append("]");
        ++i;
        continue;
      }
      if (e == 'h') {
        out.append(class_depth > 0 ? "0-9a-fA-F" : "[0-9a-fA-F]");
        ++i;
        continue;
      }
      if (e == 'H' && class_depth == 0) {
        out.append("[^0-9a-fA-F]");
        ++i;
        continue;
      }
      out.push_back(c);
      out.push_back(e);
      ++i;
      continue;
    }
    if (c == '[') {
      // A '[' right after '[' or '[^' is a literal in PCRE2; count it anyway
      // only when it starts a POSIX class like [:alpha:].
      if (class_depth > 0 && i + 1 < p.size() && p[i + 1] == ':') {
        size_t close = p.find(":]", i + 2);
        if (close != std::string_view::npos) {
          out.append(p.substr(i, close + 2 - i));
          i = close + 1;
          continue;
        }
      }
      ++class_depth;
      out.push_back(c);
      // A ']' first in the class (after an optional '^') is a literal.
      if (i + 1 < p.size() && p[i + 1] == '^') {
        out.push_back('^');
        ++i;
      }
      if (i + 1 < p.size() && p[i + 1] == ']') {
        out.push_back(']');
        ++i;
      }
      continue;
    }
    if (c == ']' && class_depth > 0) --class_depth;
    out.push_back(c);
  }
  return out;
}

Regex::~Regex() {
  if (code_) pcre2_code_free(static_cast<pcre2_code*>(code_));
}

Expected<std::shared_ptr<const Regex>> Regex::compile(std::string_view pattern) {
  std::string translated = translate_onig_pattern(pattern);
  int err = 0;
  PCRE2_SIZE off = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(translated.data()), translated.size(),
                                   PCRE2_UTF | PCRE2_UCP, &err, &off, nullptr);
  if (!code) {
    PCRE2_UCHAR buf[256];
    pcre2_get_error_message(err, buf, sizeof(buf));
    return make_error(ErrorCode::kFormat, "invalid regex /{}/ at offset {}: {}", std::string(pattern), off,
                      reinterpret_cast<const char*>(buf));
  }
  std::shared_ptr<Regex> re(new Regex());
  re->code_ = code;
  re->pattern_ = std::string(pattern);
  re->jit_ = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;
  return std::shared_ptr<const Regex>(std::move(re));
}

Expected<std::shared_ptr<const Regex>> Regex::literal(std::string_view lit) {
  // Every ASCII character that is not a letter or digit is escaped (PCRE2 reads
  // "\\x" as a literal x for any such x); letters, digits and non-ASCII bytes
  // stand for themselves, so the Onig translation has nothing to rewrite.
  std::string p;
  p.reserve(lit.size() * 2);
  for (char c : lit) {
    unsigned char u = static_cast<unsigned char>(c);
    bool alnum = (u >= '0' && u <= '9') || (u >= 'a' && u <= 'z') || (u >= 'A' && u <= 'Z');
    if (u < 0x80 && !alnum) p.push_back('\\');
    p.push_back(c);
  }
  return compile(p);
}

Status Regex::find_all(std::string_view text, std::vector<std::pair<size_t, size_t>>& out) const {
  auto* code = static_cast<pcre2_code*>(code_);
  MatchScratch& s = scratch();
  if (!s.md || !s.ctx) return make_error(ErrorCode::kOutOfMemory, "pcre2 match data");
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  const size_t n = text.size();
  size_t pos = 0;
  bool have_last = false;
  size_t last_end = 0;
  while (pos <= n) {
    int rc = pcre2_match(code, subject, n, pos, PCRE2_NO_UTF_CHECK, s.md, s.ctx);
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT || rc == PCRE2_ERROR_MATCHLIMIT || rc == PCRE2_ERROR_HEAPLIMIT) {
      // Retry without JIT (the interpreter keeps its backtracking on the heap).
      rc = pcre2_match(code, subject, n, pos, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, s.md, s.ctx);
    }
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      PCRE2_UCHAR buf[256];
      pcre2_get_error_message(rc, buf, sizeof(buf));
      return make_error(ErrorCode::kInternal, "regex /{}/ match failed: {}", pattern_,
                        reinterpret_cast<const char*>(buf));
    }
    PCRE2_SIZE* ov = pcre2_get_ovector_pointer(s.md);
    size_t st = ov[0], en = ov[1];
    if (en < st || en > n) {  // \K in a lookbehind can do this; treat as empty at en
      st = en = std::min<size_t>(std::max(st, en), n);
    }
    if (st == en && have_last && last_end == en) {
      // Skip an empty match right after the previous one; move one character on.
      if (pos >= n) break;
      size_t len = utf8::valid_sequence_length(text, pos);
      pos += len ? len : 1;
      continue;
    }
    out.emplace_back(st, en);
    have_last = true;
    last_end = en;
    if (en > pos) {
      pos = en;
    } else {
      // Empty match at pos: the next search starts here again and the rule
      // above moves past it.
      pos = en;
    }
  }
  return Status::Ok();
}

}  // namespace shardlm
