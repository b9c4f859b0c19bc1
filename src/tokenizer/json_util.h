// Small helpers for reading tokenizer.json pieces.
#pragma once

#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "base/status.h"
#include "tokenizer/regex.h"

namespace shardlm {

// {"String": "..."} (a literal) or {"Regex": "..."}; a bare string is a literal.
Expected<std::shared_ptr<const Regex>> make_pattern(const nlohmann::json& j);

inline bool json_bool(const nlohmann::json& j, const char* key, bool def) {
  auto it = j.find(key);
  return (it != j.end() && it->is_boolean()) ? it->get<bool>() : def;
}

inline std::string json_string(const nlohmann::json& j, const char* key, const std::string& def = "") {
  auto it = j.find(key);
  return (it != j.end() && it->is_string()) ? it->get<std::string>() : def;
}

}  // namespace shardlm
