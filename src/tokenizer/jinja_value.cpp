#include "tokenizer/jinja_value.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>

#include "tokenizer/utf8.h"

namespace shardlm::jinja {

const Value* Args::get(size_t index, std::string_view name) const {
  for (const auto& [k, v] : kw)
    if (k == name) return &v;
  if (index < pos.size()) return &pos[index];
  return nullptr;
}

const std::string& Value::s() const {
  static const std::string kEmpty;
  return text_ ? *text_ : kEmpty;
}

std::shared_ptr<const std::string> Value::shared_text() const {
  return text_ ? text_ : std::make_shared<const std::string>();
}

Value Value::make_list(List items, bool tuple) {
  Value v = with_kind(Kind::kList);
  v.list = std::make_shared<List>(std::move(items));
  v.is_tuple = tuple;
  return v;
}

Value Value::make_dict() {
  Value v = with_kind(Kind::kDict);
  v.dict = std::make_shared<Dict>();
  return v;
}

Value Value::from_json(const nlohmann::ordered_json& j) {
  switch (j.type()) {
    case nlohmann::ordered_json::value_t::null: return none();
    case nlohmann::ordered_json::value_t::boolean: return boolean(j.get<bool>());
    case nlohmann::ordered_json::value_t::number_integer: return integer(j.get<int64_t>());
    case nlohmann::ordered_json::value_t::number_unsigned: {
      uint64_t u = j.get<uint64_t>();
      return u > static_cast<uint64_t>(INT64_MAX) ? real(static_cast<double>(u)) : integer(static_cast<int64_t>(u));
    }
    case nlohmann::ordered_json::value_t::number_float: return real(j.get<double>());
    case nlohmann::ordered_json::value_t::string: return string(j.get<std::string>());
    case nlohmann::ordered_json::value_t::array: {
      List items;
      items.reserve(j.size());
      for (const auto& e : j) items.push_back(from_json(e));
      return make_list(std::move(items));
    }
    case nlohmann::ordered_json::value_t::object: {
      Value d = make_dict();
      for (auto it = j.begin(); it != j.end(); ++it) d.dict->items.emplace_back(string(it.key()), from_json(it.value()));
      return d;
    }
    default: return undefined();
  }
}

bool Value::truthy() const {
  switch (kind) {
    case Kind::kUndefined:
    case Kind::kNone: return false;
    case Kind::kBool: return b;
    case Kind::kInt: return i != 0;
    case Kind::kFloat: return f != 0;
    case Kind::kString: return !s().empty();
    case Kind::kList: return !list->empty();
    case Kind::kDict: return !dict->items.empty();
    case Kind::kFunction: return true;
  }
  return false;
}

const char* Value::type_name() const {
  switch (kind) {
    case Kind::kUndefined: return "undefined";
    case Kind::kNone: return "NoneType";
    case Kind::kBool: return "bool";
    case Kind::kInt: return "int";
    case Kind::kFloat: return "float";
    case Kind::kString: return "str";
    case Kind::kList: return is_tuple ? "tuple" : "list";
    case Kind::kDict: return is_namespace ? "Namespace" : "dict";
    case Kind::kFunction: return "function";
  }
  return "?";
}

std::string python_float_repr(double x) {
  if (std::isnan(x)) return "nan";
  if (std::isinf(x)) return x > 0 ? "inf" : "-inf";
  if (x == 0) return std::signbit(x) ? "-0.0" : "0.0";
  // Shortest round-trip digits, then Python's 'r' layout rules.
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof(buf), x, std::chars_format::scientific);
  std::string sci(buf, r.ptr);
  bool neg = sci[0] == '-';
  if (neg) sci.erase(0, 1);
  size_t epos = sci.find('e');
  std::string mant = sci.substr(0, epos);
  int exp = std::stoi(sci.substr(epos + 1));
  std::string digits;
  for (char c : mant)
    if (c != '.') digits.push_back(c);
  while (digits.size() > 1 && digits.back() == '0') digits.pop_back();
  int decpt = exp + 1;  // position of the decimal point relative to digits
  std::string out;
  if (decpt > -4 && decpt <= 16) {
    if (decpt <= 0) {
      out = "0." + std::string(static_cast<size_t>(-decpt), '0') + digits;
    } else if (static_cast<size_t>(decpt) >= digits.size()) {
      out = digits + std::string(static_cast<size_t>(decpt) - digits.size(), '0') + ".0";
    } else {
      out = digits.substr(0, static_cast<size_t>(decpt)) + "." + digits.substr(static_cast<size_t>(decpt));
    }
  } else {
    out = digits.substr(0, 1);
    if (digits.size() > 1) out += "." + digits.substr(1);
    int e = decpt - 1;
    char eb[16];
    std::snprintf(eb, sizeof(eb), "e%c%02d", e < 0 ? '-' : '+', std::abs(e));
    out += eb;
  }
  return neg ? "-" + out : out;
}

