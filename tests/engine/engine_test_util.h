// Shared helpers for the engine tests: the committed HF golden models.
#pragma once

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "runtime/engine.h"

namespace shardlm::testing {

// The goldens of `name` live in tests/data/models/<name>/; the model itself is
// there too, or (for the shipped models) under models/<name>/.
inline std::string golden_dir(const std::string& name) {
  return std::string(SHARDLM_SOURCE_DIR) + "/tests/data/models/" + name;
}
inline std::string golden_model_dir(const std::string& name) {
  const std::string dir = golden_dir(name);
  if (std::filesystem::exists(dir + "/config.json")) return dir;
  return std::string(SHARDLM_SOURCE_DIR) + "/models/" + name;
}

inline nlohmann::json read_json(const std::string& path) {
  std::ifstream f(path);
  return nlohmann::json::parse(f);
}

inline std::vector<std::string> golden_models() {
  std::vector<std::string> out;
  for (auto& e : std::filesystem::directory_iterator(std::string(SHARDLM_SOURCE_DIR) + "/tests/data/models"))
    if (std::filesystem::exists(e.path() / "goldens.json")) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

inline EngineConfig quiet_config() {
  EngineConfig c;
  c.progress = false;
  c.scheduler.max_num_seqs = 64;
  return c;
}

}  // namespace shardlm::testing
