// Values of the Jinja interpreter, with Python semantics where the output
// depends on them: str() / repr() formatting, truthiness, equality, ordering,
// and json.dumps for tojson.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/status.h"

namespace shardlm::jinja {

struct Value;
class Interp;

struct Args {
  std::vector<Value> pos;
  std::vector<std::pair<std::string, Value>> kw;
  const Value* get(size_t index, std::string_view name) const;  // positional or keyword
};

using Function = std::function<Expected<Value>(Interp&, Args&)>;

struct Dict;
using List = std::vector<Value>;

struct Value {
  enum class Kind : uint8_t { kUndefined, kNone, kBool, kInt, kFloat, kString, kList, kDict, kFunction };
  Kind kind = Kind::kUndefined;
  bool b = false;
  bool is_tuple = false;      // lists that Python would show as tuples
  bool is_namespace = false;  // dicts made by namespace()
  int64_t i = 0;
  double f = 0;
  std::shared_ptr<List> list;
  std::shared_ptr<Dict> dict;
  std::shared_ptr<Function> fn;

  static Value undefined(std::string name = {}) {
    Value v;
    if (!name.empty()) v.text_ = std::make_shared<const std::string>(std::move(name));
    return v;
  }
  static Value none() { return with_kind(Kind::kNone); }
  static Value boolean(bool x) {
    Value v = with_kind(Kind::kBool);
    v.b = x;
    return v;
  }
  static Value integer(int64_t x) {
    Value v = with_kind(Kind::kInt);
    v.i = x;
    return v;
  }
  static Value real(double x) {
    Value v = with_kind(Kind::kFloat);
    v.f = x;
    return v;
  }
  static Value string(std::string x) {
    Value v = with_kind(Kind::kString);
    v.text_ = std::make_shared<const std::string>(std::move(x));
    return v;
  }
  static Value make_list(List items = {}, bool tuple = false);
  static Value make_dict();
  static Value function(Function f) {
    Value v = with_kind(Kind::kFunction);
    v.fn = std::make_shared<Function>(std::move(f));
    return v;
  }
  static Value from_json(const nlohmann::ordered_json& j);

  bool is_undefined() const { return kind == Kind::kUndefined; }
  bool is_none() const { return kind == Kind::kNone; }
  bool is_string() const { return kind == Kind::kString; }
  bool is_number() const { return kind == Kind::kInt || kind == Kind::kFloat || kind == Kind::kBool; }
  bool is_list() const { return kind == Kind::kList; }
  bool is_dict() const { return kind == Kind::kDict; }
  double as_double() const { return kind == Kind::kFloat ? f : kind == Kind::kBool ? (b ? 1 : 0) : static_cast<double>(i); }
  int64_t as_int() const { return kind == Kind::kBool ? (b ? 1 : 0) : kind == Kind::kFloat ? saturating_int(f) : i; }
  // A float truncated toward zero, clamped to int64 (NaN → 0): a template may
  // hold any double (`a[3:1e82]`), and casting one out of range is undefined.
  static int64_t saturating_int(double d) {
    if (!(d == d)) return 0;
    if (d >= 9223372036854775808.0) return INT64_MAX;  // 2^63
    if (d < -9223372036854775808.0) return INT64_MIN;
    return static_cast<int64_t>(d);
  }

  // The string's bytes, or the name of an undefined variable.
  const std::string& s() const;
  // The same bytes, shared (for closures that outlive this value).
  std::shared_ptr<const std::string> shared_text() const;

  bool truthy() const;
  // Python str() (what {{ x }} prints; undefined prints as "").
  std::string str() const;
  // Python repr().
  std::string repr() const;
  const char* type_name() const;

 private:
  static Value with_kind(Kind k) {
    Value v;
    v.kind = k;
    return v;
  }
  // Immutable and shared, as Python's str: copying a Value (a variable lookup,
  // a loop binding, a list literal) never copies its text, so a template that
  // passes a large message around pays for its bytes once.
  std::shared_ptr<const std::string> text_;
};

// Deepest nesting of lists / dicts that printing, comparing and serialising
// walk into; deeper (or self-containing, e.g. a namespace holding itself)
// values print as "[...]" like Python's reprlib and fail to compare or serialise.
constexpr int kMaxValueNesting = 64;
// Largest string (bytes) or list (slots * sizeof(Value)) a template may build.
constexpr size_t kMaxValueBytes = size_t{64} << 20;

struct Dict {
  std::vector<std::pair<Value, Value>> items;
  const Value* find(const Value& key) const;
  const Value* find(std::string_view key) const;
  void set(const Value& key, Value v);
};

bool values_equal(const Value& a, const Value& b);
// -1/0/1, or an error when Python would raise TypeError.
Expected<int> values_compare(const Value& a, const Value& b);

// Python float repr ("1.0", "0.1", "1e-05", "inf").
std::string python_float_repr(double x);
// Python repr of a string ('...' with escapes).
std::string python_str_repr(std::string_view s);

struct JsonOptions {
  std::optional<int> indent;
  std::optional<std::pair<std::string, std::string>> separators;  // item, key
  bool sort_keys = false;
  bool ensure_ascii = false;
  size_t max_bytes = SIZE_MAX;  // fail once the text grows past this
};
// json.dumps(value, ...) as transformers' tojson calls it.
Expected<std::string> to_json(const Value& v, const JsonOptions& opts);

// Number of code points (Python len of a str).
size_t utf8_length(std::string_view s);
// Substring search in time linear in both lengths (glibc's memmem is the
// two-way algorithm; std::string::find is quadratic on inputs like a^n, a^(n/2)b,
// which a template can build). npos when absent.
size_t find_substr(std::string_view hay, std::string_view needle, size_t pos = 0);
size_t rfind_substr(std::string_view hay, std::string_view needle);

// Byte offsets where each code point of s starts, then s.size(): code point k
// is s[starts[k], starts[k + 1]). A byte that starts no valid sequence is a
// code point of its own (Python would have decoded it with errors=replace).
std::vector<size_t> char_starts(std::string_view s);

}  // namespace shardlm::jinja