std::string python_str_repr(std::string_view s) {
  bool has_single = s.find('\'') != std::string_view::npos;
  bool has_double = s.find('"') != std::string_view::npos;
  char q = (has_single && !has_double) ? '"' : '\'';
  std::string out(1, q);
  size_t i = 0;
  while (i < s.size()) {
    size_t len = utf8::valid_sequence_length(s, i);
    if (len == 0) {
      char b[8];
      std::snprintf(b, sizeof(b), "\\x%02x", static_cast<unsigned char>(s[i]));
      out += b;
      ++i;
      continue;
    }
    size_t start = i;
    char32_t c = utf8::decode_at(s, i);
    if (c == static_cast<char32_t>(q) || c == '\\') {
      out.push_back('\\');
      out.push_back(static_cast<char>(c));
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c < 0x20 || c == 0x7F || (c >= 0x80 && c < 0xA0)) {
      char b[8];
      std::snprintf(b, sizeof(b), "\\x%02x", static_cast<unsigned>(c));
      out += b;
    } else {
      out.append(s.substr(start, i - start));
    }
  }
  out.push_back(q);
  return out;
}

std::string Value::str() const {
  switch (kind) {
    case Kind::kUndefined: return "";
    case Kind::kString: return s();
    default: return repr();
  }
}

namespace {

void append_repr(std::string& out, const Value& v, int depth) {
  using K = Value::Kind;
  switch (v.kind) {
    case K::kUndefined: return;
    case K::kNone: out += "None"; return;
    case K::kBool: out += v.b ? "True" : "False"; return;
    case K::kInt: out += std::to_string(v.i); return;
    case K::kFloat: out += python_float_repr(v.f); return;
    case K::kString: out += python_str_repr(v.s()); return;
    case K::kFunction: out += "<function>"; return;
    case K::kList:
    case K::kDict: break;
  }
  if (depth >= kMaxValueNesting) {
    out += v.is_list() ? "[...]" : "{...}";
    return;
  }
  if (v.is_list()) {
    out += v.is_tuple ? "(" : "[";
    for (size_t k = 0; k < v.list->size(); ++k) {
      if (k) out += ", ";
      append_repr(out, (*v.list)[k], depth + 1);
    }
    if (v.is_tuple && v.list->size() == 1) out += ",";
    out += v.is_tuple ? ")" : "]";
    return;
  }
  out += v.is_namespace ? "<Namespace {" : "{";
  bool first = true;
  for (const auto& [k, x] : v.dict->items) {
    if (!first) out += ", ";
    first = false;
    append_repr(out, k, depth + 1);
    out += ": ";
    append_repr(out, x, depth + 1);
  }
  out += v.is_namespace ? "}>" : "}";
}

}  // namespace

std::string Value::repr() const {
  std::string out;
  append_repr(out, *this, 0);
  return out;
}

const Value* Dict::find(std::string_view key) const {
  for (const auto& [k, v] : items)
    if (k.kind == Value::Kind::kString && k.s() == key) return &v;
  return nullptr;
}

const Value* Dict::find(const Value& key) const {
  for (const auto& [k, v] : items)
    if (values_equal(k, key)) return &v;
  return nullptr;
}

void Dict::set(const Value& key, Value v) {
  for (auto& [k, old] : items) {
    if (values_equal(k, key)) {
      old = std::move(v);
      return;
    }
  }
  items.emplace_back(key, std::move(v));
}

