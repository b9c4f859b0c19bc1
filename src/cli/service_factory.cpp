// make_service: ServeOptions → GenerationService. tp × pp = 1 runs the engine
// in this process (make_local_service). Larger layouts need the distributed
// coordinator, which is wired here once it exists.
#include "cli/service_factory.h"

#include <unistd.h>

#include <algorithm>

namespace shardlm::cli {

Expected<std::unique_ptr<GenerationService>> make_service(const ServeOptions& opts) {
  if (opts.tp < 1 || opts.pp < 1)
    return make_error(ErrorCode::kInvalidArgument, "--tp and --pp must be at least 1 (got tp={}, pp={})", opts.tp, opts.pp);
  if (opts.tp * opts.pp > 1)
    return make_error(ErrorCode::kUnsupported,
                      "--tp {} --pp {}: tensor/pipeline parallel serving is not yet supported by serve in this build "
                      "(run with --tp 1 --pp 1)",
                      opts.tp, opts.pp);
  EngineConfig cfg = opts.engine;
  cfg.progress = false;
  if (opts.kv_cache_fraction > 0) {
    // CPU: the fraction caps the KV cache at that share of the memory free now
    // (the GPU backend will read it as the share of free device memory).
    const long pages = ::sysconf(_SC_AVPHYS_PAGES), page = ::sysconf(_SC_PAGESIZE);
    if (pages > 0 && page > 0)
      cfg.kv_cache_bytes = std::max<int64_t>(1, static_cast<int64_t>(opts.kv_cache_fraction * double(pages) * double(page)));
  }
  SHARDLM_ASSIGN_OR_RETURN(auto engine, Engine::create_cpu(opts.model, cfg));
  return make_local_service(std::move(engine));
}

}  // namespace shardlm::cli
