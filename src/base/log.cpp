#include "base/log.h"

#include <spdlog/sinks/stdout_color_sinks.h>

namespace shardlm {

void init_logging(int rank, const std::string& level) {
  const std::string name = "shardlm_r" + std::to_string(rank);
  spdlog::drop(name);  // callable again once the rank is known
  auto logger = spdlog::stderr_color_mt(name);
  logger->set_pattern(fmt::format("[%H:%M:%S.%e] [rank {}] [%^%l%$] %v", rank));
  logger->set_level(spdlog::level::from_str(level));
  spdlog::set_default_logger(logger);
}

}  // namespace shardlm
