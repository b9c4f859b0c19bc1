// The worker loop every rank runs (DESIGN §3.2): rank 0 runs it on a thread
// beside its coordinator; ranks ≥ 1 run only this and never reach serving code.
//
// One iteration, on every rank, in the same order:
//   1. receive the executed count from upstream, pass it on, and retire that
//      many micro-batches, oldest first (append their sampled tokens to this
//      rank's replica of the request state);
//   2. receive the schedule from upstream, pass it on, apply it (new requests,
//      dropped requests) and, if it carries a micro-batch, run this stage's
//      layers on it: stage 0 embeds tokens, later stages receive activations
//      from the previous stage; non-last stages hand their output to a sender
//      thread (Gloo sends wait for the peer, and the loop must not); the last
//      stage samples and starts the relay of the tokens.
// The relay (last → 0 → 1 → … → pp−2, and stage 0 → the coordinator) runs on
// a background thread with its own channel, so no stage ever waits on the last
// stage's sampling. `synchronous_relay` moves it onto the main loop instead.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "graph/backend.h"
#include "model/model_config.h"
#include "runtime/dist_context.h"
#include "runtime/dist_messages.h"

namespace shardlm {

struct WorkerOptions {
  bool synchronous_relay = false;
  double wait_timeout_s = 60;    // bound on any wait for a message or activation
  std::string trace_path;        // per-rank trace of retirements (tests compare them)
  std::string sampler = "auto";  // as EngineConfig::sampler, on the last stage
};

class PipelineWorker {
 public:
  PipelineWorker(DistContext& ctx, const ModelConfig& model, const graph::Program& program,
                 graph::Backend& backend, WorkerOptions options);
  ~PipelineWorker();

  // Runs until the coordinator says shutdown (Ok) or something fails (the
  // error names what and where; the caller reports it as fatal).
  Status run();

  // One forward of this stage as part of the agreed warmup: dummy tokens, no
  // KV writes; activations travel stage to stage synchronously.
  Status warmup_forward(int64_t num_tokens, int64_t num_kv_blocks, int64_t block_size);

 private:
  Status forward(const graph::StepInput& step, const std::vector<float>* in, std::vector<float>* out,
                 std::vector<float>* logits);
  Status execute(const ScheduleMsg& s);
  Status retire(uint64_t count, uint64_t iteration);
  Expected<RelayMsg> take_tokens(uint64_t mb_id);
  Status relay_one(double timeout_s);  // receive one relay message, store and pass it on
  Status forward_relay(const RelayMsg& m, const std::string& bytes);
  void relay_loop();
  void sender_loop();
  int upstream() const;  // who sends schedules and counts to this rank
  bool relay_source_exists() const;
  int relay_source() const;

  DistContext& ctx_;
  const ModelConfig& model_;
  const graph::Program& program_;
  graph::Backend& backend_;
  WorkerOptions opt_;
  const Mapping m_;
  int64_t forwards_ = 0;

  std::map<int64_t, Sequence> replicas_;
  std::deque<uint64_t> in_flight_;  // micro-batch ids, schedule order

  std::mutex tok_mu_;
  std::condition_variable tok_cv_;
  std::map<uint64_t, RelayMsg> tokens_;
  Status relay_error_;

  std::mutex send_mu_;
  std::condition_variable send_cv_;
  std::deque<std::vector<float>> send_queue_;
  Status send_error_;

  std::atomic<bool> stop_{false};
  std::thread relay_thread_, sender_thread_;
  std::ofstream trace_;
};

}  // namespace shardlm
