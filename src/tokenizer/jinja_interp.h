// The Jinja interpreter: executes the syntax tree against a context.
#pragma once

#include <string>
#include <unordered_map>
#include <vector>

#include "base/status.h"
#include "tokenizer/jinja_ast.h"
#include "tokenizer/jinja_value.h"

namespace shardlm::jinja {

class Interp {
 public:
  explicit Interp(std::unordered_map<std::string, Value> globals);

  Status exec(const Body& body, std::string& out);
  Expected<Value> eval(const Expr& e);

  // Scope handling.
  Value lookup(const std::string& name) const;
  void assign(const std::string& name, Value v);
  void push_scope() { frames_.emplace_back(); }
  void pop_scope() { frames_.pop_back(); }

  // Attribute / item access with Jinja's getattr / getitem rules.
  Expected<Value> get_attr(const Value& obj, const std::string& name);
  Expected<Value> get_item(const Value& obj, const Value& key);
  Expected<Value> call(const Value& fn, Args& args, const Expr* where);

  // Builtins (jinja_builtins.cpp).
  Expected<Value> apply_filter(const std::string& name, const Value& v, Args& args);
  Expected<bool> apply_test(const std::string& name, const Value& v, Args& args);
  // A bound method of a str / dict / list, or an undefined value.
  Value method(const Value& obj, const std::string& name);
  static std::unordered_map<std::string, Value> default_globals();

  // Iteration over a value as Jinja does (strings by code point, dicts by key).
  Expected<List> iterate(const Value& v);

  Status error_at(const Expr* e, const std::string& msg) const;
  // Errors when a string or list would exceed the size the interpreter allows.
  static Status check_size(size_t n);

 private:
  enum class Flow { kNormal, kBreak, kContinue };
  Status exec_stmt(const Stmt& s, std::string& out);
  Status exec_for(const Stmt& s, std::string& out);
  Status assign_target(const Expr& target, const Value& v);
  Expected<Value> eval_binary(const Expr& e);
  Expected<Value> eval_compare(const Expr& e);
  Expected<Args> eval_args(const Expr& e, size_t first);
  Value make_macro(const Stmt& s);

  std::vector<std::unordered_map<std::string, Value>> frames_;
  Flow flow_ = Flow::kNormal;
  int depth_ = 0;  // macro recursion guard
  uint64_t steps_ = 0;  // statements + loop iterations executed (bounded)
};

}  // namespace shardlm::jinja
