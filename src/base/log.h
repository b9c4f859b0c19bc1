// Logging: spdlog with the rank in every line, so interleaved multi-rank output
// stays readable. Logs go to stderr; stdout is reserved for command output.
#pragma once

#include <spdlog/spdlog.h>

namespace shardlm {

// Sets the "[rank N]" prefix and level ("debug", "info", "warn", "error", "off").
void init_logging(int rank, const std::string& level);

}  // namespace shardlm

#define SLOG_DEBUG(...) ::spdlog::debug(__VA_ARGS__)
#define SLOG_INFO(...) ::spdlog::info(__VA_ARGS__)
#define SLOG_WARN(...) ::spdlog::warn(__VA_ARGS__)
#define SLOG_ERROR(...) ::spdlog::error(__VA_ARGS__)
