// shardlm: the one binary. Subcommands register themselves (commands.h); errors
// from the core arrive as Status values and become messages + exit codes here.
#include <cstdio>
#include <exception>

#include "base/log.h"
#include "cli/commands.h"
#include "cli/launcher.h"

int main(int argc, char** argv) {
  CLI::App app{
      "shardlm — serve large language models across GPUs and nodes.\n"
      "Run `shardlm <command> --help` for the flags of a command."};
  app.require_subcommand(1);
  app.set_version_flag("--version", "shardlm 0.1.0");

  shardlm::cli::set_command_line(argc, argv);
  shardlm::cli::CommandRunner run;
  shardlm::cli::register_generate_command(app, &run);
  shardlm::cli::register_tokenize_command(app, &run);
  shardlm::cli::register_perplexity_command(app, &run);
  shardlm::cli::register_inspect_command(app, &run);
  shardlm::cli::register_serve_command(app, &run);
  shardlm::cli::register_bench_command(app, &run);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    return run ? run() : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "shardlm: error: %s\n", e.what());
    return 1;
  }
}
