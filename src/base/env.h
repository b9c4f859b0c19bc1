// Environment variables, read through one place so tests can reason about them.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "base/status.h"

namespace shardlm {

std::optional<std::string> env_get(const char* name);
// Parses an integer variable; unset → std::nullopt, malformed → error naming it.
Expected<std::optional<int64_t>> env_int(const char* name);

}  // namespace shardlm
