// Jinja parser: tokens to a syntax tree, with errors naming line and column.
#pragma once

#include <vector>

#include "base/status.h"
#include "tokenizer/jinja_ast.h"
#include "tokenizer/jinja_lexer.h"

namespace shardlm::jinja {

Expected<Body> parse(const std::vector<Token>& tokens);

}  // namespace shardlm::jinja
