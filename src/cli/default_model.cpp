#include "cli/default_model.h"

#include <filesystem>

#include "base/env.h"

#ifndef SHARDLM_SOURCE_DIR
#define SHARDLM_SOURCE_DIR "."
#endif

namespace shardlm::cli {

Expected<std::string> default_model_dir() {
  namespace fs = std::filesystem;
  if (auto env = env_get("SHARDLM_DEFAULT_MODEL")) return *env;
  for (const std::string& dir : {std::string(SHARDLM_SOURCE_DIR) + "/models/kjv", std::string("models/kjv")}) {
    if (fs::exists(dir + "/config.json")) return dir;
  }
  return make_error(ErrorCode::kNotFound,
                    "no --model given and the default model was not found under {}/models/kjv; "
                    "see tools/README.md to remake it, or pass --model DIR",
                    SHARDLM_SOURCE_DIR);
}

}  // namespace shardlm::cli