namespace {

bool equal_at(const Value& a, const Value& b, int depth) {
  using K = Value::Kind;
  if (a.is_number() && b.is_number()) {
    if (a.kind == K::kFloat || b.kind == K::kFloat) return a.as_double() == b.as_double();
    return a.as_int() == b.as_int();
  }
  if (a.kind != b.kind) return false;
  switch (a.kind) {
    case K::kUndefined:
    case K::kNone: return true;
    case K::kString: return a.s() == b.s();
    case K::kList: {
      if (a.list == b.list) return true;
      if (a.list->size() != b.list->size() || depth >= kMaxValueNesting) return false;
      for (size_t k = 0; k < a.list->size(); ++k)
        if (!equal_at((*a.list)[k], (*b.list)[k], depth + 1)) return false;
      return true;
    }
    case K::kDict: {
      if (a.dict == b.dict) return true;
      if (a.dict->items.size() != b.dict->items.size() || depth >= kMaxValueNesting) return false;
      for (const auto& [k, v] : a.dict->items) {
        const Value* o = b.dict->find(k);
        if (!o || !equal_at(v, *o, depth + 1)) return false;
      }
      return true;
    }
    case K::kFunction: return a.fn == b.fn;
    default: return false;
  }
}

Expected<int> compare_at(const Value& a, const Value& b, int depth) {
  if (a.is_number() && b.is_number()) {
    if (a.kind == Value::Kind::kFloat || b.kind == Value::Kind::kFloat) {
      double x = a.as_double(), y = b.as_double();
      return x < y ? -1 : x > y ? 1 : 0;
    }
    int64_t x = a.as_int(), y = b.as_int();
    return x < y ? -1 : x > y ? 1 : 0;
  }
  if (a.is_string() && b.is_string()) {
    int c = a.s().compare(b.s());  // UTF-8 byte order is code point order
    return c < 0 ? -1 : c > 0 ? 1 : 0;
  }
  if (a.is_list() && b.is_list()) {
    if (depth >= kMaxValueNesting) return make_error(ErrorCode::kInvalidArgument, "maximum recursion depth exceeded in comparison");
    size_t n = std::min(a.list->size(), b.list->size());
    for (size_t k = 0; k < n; ++k) {
      if (equal_at((*a.list)[k], (*b.list)[k], depth + 1)) continue;
      return compare_at((*a.list)[k], (*b.list)[k], depth + 1);
    }
    return a.list->size() < b.list->size() ? -1 : a.list->size() > b.list->size() ? 1 : 0;
  }
  return make_error(ErrorCode::kInvalidArgument, "'<' not supported between instances of '{}' and '{}'", a.type_name(),
                    b.type_name());
}

}  // namespace

bool values_equal(const Value& a, const Value& b) { return equal_at(a, b, 0); }

Expected<int> values_compare(const Value& a, const Value& b) { return compare_at(a, b, 0); }

