// Jinja lexer: splits a template into text and tag tokens, applying the
// whitespace rules (trim_blocks, lstrip_blocks, "-" and "+" modifiers) and
// raw blocks, and tokenizes the expressions inside tags.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "tokenizer/jinja.h"

namespace shardlm::jinja {

enum class Tok {
  kText,        // literal template text (value)
  kVarBegin,    // {{
  kVarEnd,      // }}
  kBlockBegin,  // {%
  kBlockEnd,    // %}
  kName,        // identifiers and keywords
  kString,      // string literal (value, escapes resolved)
  kInt,         // integer literal (value)
  kFloat,       // float literal (value)
  kOp,          // operator / punctuation (value)
  kEof,
};

struct Token {
  Tok type;
  std::string value;
  int line = 1;
  int col = 1;
};

Expected<std::vector<Token>> lex(std::string_view source, const Options& options);

// "line L, column C" for messages.
std::string where(int line, int col);

}  // namespace shardlm::jinja
