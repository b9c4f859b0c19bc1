// ServeOptions → GenerationService. tp × pp = 1 runs the engine in this
// process (make_local_service); larger layouts run the distributed job
// (cli/launcher.h), whose rank 0 hands its Coordinator to the server.
#include "cli/service_factory.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>

#include "runtime/coordinator.h"

namespace shardlm::cli {

EngineConfig serve_engine_config(const ServeOptions& opts) {
  EngineConfig cfg = opts.engine;
  cfg.progress = false;
  if (opts.kv_cache_fraction > 0) {
    // CPU: the fraction caps the KV cache at that share of the memory free now
    // (the GPU backend reads it as the share of free device memory).
    const long pages = ::sysconf(_SC_AVPHYS_PAGES), page = ::sysconf(_SC_PAGESIZE);
    if (pages > 0 && page > 0)
      cfg.kv_cache_bytes = std::max<int64_t>(1, static_cast<int64_t>(opts.kv_cache_fraction * double(pages) * double(page)));
  }
  return cfg;
}

CudaEngineOptions cuda_options(const ServeOptions& opts) {
  CudaEngineOptions c;
  if (opts.kv_cache_fraction > 0 && opts.kv_cache_fraction < 1) c.kv_cache_fraction = opts.kv_cache_fraction;
  return c;
}

Expected<std::unique_ptr<GenerationService>> make_service(const ServeOptions& opts) {
  if (opts.dist.tp * opts.dist.pp > 1)
    return make_error(ErrorCode::kInvalidArgument, "make_service is single-process; --tp {} --pp {} goes through run_with_service",
                      opts.dist.tp, opts.dist.pp);
  if (opts.device == "cuda") {
    SHARDLM_ASSIGN_OR_RETURN(auto engine, Engine::create_cuda(opts.model, serve_engine_config(opts), cuda_options(opts)));
    return make_local_service(std::move(engine));
  }
  if (opts.device != "cpu")
    return make_error(ErrorCode::kInvalidArgument, "--device must be cpu or cuda, not '{}'", opts.device);
  SHARDLM_ASSIGN_OR_RETURN(auto engine, Engine::create_cpu(opts.model, serve_engine_config(opts)));
  return make_local_service(std::move(engine));
}

int run_with_service(const ServeOptions& opts, const LaunchInfo& launch,
                     const std::function<int(GenerationService&)>& body) {
  if (launch.world > 1) {
    // After a rank dies, rank 0 keeps answering /health with 503 for a few
    // seconds (load balancers see it), then exits non-zero like every rank.
    DistArgs dist = opts.dist;
    dist.fatal_grace_s = 5;
    return run_distributed_job(launch, opts.model, dist, serve_engine_config(opts), opts.device,
                               cuda_options(opts), [&](Coordinator& c) { return body(c); });
  }
  auto svc = make_service(opts);
  if (!svc.ok()) {
    std::fprintf(stderr, "shardlm serve: error: %s\n", svc.status().with_context("loading " + opts.model).to_string().c_str());
    return 1;
  }
  return body(**svc);
}

}  // namespace shardlm::cli
