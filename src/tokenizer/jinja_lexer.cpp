#include "tokenizer/jinja_lexer.h"

#include <algorithm>
#include <cctype>

#include "tokenizer/utf8.h"

namespace shardlm::jinja {

std::string where(int line, int col) { return fmt::format("line {}, column {}", line, col); }

namespace {

bool py_space(char32_t c) { return utf8::is_white_space(c) || (c >= 0x1C && c <= 0x1F); }

// Python's str.rstrip() on UTF-8 text.
void rstrip_all(std::string& s) {
  while (!s.empty()) {
    size_t j = s.size() - 1;
    while (j > 0 && (static_cast<unsigned char>(s[j]) & 0xC0) == 0x80) --j;
    size_t k = j;
    char32_t c = utf8::decode_at(s, k);
    if (!py_space(c)) break;
    s.resize(j);
  }
}

// Converts "\r\n" and "\r" to "\n" as Jinja does for template data.
std::string normalize_newlines(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\r') {
      out.push_back('\n');
      if (i + 1 < s.size() && s[i + 1] == '\n') ++i;
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

class Lexer {
 public:
  Lexer(std::string_view src, const Options& o) : src_(src), opt_(o) {
    line_starts_.push_back(0);
    for (size_t i = 0; i < src_.size(); ++i)
      if (src_[i] == '\n') line_starts_.push_back(i + 1);
  }

  Expected<std::vector<Token>> run() {
    bool line_starting = true;
    while (pos_ < src_.size()) {
      size_t open = find_open(pos_);
      std::string text(src_.substr(pos_, open - pos_));
      if (open >= src_.size()) {
        emit_text(std::move(text), pos_);
        pos_ = src_.size();
        break;
      }
      char kind = src_[open + 1];  // '{', '%' or '#'
      char sign = open + 2 < src_.size() ? src_[open + 2] : '\0';
      if (sign == '-') {
        rstrip_all(text);
      } else if (sign != '+' && opt_.lstrip_blocks && kind != '{') {
        size_t l = text.rfind('\n');
        size_t lpos = l == std::string::npos ? 0 : l + 1;
        if (lpos > 0 || line_starting) {
          bool only_ws = lpos < text.size();
          for (size_t k = lpos; k < text.size() && only_ws; ++k) {
            unsigned char c = static_cast<unsigned char>(text[k]);
            if (!(c == ' ' || c == '\t' || c == '\f' || c == '\v' || c == '\r')) only_ws = false;
          }
          if (only_ws) text.resize(lpos);
        }
      }
      size_t text_start = pos_;
      emit_text(std::move(text), text_start);
      pos_ = open + 2 + ((sign == '-' || sign == '+') ? 1 : 0);
      if (kind == '#') {
        SHARDLM_TRY(comment(open));
      } else if (kind == '%') {
        if (is_raw_start()) {
          SHARDLM_TRY(raw(open));
        } else {
          SHARDLM_TRY(tag(open, true));
        }
      } else {
        SHARDLM_TRY(tag(open, false));
      }
      line_starting = pos_ > 0 && src_[pos_ - 1] == '\n';
    }
    tokens_.push_back({Tok::kEof, "", line_of(src_.size()), col_of(src_.size())});
    return std::move(tokens_);
  }

 private:
  int line_of(size_t p) const {
    return static_cast<int>(std::upper_bound(line_starts_.begin(), line_starts_.end(), p) - line_starts_.begin());
  }
  int col_of(size_t p) const { return static_cast<int>(p - line_starts_[line_of(p) - 1]) + 1; }
  Status error(size_t p, const std::string& msg) const {
    return make_error(ErrorCode::kInvalidArgument, "template syntax error at {}: {}", where(line_of(p), col_of(p)), msg);
  }

  size_t find_open(size_t from) const {
    for (size_t i = from; i + 1 < src_.size(); ++i) {
      if (src_[i] == '{' && (src_[i + 1] == '{' || src_[i + 1] == '%' || src_[i + 1] == '#')) return i;
    }
    return src_.size();
  }

  void emit_text(std::string text, size_t at) {
    if (text.empty()) return;
    tokens_.push_back({Tok::kText, normalize_newlines(text), line_of(at), col_of(at)});
  }

  // After a closing delimiter: "-" strips all following whitespace; for blocks
  // and comments trim_blocks drops one newline unless "+" was given.
  void after_close(char sign, bool block_like) {
    if (sign == '-') {
      while (pos_ < src_.size()) {
        size_t k = pos_;
        if (utf8::valid_sequence_length(src_, k) == 0) break;
        char32_t c = utf8::decode_at(src_, k);
        if (!py_space(c)) break;
        pos_ = k;
      }
    } else if (sign != '+' && block_like && opt_.trim_blocks) {
      if (pos_ < src_.size() && src_[pos_] == '\n') {
        ++pos_;
      } else if (pos_ + 1 < src_.size() && src_[pos_] == '\r' && src_[pos_ + 1] == '\n') {
        pos_ += 2;
      } else if (pos_ < src_.size() && src_[pos_] == '\r') {
        ++pos_;
      }
    }
  }

  Status comment(size_t open) {
    size_t end = src_.find("#}", pos_);
    if (end == std::string_view::npos) return error(open, "missing end of comment tag \"#}\"");
    char sign = end > pos_ ? src_[end - 1] : '\0';
    pos_ = end + 2;
    after_close(sign == '-' || sign == '+' ? sign : '\0', true);
    return Status::Ok();
  }

  bool is_raw_start() const {
    size_t p = pos_;
    while (p < src_.size() && std::isspace(static_cast<unsigned char>(src_[p]))) ++p;
    if (src_.compare(p, 3, "raw") != 0) return false;
    p += 3;
    while (p < src_.size() && std::isspace(static_cast<unsigned char>(src_[p]))) ++p;
    return src_.compare(p, 2, "%}") == 0 || src_.compare(p, 3, "-%}") == 0 || src_.compare(p, 3, "+%}") == 0;
  }

  Status raw(size_t open) {
    size_t p = src_.find("%}", pos_);
    char sign = src_[p - 1];
    pos_ = p + 2;
    after_close(sign == '-' || sign == '+' ? sign : '\0', true);
    // Find {% endraw %} with optional modifiers.
    size_t search = pos_;
    while (true) {
      size_t b = src_.find("{%", search);
      if (b == std::string_view::npos) return error(open, "missing {% endraw %}");
      size_t q = b + 2;
      char s1 = q < src_.size() ? src_[q] : '\0';
      if (s1 == '-' || s1 == '+') ++q;
      while (q < src_.size() && std::isspace(static_cast<unsigned char>(src_[q]))) ++q;
      if (src_.compare(q, 6, "endraw") == 0) {
        q += 6;
        while (q < src_.size() && std::isspace(static_cast<unsigned char>(src_[q]))) ++q;
        char s2 = '\0';
        if (q < src_.size() && (src_[q] == '-' || src_[q] == '+')) s2 = src_[q++];
        if (src_.compare(q, 2, "%}") == 0) {
          std::string text(src_.substr(pos_, b - pos_));
          if (s1 == '-') rstrip_all(text);
          emit_text(std::move(text), pos_);
          pos_ = q + 2;
          after_close(s2, true);
          return Status::Ok();
        }
      }
      search = b + 2;
    }
  }

  Status tag(size_t open, bool block) {
    tokens_.push_back({block ? Tok::kBlockBegin : Tok::kVarBegin, "", line_of(open), col_of(open)});
    const std::string_view close = block ? "%}" : "}}";
    int depth = 0;  // brackets, so "}}" inside a dict literal is not an end
    while (true) {
      while (pos_ < src_.size() && std::isspace(static_cast<unsigned char>(src_[pos_]))) ++pos_;
      if (pos_ >= src_.size()) return error(open, block ? "missing end of block tag \"%}\"" : "missing end of variable tag \"}}\"");
      char c = src_[pos_];
      // Closing delimiter, possibly with a modifier.
      if (depth == 0) {
        char sign = '\0';
        size_t q = pos_;
        if ((c == '-' || c == '+') && src_.compare(q + 1, 2, close) == 0) {
          sign = c;
          ++q;
        }
        if (src_.compare(q, 2, close) == 0) {
          tokens_.push_back({block ? Tok::kBlockEnd : Tok::kVarEnd, "", line_of(pos_), col_of(pos_)});
          pos_ = q + 2;
          after_close(sign, block);
          return Status::Ok();
        }
      }
      size_t start = pos_;
      int line = line_of(start), col = col_of(start);
      if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
        while (pos_ < src_.size() && (std::isalnum(static_cast<unsigned char>(src_[pos_])) || src_[pos_] == '_')) ++pos_;
        tokens_.push_back({Tok::kName, std::string(src_.substr(start, pos_ - start)), line, col});
      } else if (std::isdigit(static_cast<unsigned char>(c))) {
        bool is_float = false;
        while (pos_ < src_.size() && (std::isdigit(static_cast<unsigned char>(src_[pos_])) || src_[pos_] == '_')) ++pos_;
        if (pos_ + 1 < src_.size() && src_[pos_] == '.' && std::isdigit(static_cast<unsigned char>(src_[pos_ + 1]))) {
          is_float = true;
          ++pos_;
          while (pos_ < src_.size() && std::isdigit(static_cast<unsigned char>(src_[pos_]))) ++pos_;
        }
        if (pos_ < src_.size() && (src_[pos_] == 'e' || src_[pos_] == 'E')) {
          size_t q = pos_ + 1;
          if (q < src_.size() && (src_[q] == '+' || src_[q] == '-')) ++q;
          if (q < src_.size() && std::isdigit(static_cast<unsigned char>(src_[q]))) {
            is_float = true;
            pos_ = q;
            while (pos_ < src_.size() && std::isdigit(static_cast<unsigned char>(src_[pos_]))) ++pos_;
          }
        }
        std::string num;
        for (char d : src_.substr(start, pos_ - start))
          if (d != '_') num.push_back(d);
        tokens_.push_back({is_float ? Tok::kFloat : Tok::kInt, num, line, col});
      } else if (c == '"' || c == '\'') {
        SHARDLM_TRY(string_literal(c, line, col));
      } else {
        static const char* kOps[] = {"//", "**", "==", "!=", "<=", ">=", "+", "-", "*", "/", "%", "~", "<", ">",
                                     "=", "(", ")", "[", "]", "{", "}", ",", ".", ":", "|"};
        std::string op;
        for (const char* o : kOps) {
          size_t n = std::char_traits<char>::length(o);
          if (src_.compare(pos_, n, o) == 0) {
            op = o;
            break;
          }
        }
        if (op.empty()) return error(start, fmt::format("unexpected character '{}'", c));
        if (op == "(" || op == "[" || op == "{") ++depth;
        if ((op == ")" || op == "]" || op == "}") && depth > 0) --depth;
        pos_ += op.size();
        tokens_.push_back({Tok::kOp, op, line, col});
      }
    }
  }

  Status string_literal(char quote, int line, int col) {
    size_t start = pos_;
    ++pos_;
    std::string out;
    while (true) {
      if (pos_ >= src_.size()) return error(start, "unterminated string literal");
      char c = src_[pos_];
      if (c == quote) {
        ++pos_;
        break;
      }
      if (c == '\\' && pos_ + 1 < src_.size()) {
        char e = src_[pos_ + 1];
        pos_ += 2;
        auto hex = [&](int n) -> bool {
          if (pos_ + n > src_.size()) return false;
          char32_t v = 0;
          for (int k = 0; k < n; ++k) {
            char h = src_[pos_ + k];
            if (!std::isxdigit(static_cast<unsigned char>(h))) return false;
            v = v * 16 + static_cast<char32_t>(std::isdigit(static_cast<unsigned char>(h)) ? h - '0' : (std::tolower(h) - 'a' + 10));
          }
          pos_ += n;
          utf8::append(out, v);
          return true;
        };
        switch (e) {
          case 'n': out.push_back('\n'); break;
          case 't': out.push_back('\t'); break;
          case 'r': out.push_back('\r'); break;
          case 'b': out.push_back('\b'); break;
          case 'f': out.push_back('\f'); break;
          case 'v': out.push_back('\v'); break;
          case 'a': out.push_back('\a'); break;
          case '0': out.push_back('\0'); break;
          case '\\': out.push_back('\\'); break;
          case '\'': out.push_back('\''); break;
          case '"': out.push_back('"'); break;
          case '\n': break;  // line continuation
          case 'x': if (!hex(2)) return error(pos_, "bad \\x escape"); break;
          case 'u': if (!hex(4)) return error(pos_, "bad \\u escape"); break;
          case 'U': if (!hex(8)) return error(pos_, "bad \\U escape"); break;
          default: out.push_back('\\'); out.push_back(e); break;  // Python keeps unknown escapes
        }
        continue;
      }
      out.push_back(c);
      ++pos_;
    }
    tokens_.push_back({Tok::kString, std::move(out), line, col});
    return Status::Ok();
  }

  std::string_view src_;
  Options opt_;
  size_t pos_ = 0;
  std::vector<Token> tokens_;
  std::vector<size_t> line_starts_;
};

}  // namespace

Expected<std::vector<Token>> lex(std::string_view source, const Options& options) {
  // Jinja drops one trailing newline of the source unless told to keep it.
  if (!options.keep_trailing_newline && !source.empty()) {
    if (source.size() >= 2 && source.substr(source.size() - 2) == "\r\n") {
      source.remove_suffix(2);
    } else if (source.back() == '\n' || source.back() == '\r') {
      source.remove_suffix(1);
    }
  }
  return Lexer(source, options).run();
}

}  // namespace shardlm::jinja
