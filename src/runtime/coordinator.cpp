#include "runtime/coordinator.h"

#include <algorithm>

#include "base/clock.h"
#include "base/log.h"
#include "runtime/sampler.h"
#include "runtime/step_builder.h"
#include "runtime/stop_checker.h"

namespace shardlm {

Coordinator::Coordinator(DistContext& ctx, const ModelConfig& model, CoordinatorOptions options)
    : ctx_(ctx), model_(model), opt_(std::move(options)) {
  if (opt_.max_in_flight <= 0) opt_.max_in_flight = std::max(1, ctx_.mapping().pp);
  if (opt_.synchronous) opt_.max_in_flight = 1;
  if (opt_.max_model_len <= 0) opt_.max_model_len = model_.max_position_embeddings > 0 ? model_.max_position_embeddings : 4096;
  blocks_ = std::make_unique<KvBlockManager>(opt_.num_kv_blocks, opt_.block_size);
  scheduler_ = std::make_unique<Scheduler>(opt_.scheduler, blocks_.get());
  seed_rng_.seed(opt_.seed);
  thread_ = std::thread([this] { loop(); });
}

Coordinator::~Coordinator() { shutdown(false); }

Expected<int64_t> Coordinator::submit(GenerationRequest request) {
  std::unique_lock<std::mutex> lk(mu_);
  if (draining_ || stopping_) return make_error(ErrorCode::kAborted, "the engine is shutting down");
  if (!failure_.ok()) return failure_;
  const auto& prompt = request.prompt;
  if (prompt.empty()) return make_error(ErrorCode::kInvalidArgument, "the prompt is empty");
  for (int32_t id : prompt)
    if (id < 0 || id >= model_.vocab_size)
      return make_error(ErrorCode::kInvalidArgument, "prompt token id {} is outside the vocabulary [0, {})", id,
                        model_.vocab_size);
  if (request.params.max_tokens < 1) return make_error(ErrorCode::kInvalidArgument, "max_tokens must be ≥ 1");
  const int64_t need = static_cast<int64_t>(prompt.size()) + request.params.max_tokens;
  if (need - 1 > opt_.max_model_len)  // the last sampled token takes no position
    return make_error(ErrorCode::kInvalidArgument,
                      "prompt ({} tokens) + max_tokens ({}) = {} exceeds the maximum context length {}",
                      prompt.size(), request.params.max_tokens, need, opt_.max_model_len);
  auto seq = std::make_unique<Sequence>();
  seq->prompt = prompt;
  seq->params = request.params;
  if (!seq->params.has_seed) {  // every rank must sample with the same seed
    seq->params.seed = seed_rng_();
    seq->params.has_seed = true;
  }
  if (!scheduler_->can_ever_fit(*seq))
    return make_error(ErrorCode::kInvalidArgument,
                      "request of {} prompt tokens + {} max tokens can never fit the KV cache ({} blocks of {})",
                      prompt.size(), request.params.max_tokens, blocks_->num_blocks(), blocks_->block_size());
  seq->id = next_id_++;
  seq->arrival_time = now_seconds();
  seed_sequence(*seq, seq->params.seed);
  const int64_t id = seq->id;
  Live live;
  live.cursor = make_update_cursor(request.params);
  new_requests_.push_back(NewRequest{id, seq->prompt, seq->params});
  scheduler_->add(seq.get());
  live.seq = std::move(seq);
  live.req = std::move(request);
  live_.emplace(id, std::move(live));
  cv_.notify_all();
  return id;
}

void Coordinator::abort(int64_t id) {
  std::unique_lock<std::mutex> lk(mu_);
  auto it = live_.find(id);
  if (it == live_.end()) return;
  scheduler_->abort(id);
  finished_ids_.push_back(id);
  finish_request(id, FinishReason::kAborted);
  cv_.notify_all();
}

ServiceStats Coordinator::stats() const {
  std::unique_lock<std::mutex> lk(mu_);
  ServiceStats s;
  s.running = scheduler_->num_running();
  s.waiting = scheduler_->num_waiting();
  s.kv_blocks_total = blocks_->num_blocks();
  s.kv_blocks_free = blocks_->num_free_blocks();
  s.kv_usage = blocks_->usage();
  s.preemptions = scheduler_->total_preemptions();
  s.max_model_len = opt_.max_model_len;
  s.vocab_size = model_.vocab_size;
  return s;
}

Status Coordinator::health() const {
  {
    std::unique_lock<std::mutex> lk(mu_);
    if (!failure_.ok()) return failure_;
  }
  return ctx_.rendezvous().health();
}

CoordinatorCounters Coordinator::counters() const {
  std::unique_lock<std::mutex> lk(mu_);
  return counters_;
}

void Coordinator::shutdown(bool drain) {
  {
    std::unique_lock<std::mutex> lk(mu_);
    if (stopped_) return;
    draining_ = true;
    if (drain) {
      drained_cv_.wait(lk, [this] { return live_.empty() || !failure_.ok(); });
    } else {
      std::vector<int64_t> ids;
      for (auto& [id, _] : live_) ids.push_back(id);
      for (int64_t id : ids) {
        scheduler_->abort(id);
        finished_ids_.push_back(id);
        finish_request(id, FinishReason::kAborted);
      }
    }
    stopping_ = true;
    cv_.notify_all();
  }
  thread_.join();
  std::unique_lock<std::mutex> lk(mu_);
  stopped_ = true;
}

// ---- engine thread ----

void Coordinator::emit(Live& live, bool finished, FinishReason reason, const Status& error) {
  GenerationUpdate u = next_update(*live.seq, live.cursor, finished);
  u.reason = reason;
  u.error = error;
  if (finished)
    for (auto& [pos, lp] : live.prompt_logprobs) u.prompt_logprobs.push_back(lp);
  if (live.req.on_update) live.req.on_update(u);
}

void Coordinator::finish_request(int64_t id, FinishReason reason, const Status& error) {
  auto it = live_.find(id);
  if (it == live_.end()) return;
  emit(it->second, true, reason, error);
  live_.erase(it);
  if (live_.empty()) drained_cv_.notify_all();
}

void Coordinator::retire_one(const InFlight& f, const RelayMsg& msg) {
  scheduler_->on_step_done(f.out);
  for (const auto& p : msg.prompt_logprobs) {
    auto it = live_.find(p.seq_id);
    if (it != live_.end()) it->second.prompt_logprobs[p.position] = p.logprob;
  }
  for (const auto& t : msg.tokens) {
    auto it = live_.find(t.seq_id);
    if (it == live_.end()) continue;  // aborted while in flight
    Live& live = it->second;
    Sequence& s = *live.seq;
    if (s.finished()) continue;
    s.output.push_back(t.token.token);
    if (s.params.logprobs >= 0) s.logprobs.push_back(t.token);
    if (live.req.detokenize) s.output_text += live.req.detokenize(t.token.token);
    FinishReason reason = check_stop(s, model_.eos_token_ids);
    if (reason != FinishReason::kNone) {
      scheduler_->finish(&s, reason);
      finished_ids_.push_back(s.id);
      finish_request(s.id, reason);
    } else {
      emit(live, false, FinishReason::kNone);
    }
  }
  ++counters_.retired;
}

Status Coordinator::send_iteration(uint64_t retire, ScheduleMsg& s) {
  const Mapping& m = ctx_.mapping();
  s.iteration = iteration_;
  s.new_requests = std::move(new_requests_);
  new_requests_.clear();
  s.finished = std::move(finished_ids_);
  finished_ids_.clear();
  const std::string count = encode(CountMsg{iteration_, retire});
  const std::string sched = encode(s);
  // Count first, then the schedule, to every rank of stage 0 (rank 0's own
  // worker included); each stage passes both on to the next.
  for (int t = 0; t < m.tp; ++t) SHARDLM_TRY(ctx_.count().send(m.rank_of(t, 0), count, opt_.wait_timeout_s));
  for (int t = 0; t < m.tp; ++t) SHARDLM_TRY(ctx_.sched().send(m.rank_of(t, 0), sched, opt_.wait_timeout_s));
  ++iteration_;
  ++counters_.iterations;
  return Status::Ok();
}

Status Coordinator::iterate(std::unique_lock<std::mutex>& lk) {
  // Responses that arrived since the last iteration.
  for (;;) {
    auto r = ctx_.resp().recv(0.0);
    if (!r.ok()) {
      if (r.status().code() == ErrorCode::kTimeout) break;
      return r.status().with_context("response channel");
    }
    SHARDLM_ASSIGN_OR_RETURN(RelayMsg msg, decode_relay(r->body));
    arrived_[msg.mb_id] = std::move(msg);
  }
  // Retire in micro-batch order, as every rank will.
  uint64_t retire = 0;
  while (!in_flight_.empty() && arrived_.count(in_flight_.front().mb)) {
    InFlight f = std::move(in_flight_.front());
    in_flight_.pop_front();
    retire_one(f, arrived_[f.mb]);
    arrived_.erase(f.mb);
    ++retire;
  }
  ScheduleMsg s;
  if (static_cast<int>(in_flight_.size()) < opt_.max_in_flight && !stopping_) {
    SchedulerOutput out = scheduler_->schedule();
    for (Sequence* a : out.aborted) {
      finished_ids_.push_back(a->id);
      finish_request(a->id, FinishReason::kAborted,
                     make_error(ErrorCode::kOutOfMemory, "the request cannot fit the KV cache"));
    }
    if (!out.empty()) {
      s.has_batch = true;
      s.mb_id = next_mb_++;
      build_step_input(out, *blocks_, &s.step, &s.rows, [this](const Sequence& q) {
        auto it = live_.find(q.id);
        return it != live_.end() && it->second.req.want_prompt_logprobs;
      });
      in_flight_.push_back(InFlight{s.mb_id, std::move(out)});
      ++counters_.micro_batches;
      counters_.max_in_flight_seen = std::max<int64_t>(counters_.max_in_flight_seen, in_flight_.size());
    }
  }
  if (retire > 0 || s.has_batch || !new_requests_.empty() || !finished_ids_.empty())
    return send_iteration(retire, s);
  // Nothing to do now: wait for a response (work in flight) or a submission.
  if (!in_flight_.empty()) {
    lk.unlock();
    auto r = ctx_.resp().recv(0.005);
    lk.lock();
    if (r.ok()) {
      SHARDLM_ASSIGN_OR_RETURN(RelayMsg msg, decode_relay(r->body));
      arrived_[msg.mb_id] = std::move(msg);
    } else if (r.status().code() != ErrorCode::kTimeout) {
      return r.status().with_context("response channel");
    }
  } else {
    cv_.wait_for(lk, std::chrono::milliseconds(50));
  }
  return Status::Ok();
}

void Coordinator::fail_all(const Status& st) {
  failure_ = st;
  SLOG_ERROR("coordinator: {}", st.to_string());
  std::vector<int64_t> ids;
  for (auto& [id, _] : live_) ids.push_back(id);
  for (int64_t id : ids) finish_request(id, FinishReason::kAborted, st);
  drained_cv_.notify_all();
}

void Coordinator::loop() {
  std::unique_lock<std::mutex> lk(mu_);
  while (!(stopping_ && in_flight_.empty())) {
    Status st = iterate(lk);
    if (!st.ok()) {
      fail_all(st);
      ctx_.report_fatal("coordinator: " + st.to_string());
      return;
    }
  }
  // Tell every rank (our own worker included) to stop.
  const int world = ctx_.mapping().world;
  for (int r = 0; r < world; ++r) (void)ctx_.term().send(r, "shutdown", opt_.wait_timeout_s);
  SLOG_INFO("coordinator: {} iterations, {} micro-batches, at most {} in flight", counters_.iterations,
            counters_.micro_batches, counters_.max_in_flight_seen);
}

}  // namespace shardlm
