#include "runtime/dist_engine.h"

#include <unistd.h>

#include <algorithm>
#include <fstream>

#include "base/log.h"
#include "model/safetensors.h"
#include "model/weight_loader.h"
#include "runtime/warmup.h"

namespace shardlm {

Expected<std::unique_ptr<DistEngine>> DistEngine::create(const LaunchInfo& launch, const std::string& model_dir,
                                                         DistEngineOptions o) {
  std::unique_ptr<DistEngine> e(new DistEngine());
  // Everything that can fail on bad input is checked before any collective,
  // so every rank reports it on its own instead of waiting on the others.
  SHARDLM_ASSIGN_OR_RETURN(e->model_, load_model_config(model_dir));
  SHARDLM_ASSIGN_OR_RETURN(Mapping mapping, Mapping::make(launch.rank, launch.world, o.dist.tp, o.dist.pp));
  SHARDLM_ASSIGN_OR_RETURN(e->built_, build_decoder(e->model_, mapping));
  SHARDLM_ASSIGN_OR_RETURN(WeightStore store, WeightStore::open_dir(model_dir));

  SHARDLM_ASSIGN_OR_RETURN(e->ctx_, DistContext::create(launch, o.dist));
  DistContext& ctx = *e->ctx_;
  if (o.on_fatal) ctx.start_watchdog(o.on_fatal);

  e->backend_ = graph::make_cpu_backend();
  SHARDLM_TRY(load_weights(e->built_, store, *e->backend_, o.engine.progress && launch.rank == 0));
  e->backend_->set_tp_communicator(ctx.tp_group());

  // KV blocks: each rank sizes its own cache, the job uses the smallest.
  const graph::Program& p = e->built_.program;
  graph::KvCacheShape kv;
  kv.num_layers = p.num_layers_local;
  kv.block_size = o.engine.block_size;
  kv.nkv_heads = p.attn.nkv_heads;
  kv.head_dim = p.attn.head_dim;
  const int64_t max_len = o.engine.max_model_len > 0 ? o.engine.max_model_len
                          : e->model_.max_position_embeddings > 0 ? e->model_.max_position_embeddings : 4096;
  int64_t blocks = o.engine.num_kv_blocks;
  if (blocks <= 0) {
    const int64_t per_seq = (max_len + kv.block_size - 1) / kv.block_size;
    kv.num_blocks = 1;
    const int64_t per_block = std::max<int64_t>(1, kv.bytes(sizeof(float)));
    blocks = std::max<int64_t>(per_seq, std::min(per_seq * std::max<int64_t>(1, o.engine.scheduler.max_num_seqs),
                                                 o.engine.kv_cache_bytes / per_block));
  }
  float agreed = static_cast<float>(blocks);  // exact in f32 below 2^24 blocks
  SHARDLM_TRY(ctx.world().all_reduce(&agreed, 1, DType::kF32, ReduceOp::kMin));
  kv.num_blocks = static_cast<int64_t>(agreed);
  SHARDLM_TRY(e->backend_->allocate_kv_cache(kv));

  WorkerOptions wo;
  wo.synchronous_relay = o.synchronous;
  wo.wait_timeout_s = o.dist.collective_timeout_s;
  if (!o.trace_dir.empty()) {
    wo.trace_path = o.trace_dir + "/rank" + std::to_string(launch.rank) + ".trace";
    std::ofstream(o.trace_dir + "/rank" + std::to_string(launch.rank) + ".pid") << getpid() << "\n";
  }
  e->worker_ = std::make_unique<PipelineWorker>(ctx, e->model_, e->built_.program, *e->backend_, wo);

  if (o.warmup) {
    // Activations per token, f32: a generous bound on what one forward allocates.
    const int64_t bytes_per_token =
        4 * (6 * e->model_.hidden_size + 3 * e->model_.intermediate_size / mapping.tp + e->model_.vocab_size);
    auto shapes = default_warmup_shapes(o.engine.scheduler.max_num_batched_tokens);
    auto w = run_agreed_warmup(ctx, *e->worker_, shapes, kv.num_blocks, kv.block_size, bytes_per_token);
    if (!w.ok()) {
      ctx.report_fatal(w.status().to_string());
      return w.status();
    }
  }

  if (launch.rank == 0) {
    CoordinatorOptions co;
    co.scheduler = o.engine.scheduler;
    co.block_size = kv.block_size;
    co.num_kv_blocks = kv.num_blocks;
    co.max_model_len = max_len;
    co.seed = o.engine.seed;
    co.max_in_flight = o.max_in_flight;
    co.synchronous = o.synchronous;
    co.wait_timeout_s = o.dist.collective_timeout_s;
    DistEngine* self = e.get();
    e->worker_thread_ = std::thread([self] {
      self->worker_status_ = self->worker_->run();
      if (!self->worker_status_.ok()) self->ctx_->report_fatal("worker: " + self->worker_status_.to_string());
    });
    e->coordinator_ = std::make_unique<Coordinator>(ctx, e->model_, co);
  }
  SLOG_INFO("rank {} ready ({} KV blocks of {} tokens)", launch.rank, kv.num_blocks, kv.block_size);
  return e;
}

DistEngine::~DistEngine() {
  if (coordinator_) coordinator_->shutdown(false);
  if (worker_thread_.joinable()) worker_thread_.join();
}

Status DistEngine::run_worker() {
  Status st = worker_->run();
  if (!st.ok()) {
    ctx_->report_fatal("worker: " + st.to_string());
    return st;
  }
  return ctx_->rendezvous().barrier("shutdown", 30);
}

Status DistEngine::finish(bool drain) {
  if (coordinator_) coordinator_->shutdown(drain);
  if (worker_thread_.joinable()) worker_thread_.join();
  // Every rank leaves the rendezvous before rank 0 closes it, so no worker
  // mistakes a clean shutdown for rank 0's death.
  (void)ctx_->rendezvous().barrier("shutdown", 30);
  return worker_status_;
}

}  // namespace shardlm
