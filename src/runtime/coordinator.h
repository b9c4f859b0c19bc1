// Rank 0's coordinator (DESIGN §1, §3.2): owns the authoritative request state,
// the scheduler and the KV block manager; sends each iteration's executed count
// and schedule to the stage-0 ranks, and retires micro-batches as their sampled
// tokens come back — without waiting for one micro-batch before scheduling the
// next (up to max_in_flight of them, at least pp by default). It is a
// GenerationService, so the CLI and the HTTP server drive it exactly like the
// single-process engine.
#pragma once

#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <thread>

#include "model/model_config.h"
#include "runtime/dist_context.h"
#include "runtime/dist_messages.h"
#include "runtime/engine.h"
#include "runtime/generation_service.h"

namespace shardlm {

struct CoordinatorOptions {
  SchedulerConfig scheduler;
  int64_t block_size = 16;
  int64_t num_kv_blocks = 0;   // agreed across ranks before construction
  int64_t max_model_len = 0;
  uint64_t seed = 0;
  int max_in_flight = 0;       // 0: pp micro-batches
  bool synchronous = false;    // one micro-batch at a time (the relay's sync switch)
  double wait_timeout_s = 60;
};

// Counters for tests and logs.
struct CoordinatorCounters {
  int64_t iterations = 0;
  int64_t micro_batches = 0;
  int64_t max_in_flight_seen = 0;
  int64_t retired = 0;
};

class Coordinator final : public GenerationService {
 public:
  Coordinator(DistContext& ctx, const ModelConfig& model, CoordinatorOptions options);
  ~Coordinator() override;

  Expected<int64_t> submit(GenerationRequest request) override;
  void abort(int64_t id) override;
  ServiceStats stats() const override;
  Status health() const override;
  void shutdown(bool drain) override;
  CoordinatorCounters counters() const;

 private:
  struct Live {
    std::unique_ptr<Sequence> seq;
    GenerationRequest req;
    UpdateCursor cursor;
    std::map<int64_t, double> prompt_logprobs;  // position → log p
  };
  struct InFlight {
    uint64_t mb = 0;
    SchedulerOutput out;
  };

  void loop();
  Status iterate(std::unique_lock<std::mutex>& lk);
  Status send_iteration(uint64_t retire, ScheduleMsg& s);
  void retire_one(const InFlight& f, const RelayMsg& msg);
  void emit(Live& live, bool finished, FinishReason reason, const Status& error = Status());
  void finish_request(int64_t id, FinishReason reason, const Status& error = Status());
  void fail_all(const Status& st);

  DistContext& ctx_;
  const ModelConfig& model_;
  CoordinatorOptions opt_;
  std::unique_ptr<KvBlockManager> blocks_;
  std::unique_ptr<Scheduler> scheduler_;

  mutable std::mutex mu_;
  std::condition_variable cv_, drained_cv_;
  std::map<int64_t, Live> live_;
  std::vector<NewRequest> new_requests_;  // for the next schedule message
  std::vector<int64_t> finished_ids_;     // likewise
  std::deque<InFlight> in_flight_;
  std::map<uint64_t, RelayMsg> arrived_;
  uint64_t next_mb_ = 0, iteration_ = 0;
  int64_t next_id_ = 0;
  std::mt19937_64 seed_rng_;
  CoordinatorCounters counters_;
  bool draining_ = false, stopping_ = false, stopped_ = false;
  Status failure_;
  std::thread thread_;
};

}  // namespace shardlm
