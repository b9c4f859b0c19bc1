// The `bench` parent command: a group with one child per benchmark. Add a
// child by declaring its register function in cli/bench_command.h and calling
// it below.
#include "cli/bench_command.h"

namespace shardlm::cli {

void register_bench_command(CLI::App& app, CommandRunner* run) {
  auto* bench = app.add_subcommand("bench", "Benchmarks: `shardlm bench serve` loads any OpenAI-compatible endpoint.");
  bench->require_subcommand(1);
  register_bench_serve(*bench, run);
  register_bench_decode(*bench, run);
  register_bench_gemv(*bench, run);
  { void register_bench_allreduce(CLI::App&, CommandRunner*); register_bench_allreduce(*bench, run); }  // bench_allreduce.cpp
}

}  // namespace shardlm::cli
