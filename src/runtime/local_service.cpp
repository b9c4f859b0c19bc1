// GenerationService over one in-process Engine. One thread steps the engine;
// submit/abort/stats/health take the same mutex, so they wait at most one step
// (the engine is single-threaded by design): a caller announces itself
// (waiters_) and the loop, between steps, gives the mutex up until every
// announced caller has had it — std::mutex alone is not fair, and the loop
// would otherwise re-lock it at once and hold it until the engine is idle. Text for stop strings is produced by each
// request's detokenize callback; while a request runs, the last
// (longest stop string − 1) bytes are withheld so a stop string is never shown.
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <map>
#include <mutex>
#include <thread>

#include "base/log.h"
#include "runtime/engine.h"
#include "runtime/generation_service.h"

namespace shardlm {
namespace {

// A caller's turn at the mutex (see the top of the file).
class Turn {
 public:
  Turn(std::mutex& mu, std::atomic<int>& waiters, std::condition_variable& turn_cv)
      : waiters_(waiters), turn_cv_(turn_cv) {
    waiters_.fetch_add(1);
    lk_ = std::unique_lock<std::mutex>(mu);
    waiters_.fetch_sub(1);
  }
  ~Turn() {
    if (lk_.owns_lock()) lk_.unlock();
    turn_cv_.notify_all();
  }
  std::unique_lock<std::mutex>& lock() { return lk_; }

 private:
  std::atomic<int>& waiters_;
  std::condition_variable& turn_cv_;
  std::unique_lock<std::mutex> lk_;
};

struct LiveRequest {
  GenerationRequest req;
  UpdateCursor cursor;
  std::vector<double> prompt_logprobs;
};

class LocalService final : public GenerationService {
 public:
  explicit LocalService(std::unique_ptr<Engine> engine) : engine_(std::move(engine)) {
    engine_->set_detokenizer([this](Sequence& s) {
      auto it = live_.find(s.id);
      if (it != live_.end() && it->second.req.detokenize) s.output_text += it->second.req.detokenize(s.output.back());
    });
    thread_ = std::thread([this] { loop(); });
  }
  ~LocalService() override { shutdown(false); }

  Expected<int64_t> submit(GenerationRequest request) override {
    Turn turn(mu_, waiters_, turn_cv_);
    if (stopping_) return make_error(ErrorCode::kAborted, "the engine is shutting down");
    std::vector<double> plp;
    if (request.want_prompt_logprobs && request.prompt.size() >= 2) {
      SHARDLM_ASSIGN_OR_RETURN(plp, engine_->score(request.prompt));
    }
    SHARDLM_ASSIGN_OR_RETURN(int64_t id, engine_->add_request(request.prompt, request.params));
    LiveRequest live;
    live.cursor = make_update_cursor(request.params);
    live.req = std::move(request);
    live.prompt_logprobs = std::move(plp);
    live_[id] = std::move(live);
    cv_.notify_all();
    return id;
  }

  void abort(int64_t id) override {
    Turn turn(mu_, waiters_, turn_cv_);
    if (engine_->abort_request(id)) finish_aborted(id);
  }

  ServiceStats stats() const override {
    Turn turn(mu_, waiters_, turn_cv_);
    ServiceStats s;
    s.running = running_;
    s.waiting = waiting_;
    s.kv_blocks_total = engine_->blocks().num_blocks();
    s.kv_blocks_free = engine_->blocks().num_free_blocks();
    s.kv_usage = engine_->blocks().usage();
    s.preemptions = engine_->total_preemptions();
    s.max_model_len = engine_->max_model_len();
    s.vocab_size = engine_->model_config().vocab_size;
    return s;
  }

  Status health() const override {
    Turn turn(mu_, waiters_, turn_cv_);
    return failure_;
  }

