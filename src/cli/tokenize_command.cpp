// Placeholder until the tokenizer layer lands (issue 3 replaces this file).
#include "cli/commands.h"

namespace shardlm::cli {

void register_tokenize_command(CLI::App& app, CommandRunner* run) {
  auto* sub = app.add_subcommand("tokenize", "Encode text / decode ids with a HF tokenizer.json");
  sub->callback([run] { *run = [] { std::fprintf(stderr, "tokenize: not built yet\n"); return 2; }; });
}

}  // namespace shardlm::cli
