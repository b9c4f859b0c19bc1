// Placeholder; replaced by the real generate command.
#include "cli/commands.h"

namespace shardlm::cli {

void register_generate_command(CLI::App& app, CommandRunner* run) {
  auto* sub = app.add_subcommand("generate", "Generate text from a prompt");
  sub->callback([run] { *run = [] { return 2; }; });
}

}  // namespace shardlm::cli
