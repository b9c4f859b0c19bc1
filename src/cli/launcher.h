// How a shardlm command becomes one rank of a job (DESIGN §1): launch
// detection (torchrun, SLURM, OpenMPI, PMI, self-spawn children), or — with no
// launcher and --tp/--pp > 1 — self-spawn: this process becomes rank 0 and
// starts the other local ranks itself (same binary, same arguments), each told
// its rank and local rank through SHARDLM_* variables. Children die with their
// parent (PR_SET_PDEATHSIG), and the parent reaps them before it exits.
#pragma once

#include <functional>
#include <optional>
#include <string>

#include <CLI/CLI.hpp>

#include "runtime/dist_engine.h"

namespace shardlm::cli {

struct DistArgs {
  int tp = 1;
  int pp = 1;
  std::optional<int> local_rank;  // --local-rank (beats a stale LOCAL_RANK)
  bool synchronous = false;       // --pp-sync
  int max_in_flight = 0;
  double timeout_s = 60;
  std::string pp_transport = "auto";  // --pp-transport auto|host|nccl
  // Rank 0: seconds to stay up after the job failed (a dead rank, a fatal
  // error) before exiting non-zero, so /health can report 503 meanwhile.
  double fatal_grace_s = 0;
};

// --tp/--pp (with the vLLM / TRT-LLM / SGLang spellings), --local-rank,
// --pp-sync, --max-in-flight, --dist-timeout.
void add_dist_flags(CLI::App* sub, DistArgs* a);

// --load-format, --device, --kv-cache-fraction (+ its vLLM / SGLang spellings)
// of the commands that run a model in-process (generate, perplexity).
void add_backend_flags(CLI::App* sub, EngineConfig* engine, std::string* device, CudaEngineOptions* cuda);

// Saved by main() so self-spawn can re-run the same command line.
void set_command_line(int argc, char** argv);

// Detects the launch; with no launcher and tp × pp > 1, plans a self-spawn
// (rank 0 of tp × pp). Errors name the fix.
Expected<LaunchInfo> detect_cli_launch(const DistArgs& a);

// Runs a distributed job for one command: builds the rank's DistEngine; rank 0
// calls body(coordinator) and returns its exit code; other ranks run the
// worker loop. Self-spawn children are started, awaited and never orphaned.
// A fatal error anywhere makes every rank exit non-zero within seconds.
// `device`: "cpu" or "cuda" (one GPU per rank, see DistEngineOptions).
int run_distributed_job(const LaunchInfo& launch, const std::string& model_dir, const DistArgs& a,
                        EngineConfig engine, const std::string& device, const CudaEngineOptions& cuda,
                        const std::function<int(Coordinator&)>& body);

// Runs body(ctx) on every rank of a job that needs no coordinator (a
// benchmark whose ranks all run the same steps): opens the DistContext
// (self-spawning the local ranks when no launcher started them), watches for
// a dead rank, and on rank 0 reaps the spawned ranks. Returns the exit code
// (non-zero when any rank failed).
int run_spmd_job(const LaunchInfo& launch, const DistArgs& a, const std::function<int(DistContext&)>& body);

// One command's model service: the distributed coordinator when the launch has
// several ranks (ranks ≥ 1 only run workers), else a single-process engine on
// `device` ("cpu" or "cuda"). Runs body on it and returns its exit code;
// errors are printed with `command` as prefix.
int run_on_service(const char* command, const std::string& model_dir, const DistArgs& dist,
                   const EngineConfig& engine, const std::string& device, const CudaEngineOptions& cuda,
                   const std::function<int(GenerationService&)>& body);

}  // namespace shardlm::cli
