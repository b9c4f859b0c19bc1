#include "runtime/dist_engine.h"

#include <unistd.h>

#include <algorithm>
#include <fstream>

#include "base/log.h"
#include "graph/cuda_backend.h"
#include "model/safetensors.h"
#include "model/weight_loader.h"
#include "runtime/gpu_assignment.h"
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
  SHARDLM_ASSIGN_OR_RETURN(std::optional<WeightStore> store, open_weights(model_dir, o.engine.load_format));
  if (o.device != "cpu" && o.device != "cuda")
    return make_error(ErrorCode::kInvalidArgument, "--device must be cpu or cuda, not '{}'", o.device);
  if (o.pp_transport != "auto" && o.pp_transport != "host" && o.pp_transport != "nccl")
    return make_error(ErrorCode::kInvalidArgument, "--pp-transport must be auto, host or nccl, not '{}'",
                      o.pp_transport);
  if (o.pp_transport == "auto") o.pp_transport = o.device == "cuda" ? "nccl" : "host";
  if (o.pp_transport == "nccl" && o.device != "cuda")
    return make_error(ErrorCode::kInvalidArgument, "--pp-transport nccl needs --device cuda");
  if (o.engine.sampler != "auto" && o.engine.sampler != "host" && o.engine.sampler != "backend")
    return make_error(ErrorCode::kInvalidArgument, "sampler must be auto, host or backend, not '{}'",
                      o.engine.sampler);

  SHARDLM_ASSIGN_OR_RETURN(e->ctx_, DistContext::create(launch, o.dist));
  DistContext& ctx = *e->ctx_;
  if (o.on_fatal) ctx.start_watchdog(o.on_fatal);

  const graph::Program& p = e->built_.program;
  const int64_t max_len = o.engine.max_model_len > 0 ? o.engine.max_model_len
                          : e->model_.max_position_embeddings > 0 ? e->model_.max_position_embeddings : 4096;
  graph::KvCacheShape kv;
  kv.num_layers = p.num_layers_local;
  kv.block_size = o.engine.block_size;
  kv.nkv_heads = p.attn.nkv_heads;
  kv.head_dim = p.attn.head_dim;
  int64_t blocks = o.engine.num_kv_blocks;
  if (o.device == "cuda") {
    auto cuda_blocks = e->setup_cuda(launch, o, store, max_len, kv);
    if (!cuda_blocks.ok()) {
      ctx.report_fatal(cuda_blocks.status().to_string());
      return cuda_blocks.status();
    }
    if (blocks <= 0) blocks = *cuda_blocks;
  } else {
    e->backend_ = graph::make_cpu_backend();
    SHARDLM_TRY(load_model_weights(store, e->built_, *e->backend_, o.engine.progress && launch.rank == 0));
    e->backend_->set_tp_communicator(ctx.tp_group());
  }

  // KV blocks: each rank sizes its own cache, the job uses the smallest.
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
  wo.sampler = o.engine.sampler;
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

