#include "runtime/fault_injection.h"

#include <cstdlib>
#include <sstream>
#include <string>

#include "base/env.h"
#include "base/log.h"

namespace shardlm {
namespace {

int64_t parse_or(const std::string& s, int64_t any) { return s == "*" ? any : std::atoll(s.c_str()); }

FaultInjection load() {
  FaultInjection f;
  if (auto v = env_get("SHARDLM_FAULT_LOW_MEMORY")) {
    std::stringstream ss(*v);
    std::string item;
    while (std::getline(ss, item, ',')) {
      auto colon = item.find(':');
      if (colon == std::string::npos) continue;
      f.low_memory.emplace_back(static_cast<int>(parse_or(item.substr(0, colon), -1)),
                                parse_or(item.substr(colon + 1), -1));
    }
  }
  if (auto v = env_get("SHARDLM_FAULT_FORWARD_FAIL")) {
    auto colon = v->find(':');
    if (colon != std::string::npos) {
      f.forward_fail_rank = std::atoi(v->substr(0, colon).c_str());
      f.forward_fail_index = std::atoll(v->substr(colon + 1).c_str());
    }
  }
  if (auto v = env_get("SHARDLM_FAULT_SAMPLE_DELAY_MS")) f.sample_delay_ms = std::atoi(v->c_str());
  if (!f.low_memory.empty() || f.forward_fail_rank >= 0 || f.sample_delay_ms > 0)
    SLOG_WARN("fault injection is active (SHARDLM_FAULT_* set): for tests only");
  return f;
}

}  // namespace

const FaultInjection& FaultInjection::get() {
  static const FaultInjection f = load();
  return f;
}

bool FaultInjection::low_memory_for(int rank, int64_t shape) const {
  for (auto [r, s] : low_memory)
    if ((r == -1 || r == rank) && (s == -1 || s == shape)) return true;
  return false;
}

}  // namespace shardlm
