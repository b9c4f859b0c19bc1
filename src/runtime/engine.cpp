#include "runtime/engine.h"

#include <algorithm>
#include <cmath>

#include "base/clock.h"
#include "base/log.h"
#include "graph/cuda_backend.h"
#include "model/safetensors.h"
#include "model/weight_loader.h"
#include "runtime/sampler.h"
#include "runtime/step_builder.h"
#include "runtime/stop_checker.h"

namespace shardlm {

Expected<std::unique_ptr<Engine>> Engine::create_cpu(const std::string& model_dir, EngineConfig config) {
  SHARDLM_ASSIGN_OR_RETURN(ModelConfig mc, load_model_config(model_dir));
  SHARDLM_ASSIGN_OR_RETURN(Mapping mapping, Mapping::make(0, 1, 1, 1));
  SHARDLM_ASSIGN_OR_RETURN(BuiltModel built, build_decoder(mc, mapping));
  auto backend = graph::make_cpu_backend();
  SHARDLM_ASSIGN_OR_RETURN(auto store, open_weights(model_dir, config.load_format));
  SHARDLM_TRY(load_model_weights(store, built, *backend, config.progress));
  return create(std::move(mc), std::move(built), std::move(backend), config);
}

Expected<std::unique_ptr<Engine>> Engine::create_cuda(const std::string& model_dir, EngineConfig config,
                                                      const CudaEngineOptions& cuda) {
  graph::CudaBackendOptions bo;
  bo.device = cuda.device;
  bo.cuda_graphs = cuda.cuda_graphs;
  bo.linear_chain = cuda.linear_chain;
  bo.prelaunch_after_gemv = cuda.prelaunch_after_gemv;
  bo.prelaunch_gemv = cuda.prelaunch_gemv;
  bo.fuse_gemv_norm = cuda.fuse_gemv_norm;
  bo.gemv_smem_prologue = cuda.gemv_smem_prologue;
  bo.gemv_smem_after_attention = cuda.gemv_smem_after_attention;
  bo.trigger_dependents_early = cuda.trigger_dependents_early;
  if (!cuda.l2_prefetch) bo.l2_prefetch_attention_bytes = bo.l2_prefetch_norm_bytes = 0;
  SHARDLM_ASSIGN_OR_RETURN(std::unique_ptr<graph::CudaBackend> backend, graph::make_cuda_backend(bo));
  SHARDLM_ASSIGN_OR_RETURN(ModelConfig mc, load_model_config(model_dir));
  SHARDLM_ASSIGN_OR_RETURN(Mapping mapping, Mapping::make(0, 1, 1, 1));
  SHARDLM_ASSIGN_OR_RETURN(BuiltModel built, build_decoder(mc, mapping));
  SHARDLM_ASSIGN_OR_RETURN(auto store, open_weights(model_dir, config.load_format));
  SHARDLM_TRY(load_model_weights(store, built, *backend, config.progress));
  int64_t max_len = config.max_model_len > 0 ? config.max_model_len : mc.max_position_embeddings;
  if (max_len <= 0) max_len = 4096;
  SHARDLM_TRY(backend->reserve(built.program, config.scheduler.max_num_batched_tokens,
                               std::max(config.scheduler.max_num_seqs, config.scheduler.max_num_batched_tokens),
                               max_len));
  if (config.num_kv_blocks <= 0) {
    if (!(cuda.kv_cache_fraction > 0.0 && cuda.kv_cache_fraction < 1.0))
      return make_error(ErrorCode::kInvalidArgument, "--kv-cache-fraction must be in (0, 1), got {}",
                        cuda.kv_cache_fraction);
    SHARDLM_ASSIGN_OR_RETURN(graph::CudaMemoryInfo mem, backend->memory_info());
    graph::KvCacheShape kv;
    kv.num_layers = built.program.num_layers_local;
    kv.num_blocks = 1;
    kv.block_size = config.block_size;
    kv.nkv_heads = built.program.attn.nkv_heads;
    kv.head_dim = built.program.attn.head_dim;
    const int64_t per_block = std::max<int64_t>(1, kv.bytes(2));  // bf16 cache
    const int64_t blocks = static_cast<int64_t>(static_cast<double>(mem.free_bytes) * cuda.kv_cache_fraction) / per_block;
    const int64_t per_seq = (max_len + config.block_size - 1) / config.block_size;
    if (blocks < per_seq)
      return make_error(ErrorCode::kOutOfMemory,
                        "KV cache: {:.2f} GiB free × fraction {} holds {} blocks of {} tokens, fewer than one "
                        "{}-token sequence needs; raise --kv-cache-fraction or lower --max-model-len",
                        mem.free_bytes / double(1ull << 30), cuda.kv_cache_fraction, blocks, config.block_size,
                        max_len);
    config.num_kv_blocks = blocks;
    SLOG_INFO("cuda: {} ({:.1f} GiB weights), KV cache {} blocks = {:.2f} GiB", backend->device_name(),
              backend->weight_bytes() / double(1ull << 30), blocks, blocks * per_block / double(1ull << 30));
  }
  return create(std::move(mc), std::move(built), std::unique_ptr<graph::Backend>(std::move(backend)), config);
}

Expected<std::unique_ptr<Engine>> Engine::create(ModelConfig model, BuiltModel built,
                                                 std::unique_ptr<graph::Backend> backend,
                                                 EngineConfig config) {
  if (config.sampler != "auto" && config.sampler != "host" && config.sampler != "backend")
    return make_error(ErrorCode::kInvalidArgument, "sampler must be auto, host or backend, not '{}'", config.sampler);
  std::unique_ptr<Engine> e(new Engine());
  e->model_ = std::move(model);
  e->built_ = std::move(built);
  e->config_ = config;
  e->backend_ = std::move(backend);
  e->max_model_len_ = config.max_model_len > 0 ? config.max_model_len : e->model_.max_position_embeddings;
  if (e->max_model_len_ <= 0) e->max_model_len_ = 4096;  // configs without max_position_embeddings
  const graph::Program& p = e->built_.program;
  if (config.block_size <= 0) return make_error(ErrorCode::kInvalidArgument, "block size must be > 0");

  graph::KvCacheShape kv;
  kv.num_layers = p.num_layers_local;
  kv.block_size = config.block_size;
  kv.nkv_heads = p.attn.nkv_heads;
  kv.head_dim = p.attn.head_dim;
  int64_t blocks = config.num_kv_blocks;
  if (blocks <= 0) {
    // Enough for every seat to hold a full-length sequence, within the byte cap.
    const int64_t per_seq = (e->max_model_len_ + config.block_size - 1) / config.block_size;
    blocks = per_seq * std::max<int64_t>(1, config.scheduler.max_num_seqs);
    kv.num_blocks = 1;
    const int64_t per_block = std::max<int64_t>(1, kv.bytes(sizeof(float)));
    blocks = std::max<int64_t>(per_seq, std::min(blocks, config.kv_cache_bytes / per_block));
  }
  kv.num_blocks = blocks;
  SHARDLM_TRY(e->backend_->allocate_kv_cache(kv));
  e->blocks_ = std::make_unique<KvBlockManager>(blocks, config.block_size);
  e->scheduler_ = std::make_unique<Scheduler>(config.scheduler, e->blocks_.get());
  e->seed_rng_.seed(config.seed);
  SLOG_INFO("engine ready: {} KV blocks of {} tokens, max model len {}", blocks, config.block_size,
            e->max_model_len_);
  return e;
}

Expected<int64_t> Engine::add_request(std::vector<int32_t> prompt, SamplingParams params) {
  if (prompt.empty()) return make_error(ErrorCode::kInvalidArgument, "the prompt is empty");
  for (int32_t id : prompt)
    if (id < 0 || id >= model_.vocab_size)
      return make_error(ErrorCode::kInvalidArgument, "prompt token id {} is outside the vocabulary [0, {})",
                        id, model_.vocab_size);
  if (params.max_tokens < 1) return make_error(ErrorCode::kInvalidArgument, "max_tokens must be ≥ 1");
  const int64_t need = static_cast<int64_t>(prompt.size()) + params.max_tokens;
  // The last sampled token is never fed back, so it takes no position: a
  // request fits when prompt + max_tokens − 1 positions do.
  if (need - 1 > max_model_len_)
    return make_error(ErrorCode::kInvalidArgument,
                      "prompt ({} tokens) + max_tokens ({}) = {} exceeds the maximum context length {}",
                      prompt.size(), params.max_tokens, need, max_model_len_);
  auto seq = std::make_unique<Sequence>();
  seq->prompt = std::move(prompt);
  seq->params = std::move(params);
  if (!scheduler_->can_ever_fit(*seq))
    return make_error(ErrorCode::kInvalidArgument,
                      "request of {} prompt tokens + {} max tokens can never fit the KV cache ({} blocks "
                      "of {} tokens) or the step budget; raise --num-kv-blocks or --max-num-batched-tokens",
                      seq->prompt.size(), seq->params.max_tokens, blocks_->num_blocks(), blocks_->block_size());
  seq->id = next_id_++;
  seq->arrival_time = now_seconds();
  seed_sequence(*seq, seed_rng_());
  Sequence* raw = seq.get();
  seqs_[raw->id] = std::move(seq);
  scheduler_->add(raw);
  return raw->id;
}

bool Engine::abort_request(int64_t id) { return scheduler_->abort(id); }

const Sequence* Engine::get(int64_t id) const {
  auto it = seqs_.find(id);
  return it == seqs_.end() ? nullptr : it->second.get();
}

void Engine::release(int64_t id) {
  auto it = seqs_.find(id);
  if (it != seqs_.end() && it->second->finished()) seqs_.erase(it);
}

Expected<std::vector<StepEvent>> Engine::step() {
  std::vector<StepEvent> events;
  SchedulerOutput out = scheduler_->schedule();
  for (Sequence* s : out.aborted) events.push_back(StepEvent{s->id, -1, true, FinishReason::kAborted});
  if (out.empty()) {
    // A step that only preempted or aborted is progress; nothing at all is a bug.
    if (scheduler_->has_unfinished() && out.preempted.empty() && out.aborted.empty())
      return make_error(ErrorCode::kInternal, "scheduler made no progress with {} waiting and {} running",
                        scheduler_->num_waiting(), scheduler_->num_running());
    return events;
  }
  graph::StepInput in;
  build_step_input(out, *blocks_, &in, nullptr);
  // Tokens drawn on the backend (only they leave the device) when every
  // sampled sequence of the step allows it; else logits to the host sampler.
  bool on_backend = config_.sampler == "backend" || (config_.sampler == "auto" && backend_->samples_on_device());
  std::vector<kernels::cpu::CounterSampling> rows;
  for (const auto& c : out.chunks)
    if (c.sample) {
      on_backend = on_backend && counter_sampling_eligible(c.seq->params);
      rows.push_back(counter_sampling(*c.seq));
    }
  std::vector<float> logits;
  std::vector<int32_t> drawn;
  Status st = on_backend ? backend_->forward_sample(built_.program, in, nullptr, rows, &drawn)
                         : backend_->forward(built_.program, in, nullptr, nullptr, &logits);
  if (!st.ok()) {
    scheduler_->cancel_step(out);  // the sequences stay schedulable
    return st;
  }
  scheduler_->on_step_done(out);

  const int64_t vocab = model_.vocab_size;
  size_t row = 0;
  for (const auto& c : out.chunks) {
    if (!c.sample) continue;
    Sequence& s = *c.seq;
    SampleResult r;
    if (on_backend) r.token = drawn[row++];
    else r = sample_token(&logits[row++ * vocab], vocab, s);
    s.output.push_back(r.token);
    if (s.params.logprobs >= 0) s.logprobs.push_back(std::move(r.logprob));
    if (detok_) detok_(s);
    StepEvent ev{s.id, r.token, false, FinishReason::kNone};
    FinishReason reason = check_stop(s, model_.eos_token_ids);
    if (reason != FinishReason::kNone) {
      scheduler_->finish(&s, reason);
      ev.finished = true;
      ev.reason = reason;
    }
    events.push_back(ev);
  }
  return events;
}

Status Engine::run_private_prompt(
    const std::vector<int32_t>& ids, bool all_rows,
    const std::function<void(int64_t, const std::vector<int32_t>&, const std::vector<float>&)>& on_logits) {
  if (ids.empty()) return make_error(ErrorCode::kInvalidArgument, "no tokens");
  if (static_cast<int64_t>(ids.size()) > max_model_len_)
    return make_error(ErrorCode::kInvalidArgument, "{} tokens exceed the maximum context length {}",
                      ids.size(), max_model_len_);
  for (int32_t id : ids)
    if (id < 0 || id >= model_.vocab_size)
      return make_error(ErrorCode::kInvalidArgument, "token id {} is outside the vocabulary [0, {})", id,
                        model_.vocab_size);
  // Safe beside queued requests: it runs between steps, on blocks of its own.
  const int64_t seq_id = -1;  // private id: never handed out by add_request
  const int64_t n = static_cast<int64_t>(ids.size());
  if (!blocks_->ensure_capacity(seq_id, n))
    return make_error(ErrorCode::kOutOfMemory, "{} tokens do not fit the KV cache ({} blocks of {})", n,
                      blocks_->num_blocks(), blocks_->block_size());
  const int64_t chunk = std::max<int64_t>(1, config_.scheduler.max_num_batched_tokens);
  Status st;
  for (int64_t start = 0; start < n && st.ok(); start += chunk) {
    const int64_t len = std::min<int64_t>(chunk, n - start);
    graph::StepInput in;
    const auto& table = blocks_->block_table(seq_id);
    in.max_blocks_per_seq = static_cast<int64_t>(table.size());
    in.block_tables = table;
    in.q_start = {0, static_cast<int32_t>(len)};
    in.ctx_len = {static_cast<int32_t>(start + len)};
    for (int64_t pos = start; pos < start + len; ++pos) {
      in.token_ids.push_back(ids[pos]);
      in.positions.push_back(static_cast<int32_t>(pos));
      in.slot_mapping.push_back(blocks_->slot(seq_id, pos));
      if (all_rows || pos == n - 1) in.logit_rows.push_back(static_cast<int32_t>(pos - start));
    }
    if (in.logit_rows.empty()) in.logit_rows.push_back(static_cast<int32_t>(len - 1));
    std::vector<float> logits;
    st = backend_->forward(built_.program, in, nullptr, nullptr, &logits);
    if (st.ok() && (all_rows || start + len == n)) on_logits(start, in.logit_rows, logits);
  }
  blocks_->free(seq_id);
  return st;
}

Expected<std::vector<double>> Engine::score(const std::vector<int32_t>& ids) {
  if (ids.size() < 2) return make_error(ErrorCode::kInvalidArgument, "scoring needs at least 2 tokens");
  const int64_t vocab = model_.vocab_size;
  std::vector<double> out;
  SHARDLM_TRY(run_private_prompt(ids, true, [&](int64_t start, const std::vector<int32_t>& rows,
                                                const std::vector<float>& logits) {
    for (size_t r = 0; r < rows.size(); ++r) {
      const int64_t pos = start + rows[r];
      if (pos + 1 >= static_cast<int64_t>(ids.size())) continue;  // the last token predicts nothing here
      const float* row = &logits[r * vocab];
      double mx = row[0];
      for (int64_t v = 1; v < vocab; ++v) mx = std::max<double>(mx, row[v]);
      double sum = 0;
      for (int64_t v = 0; v < vocab; ++v) sum += std::exp(row[v] - mx);
      out.push_back(row[ids[pos + 1]] - mx - std::log(sum));
    }
  }));
  return out;
}

Expected<std::vector<float>> Engine::last_logits(const std::vector<int32_t>& ids) {
  std::vector<float> out;
  SHARDLM_TRY(run_private_prompt(ids, false, [&](int64_t, const std::vector<int32_t>&,
                                                 const std::vector<float>& logits) { out = logits; }));
  return out;
}

}  // namespace shardlm