Expected<int64_t> DistEngine::setup_cuda(const LaunchInfo& launch, const DistEngineOptions& o,
                                         const std::optional<WeightStore>& store, int64_t max_len,
                                         const graph::KvCacheShape& kv_shape) {
  DistContext& ctx = *ctx_;
  const Mapping& m = ctx.mapping();
  // One GPU per rank, checked across the job (runtime/gpu_assignment.h).
  SHARDLM_ASSIGN_OR_RETURN(const int device, assign_gpu(ctx, o.dist.connect_timeout_s));
  Rendezvous& rv = ctx.rendezvous();

  graph::CudaBackendOptions bo;
  bo.device = device;
  bo.cuda_graphs = o.cuda.cuda_graphs;
  SHARDLM_ASSIGN_OR_RETURN(std::unique_ptr<graph::CudaBackend> backend, graph::make_cuda_backend(bo));
  graph::CudaBackend& cb = *backend;
  SHARDLM_TRY(load_model_weights(store, built_, cb, o.engine.progress && launch.rank == 0));
  if (m.tp > 1) {  // before reserve(): the backend checks the program against its group
    std::vector<int> ranks;
    for (int i = 0; i < m.tp; ++i) ranks.push_back(m.rank_of(i, m.pp_rank()));
    CommGroup g{&rv, "gpu_tp" + std::to_string(m.pp_rank()), ranks, m.tp_rank()};
    GpuCollectivesOptions go;
    go.nccl_timeout_s = o.dist.collective_timeout_s;
    SHARDLM_ASSIGN_OR_RETURN(gpu_tp_, make_gpu_collectives(g, device, DType::kBF16, go));
    cb.set_gpu_collectives(gpu_tp_.get());
  }
  if (m.pp > 1 && o.pp_transport == "nccl") {
    // One two-rank NCCL communicator per neighbouring pair of stages at this
    // tp position, made in stage order ((p−1, p) before (p, p+1)) so the
    // chain of collective set-ups never waits in a cycle.
    auto pair = [&](int p, int index) {
      return CommGroup{&rv, "gpu_pp" + std::to_string(m.tp_rank()) + "_" + std::to_string(p),
                       {m.rank_of(m.tp_rank(), p), m.rank_of(m.tp_rank(), p + 1)}, index};
    };
    if (!m.is_first_stage()) {
      SHARDLM_ASSIGN_OR_RETURN(prev_link_, make_gpu_stage_link(pair(m.pp_rank() - 1, 1), device,
                                                               o.dist.collective_timeout_s));
    }
    if (!m.is_last_stage()) {
      SHARDLM_ASSIGN_OR_RETURN(next_link_, make_gpu_stage_link(pair(m.pp_rank(), 0), device,
                                                               o.dist.collective_timeout_s));
    }
    cb.set_stage_links(prev_link_.get(), next_link_.get());
  }
  SHARDLM_TRY(cb.reserve(built_.program, o.engine.scheduler.max_num_batched_tokens,
                         std::max(o.engine.scheduler.max_num_seqs, o.engine.scheduler.max_num_batched_tokens),
                         max_len));
  backend_ = std::move(backend);

  // The KV cache takes its fraction of what is free after weights, activations
  // and the collectives' buffers (the job then uses the smallest count of any rank).
  if (!(o.cuda.kv_cache_fraction > 0.0 && o.cuda.kv_cache_fraction < 1.0))
    return make_error(ErrorCode::kInvalidArgument, "--kv-cache-fraction must be in (0, 1), got {}",
                      o.cuda.kv_cache_fraction);
  SHARDLM_ASSIGN_OR_RETURN(graph::CudaMemoryInfo mem, cb.memory_info());
  graph::KvCacheShape one = kv_shape;
  one.num_blocks = 1;
  const int64_t per_block = std::max<int64_t>(1, one.bytes(2));  // bf16 cache
  const int64_t blocks = static_cast<int64_t>(static_cast<double>(mem.free_bytes) * o.cuda.kv_cache_fraction) / per_block;
  const int64_t per_seq = (max_len + kv_shape.block_size - 1) / kv_shape.block_size;
  if (blocks < per_seq)
    return make_error(ErrorCode::kOutOfMemory,
                      "rank {}: KV cache: {:.2f} GiB free × fraction {} holds {} blocks of {} tokens, fewer than one "
                      "{}-token sequence needs; raise --kv-cache-fraction, lower --max-model-len or use more GPUs",
                      m.rank, mem.free_bytes / double(1ull << 30), o.cuda.kv_cache_fraction, blocks,
                      kv_shape.block_size, max_len);
  SLOG_INFO("rank {}: cuda:{} {} ({:.2f} GiB weights), room for {} KV blocks", m.rank, device, cb.device_name(),
            cb.weight_bytes() / double(1ull << 30), blocks);
  return blocks;
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
