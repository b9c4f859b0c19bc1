// Filters, tests, Python string/dict methods and globals of the Jinja
// interpreter (the ones Hugging Face chat templates use).
#include <algorithm>
#include <cmath>
#include <ctime>

#include <utf8proc.h>

#include "tokenizer/jinja_interp.h"
#include "tokenizer/jinja_pystr.h"
#include "tokenizer/utf8.h"

namespace shardlm::jinja {

namespace {

Status arg_error(const std::string& msg) { return make_error(ErrorCode::kInvalidArgument, "{}", msg); }


Value fn(Function f) { return Value::function(std::move(f)); }

Expected<Value> attribute_of(Interp& in, const Value& item, const std::string& attr) {
  Value cur = item;
  size_t start = 0;
  while (start <= attr.size()) {
    size_t dot = attr.find('.', start);
    std::string part = attr.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    bool digits = !part.empty() && std::all_of(part.begin(), part.end(), ::isdigit);
    SHARDLM_ASSIGN_OR_RETURN(cur, digits ? in.get_item(cur, Value::integer(std::stoll(part))) : in.get_item(cur, Value::string(part)));
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  return cur;
}

}  // namespace

Value Interp::method(const Value& obj, const std::string& name) {
  if (obj.is_string()) {
    // Closures share the receiver's bytes (`text` keeps them alive for `s`).
    const std::shared_ptr<const std::string> text = obj.shared_text();
    if (name == "strip" || name == "lstrip" || name == "rstrip") {
      bool l = name != "rstrip", r = name != "lstrip";
      return fn([text, &s = *text, l, r](Interp&, Args& a) -> Expected<Value> { return Value::string(py_strip(s, a.get(0, "chars"), l, r)); });
    }
    if (name == "upper" || name == "lower")
      return fn([text, &s = *text, up = name == "upper"](Interp&, Args&) -> Expected<Value> { return Value::string(map_case(s, up)); });
    if (name == "title") return fn([text, &s = *text](Interp&, Args&) -> Expected<Value> { return Value::string(py_title(s)); });
    if (name == "capitalize") return fn([text, &s = *text](Interp&, Args&) -> Expected<Value> { return Value::string(py_capitalize(s)); });
    if (name == "startswith" || name == "endswith") {
      bool suffix = name == "endswith";
      return fn([text, &s = *text, suffix](Interp&, Args& a) -> Expected<Value> {
        const Value* p = a.get(0, "prefix");
        if (!p) return arg_error("startswith/endswith: missing argument");
        return Value::boolean(prefix_match(s, *p, suffix));
      });
    }
    if (name == "split")
      return fn([text, &s = *text](Interp&, Args& a) -> Expected<Value> {
        const Value* m = a.get(1, "maxsplit");
        return Value::make_list(py_split(s, a.get(0, "sep"), m ? m->as_int() : -1));
      });
    if (name == "splitlines")
      return fn([text, &s = *text](Interp&, Args&) -> Expected<Value> {
        List out;
        size_t prev = 0;
        for (size_t k = 0; k < s.size(); ++k) {
          if (s[k] == '\n' || s[k] == '\r') {
            out.push_back(Value::string(s.substr(prev, k - prev)));
            if (s[k] == '\r' && k + 1 < s.size() && s[k + 1] == '\n') ++k;
            prev = k + 1;
          }
        }
        if (prev < s.size()) out.push_back(Value::string(s.substr(prev)));
        return Value::make_list(std::move(out));
      });
    if (name == "replace")
      return fn([text, &s = *text](Interp&, Args& a) -> Expected<Value> {
        const Value* from = a.get(0, "old");
        const Value* to = a.get(1, "new");
        const Value* count = a.get(2, "count");
        if (!from || !to) return arg_error("replace: needs old and new");
        SHARDLM_ASSIGN_OR_RETURN(std::string r, replace_checked(s, from->str(), to->str(), count ? count->as_int() : -1));
        return Value::string(std::move(r));
      });
    if (name == "find" || name == "rfind" || name == "count" || name == "index")
      return fn([text, &s = *text, name](Interp&, Args& a) -> Expected<Value> {
        const Value* sub = a.get(0, "sub");
        if (!sub) return arg_error(name + ": missing argument");
        std::string x = sub->str();
        if (name == "count") {
          if (x.empty()) return Value::integer(static_cast<int64_t>(utf8_length(s)) + 1);
          int64_t n = 0;
          for (size_t p = find_substr(s, x); p != std::string::npos; p = find_substr(s, x, p + x.size())) ++n;
          return Value::integer(n);
        }
        size_t p = name == "rfind" ? rfind_substr(s, x) : find_substr(s, x);
        if (p == std::string::npos) {
          if (name == "index") return arg_error("substring not found");
          return Value::integer(-1);
        }
        return Value::integer(static_cast<int64_t>(utf8_length(std::string_view(s).substr(0, p))));
      });
    if (name == "join")
      return fn([text, &s = *text](Interp& in, Args& a) -> Expected<Value> {
        const Value* seq = a.get(0, "iterable");
        if (!seq) return arg_error("join: missing argument");
        SHARDLM_ASSIGN_OR_RETURN(List items, in.iterate(*seq));
        std::string out;
        for (size_t k = 0; k < items.size(); ++k) {
          if (k) out += s;
          out += items[k].str();
          SHARDLM_TRY(Interp::check_size(out.size()));
        }
        return Value::string(std::move(out));
      });
    if (name == "isdigit" || name == "isalpha" || name == "isspace" || name == "isupper" || name == "islower" || name == "isalnum")
      return fn([text, &s = *text, name](Interp&, Args&) -> Expected<Value> {
        auto cps = to_cps(s);
        if (cps.empty()) return Value::boolean(false);
        bool ok = true, any_cased = false;
        for (char32_t c : cps) {
          auto cat = utf8proc_category(static_cast<utf8proc_int32_t>(c));
          bool letter = cat >= UTF8PROC_CATEGORY_LU && cat <= UTF8PROC_CATEGORY_LO;
          if (name == "isdigit") ok = ok && cat == UTF8PROC_CATEGORY_ND;
          else if (name == "isalpha") ok = ok && letter;
          else if (name == "isalnum") ok = ok && (letter || utf8::is_numeric(c));
          else if (name == "isspace") ok = ok && py_space(c);
          else if (name == "isupper") { ok = ok && cat != UTF8PROC_CATEGORY_LL; any_cased = any_cased || cat == UTF8PROC_CATEGORY_LU; }
          else { ok = ok && cat != UTF8PROC_CATEGORY_LU && cat != UTF8PROC_CATEGORY_LT; any_cased = any_cased || cat == UTF8PROC_CATEGORY_LL; }
        }
        if (name == "isupper" || name == "islower") ok = ok && any_cased;
        return Value::boolean(ok);
      });
    if (name == "format")
      return fn([text, &s = *text](Interp&, Args& a) -> Expected<Value> {
        std::string out;
        size_t next_pos = 0;
        for (size_t k = 0; k < s.size(); ++k) {
          if (s[k] == '{' && k + 1 < s.size() && s[k + 1] == '{') { out += '{'; ++k; continue; }
          if (s[k] == '}' && k + 1 < s.size() && s[k + 1] == '}') { out += '}'; ++k; continue; }
          if (s[k] == '{') {
            size_t e = s.find('}', k);
            if (e == std::string::npos) return arg_error("format: unmatched '{'");
            std::string field = s.substr(k + 1, e - k - 1);
            const Value* v = nullptr;
            if (field.empty()) v = next_pos < a.pos.size() ? &a.pos[next_pos++] : nullptr;
            else if (std::all_of(field.begin(), field.end(), ::isdigit)) v = a.get(std::stoul(field), "");
            else v = a.get(SIZE_MAX, field);
            if (!v) return arg_error("format: missing argument for {" + field + "}");
            out += v->str();
            SHARDLM_TRY(Interp::check_size(out.size()));
            k = e;
            continue;
          }
          out += s[k];
        }
        return Value::string(std::move(out));
      });
    return Value::undefined(name);
  }
  if (obj.is_dict()) {
    auto d = obj;
    if (name == "items")
      return fn([d](Interp&, Args&) -> Expected<Value> {
        List out;
        for (const auto& [k, v] : d.dict->items) out.push_back(Value::make_list({k, v}, true));
        return Value::make_list(std::move(out));
      });
    if (name == "keys" || name == "values")
      return fn([d, keys = name == "keys"](Interp&, Args&) -> Expected<Value> {
        List out;
        for (const auto& [k, v] : d.dict->items) out.push_back(keys ? k : v);
        return Value::make_list(std::move(out));
      });
    if (name == "get")
      return fn([d](Interp&, Args& a) -> Expected<Value> {
        const Value* k = a.get(0, "key");
        if (!k) return arg_error("get: missing key");
        if (const Value* v = d.dict->find(*k)) return *v;
        const Value* def = a.get(1, "default");
        return def ? *def : Value::none();
      });
    return Value::undefined(name);
  }
  if (obj.is_list()) {
    auto l = obj;
    if (name == "index" || name == "count")
      return fn([l, name](Interp&, Args& a) -> Expected<Value> {
        const Value* x = a.get(0, "value");
        if (!x) return arg_error(name + ": missing argument");
        int64_t n = 0;
        for (size_t k = 0; k < l.list->size(); ++k) {
          if (values_equal((*l.list)[k], *x)) {
            if (name == "index") return Value::integer(static_cast<int64_t>(k));
            ++n;
          }
        }
        if (name == "index") return arg_error("value is not in list");
        return Value::integer(n);
      });
    return Value::undefined(name);
  }
  return Value::undefined(name);
}

std::unordered_map<std::string, Value> Interp::default_globals() {
  std::unordered_map<std::string, Value> g;
  g["range"] = fn([](Interp&, Args& a) -> Expected<Value> {
    int64_t start = 0, stop = 0, step = 1;
    if (a.pos.size() == 1) {
      stop = a.pos[0].as_int();
    } else if (a.pos.size() >= 2) {
      start = a.pos[0].as_int();
      stop = a.pos[1].as_int();
      if (a.pos.size() >= 3) step = a.pos[2].as_int();
    } else {
      return arg_error("range expected at least 1 argument");
    }
    if (step == 0) return arg_error("range() arg 3 must not be zero");
    List out;
    for (int64_t k = start; step > 0 ? k < stop : k > stop;) {
      if (out.size() >= 1000000) return arg_error("range too large");
      out.push_back(Value::integer(k));
      if (__builtin_add_overflow(k, step, &k)) break;  // the next value is past int64: past stop too
    }
    return Value::make_list(std::move(out));
  });
  auto make_ns = [](bool ns) {
    return fn([ns](Interp& in, Args& a) -> Expected<Value> {
      Value d = Value::make_dict();
      d.is_namespace = ns;
      if (ns) in.track_namespace(d.dict);
      for (const auto& p : a.pos) {
        if (!p.is_dict()) return arg_error("namespace()/dict() positional argument must be a mapping");
        for (const auto& [k, v] : p.dict->items) d.dict->set(k, v);
      }
      for (const auto& [k, v] : a.kw) d.dict->set(Value::string(k), v);
      return d;
    });
  };
  g["namespace"] = make_ns(true);
  g["dict"] = make_ns(false);
  g["raise_exception"] = fn([](Interp&, Args& a) -> Expected<Value> {
    std::string msg = a.pos.empty() ? "" : a.pos[0].str();
    return make_error(ErrorCode::kInvalidArgument, "raise_exception: {}", msg);
  });
  g["strftime_now"] = fn([](Interp&, Args& a) -> Expected<Value> {
    std::string f = a.pos.empty() ? "%Y-%m-%d" : a.pos[0].str();
    std::time_t t = std::time(nullptr);
    std::tm tm{};
    localtime_r(&t, &tm);
    char buf[256];
    size_t n = std::strftime(buf, sizeof(buf), f.c_str(), &tm);
    return Value::string(std::string(buf, n));
  });
  return g;
}

Expected<bool> Interp::test_builtin(const std::string& name, const Value& v, Args& a) {
  using K = Value::Kind;
  const Value* arg = a.pos.empty() ? nullptr : &a.pos[0];
  auto need_arg = [&]() -> Status { return arg ? Status::Ok() : arg_error("test '" + name + "' needs an argument"); };
  if (name == "defined") return !v.is_undefined();
  if (name == "undefined") return v.is_undefined();
  if (name == "none") return v.is_none();
  if (name == "boolean") return v.kind == K::kBool;
  if (name == "true") return v.kind == K::kBool && v.b;
  if (name == "false") return v.kind == K::kBool && !v.b;
  if (name == "integer") return v.kind == K::kInt;
  if (name == "float") return v.kind == K::kFloat;
  if (name == "number") return v.kind == K::kInt || v.kind == K::kFloat || v.kind == K::kBool;
  if (name == "string") return v.is_string();
  if (name == "mapping") return v.is_dict();
  if (name == "sequence") return v.is_list() || v.is_string() || v.is_dict();
  if (name == "iterable") return v.is_list() || v.is_string() || v.is_dict() || v.is_undefined();
  if (name == "callable") return v.kind == K::kFunction;
  if (name == "even" || name == "odd") {
    if (!v.is_number()) return arg_error("test '" + name + "' needs a number");
    int64_t x = v.as_int();
    return name == "even" ? x % 2 == 0 : x % 2 != 0;
  }
  if (name == "divisibleby") {
    SHARDLM_TRY(need_arg());
    if (arg->as_int() == 0) return arg_error("division by zero");
    if (arg->as_int() == -1) return true;  // INT64_MIN % -1 traps
    return v.as_int() % arg->as_int() == 0;
  }
  if (name == "lower" || name == "upper") return v.is_string() && v.s() == map_case(v.s(), name == "upper");
  if (name == "eq" || name == "equalto" || name == "==") { SHARDLM_TRY(need_arg()); return values_equal(v, *arg); }
  if (name == "ne" || name == "!=") { SHARDLM_TRY(need_arg()); return !values_equal(v, *arg); }
  if (name == "sameas") {
    SHARDLM_TRY(need_arg());
    if (v.kind != arg->kind) return false;
    if (v.is_list()) return v.list == arg->list;
    if (v.is_dict()) return v.dict == arg->dict;
    return values_equal(v, *arg);
  }
  if (name == "lt" || name == "lessthan" || name == "<" || name == "le" || name == "<=" || name == "gt" ||
      name == "greaterthan" || name == ">" || name == "ge" || name == ">=") {
    SHARDLM_TRY(need_arg());
    SHARDLM_ASSIGN_OR_RETURN(int c, values_compare(v, *arg));
    if (name == "lt" || name == "lessthan" || name == "<") return c < 0;
    if (name == "le" || name == "<=") return c <= 0;
    if (name == "gt" || name == "greaterthan" || name == ">") return c > 0;
    return c >= 0;
  }
  if (name == "in") {
    SHARDLM_TRY(need_arg());
    if (arg->is_string()) return v.is_string() && find_substr(arg->s(), v.s()) != std::string::npos;
    if (arg->is_list()) {
      for (const auto& x : *arg->list)
        if (values_equal(x, v)) return true;
      return false;
    }
    if (arg->is_dict()) return arg->dict->find(v) != nullptr;
    return arg_error("test 'in' needs a container");
  }
  return arg_error("unknown test '" + name + "'");
}

Expected<Value> Interp::filter_builtin(const std::string& name, const Value& v, Args& a) {
  using K = Value::Kind;
  const Value* a0 = a.pos.empty() ? nullptr : &a.pos[0];
  if (name == "tojson") {
    JsonOptions o;
    if (const Value* ind = a.get(0, "indent"); ind && !ind->is_none()) {
      // Python treats a negative indent as 0; a huge one would only pad past the size bound.
      const int64_t n = ind->as_int();
      if (n > 1024) return arg_error("tojson: indent larger than 1024");
      o.indent = static_cast<int>(std::max<int64_t>(n, 0));
    }
    o.max_bytes = kMaxValueBytes;
    if (const Value* sk = a.get(SIZE_MAX, "sort_keys")) o.sort_keys = sk->truthy();
    if (const Value* ea = a.get(SIZE_MAX, "ensure_ascii")) o.ensure_ascii = ea->truthy();
    if (const Value* sep = a.get(SIZE_MAX, "separators"); sep && sep->is_list() && sep->list->size() == 2)
      o.separators = std::make_pair((*sep->list)[0].str(), (*sep->list)[1].str());
    SHARDLM_ASSIGN_OR_RETURN(std::string s, to_json(v, o));
    return Value::string(std::move(s));
  }
  if (name == "trim") return Value::string(py_strip(v.str(), a.get(0, "chars"), true, true));
  if (name == "length" || name == "count") {
    if (v.is_string()) return Value::integer(static_cast<int64_t>(utf8_length(v.s())));
    if (v.is_list()) return Value::integer(static_cast<int64_t>(v.list->size()));
    if (v.is_dict()) return Value::integer(static_cast<int64_t>(v.dict->items.size()));
    if (v.is_undefined()) return Value::integer(0);
    return arg_error(fmt::format("object of type '{}' has no len()", v.type_name()));
  }
  if (name == "upper" || name == "lower") return Value::string(map_case(v.str(), name == "upper"));
  if (name == "title") return Value::string(py_title(v.str()));
  if (name == "capitalize") return Value::string(py_capitalize(v.str()));
  if (name == "string") return Value::string(v.str());
  if (name == "safe") return v;
  if (name == "e" || name == "escape" || name == "forceescape") {
    std::string out;
    for (char c : v.str()) {
      switch (c) {
        case '&': out += "&amp;"; break;
        case '<': out += "&lt;"; break;
        case '>': out += "&gt;"; break;
        case '"': out += "&#34;"; break;
        case '\'': out += "&#39;"; break;
        default: out += c;
      }
    }
    SHARDLM_TRY(check_size(out.size()));  // up to 5 bytes per input byte
    return Value::string(std::move(out));
  }
  if (name == "d" || name == "default") {
    bool boolean = false;
    if (const Value* b = a.get(1, "boolean")) boolean = b->truthy();
    const Value* def = a.get(0, "default_value");
    Value dv = def ? *def : Value::string("");
    if (v.is_undefined() || (boolean && !v.truthy())) return dv;
    return v;
  }
  if (name == "items") {
    if (v.is_undefined()) return Value::make_list();
    if (!v.is_dict()) return arg_error("items filter needs a mapping");
    List out;
    for (const auto& [k, x] : v.dict->items) out.push_back(Value::make_list({k, x}, true));
    return Value::make_list(std::move(out));
  }
  if (name == "dictsort") {
    if (!v.is_dict()) return arg_error("dictsort filter needs a mapping");
    bool by_value = false, reverse = false;
    if (const Value* b = a.get(1, "by")) by_value = b->str() == "value";
    if (const Value* r = a.get(2, "reverse")) reverse = r->truthy();
    std::vector<std::pair<Value, Value>> items = v.dict->items;
    std::stable_sort(items.begin(), items.end(), [&](const auto& x, const auto& y) {
      const Value& p = by_value ? x.second : x.first;
      const Value& q = by_value ? y.second : y.first;
      auto c = values_compare(p.is_string() ? Value::string(map_case(p.s(), false)) : p,
                              q.is_string() ? Value::string(map_case(q.s(), false)) : q);
      return c.ok() && (reverse ? *c > 0 : *c < 0);
    });
    List out;
    for (auto& [k, x] : items) out.push_back(Value::make_list({k, x}, true));
    return Value::make_list(std::move(out));
  }
  if (name == "list") {
    SHARDLM_ASSIGN_OR_RETURN(List items, iterate(v));
    return Value::make_list(std::move(items));
  }
  if (name == "first" || name == "last") {
    SHARDLM_ASSIGN_OR_RETURN(List items, iterate(v));
    if (items.empty()) return Value::undefined();
    return name == "first" ? items.front() : items.back();
  }
  if (name == "reverse") {
    if (v.is_string()) {
      SHARDLM_TRY(charge(v.s().size() * sizeof(size_t)));  // the code point offsets
      auto starts = char_starts(v.s());
      std::string out;
      out.reserve(v.s().size());
      for (size_t k = starts.size() - 1; k > 0; --k) out.append(v.s(), starts[k - 1], starts[k] - starts[k - 1]);
      return Value::string(std::move(out));
    }
    SHARDLM_ASSIGN_OR_RETURN(List items, iterate(v));
    std::reverse(items.begin(), items.end());
    return Value::make_list(std::move(items));
  }
  if (name == "join") {
    SHARDLM_ASSIGN_OR_RETURN(List items, iterate(v));
    std::string sep = a0 ? a0->str() : "";
    const Value* attr = a.get(1, "attribute");
    std::string out;
    for (size_t k = 0; k < items.size(); ++k) {
      if (k) out += sep;
      if (attr) {
        SHARDLM_ASSIGN_OR_RETURN(Value x, attribute_of(*this, items[k], attr->str()));
        out += x.str();
      } else {
        out += items[k].str();
      }
      SHARDLM_TRY(check_size(out.size()));
    }
    return Value::string(std::move(out));
  }
  if (name == "replace") {
    if (a.pos.size() < 2) return arg_error("replace filter needs old and new");
    SHARDLM_ASSIGN_OR_RETURN(std::string r, replace_checked(v.str(), a.pos[0].str(), a.pos[1].str(), a.pos.size() > 2 ? a.pos[2].as_int() : -1));
    return Value::string(std::move(r));
  }
  if (name == "int") {
    if (v.kind == K::kInt || v.kind == K::kBool || v.kind == K::kFloat) return Value::integer(v.as_int());
    if (v.is_string()) {
      try {
        size_t used = 0;
        std::string t = py_strip(v.s(), nullptr, true, true);
        long long x = std::stoll(t, &used, 10);
        if (used == t.size()) return Value::integer(x);
        double d = std::stod(t, &used);
        if (used == t.size()) return Value::integer(Value::saturating_int(d));
      } catch (...) {
      }
    }
    return a0 ? *a0 : Value::integer(0);
  }
  if (name == "float") {
    if (v.is_number()) return Value::real(v.as_double());
    if (v.is_string()) {
      try {
        size_t used = 0;
        std::string t = py_strip(v.s(), nullptr, true, true);
        double d = std::stod(t, &used);
        if (used == t.size()) return Value::real(d);
      } catch (...) {
      }
    }
    return a0 ? *a0 : Value::real(0.0);
  }
  if (name == "abs") {
    if (v.kind == K::kFloat) return Value::real(std::fabs(v.f));
    if (v.is_number()) {
      if (v.as_int() == INT64_MIN) return arg_error("abs: integer overflow");  // |INT64_MIN| has no int64
      return Value::integer(std::llabs(v.as_int()));
    }
    return arg_error("abs needs a number");
  }
  if (name == "round") {
    int64_t prec = 0;
    if (const Value* p = a.get(0, "precision")) prec = p->as_int();
    std::string method = "common";
    if (const Value* m = a.get(1, "method")) method = m->str();
    double scale = std::pow(10.0, static_cast<double>(prec));
    double x = v.as_double() * scale;
    double r = method == "ceil" ? std::ceil(x) : method == "floor" ? std::floor(x) : std::round(x);
    return Value::real(r / scale);
  }
  if (name == "sum") {
    SHARDLM_ASSIGN_OR_RETURN(List items, iterate(v));
    const Value* attr = a.get(SIZE_MAX, "attribute");
    Value total = a.get(1, "start") ? *a.get(1, "start") : Value::integer(0);
    for (auto& x : items) {
      Value item = x;
      if (attr) {
        SHARDLM_ASSIGN_OR_RETURN(item, attribute_of(*this, x, attr->str()));
      }
      if (!item.is_number()) return arg_error("sum needs numbers");
      if (total.kind == K::kFloat || item.kind == K::kFloat) total = Value::real(total.as_double() + item.as_double());
      else {
        int64_t sum = 0;
        if (__builtin_add_overflow(total.as_int(), item.as_int(), &sum)) return arg_error("sum: integer overflow");
        total = Value::integer(sum);
      }
    }
    return total;
  }
  if (name == "min" || name == "max") {
    SHARDLM_ASSIGN_OR_RETURN(List items, iterate(v));
    if (items.empty()) return Value::undefined();
    Value best = items[0];
    for (size_t k = 1; k < items.size(); ++k) {
      SHARDLM_ASSIGN_OR_RETURN(int c, values_compare(items[k], best));
      if (name == "min" ? c < 0 : c > 0) best = items[k];
    }
    return best;
  }
  if (name == "unique") {
    SHARDLM_ASSIGN_OR_RETURN(List items, iterate(v));
    List out;
    for (auto& x : items) {
      SHARDLM_TRY(charge(out.size()));  // quadratic: one unit per comparison
      bool seen = false;
      for (auto& y : out) seen = seen || values_equal(x, y);
      if (!seen) out.push_back(x);
    }
    return Value::make_list(std::move(out));
  }
  if (name == "sort") {
    SHARDLM_ASSIGN_OR_RETURN(List items, iterate(v));
    bool reverse = false, case_sensitive = false;
    if (const Value* r = a.get(0, "reverse")) reverse = r->truthy();
    if (const Value* c = a.get(1, "case_sensitive")) case_sensitive = c->truthy();
    const Value* attr = a.get(2, "attribute");
    std::vector<std::pair<Value, Value>> keyed;
    for (auto& x : items) {
      Value k = x;
      if (attr) {
        SHARDLM_ASSIGN_OR_RETURN(k, attribute_of(*this, x, attr->str()));
      }
      if (!case_sensitive && k.is_string()) k = Value::string(map_case(k.s(), false));
      keyed.emplace_back(k, x);
    }
    Status st;
    std::stable_sort(keyed.begin(), keyed.end(), [&](const auto& x, const auto& y) {
      auto c = values_compare(x.first, y.first);
      if (!c.ok()) {
        st = c.status();
        return false;
      }
      return reverse ? *c > 0 : *c < 0;
    });
    SHARDLM_TRY(st);
    List out;
    for (auto& [k, x] : keyed) out.push_back(x);
    return Value::make_list(std::move(out));
  }
  if (name == "indent") {
    int64_t width = 4;
    bool first = false, blank = false;
    if (const Value* w = a.get(0, "width")) width = w->is_string() ? -1 : w->as_int();
    if (const Value* f = a.get(1, "first")) first = f->truthy();
    if (const Value* b = a.get(2, "blank")) blank = b->truthy();
    if (width >= 0) SHARDLM_TRY(check_size(static_cast<size_t>(width)));
    std::string pad = width >= 0 ? std::string(static_cast<size_t>(width), ' ') : a.get(0, "width")->s();
    std::string s = v.str(), out;
    size_t start = 0;
    bool is_first = true;
    while (true) {
      size_t nl = s.find('\n', start);
      std::string line = s.substr(start, nl == std::string::npos ? std::string::npos : nl - start);
      bool do_pad = is_first ? first : (blank || !py_strip(line, nullptr, true, true).empty());
      if (do_pad) out += pad;
      out += line;
      SHARDLM_TRY(check_size(out.size()));
      if (nl == std::string::npos) break;
      out += '\n';
      start = nl + 1;
      is_first = false;
    }
    return Value::string(std::move(out));
  }
  if (name == "wordcount") return Value::integer(static_cast<int64_t>(py_split(v.str(), nullptr, -1).size()));
  if (name == "attr") {
    if (!a0) return arg_error("attr filter needs a name");
    return get_attr(v, a0->str());
  }
  if (name == "map" || name == "select" || name == "reject" || name == "selectattr" || name == "rejectattr") {
    SHARDLM_ASSIGN_OR_RETURN(List items, iterate(v));
    List out;
    if (name == "map") {
      if (const Value* attr = a.get(SIZE_MAX, "attribute")) {
        const Value* def = a.get(SIZE_MAX, "default");
        for (auto& x : items) {
          SHARDLM_ASSIGN_OR_RETURN(Value y, attribute_of(*this, x, attr->str()));
          out.push_back(y.is_undefined() && def ? *def : y);
        }
        return Value::make_list(std::move(out));
      }
      if (!a0) return arg_error("map needs a filter name or attribute=");
      Args rest;
      rest.pos.assign(a.pos.begin() + 1, a.pos.end());
      rest.kw = a.kw;
      for (auto& x : items) {
        SHARDLM_ASSIGN_OR_RETURN(Value y, apply_filter(a0->str(), x, rest));
        out.push_back(std::move(y));
      }
      return Value::make_list(std::move(out));
    }
    bool by_attr = name == "selectattr" || name == "rejectattr";
    bool keep_if = name == "select" || name == "selectattr";
    size_t test_at = by_attr ? 1 : 0;
    if (by_attr && !a0) return arg_error(name + " needs an attribute name");
    for (auto& x : items) {
      Value subject = x;
      if (by_attr) {
        SHARDLM_ASSIGN_OR_RETURN(subject, attribute_of(*this, x, a0->str()));
      }
      bool ok;
      if (a.pos.size() > test_at) {
        Args rest;
        rest.pos.assign(a.pos.begin() + static_cast<ptrdiff_t>(test_at) + 1, a.pos.end());
        SHARDLM_ASSIGN_OR_RETURN(ok, apply_test(a.pos[test_at].str(), subject, rest));
      } else {
        ok = subject.truthy();
      }
      if (ok == keep_if) out.push_back(x);
    }
    return Value::make_list(std::move(out));
  }
  if (name == "batch") {
    SHARDLM_ASSIGN_OR_RETURN(List items, iterate(v));
    int64_t n = a0 ? a0->as_int() : 1;
    if (n <= 0) return arg_error("batch size must be positive");
    List out, cur;
    for (auto& x : items) {
      cur.push_back(x);
      if (static_cast<int64_t>(cur.size()) == n) {
        out.push_back(Value::make_list(std::move(cur)));
        cur.clear();
      }
    }
    if (!cur.empty()) {
      if (const Value* fill = a.get(1, "fill_with")) {
        SHARDLM_TRY(check_size(static_cast<size_t>(n) * sizeof(Value)));
        SHARDLM_TRY(charge(static_cast<size_t>(n) * sizeof(Value)));
        while (static_cast<int64_t>(cur.size()) < n) cur.push_back(*fill);
      }
      out.push_back(Value::make_list(std::move(cur)));
    }
    return Value::make_list(std::move(out));
  }
  return arg_error("unknown filter '" + name + "'");
}

}  // namespace shardlm::jinja
