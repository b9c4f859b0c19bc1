// What `shardlm serve` needs to start an engine, and the one place that turns
// it into a GenerationService: the single-process engine for tp × pp = 1, the
// distributed coordinator (rank 0 of a tp × pp job, DESIGN §1) otherwise.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "base/status.h"
#include "cli/launcher.h"
#include "runtime/engine.h"
#include "runtime/generation_service.h"

namespace shardlm::cli {

struct ServeOptions {
  std::string model;                            // model directory (resolved)
  std::vector<std::string> served_model_names;  // empty: derived from `model`
  DistArgs dist;                                // --tp/--pp (+ aliases), --local-rank, ...
  EngineConfig engine;           // scheduler limits, block size, KV blocks, max_model_len, seed
  double kv_cache_fraction = 0;  // 0: default sizing; else the KV cache may use this fraction of free memory
  std::string device = "cpu";    // "cpu" or "cuda" (one GPU per rank)
  std::string chat_template;     // file overriding the tokenizer's template (empty: none)
  // HTTP
  std::string host = "0.0.0.0";
  int port = 8000;
  int max_connections = 2048;
  double request_timeout_s = 0;  // 0: none
  double queue_timeout_s = 0;    // 0: none
  double shutdown_timeout_s = 30;
  std::string log_level = "info";
  double debug_delay_load_s = 0;  // tests only: hold the "loading" state this long
};

// The engine config `opts` implies (KV fraction applied).
EngineConfig serve_engine_config(const ServeOptions& opts);

// The single-process service (tp × pp = 1); errors name the flag at fault.
Expected<std::unique_ptr<GenerationService>> make_service(const ServeOptions& opts);

// Builds the service for this rank of `launch` and runs `body` with it on the
// rank that serves (rank 0); other ranks run the worker loop and never call
// body. Returns the process exit code (non-zero when loading failed; body is
// then not called).
int run_with_service(const ServeOptions& opts, const LaunchInfo& launch,
                     const std::function<int(GenerationService&)>& body);

}  // namespace shardlm::cli
