// What `shardlm serve` needs to start an engine, and the one place that turns
// it into a GenerationService. Today: the single-process engine (tp = pp = 1);
// the distributed coordinator (rank 0 of a tp × pp job) plugs in here too.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "base/status.h"
#include "runtime/engine.h"
#include "runtime/generation_service.h"

namespace shardlm::cli {

struct ServeOptions {
  std::string model;                            // model directory (resolved)
  std::vector<std::string> served_model_names;  // empty: derived from `model`
  int tp = 1;
  int pp = 1;
  EngineConfig engine;           // scheduler limits, block size, KV blocks, max_model_len, seed
  double kv_cache_fraction = 0;  // 0: default sizing; else the KV cache may use this fraction of free memory
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

// Builds the service `opts` asks for; errors name the flag at fault.
Expected<std::unique_ptr<GenerationService>> make_service(const ServeOptions& opts);

}  // namespace shardlm::cli
