// A Jinja interpreter for the subset that Hugging Face chat templates use.
// Statements: if/elif/else, for (with else, loop filters, unpacking), set (also
// `set ns.attr` and block set), macro, call of macros, break/continue,
// filter blocks, raw, generation (rendered as plain content). Expressions:
// literals, lists, dicts, tuples, attribute/subscript/slice, calls, filters,
// tests, in/not in, arithmetic, comparisons, and/or/not, `~`, inline if.
// Rendering follows Python Jinja2 as transformers configures it
// (trim_blocks, lstrip_blocks, Python-style repr of values, tojson as
// json.dumps). Unsupported syntax is a parse error naming line and column.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "base/status.h"

namespace shardlm::jinja {

struct Options {
  bool trim_blocks = true;
  bool lstrip_blocks = true;
  bool keep_trailing_newline = false;
};

class Template {
 public:
  ~Template();
  static Expected<std::shared_ptr<const Template>> parse(std::string_view source, const Options& options = {});
  // `context` must be an object; its keys become template variables.
  Expected<std::string> render(const nlohmann::ordered_json& context) const;

  struct Impl;

 private:
  Template() = default;
  std::unique_ptr<Impl> impl_;
};

}  // namespace shardlm::jinja
