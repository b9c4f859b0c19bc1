// Python str semantics the Jinja builtins share: whitespace, case mapping,
// strip/split/replace/startswith as CPython does them on code points (an
// invalid UTF-8 byte is one code point, U+FFFD when re-encoded).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "tokenizer/jinja_value.h"

namespace shardlm::jinja {

bool py_space(char32_t c);  // str.isspace() for one code point
std::vector<char32_t> to_cps(std::string_view s);
bool is_cased_letter(char32_t c);
std::string py_strip(const std::string& s, const Value* chars, bool left, bool right);
std::string map_case(const std::string& s, bool upper);
std::string py_title(const std::string& s);
std::string py_capitalize(const std::string& s);
// str.replace, refused when the result would exceed the interpreter's size bound.
Expected<std::string> replace_checked(const std::string& s, const std::string& from, const std::string& to, int64_t count);
List py_split(const std::string& s, const Value* sep_v, int64_t maxsplit);
// str.startswith / endswith; p may be a tuple of candidates.
bool prefix_match(const std::string& s, const Value& p, bool suffix);

}  // namespace shardlm::jinja
