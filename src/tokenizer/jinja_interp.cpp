#include "tokenizer/jinja_interp.h"

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "tokenizer/jinja.h"
#include "tokenizer/jinja_lexer.h"
#include "tokenizer/jinja_parser.h"
#include "tokenizer/utf8.h"

namespace shardlm::jinja {

namespace {
constexpr int kMaxDepth = 200;
constexpr size_t kMaxOutput = size_t{256} << 20;  // refuse to render more than 256 MiB
constexpr size_t kMaxValueSize = kMaxValueBytes;
constexpr uint64_t kLoopIterationSteps = 16;  // steps per loop iteration: it builds the 12-entry `loop` dict and a scope
}  // namespace

// ---- Template ---------------------------------------------------------------

struct Template::Impl {
  Body body;
};

Template::~Template() = default;

Expected<std::shared_ptr<const Template>> Template::parse(std::string_view source, const Options& options) {
  SHARDLM_ASSIGN_OR_RETURN(auto tokens, lex(source, options));
  SHARDLM_ASSIGN_OR_RETURN(Body body, jinja::parse(tokens));
  std::shared_ptr<Template> t(new Template());
  t->impl_ = std::make_unique<Impl>();
  t->impl_->body = std::move(body);
  return std::shared_ptr<const Template>(std::move(t));
}

Expected<std::string> Template::render(const nlohmann::ordered_json& context) const {
  auto globals = Interp::default_globals();
  if (context.is_object()) {
    for (auto it = context.begin(); it != context.end(); ++it) globals[it.key()] = Value::from_json(it.value());
  }
  Interp in(std::move(globals));
  std::string out;
  SHARDLM_TRY(in.exec(impl_->body, out));
  return out;
}

// ---- Interp -----------------------------------------------------------------

Interp::Interp(std::unordered_map<std::string, Value> globals) { frames_.push_back(std::move(globals)); }

Interp::~Interp() {
  for (auto& d : namespaces_) d->items.clear();
}

Status Interp::error_at(const Expr* e, const std::string& msg) const {
  if (e) return make_error(ErrorCode::kInvalidArgument, "template error at {}: {}", where(e->line, e->col), msg);
  return make_error(ErrorCode::kInvalidArgument, "template error: {}", msg);
}

Value Interp::lookup(const std::string& name) const {
  for (auto it = frames_.rbegin(); it != frames_.rend(); ++it) {
    auto f = it->find(name);
    if (f != it->end()) return f->second;
  }
  return Value::undefined(name);
}

void Interp::assign(const std::string& name, Value v) { frames_.back()[name] = std::move(v); }

Status Interp::check_size(size_t n) {
  if (n > kMaxValueSize) return make_error(ErrorCode::kOutOfMemory, "template value exceeds 64 MiB");
  return Status::Ok();
}

// ---- Statements -----------------------------------------------------------------

Status Interp::exec(const Body& body, std::string& out) {
  for (const auto& s : body) {
    SHARDLM_TRY(step());
    SHARDLM_TRY(exec_stmt(*s, out));
    if (out.size() > kMaxOutput) return make_error(ErrorCode::kOutOfMemory, "template output exceeds 256 MiB");
    if (flow_ != Flow::kNormal) break;
  }
  return Status::Ok();
}

Status Interp::assign_target(const Expr& target, const Value& v) {
  if (target.type == Expr::Type::kName) {
    assign(target.name, v);
    return Status::Ok();
  }
  if (target.type == Expr::Type::kGetAttr) {
    Value obj = lookup(target.children[0]->name);
    if (!obj.is_dict() || !obj.is_namespace)
      return error_at(&target, "cannot assign attribute on non-namespace object '" + target.children[0]->name + "'");
    obj.dict->set(Value::string(target.name), v);
    return Status::Ok();
  }
  if (target.type == Expr::Type::kTuple) {
    SHARDLM_ASSIGN_OR_RETURN(List items, iterate(v));
    if (items.size() != target.children.size())
      return error_at(&target, fmt::format("cannot unpack {} values into {} names", items.size(), target.children.size()));
    for (size_t k = 0; k < items.size(); ++k) SHARDLM_TRY(assign_target(*target.children[k], items[k]));
    return Status::Ok();
  }
  return error_at(&target, "cannot assign to this expression");
}

Status Interp::exec_stmt(const Stmt& s, std::string& out) {
  switch (s.type) {
    case Stmt::Type::kText: out += s.text; return Status::Ok();
    case Stmt::Type::kOutput: {
      SHARDLM_ASSIGN_OR_RETURN(Value v, eval(*s.expr));
      SHARDLM_TRY(check_nested(v));
      out += v.str();
      return Status::Ok();
    }
    case Stmt::Type::kIf: {
      for (const auto& [cond, body] : s.branches) {
        bool take = true;
        if (cond) {
          SHARDLM_ASSIGN_OR_RETURN(Value c, eval(*cond));
          take = c.truthy();
        }
        if (take) return exec(body, out);
      }
      return Status::Ok();
    }
    case Stmt::Type::kFor: return exec_for(s, out);
    case Stmt::Type::kSet: {
      SHARDLM_ASSIGN_OR_RETURN(Value v, eval(*s.expr));
      return assign_target(*s.target, v);
    }
    case Stmt::Type::kSetBlock: {
      std::string captured;
      SHARDLM_TRY(exec(s.body, captured));
      Value v = Value::string(std::move(captured));
      if (s.filter) {
        // The filter chain's innermost child is null: feed it the captured text.
        std::vector<const Expr*> chain;
        for (const Expr* f = s.filter.get(); f; f = f->children.empty() ? nullptr : f->children[0].get()) chain.push_back(f);
        for (auto it = chain.rbegin(); it != chain.rend(); ++it) {
          SHARDLM_ASSIGN_OR_RETURN(Args a, eval_args(**it, 1));
          SHARDLM_ASSIGN_OR_RETURN(v, apply_filter((*it)->name, v, a));
        }
      }
      assign(s.text, v);
      return Status::Ok();
    }
    case Stmt::Type::kFilterBlock: {
      std::string captured;
      SHARDLM_TRY(exec(s.body, captured));
      Value v = Value::string(std::move(captured));
      std::vector<const Expr*> chain;
      for (const Expr* f = s.filter.get(); f; f = f->children.empty() ? nullptr : f->children[0].get()) chain.push_back(f);
      for (auto it = chain.rbegin(); it != chain.rend(); ++it) {
        SHARDLM_ASSIGN_OR_RETURN(Args a, eval_args(**it, 1));
        SHARDLM_ASSIGN_OR_RETURN(v, apply_filter((*it)->name, v, a));
      }
      SHARDLM_TRY(check_nested(v));
      out += v.str();
      return Status::Ok();
    }
    case Stmt::Type::kMacro: assign(s.text, make_macro(s)); return Status::Ok();
    case Stmt::Type::kBreak: flow_ = Flow::kBreak; return Status::Ok();
    case Stmt::Type::kContinue: flow_ = Flow::kContinue; return Status::Ok();
    case Stmt::Type::kWith: {
      std::vector<std::pair<std::string, Value>> vals;
      for (const auto& [n, e] : s.assignments) {
        SHARDLM_ASSIGN_OR_RETURN(Value v, eval(*e));
        vals.emplace_back(n, std::move(v));
      }
      push_scope();
      for (auto& [n, v] : vals) assign(n, std::move(v));
      Status st = exec(s.body, out);
      pop_scope();
      return st;
    }
    case Stmt::Type::kDo: {
      SHARDLM_ASSIGN_OR_RETURN(Value v, eval(*s.expr));
      (void)v;
      return Status::Ok();
    }
  }
  return Status::Ok();
}

Status Interp::exec_for(const Stmt& s, std::string& out) {
  SHARDLM_ASSIGN_OR_RETURN(Value seq, eval(*s.expr));
  SHARDLM_ASSIGN_OR_RETURN(List all, iterate(seq));
  auto bind = [&](const Value& item) -> Status {
    if (s.names.size() == 1) {
      assign(s.names[0], item);
      return Status::Ok();
    }
    SHARDLM_ASSIGN_OR_RETURN(List parts, iterate(item));
    if (parts.size() != s.names.size())
      return error_at(s.expr.get(), fmt::format("cannot unpack {} values into {} loop variables", parts.size(), s.names.size()));
    for (size_t k = 0; k < parts.size(); ++k) assign(s.names[k], parts[k]);
    return Status::Ok();
  };
  List items;
  if (s.filter) {
    for (const auto& item : all) {
      push_scope();
      Status st = bind(item);
      Expected<Value> keep = st.ok() ? eval(*s.filter) : Expected<Value>(st);
      pop_scope();
      if (!keep.ok()) return keep.status();
      if (keep->truthy()) items.push_back(item);
    }
  } else {
    items = std::move(all);
  }
  if (items.empty()) {
    if (!s.else_body.empty()) return exec(s.else_body, out);
    return Status::Ok();
  }
  const int64_t n = static_cast<int64_t>(items.size());
  Value outer_loop = lookup("loop");
  for (int64_t k = 0; k < n; ++k) {
    SHARDLM_TRY(step(kLoopIterationSteps));
    push_scope();
    Value loop = Value::make_dict();
    // The keys are distinct: appended, not set (set() searches the items),
    // and made once (strings are shared).
    static const Value keys[] = {Value::string("index0"), Value::string("index"),    Value::string("revindex0"),
                                 Value::string("revindex"), Value::string("first"),   Value::string("last"),
                                 Value::string("length"), Value::string("depth"),    Value::string("depth0"),
                                 Value::string("previtem"), Value::string("nextitem"), Value::string("cycle")};
    auto& d = loop.dict->items;
    d.reserve(std::size(keys));
    d.emplace_back(keys[0], Value::integer(k));
    d.emplace_back(keys[1], Value::integer(k + 1));
    d.emplace_back(keys[2], Value::integer(n - k - 1));
    d.emplace_back(keys[3], Value::integer(n - k));
    d.emplace_back(keys[4], Value::boolean(k == 0));
    d.emplace_back(keys[5], Value::boolean(k == n - 1));
    d.emplace_back(keys[6], Value::integer(n));
    int64_t depth = 1;
    if (outer_loop.is_dict()) {
      if (const Value* od = outer_loop.dict->find("depth")) depth = std::min<int64_t>(od->as_int(), INT64_MAX - 1) + 1;
    }
    d.emplace_back(keys[7], Value::integer(depth));
    d.emplace_back(keys[8], Value::integer(depth - 1));
    d.emplace_back(keys[9], k > 0 ? items[k - 1] : Value::undefined("previtem"));
    d.emplace_back(keys[10], k + 1 < n ? items[k + 1] : Value::undefined("nextitem"));
    d.emplace_back(keys[11], Value::function([k](Interp&, Args& a) -> Expected<Value> {
            if (a.pos.empty()) return make_error(ErrorCode::kInvalidArgument, "no items for cycling given");
            return a.pos[static_cast<size_t>(k) % a.pos.size()];
          }));
    assign("loop", loop);
    Status st = bind(items[k]);
    if (st.ok()) st = exec(s.body, out);
    pop_scope();
    SHARDLM_TRY(st);
    if (flow_ == Flow::kBreak) {
      flow_ = Flow::kNormal;
      break;
    }
    flow_ = Flow::kNormal;
  }
  return Status::Ok();
}

Value Interp::make_macro(const Stmt& s) {
  const Stmt* def = &s;
  return Value::function([def](Interp& in, Args& args) -> Expected<Value> {
    if (in.depth_ >= kMaxDepth) return in.error_at(nullptr, "macro recursion too deep");
    // A macro sees the template's globals and its own arguments.
    std::vector<std::unordered_map<std::string, Value>> saved;
    saved.swap(in.frames_);
    in.frames_.push_back(saved.front());
    in.frames_.emplace_back();
    Status st;
    size_t npos = args.pos.size();
    if (npos > def->names.size()) st = in.error_at(nullptr, fmt::format("macro '{}' takes {} arguments, got {}", def->text, def->names.size(), npos));
    for (size_t k = 0; st.ok() && k < def->names.size(); ++k) {
      const Value* v = args.get(k, def->names[k]);
      if (k < npos) v = &args.pos[k];
      if (v) {
        in.assign(def->names[k], *v);
      } else if (def->defaults[k]) {
        auto dv = in.eval(*def->defaults[k]);
        if (!dv.ok()) st = dv.status();
        else in.assign(def->names[k], *dv);
      } else {
        in.assign(def->names[k], Value::undefined(def->names[k]));
      }
    }
    std::string out;
    ++in.depth_;
    if (st.ok()) st = in.exec(def->body, out);
    --in.depth_;
    in.flow_ = Flow::kNormal;
    in.frames_.swap(saved);
    SHARDLM_TRY(st);
    return Value::string(std::move(out));
  });
}

Expected<List> Interp::iterate(const Value& v) {
  // The items are copied out; a string's code points each become a Value
  // (up to one per byte), so a string is iterated only as far as that fits.
  const size_t items = v.is_string() ? v.s().size() : v.is_list() ? v.list->size() : v.is_dict() ? v.dict->items.size() : 0;
  if (v.is_string()) SHARDLM_TRY(check_size(items * sizeof(Value)));
  SHARDLM_TRY(charge(items * sizeof(Value)));
  switch (v.kind) {
    case Value::Kind::kUndefined: return List{};  // Jinja's Undefined iterates as empty
    case Value::Kind::kList: return *v.list;
    case Value::Kind::kDict: {
      List keys;
      for (const auto& [k, val] : v.dict->items) keys.push_back(k);
      return keys;
    }
    case Value::Kind::kString: {
      auto starts = char_starts(v.s());
      List chars;
      chars.reserve(starts.size() - 1);
      for (size_t k = 0; k + 1 < starts.size(); ++k) chars.push_back(Value::string(v.s().substr(starts[k], starts[k + 1] - starts[k])));
      return chars;
    }
    default: return make_error(ErrorCode::kInvalidArgument, "'{}' object is not iterable", v.type_name());
  }
}

Expected<Args> Interp::eval_args(const Expr& e, size_t first) {
  Args a;
  for (size_t k = first; k < e.children.size(); ++k) {
    SHARDLM_ASSIGN_OR_RETURN(Value v, eval(*e.children[k]));
    a.pos.push_back(std::move(v));
  }
  for (const auto& [name, ex] : e.kwargs) {
    SHARDLM_ASSIGN_OR_RETURN(Value v, eval(*ex));
    a.kw.emplace_back(name, std::move(v));
  }
  return a;
}

Expected<Value> Interp::call(const Value& fn, Args& args, const Expr* where_expr) {
  if (fn.kind != Value::Kind::kFunction) {
    if (fn.is_undefined()) return error_at(where_expr, fmt::format("'{}' is undefined", fn.s().empty() ? "value" : fn.s()));
    return error_at(where_expr, fmt::format("'{}' object is not callable", fn.type_name()));
  }
  SHARDLM_TRY(charge_call(nullptr, args));
  auto r = (*fn.fn)(*this, args);
  if (!r.ok() && r.status().message().rfind("template", 0) != 0) return error_at(where_expr, r.status().message());
  if (r.ok()) SHARDLM_TRY(charge(shallow_bytes(*r)));
  return r;
}

Expected<Value> Interp::get_attr(const Value& obj, const std::string& name) {
  if (obj.is_undefined()) {
    return make_error(ErrorCode::kInvalidArgument, "'{}' is undefined", obj.s().empty() ? "value" : obj.s());
  }
  // A bound method works on its receiver: charged here, where it is bound.
  if (obj.is_dict()) {
    if (!obj.is_namespace) {
      Value m = method(obj, name);
      if (!m.is_undefined()) {
        SHARDLM_TRY(charge_call(&obj, Args{}));
        return m;
      }
    }
    if (const Value* v = obj.dict->find(name)) return *v;
    return Value::undefined(name);
  }
  Value m = method(obj, name);
  if (!m.is_undefined()) {
    SHARDLM_TRY(charge_call(&obj, Args{}));
    return m;
  }
  return Value::undefined(name);
}

Expected<Value> Interp::get_item(const Value& obj, const Value& key) {
  if (obj.is_undefined()) {
    return make_error(ErrorCode::kInvalidArgument, "'{}' is undefined", obj.s().empty() ? "value" : obj.s());
  }
  if (obj.is_dict()) {
    if (const Value* v = obj.dict->find(key)) return *v;
    if (key.is_string()) return get_attr(obj, key.s());
    return Value::undefined();
  }
  if ((obj.is_list() || obj.is_string()) && (key.kind == Value::Kind::kInt || key.kind == Value::Kind::kBool)) {
    int64_t idx = key.as_int();
    if (obj.is_list()) {
      int64_t n = static_cast<int64_t>(obj.list->size());
      if (idx < 0) idx += n;
      if (idx < 0 || idx >= n) return Value::undefined();
      return (*obj.list)[static_cast<size_t>(idx)];
    }
    SHARDLM_TRY(charge(obj.s().size()));
    auto starts = char_starts(obj.s());
    int64_t n = static_cast<int64_t>(starts.size()) - 1;
    if (idx < 0) idx += n;
    if (idx < 0 || idx >= n) return Value::undefined();
    size_t b = starts[static_cast<size_t>(idx)], e = starts[static_cast<size_t>(idx) + 1];
    return Value::string(obj.s().substr(b, e - b));
  }
  if (key.is_string()) return get_attr(obj, key.s());
  return Value::undefined();
}

namespace {

// Python slice indices for a sequence of length n.
std::vector<size_t> slice_indices(int64_t n, const Value& start, const Value& stop, const Value& step_v, Status& st) {
  std::vector<size_t> out;
  int64_t step = step_v.is_none() || step_v.is_undefined() ? 1 : step_v.as_int();
  if (step == 0) {
    st = make_error(ErrorCode::kInvalidArgument, "slice step cannot be zero");
    return out;
  }
  auto norm = [&](const Value& v, int64_t def, int64_t lo, int64_t hi) {
    if (v.is_none() || v.is_undefined()) return def;
    int64_t x = v.as_int();
    if (x < 0) x += n;
    return std::max(lo, std::min(hi, x));
  };
  if (step > 0) {
    int64_t b = norm(start, 0, 0, n), e = norm(stop, n, 0, n);
    // k + step may pass INT64_MAX (a[1::2**62]): stop where it would.
    for (int64_t k = b; k < e;) {
      out.push_back(static_cast<size_t>(k));
      if (__builtin_add_overflow(k, step, &k)) break;
    }
  } else {
    int64_t b = norm(start, n - 1, -1, n - 1), e = norm(stop, -1, -1, n - 1);
    if (!(stop.is_none() || stop.is_undefined()) && stop.as_int() < 0 && stop.as_int() + n < 0) e = -1;
    for (int64_t k = b; k > e;) {
      out.push_back(static_cast<size_t>(k));
      if (__builtin_add_overflow(k, step, &k)) break;
    }
  }
  return out;
}

}  // namespace

Expected<Value> Interp::eval(const Expr& e) {
  SHARDLM_TRY(step());
  return eval_expr(e);
}

Expected<Value> Interp::eval_expr(const Expr& e) {
  switch (e.type) {
    case Expr::Type::kLiteral: return e.literal;
    case Expr::Type::kName: return lookup(e.name);
    case Expr::Type::kList:
    case Expr::Type::kTuple: {
      List items;
      for (const auto& c : e.children) {
        SHARDLM_ASSIGN_OR_RETURN(Value v, eval(*c));
        items.push_back(std::move(v));
      }
      return Value::make_list(std::move(items), e.type == Expr::Type::kTuple);
    }
    case Expr::Type::kDict: {
      Value d = Value::make_dict();
      for (size_t k = 0; k + 1 < e.children.size(); k += 2) {
        SHARDLM_ASSIGN_OR_RETURN(Value key, eval(*e.children[k]));
        SHARDLM_ASSIGN_OR_RETURN(Value val, eval(*e.children[k + 1]));
        d.dict->set(key, std::move(val));
      }
      return d;
    }
    case Expr::Type::kGetAttr: {
      SHARDLM_ASSIGN_OR_RETURN(Value obj, eval(*e.children[0]));
      auto r = get_attr(obj, e.name);
      if (!r.ok()) return error_at(&e, r.status().message());
      return r;
    }
    case Expr::Type::kGetItem: {
      SHARDLM_ASSIGN_OR_RETURN(Value obj, eval(*e.children[0]));
      SHARDLM_ASSIGN_OR_RETURN(Value key, eval(*e.children[1]));
      auto r = get_item(obj, key);
      if (!r.ok()) return error_at(&e, r.status().message());
      return r;
    }
    case Expr::Type::kSlice: {
      SHARDLM_ASSIGN_OR_RETURN(Value obj, eval(*e.children[0]));
      Value parts[3];
      for (int k = 0; k < 3; ++k) {
        if (e.children[k + 1]) {
          SHARDLM_ASSIGN_OR_RETURN(parts[k], eval(*e.children[k + 1]));
        } else {
          parts[k] = Value::none();
        }
      }
      Status st;
      SHARDLM_TRY(charge(shallow_bytes(obj) * (obj.is_string() ? sizeof(size_t) : 1)));
      if (obj.is_list()) {
        auto idx = slice_indices(static_cast<int64_t>(obj.list->size()), parts[0], parts[1], parts[2], st);
        if (!st.ok()) return error_at(&e, st.message());
        List out;
        for (size_t k : idx) out.push_back((*obj.list)[k]);
        return Value::make_list(std::move(out), obj.is_tuple);
      }
      if (obj.is_string()) {
        auto starts = char_starts(obj.s());
        auto idx = slice_indices(static_cast<int64_t>(starts.size()) - 1, parts[0], parts[1], parts[2], st);
        if (!st.ok()) return error_at(&e, st.message());
        std::string out;
        for (size_t k : idx) out.append(obj.s(), starts[k], starts[k + 1] - starts[k]);
        return Value::string(std::move(out));
      }
      if (obj.is_undefined()) return error_at(&e, fmt::format("'{}' is undefined", obj.s().empty() ? "value" : obj.s()));
      return error_at(&e, fmt::format("'{}' object is not subscriptable", obj.type_name()));
    }
    case Expr::Type::kCall: {
      SHARDLM_ASSIGN_OR_RETURN(Value fn, eval(*e.children[0]));
      SHARDLM_ASSIGN_OR_RETURN(Args a, eval_args(e, 1));
      return call(fn, a, &e);
    }
    case Expr::Type::kFilter: {
      SHARDLM_ASSIGN_OR_RETURN(Value v, eval(*e.children[0]));
      SHARDLM_ASSIGN_OR_RETURN(Args a, eval_args(e, 1));
      auto r = apply_filter(e.name, v, a);
      if (!r.ok()) return error_at(&e, r.status().message());
      return r;
    }
    case Expr::Type::kTest: {
      SHARDLM_ASSIGN_OR_RETURN(Value v, eval(*e.children[0]));
      SHARDLM_ASSIGN_OR_RETURN(Args a, eval_args(e, 1));
      auto r = apply_test(e.name, v, a);
      if (!r.ok()) return error_at(&e, r.status().message());
      return Value::boolean(*r != e.negated);
    }
    case Expr::Type::kNeg:
    case Expr::Type::kPos: {
      SHARDLM_ASSIGN_OR_RETURN(Value v, eval(*e.children[0]));
      if (!v.is_number()) return error_at(&e, fmt::format("bad operand type for unary -: '{}'", v.type_name()));
      if (e.type == Expr::Type::kPos) return v.kind == Value::Kind::kBool ? Value::integer(v.as_int()) : v;
      if (v.kind == Value::Kind::kFloat) return Value::real(-v.f);
      if (v.as_int() == INT64_MIN) return error_at(&e, "integer overflow");
      return Value::integer(-v.as_int());
    }
    case Expr::Type::kNot: {
      SHARDLM_ASSIGN_OR_RETURN(Value v, eval(*e.children[0]));
      return Value::boolean(!v.truthy());
    }
    case Expr::Type::kAnd: {
      SHARDLM_ASSIGN_OR_RETURN(Value l, eval(*e.children[0]));
      if (!l.truthy()) return l;
      return eval(*e.children[1]);
    }
    case Expr::Type::kOr: {
      SHARDLM_ASSIGN_OR_RETURN(Value l, eval(*e.children[0]));
      if (l.truthy()) return l;
      return eval(*e.children[1]);
    }
    case Expr::Type::kCondExpr: {
      SHARDLM_ASSIGN_OR_RETURN(Value c, eval(*e.children[0]));
      if (c.truthy()) return eval(*e.children[1]);
      if (e.children[2]) return eval(*e.children[2]);
      return Value::undefined();
    }
    case Expr::Type::kBinary: return eval_binary(e);
    case Expr::Type::kCompare: return eval_compare(e);
  }
  return error_at(&e, "unknown expression");
}

namespace {

Expected<Value> repeat(Interp& in, const Value& seq, int64_t n) {
  const size_t unit = Interp::shallow_bytes(seq);
  if (n > 0 && unit > 0) {
    const size_t total = unit * static_cast<size_t>(std::min<int64_t>(n, int64_t{1} << 30));
    SHARDLM_TRY(Interp::check_size(total));
    SHARDLM_TRY(in.charge(total));
  }
  if (seq.is_string()) {
    if (n <= 0 || seq.s().empty()) return Value::string("");
    const size_t total = seq.s().size() * static_cast<size_t>(n);
    std::string out;
    out.reserve(total);
    out = seq.s();
    while (out.size() * 2 <= total) out.append(out);  // doubling: log(n) copies
    out.append(out, 0, total - out.size());
    return Value::string(std::move(out));
  }
  List out;
  for (int64_t k = 0; k < n; ++k) out.insert(out.end(), seq.list->begin(), seq.list->end());
  return Value::make_list(std::move(out));
}

int64_t floor_div(int64_t a, int64_t b) {
  int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
  return q;
}

}  // namespace

Expected<Value> Interp::eval_binary(const Expr& e) {
  SHARDLM_ASSIGN_OR_RETURN(Value l, eval(*e.children[0]));
  SHARDLM_ASSIGN_OR_RETURN(Value r, eval(*e.children[1]));
  const std::string& op = e.name;
  if (op == "~") {
    SHARDLM_TRY(check_nested(l));
    SHARDLM_TRY(check_nested(r));
    std::string a = l.str(), b = r.str();
    SHARDLM_TRY(check_size(a.size() + b.size()));
    SHARDLM_TRY(charge(a.size() + b.size()));
    return Value::string(a + b);
  }
  if ((l.is_undefined() || r.is_undefined())) {
    const Value& u = l.is_undefined() ? l : r;
    return error_at(&e, fmt::format("'{}' is undefined", u.s().empty() ? "value" : u.s()));
  }
  auto type_error = [&]() {
    return error_at(&e, fmt::format("unsupported operand type(s) for {}: '{}' and '{}'", op, l.type_name(), r.type_name()));
  };
  if (op == "+") {
    if (l.is_string() && r.is_string()) {
      SHARDLM_TRY(check_size(l.s().size() + r.s().size()));
      SHARDLM_TRY(charge(l.s().size() + r.s().size()));
      return Value::string(l.s() + r.s());
    }
    if (l.is_list() && r.is_list()) {
      SHARDLM_TRY(check_size(shallow_bytes(l) + shallow_bytes(r)));
      SHARDLM_TRY(charge(shallow_bytes(l) + shallow_bytes(r)));
      List out = *l.list;
      out.insert(out.end(), r.list->begin(), r.list->end());
      return Value::make_list(std::move(out), l.is_tuple);
    }
  }
  if (op == "*") {
    if ((l.is_string() || l.is_list()) && (r.kind == Value::Kind::kInt || r.kind == Value::Kind::kBool)) return repeat(*this, l, r.as_int());
    if ((r.is_string() || r.is_list()) && (l.kind == Value::Kind::kInt || l.kind == Value::Kind::kBool)) return repeat(*this, r, l.as_int());
  }
  if (op == "%" && l.is_string()) return error_at(&e, "printf-style string formatting is not supported");
  if (!l.is_number() || !r.is_number()) return type_error();
  bool flt = l.kind == Value::Kind::kFloat || r.kind == Value::Kind::kFloat;
  if (op == "/") {
    if (r.as_double() == 0) return error_at(&e, "division by zero");
    return Value::real(l.as_double() / r.as_double());
  }
  // Python integers never overflow; ours are int64, so an overflow is an
  // error rather than undefined behaviour (found by the jinja fuzzer).
  auto checked = [&](bool overflow, int64_t v) -> Expected<Value> {
    if (overflow) return error_at(&e, "integer overflow in '" + op + "'");
    return Value::integer(v);
  };
  if (op == "+" || op == "-" || op == "*") {
    if (flt) {
      const double a = l.as_double(), b = r.as_double();
      return Value::real(op == "+" ? a + b : op == "-" ? a - b : a * b);
    }
    int64_t v = 0;  // computed before checked() reads it (argument order is unspecified)
    const bool overflow = op == "+"   ? __builtin_add_overflow(l.as_int(), r.as_int(), &v)
                          : op == "-" ? __builtin_sub_overflow(l.as_int(), r.as_int(), &v)
                                      : __builtin_mul_overflow(l.as_int(), r.as_int(), &v);
    return checked(overflow, v);
  }
  if (op == "//" || op == "%") {
    if (r.as_double() == 0) return error_at(&e, "division by zero");
    if (flt) {
      double a = l.as_double(), b = r.as_double();
      double q = std::floor(a / b);
      return op == "//" ? Value::real(q) : Value::real(a - q * b);
    }
    int64_t a = l.as_int(), b = r.as_int();
    if (a == INT64_MIN && b == -1) return checked(true, 0);
    int64_t q = floor_div(a, b);
    return op == "//" ? Value::integer(q) : Value::integer(a - q * b);
  }
  if (op == "**") {
    if (!flt && r.as_int() >= 0) {
      int64_t base = l.as_int(), res = 1;
      bool overflow = false;
      for (int64_t k = 0; k < r.as_int() && k < 64 && !overflow; ++k) overflow = __builtin_mul_overflow(res, base, &res);
      return checked(overflow, res);
    }
    return Value::real(std::pow(l.as_double(), r.as_double()));
  }
  return type_error();
}

Expected<Value> Interp::eval_compare(const Expr& e) {
  SHARDLM_ASSIGN_OR_RETURN(Value left, eval(*e.children[0]));
  for (size_t k = 0; k < e.ops.size(); ++k) {
    SHARDLM_ASSIGN_OR_RETURN(Value right, eval(*e.children[k + 1]));
    const std::string& op = e.ops[k];
    // Comparisons walk both sides (strings byte by byte, containers item by item).
    SHARDLM_TRY(check_nested(left));
    SHARDLM_TRY(check_nested(right));
    SHARDLM_TRY(charge(shallow_bytes(left) + shallow_bytes(right)));
    bool ok;
    if (op == "==") {
      ok = values_equal(left, right);
    } else if (op == "!=") {
      ok = !values_equal(left, right);
    } else if (op == "in" || op == "notin") {
      bool found = false;
      if (right.is_string()) {
        if (!left.is_string()) return error_at(&e, "'in <string>' requires string as left operand");
        found = find_substr(right.s(), left.s()) != std::string::npos;
      } else if (right.is_list()) {
        for (const auto& x : *right.list) found = found || values_equal(x, left);
      } else if (right.is_dict()) {
        found = right.dict->find(left) != nullptr;
      } else if (right.is_undefined()) {
        return error_at(&e, fmt::format("'{}' is undefined", right.s().empty() ? "value" : right.s()));
      } else {
        return error_at(&e, fmt::format("argument of type '{}' is not iterable", right.type_name()));
      }
      ok = op == "in" ? found : !found;
    } else {
      auto c = values_compare(left, right);
      if (!c.ok()) return error_at(&e, c.status().message());
      ok = op == "<" ? *c < 0 : op == ">" ? *c > 0 : op == "<=" ? *c <= 0 : *c >= 0;
    }
    if (!ok) return Value::boolean(false);
    left = std::move(right);
  }
  return Value::boolean(true);
}

}  // namespace shardlm::jinja
