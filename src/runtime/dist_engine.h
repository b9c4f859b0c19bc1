// One rank of a tp × pp job, assembled: the distributed context, this rank's
// stage program and weight shards on its backend, the KV cache (block count
// agreed across ranks with an allreduce(MIN)), the agreed warmup, the worker
// loop and — on rank 0 — the coordinator (DESIGN §1: rank 0 = coordinator +
// its own worker on a thread; ranks ≥ 1 = worker only).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "comm/gpu_collectives.h"
#include "runtime/coordinator.h"
#include "runtime/dist_context.h"
#include "graph/backend.h"
#include "model/safetensors.h"
#include "runtime/engine.h"
#include "runtime/pipeline_worker.h"

namespace shardlm {

struct DistEngineOptions {
  DistOptions dist;
  EngineConfig engine;
  // "cpu" (Gloo collectives) or "cuda": one GPU per rank (local rank modulo the
  // visible devices), NCCL + Lamport all-reduce inside each TP group, the KV
  // cache sized from free device memory (cuda.kv_cache_fraction; cuda.device
  // is ignored: the launch decides the device).
  std::string device = "cpu";
  CudaEngineOptions cuda;
  // How pipeline stages pass activations: "host" (f32 over the Gloo pair of
  // the two stages) or, with device "cuda", "nccl" (bf16 device to device).
  // "auto": nccl on cuda (measured faster: bench/NOTES_runs_01-12.md run 6), host on cpu.
  std::string pp_transport = "auto";
  bool synchronous = false;      // the PP relay's synchronous switch
  int max_in_flight = 0;         // micro-batches in flight (0: pp)
  std::string trace_dir;         // per-rank retirement traces (tests)
  bool warmup = true;
  // Called once, from a watchdog thread, when the job must die (a dead rank, a
  // fatal error anywhere). The CLI logs and exits non-zero.
  std::function<void(const std::string&)> on_fatal;
};

class DistEngine {
 public:
  static Expected<std::unique_ptr<DistEngine>> create(const LaunchInfo& launch, const std::string& model_dir,
                                                      DistEngineOptions options);
  ~DistEngine();

  const Mapping& mapping() const { return ctx_->mapping(); }
  bool is_coordinator() const { return ctx_->mapping().rank == 0; }
  // Rank 0: the service to submit requests to. Null elsewhere.
  Coordinator* coordinator() { return coordinator_.get(); }
  // Ranks ≥ 1: runs the worker loop until shutdown; an error is fatal (reported).
  Status run_worker();
  // Rank 0: drains, stops every rank, joins its worker. Returns the worker's status.
  Status finish(bool drain = true);

 private:
  DistEngine() = default;
  // device == "cuda": picks and checks this rank's GPU, makes the CUDA backend
  // (weights, activations reserved) and the TP group's GPU collectives; returns
  // the KV blocks that fit on this rank.
  Expected<int64_t> setup_cuda(const LaunchInfo& launch, const DistEngineOptions& o,
                               const std::optional<WeightStore>& store, int64_t max_len,
                               const graph::KvCacheShape& kv_shape);
  std::unique_ptr<DistContext> ctx_;
  ModelConfig model_;
  BuiltModel built_;
  std::unique_ptr<GpuCollectives> gpu_tp_;  // cuda, tp > 1; destroyed after backend_
  std::unique_ptr<GpuStageLink> prev_link_, next_link_;  // cuda, pp > 1, pp_transport nccl
  std::unique_ptr<graph::Backend> backend_;
  std::unique_ptr<PipelineWorker> worker_;
  std::unique_ptr<Coordinator> coordinator_;
  std::thread worker_thread_;
  Status worker_status_;
};

}  // namespace shardlm
