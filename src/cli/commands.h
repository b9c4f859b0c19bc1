// Each subcommand lives in its own file and registers itself on the app; the
// returned callback runs after parsing and gives the process exit code.
#pragma once

#include <functional>

#include <CLI/CLI.hpp>

namespace shardlm::cli {

using CommandRunner = std::function<int()>;

// Each adds its subcommand to `app` and sets `*run` to execute it when chosen.
void register_generate_command(CLI::App& app, CommandRunner* run);
void register_tokenize_command(CLI::App& app, CommandRunner* run);
void register_perplexity_command(CLI::App& app, CommandRunner* run);
void register_inspect_command(CLI::App& app, CommandRunner* run);
void register_serve_command(CLI::App& app, CommandRunner* run);
// `bench` is a group; its children (serve, ...) register in cli/bench_command.cpp.
void register_bench_command(CLI::App& app, CommandRunner* run);

}  // namespace shardlm::cli
