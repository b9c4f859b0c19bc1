// The bounds of one render (jinja_interp.h says why): steps, bytes of work,
// and the size of containers before they are printed, compared or serialised.
#include <cstdint>

#include "tokenizer/jinja_interp.h"

namespace shardlm::jinja {

namespace {
// A chat template over a conversation of 1,000 messages takes ~10^5 steps and
// touches a few times the conversation's bytes; the bounds leave two orders of
// magnitude for that and still end a runaway template within seconds (tens of
// seconds under the sanitizers of the fuzzer).
constexpr uint64_t kMaxSteps = 4'000'000;
constexpr uint64_t kMaxWorkBytes = uint64_t{128} << 20;
}  // namespace

Status Interp::step(uint64_t weight) {
  steps_ += weight;
  if (steps_ > kMaxSteps) return make_error(ErrorCode::kAborted, "template exceeded its execution budget ({} steps)", kMaxSteps);
  return Status::Ok();
}

Status Interp::charge(size_t bytes) {
  work_ += bytes;
  if (work_ > kMaxWorkBytes)
    return make_error(ErrorCode::kAborted, "template exceeded its work budget ({} MiB of strings and lists processed)",
                      kMaxWorkBytes >> 20);
  return Status::Ok();
}

size_t Interp::shallow_bytes(const Value& v) {
  switch (v.kind) {
    case Value::Kind::kString: return v.s().size();
    case Value::Kind::kList: return v.list->size() * sizeof(Value);
    case Value::Kind::kDict: return v.dict->items.size() * 2 * sizeof(Value);
    default: return 0;
  }
}

namespace {

// Adds what printing v whole would hold (string bytes + slots) to *total,
// stopping once it passes `cap`; counts the slots visited in *visited. Deeper
// than kMaxValueNesting repr() prints "[...]", so the walk stops there too.
void measure(const Value& v, int depth, size_t cap, size_t* total, size_t* visited) {
  *total += Interp::shallow_bytes(v);
  if (depth >= kMaxValueNesting || *total > cap) return;
  if (v.is_list()) {
    for (const auto& x : *v.list) {
      ++*visited;
      measure(x, depth + 1, cap, total, visited);
      if (*total > cap) return;
    }
  } else if (v.is_dict()) {
    for (const auto& [k, x] : v.dict->items) {
      ++*visited;
      measure(k, depth + 1, cap, total, visited);
      measure(x, depth + 1, cap, total, visited);
      if (*total > cap) return;
    }
  }
}

}  // namespace

Status Interp::check_nested(const Value& v) {
  if (!v.is_list() && !v.is_dict()) return Status::Ok();
  size_t total = 0, visited = 0;
  measure(v, 0, kMaxValueBytes, &total, &visited);
  SHARDLM_TRY(charge(visited));
  if (total > kMaxValueBytes)
    return make_error(ErrorCode::kOutOfMemory, "template value exceeds 64 MiB (a {} holding more than that)", v.type_name());
  return Status::Ok();
}

// A builtin's cost is linear in what it is given: the receiver's and the
// arguments' top-level bytes; containers are measured whole first, as most
// builtins print, compare or copy them.
Status Interp::charge_call(const Value* self, const Args& args) {
  size_t bytes = self ? shallow_bytes(*self) : 0;
  if (self) SHARDLM_TRY(check_nested(*self));
  for (const auto& v : args.pos) {
    bytes += shallow_bytes(v);
    SHARDLM_TRY(check_nested(v));
  }
  for (const auto& [k, v] : args.kw) {
    bytes += shallow_bytes(v);
    SHARDLM_TRY(check_nested(v));
  }
  return charge(bytes);
}

Expected<Value> Interp::apply_filter(const std::string& name, const Value& v, Args& args) {
  SHARDLM_TRY(charge_call(&v, args));
  SHARDLM_ASSIGN_OR_RETURN(Value r, filter_builtin(name, v, args));
  SHARDLM_TRY(charge(shallow_bytes(r)));
  return r;
}

Expected<bool> Interp::apply_test(const std::string& name, const Value& v, Args& args) {
  SHARDLM_TRY(charge_call(&v, args));
  return test_builtin(name, v, args);
}

}  // namespace shardlm::jinja
