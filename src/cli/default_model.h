// Where the embedded default model lives: $SHARDLM_DEFAULT_MODEL, else
// models/kjv (the trained demo model) under the source tree this binary was built from, else
// ./models/kjv.
#pragma once

#include <string>

#include "base/status.h"

namespace shardlm::cli {

Expected<std::string> default_model_dir();

}  // namespace shardlm::cli