  void shutdown(bool drain) override {
    {
      Turn turn(mu_, waiters_, turn_cv_);
      auto& lk = turn.lock();
      if (!thread_.joinable()) return;
      if (drain) {
        drained_cv_.wait(lk, [this] { return live_.empty() || !failure_.ok(); });
      } else {
        std::vector<int64_t> ids;
        for (auto& [id, _] : live_) ids.push_back(id);
        for (int64_t id : ids)
          if (engine_->abort_request(id)) finish_aborted(id);
      }
      stopping_ = true;
      cv_.notify_all();
    }
    thread_.join();
  }

 private:
  // Caller holds mu_.
  void finish_aborted(int64_t id) {
    auto it = live_.find(id);
    if (it == live_.end()) return;
    GenerationUpdate u;
    u.id = id;
    u.finished = true;
    u.reason = FinishReason::kAborted;
    u.prompt_tokens = static_cast<int64_t>(it->second.req.prompt.size());
    if (const Sequence* s = engine_->get(id)) u.completion_tokens = static_cast<int64_t>(s->output.size());
    auto cb = it->second.req.on_update;
    live_.erase(it);
    engine_->release(id);
    if (cb) cb(u);
    if (live_.empty()) drained_cv_.notify_all();
  }

  void emit(const StepEvent& ev) {
    auto it = live_.find(ev.seq_id);
    if (it == live_.end()) return;
    LiveRequest& live = it->second;
    const Sequence* s = engine_->get(ev.seq_id);
    GenerationUpdate u;
    if (s) {
      u = next_update(*s, live.cursor, ev.finished);
    } else {
      u.id = ev.seq_id;
      u.prompt_tokens = static_cast<int64_t>(live.req.prompt.size());
    }
    u.finished = ev.finished;
    u.reason = ev.reason;
    auto cb = live.req.on_update;
    if (ev.finished) {
      u.prompt_logprobs = std::move(live.prompt_logprobs);
      live_.erase(it);
      engine_->release(ev.seq_id);
    }
    if (cb) cb(u);
    if (live_.empty()) drained_cv_.notify_all();
  }

  void loop() {
    std::unique_lock<std::mutex> lk(mu_);
    while (!stopping_) {
      if (!engine_->has_unfinished()) {
        running_ = waiting_ = 0;
        cv_.wait(lk, [this] { return stopping_ || engine_->has_unfinished(); });
        continue;
      }
      auto events = engine_->step();
      if (!events.ok()) {
        failure_ = events.status();
        SLOG_ERROR("engine step failed: {}", failure_.to_string());
        std::vector<int64_t> ids;
        for (auto& [id, _] : live_) ids.push_back(id);
        for (int64_t id : ids) {
          GenerationUpdate u;
          u.id = id;
          u.finished = true;
          u.reason = FinishReason::kAborted;
          u.error = failure_;
          auto cb = live_[id].req.on_update;
          engine_->abort_request(id);
          live_.erase(id);
          if (cb) cb(u);
        }
        drained_cv_.notify_all();
        cv_.wait(lk, [this] { return stopping_; });
        break;
      }
      for (const auto& ev : *events) emit(ev);
      running_ = engine_->running_count();
      waiting_ = engine_->waiting_count();
      // Let announced callers (submit/abort/stats/health) in before the next step.
      turn_cv_.wait(lk, [this] { return waiters_.load() == 0; });
    }
  }

  std::unique_ptr<Engine> engine_;
  mutable std::mutex mu_;
  mutable std::atomic<int> waiters_{0};
  mutable std::condition_variable turn_cv_;
  std::condition_variable cv_, drained_cv_;
  std::map<int64_t, LiveRequest> live_;
  std::thread thread_;
  bool stopping_ = false;
  Status failure_;
  int64_t running_ = 0, waiting_ = 0;
};

}  // namespace

std::unique_ptr<GenerationService> make_local_service(std::unique_ptr<Engine> engine) {
  return std::make_unique<LocalService>(std::move(engine));
}

}  // namespace shardlm