namespace {

void json_string(std::string& out, std::string_view s, bool ensure_ascii) {
  out.push_back('"');
  size_t i = 0;
  while (i < s.size()) {
    size_t start = i;
    char32_t c = utf8::valid_sequence_length(s, i) ? utf8::decode_at(s, i) : (++i, utf8::kReplacement);
    switch (c) {
      case '"': out += "\\\""; continue;
      case '\\': out += "\\\\"; continue;
      case '\n': out += "\\n"; continue;
      case '\r': out += "\\r"; continue;
      case '\t': out += "\\t"; continue;
      case '\b': out += "\\b"; continue;
      case '\f': out += "\\f"; continue;
      default: break;
    }
    char b[16];
    if (c < 0x20 || (ensure_ascii && c >= 0x7F)) {
      if (c >= 0x10000) {
        char32_t v = c - 0x10000;
        std::snprintf(b, sizeof(b), "\\u%04x\\u%04x", static_cast<unsigned>(0xD800 + (v >> 10)),
                      static_cast<unsigned>(0xDC00 + (v & 0x3FF)));
      } else {
        std::snprintf(b, sizeof(b), "\\u%04x", static_cast<unsigned>(c));
      }
      out += b;
    } else {
      out.append(s.substr(start, i - start));
    }
  }
  out.push_back('"');
}

Status dump(std::string& out, const Value& v, const JsonOptions& o, int level) {
  using K = Value::Kind;
  const std::string item_sep = o.separators ? o.separators->first : (o.indent ? "," : ", ");
  const std::string key_sep = o.separators ? o.separators->second : ": ";
  auto newline = [&](int lvl) {
    if (!o.indent) return;
    out.push_back('\n');
    out.append(static_cast<size_t>(*o.indent * lvl), ' ');
  };
  // Python's json detects the cycle; a bound on the depth catches it and any
  // structure too deep to be a chat message.
  if (level > kMaxValueNesting) return make_error(ErrorCode::kInvalidArgument, "tojson: circular reference or nesting deeper than {}", kMaxValueNesting);
  switch (v.kind) {
    case K::kUndefined: return make_error(ErrorCode::kInvalidArgument, "Object of type Undefined is not JSON serializable");
    case K::kFunction: return make_error(ErrorCode::kInvalidArgument, "Object of type function is not JSON serializable");
    case K::kNone: out += "null"; return Status::Ok();
    case K::kBool: out += v.b ? "true" : "false"; return Status::Ok();
    case K::kInt: out += std::to_string(v.i); return Status::Ok();
    case K::kFloat: {
      if (std::isnan(v.f)) out += "NaN";
      else if (std::isinf(v.f)) out += v.f > 0 ? "Infinity" : "-Infinity";
      else out += python_float_repr(v.f);
      return Status::Ok();
    }
    case K::kString: json_string(out, v.s(), o.ensure_ascii); return Status::Ok();
    case K::kList: {
      if (v.list->empty()) {
        out += "[]";
        return Status::Ok();
      }
      out.push_back('[');
      for (size_t k = 0; k < v.list->size(); ++k) {
        if (k) out += item_sep;
        newline(level + 1);
        SHARDLM_TRY(dump(out, (*v.list)[k], o, level + 1));
        if (out.size() > o.max_bytes) return make_error(ErrorCode::kOutOfMemory, "tojson: output exceeds {} bytes", o.max_bytes);
      }
      newline(level);
      out.push_back(']');
      return Status::Ok();
    }
    case K::kDict: {
      if (v.dict->items.empty()) {
        out += "{}";
        return Status::Ok();
      }
      std::vector<const std::pair<Value, Value>*> items;
      for (const auto& kv : v.dict->items) items.push_back(&kv);
      if (o.sort_keys) {
        std::stable_sort(items.begin(), items.end(), [](auto* a, auto* b) { return a->first.str() < b->first.str(); });
      }
      out.push_back('{');
      bool first = true;
      for (const auto* kv : items) {
        if (!first) out += item_sep;
        first = false;
        newline(level + 1);
        const Value& k = kv->first;
        if (k.is_string()) {
          json_string(out, k.s(), o.ensure_ascii);
        } else if (k.kind == K::kInt || k.kind == K::kFloat || k.kind == K::kBool || k.kind == K::kNone) {
          std::string ks = k.kind == K::kBool ? (k.b ? "true" : "false") : k.kind == K::kNone ? "null" : k.repr();
          json_string(out, ks, o.ensure_ascii);
        } else {
          return make_error(ErrorCode::kInvalidArgument, "keys must be str, int, float, bool or None, not {}", k.type_name());
        }
        out += key_sep;
        SHARDLM_TRY(dump(out, kv->second, o, level + 1));
        if (out.size() > o.max_bytes) return make_error(ErrorCode::kOutOfMemory, "tojson: output exceeds {} bytes", o.max_bytes);
      }
      newline(level);
      out.push_back('}');
      return Status::Ok();
    }
  }
  return Status::Ok();
}

}  // namespace

Expected<std::string> to_json(const Value& v, const JsonOptions& opts) {
  std::string out;
  SHARDLM_TRY(dump(out, v, opts, 0));
  return out;
}

size_t utf8_length(std::string_view s) {
  size_t n = 0;
  for (char c : s) n += (static_cast<unsigned char>(c) & 0xC0) != 0x80;
  return n;
}

size_t find_substr(std::string_view hay, std::string_view needle, size_t pos) {
  if (pos > hay.size()) return std::string_view::npos;
  if (needle.empty()) return pos;
  const void* p = memmem(hay.data() + pos, hay.size() - pos, needle.data(), needle.size());
  return p ? static_cast<size_t>(static_cast<const char*>(p) - hay.data()) : std::string_view::npos;
}

size_t rfind_substr(std::string_view hay, std::string_view needle) {
  if (needle.size() > hay.size()) return std::string_view::npos;
  if (needle.empty()) return hay.size();
  // The last match is the first match in the reversed strings.
  std::string rh(hay.rbegin(), hay.rend()), rn(needle.rbegin(), needle.rend());
  size_t p = find_substr(rh, rn);
  return p == std::string_view::npos ? p : hay.size() - p - needle.size();
}

std::vector<size_t> char_starts(std::string_view s) {
  std::vector<size_t> out;
  size_t i = 0;
  while (i < s.size()) {
    out.push_back(i);
    size_t len = utf8::valid_sequence_length(s, i);
    i += len == 0 ? 1 : len;
  }
  out.push_back(s.size());
  return out;
}

}  // namespace shardlm::jinja
