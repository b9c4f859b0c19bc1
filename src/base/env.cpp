#include "base/env.h"

#include <cstdlib>

namespace shardlm {

std::optional<std::string> env_get(const char* name) {
  const char* v = std::getenv(name);
  if (!v) return std::nullopt;
  return std::string(v);
}

Expected<std::optional<int64_t>> env_int(const char* name) {
  auto v = env_get(name);
  if (!v) return std::optional<int64_t>();
  char* end = nullptr;
  errno = 0;
  long long x = std::strtoll(v->c_str(), &end, 10);
  if (v->empty() || *end != '\0' || errno != 0)
    return make_error(ErrorCode::kInvalidArgument, "environment variable {}='{}' is not an integer", name, *v);
  return std::optional<int64_t>(x);
}

}  // namespace shardlm
