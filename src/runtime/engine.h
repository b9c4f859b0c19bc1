// The single-rank engine: a scheduler with continuous batching over a paged KV
// cache, one backend forward per step, sampling on the host. Distributed
// executors (TP loop, PP loop) drive the same pieces across ranks.
//
//   add_request → step() … step() → finished sequences
//
// Each step: schedule → build the StepInput (token ids, positions, cache slots,
// block tables, rows to sample) → forward → advance progress → sample → stop.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "graph/backend.h"
#include "model/decoder_builder.h"
#include "model/model_config.h"
#include "runtime/scheduler.h"

namespace shardlm {

struct EngineConfig {
  SchedulerConfig scheduler;
  int64_t block_size = 16;
  int64_t num_kv_blocks = 0;    // 0: enough for max_num_seqs full-length sequences, capped by kv_cache_bytes
  int64_t kv_cache_bytes = 1ll << 30;  // CPU default cap when sizing automatically
  int64_t max_model_len = 0;    // 0: the model's max_position_embeddings
  uint64_t seed = 0;            // draws per-request seeds for requests without one
  bool progress = true;         // progress bar while loading weights
  // "auto"/"safetensors": the checkpoint; "dummy": random weights from
  // config.json alone, the same in every layout (model/weight_loader.h).
  std::string load_format = "auto";
  // Where tokens are drawn for requests that need no logprobs or penalties:
  // "auto" — on the backend when it samples on its device (CUDA), else on the
  // host; "host" — always the host sampler; "backend" — always
  // Backend::forward_sample (tests of that path on the CPU backend).
  std::string sampler = "auto";
};

// What happened to one sequence in a step.
struct StepEvent {
  int64_t seq_id = 0;
  int32_t token = -1;  // the new token (-1 when none, e.g. aborted)
  bool finished = false;
  FinishReason reason = FinishReason::kNone;
};

// GPU engine options (Engine::create_cuda).
struct CudaEngineOptions {
  int device = 0;
  // Fraction of the device memory free after weights and activation buffers
  // that the KV cache takes (--kv-cache-fraction, alias --gpu-memory-utilization).
  double kv_cache_fraction = 0.9;
  bool cuda_graphs = true;  // decode steps replayed from CUDA graphs per batch bucket
  bool linear_chain = false;  // batch-1 linears as one persistent kernel per stretch (graph/cuda_backend.h)
  bool prelaunch_after_gemv = true;  // attention / add+RMSNorm launched programmatically behind a gemv
  bool prelaunch_gemv = true;        // gemvs launched programmatically behind attention / add+RMSNorm
  bool fuse_gemv_norm = false;       // batch-1 o_proj / down with their add+RMSNorm in one kernel (slower: off)
  bool gemv_smem_prologue = false;   // batch-1 gemvs' first wave bulk-copies its weights before waiting (off)
  bool gemv_smem_after_attention = true;  // the same for the gemv behind the decode attention alone (on)
  bool trigger_dependents_early = false;  // attention / add+RMSNorm let the next kernel start at their start (off)
  bool l2_prefetch = true;  // attention / add+RMSNorm pull the next linear's first weights into L2 (small batches)
};

class Engine {
 public:
  // Loads `model_dir` for one process (tp = pp = 1) on the CPU backend.
  static Expected<std::unique_ptr<Engine>> create_cpu(const std::string& model_dir, EngineConfig config);
  // Loads `model_dir` (tp = pp = 1) on CUDA device `cuda.device`: weights as bf16,
  // activation buffers reserved for max_num_batched_tokens, then (unless
  // config.num_kv_blocks is set) a bf16 KV cache of kv_cache_fraction × the
  // free device memory. kUnsupported when shardlm has no CUDA or sees no device.
  static Expected<std::unique_ptr<Engine>> create_cuda(const std::string& model_dir, EngineConfig config,
                                                       const CudaEngineOptions& cuda = {});
  // Assembles an engine from parts already built (used by distributed executors and tests).
  static Expected<std::unique_ptr<Engine>> create(ModelConfig model, BuiltModel built,
                                                  std::unique_ptr<graph::Backend> backend,
                                                  EngineConfig config);

  // Called after each new token so the owner can keep seq.output_text decoded
  // (stop strings are matched against it). Optional.
  void set_detokenizer(std::function<void(Sequence&)> fn) { detok_ = std::move(fn); }

  // Validates and queues a request; returns its id. Errors (never crashes) on
  // empty prompts, token ids outside the vocabulary, prompt + max_tokens over
  // max_model_len (the message gives both numbers), or a request that could
  // never fit the KV cache.
  Expected<int64_t> add_request(std::vector<int32_t> prompt, SamplingParams params);
  bool abort_request(int64_t id);

  Expected<std::vector<StepEvent>> step();
  bool has_unfinished() const { return scheduler_->has_unfinished(); }

  // Finished or in-flight sequence by id (nullptr if unknown). Finished
  // sequences stay until release().
  const Sequence* get(int64_t id) const;
  void release(int64_t id);

  // Log-probability of every token of `ids` given the ones before it
  // (result[i] = log p(ids[i+1] | ids[..i])), computed in chunks of at most
  // max_num_batched_tokens through the paged cache. For perplexity.
  Expected<std::vector<double>> score(const std::vector<int32_t>& ids);
  // Logits [vocab] after the last token of `ids` (for parity tests vs HF).
  Expected<std::vector<float>> last_logits(const std::vector<int32_t>& ids);

  const ModelConfig& model_config() const { return model_; }
  const graph::Program& program() const { return built_.program; }
  const KvBlockManager& blocks() const { return *blocks_; }
  int64_t max_model_len() const { return max_model_len_; }
  int64_t total_preemptions() const { return scheduler_->total_preemptions(); }
  int64_t running_count() const { return scheduler_->num_running(); }
  int64_t waiting_count() const { return scheduler_->num_waiting(); }

 private:
  Engine() = default;
  // Runs `ids` as one private sequence in chunks; `on_logits(first_pos, rows,
  // logits)` receives the logits of every position (all_rows) or only the last.
  Status run_private_prompt(const std::vector<int32_t>& ids, bool all_rows,
                            const std::function<void(int64_t, const std::vector<int32_t>&,
                                                     const std::vector<float>&)>& on_logits);

  ModelConfig model_;
  BuiltModel built_;
  EngineConfig config_;
  std::unique_ptr<graph::Backend> backend_;
  std::unique_ptr<KvBlockManager> blocks_;
  std::unique_ptr<Scheduler> scheduler_;
  std::map<int64_t, std::unique_ptr<Sequence>> seqs_;
  std::function<void(Sequence&)> detok_;
  int64_t next_id_ = 0;
  int64_t max_model_len_ = 0;
  std::mt19937_64 seed_rng_;
};

}  // namespace shardlm
