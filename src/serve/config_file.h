// `--config FILE` for `shardlm serve`: a JSON object, or YAML-ish lines
// `key: value` (also `key = value`), whose keys are flag names with or without
// the leading dashes, spelled with '-' or '_'. Values: scalars, or lists
// (JSON arrays, `[a, b]`). Comments start with '#'. Parsing only: the CLI maps
// the keys onto its flags (aliases included).
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "base/status.h"

namespace shardlm::serve {

struct ConfigEntry {
  std::string key;                  // normalised: no leading dashes, '_' → '-'
  std::vector<std::string> values;  // one per list element; booleans as "true"/"false"
  int line = 0;                     // 1-based (0 for JSON)
};

Expected<std::vector<ConfigEntry>> parse_config_text(const std::string& text);

}  // namespace shardlm::serve
