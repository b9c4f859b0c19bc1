// `shardlm bench <what>`: the benchmark group. Each child registers itself
// here (serve now; decode, allreduce, ... later) and sets *run when chosen.
#pragma once

#include "cli/commands.h"

namespace shardlm::cli {

void register_bench_serve(CLI::App& bench, CommandRunner* run);
// src/cli/bench_decode.cpp: CUDA decode/prefill speed vs the measured roofline.
void register_bench_decode(CLI::App& bench, CommandRunner* run);
// src/cli/bench_gemv.cpp: the decode-time linears per gemv kernel vs copy bandwidth.
void register_bench_gemv(CLI::App& bench, CommandRunner* run);

}  // namespace shardlm::cli
