// The Jinja interpreter: executes the syntax tree against a context.
#pragma once

#include <memory>
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
  ~Interp();
  Interp(const Interp&) = delete;
  Interp& operator=(const Interp&) = delete;

  // Namespaces are the only mutable values, so the only way to a reference
  // cycle (`{% set ns.self = ns %}`); the interpreter empties them when it ends.
  void track_namespace(std::shared_ptr<Dict> d) { namespaces_.push_back(std::move(d)); }

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

  // Filters and tests, metered (below); the builtins themselves are in
  // jinja_builtins.cpp.
  Expected<Value> apply_filter(const std::string& name, const Value& v, Args& args);
  Expected<bool> apply_test(const std::string& name, const Value& v, Args& args);
  // A bound method of a str / dict / list, or an undefined value.
  Value method(const Value& obj, const std::string& name);
  static std::unordered_map<std::string, Value> default_globals();

  // Iteration over a value as Jinja does (strings by code point, dicts by key).
  Expected<List> iterate(const Value& v);

  Status error_at(const Expr* e, const std::string& msg) const;
  // Errors when a value would hold more than the interpreter allows: n bytes
  // of a string, or n / sizeof(Value) list slots.
  static Status check_size(size_t n);

  // A chat template is a program that comes with the model (or --chat-template):
  // a buggy or hostile one must end in an error, never hang or exhaust memory.
  // Every render is bounded three ways:
  //  - steps: statements, expression evaluations and (weighted) loop iterations;
  //  - work: bytes created, copied or scanned by operators, filters, tests and
  //    calls (a 60 MB string's length taken in a loop is 60 MB a time);
  //  - size: containers are measured (strings + slots, capped walk) before
  //    anything prints, compares or serialises them whole.
  Status step(uint64_t weight = 1);
  Status charge(size_t bytes);
  Status check_nested(const Value& v);
  // Bytes a value holds at its top level: a string's bytes or a container's slots.
  static size_t shallow_bytes(const Value& v);

 private:
  enum class Flow { kNormal, kBreak, kContinue };
  Status exec_stmt(const Stmt& s, std::string& out);
  Status exec_for(const Stmt& s, std::string& out);
  Status assign_target(const Expr& target, const Value& v);
  Expected<Value> eval_expr(const Expr& e);
  Expected<Value> eval_binary(const Expr& e);
  Expected<Value> filter_builtin(const std::string& name, const Value& v, Args& args);
  Expected<bool> test_builtin(const std::string& name, const Value& v, Args& args);
  Status charge_call(const Value* self, const Args& args);
  Expected<Value> eval_compare(const Expr& e);
  Expected<Args> eval_args(const Expr& e, size_t first);
  Value make_macro(const Stmt& s);

  std::vector<std::unordered_map<std::string, Value>> frames_;
  Flow flow_ = Flow::kNormal;
  int depth_ = 0;  // macro recursion guard
  uint64_t steps_ = 0;  // weighted steps taken (bounded by kMaxSteps)
  uint64_t work_ = 0;   // bytes charged (bounded by kMaxWorkBytes)
  std::vector<std::shared_ptr<Dict>> namespaces_;
};

}  // namespace shardlm::jinja
