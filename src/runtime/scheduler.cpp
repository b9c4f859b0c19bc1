#include "runtime/scheduler.h"

#include <algorithm>
#include <cstddef>

namespace shardlm {

Scheduler::Scheduler(SchedulerConfig config, KvBlockManager* blocks)
    : config_(config), blocks_(blocks) {
  if (config_.max_num_seqs < 1) config_.max_num_seqs = 1;
  if (config_.max_num_batched_tokens < 1) config_.max_num_batched_tokens = 1;
}

void Scheduler::add(Sequence* seq) {
  seq->status = SeqStatus::kWaiting;
  seq->finish_reason = FinishReason::kNone;
  order_[seq->id] = next_order_++;
  waiting_.push_back(seq);
}

bool Scheduler::can_ever_fit(const Sequence& seq) const {
  if (seq.prompt.empty()) return false;
  const int64_t max_tokens = std::max<int64_t>(seq.params.max_tokens, 1);
  const int64_t peak = std::max<int64_t>(
      static_cast<int64_t>(seq.prompt.size()) + max_tokens - 1, seq.total_len());
  const int64_t bs = blocks_->block_size();
  if ((peak + bs - 1) / bs > blocks_->num_blocks()) return false;
  if (!config_.chunked_prefill && peak > config_.max_num_batched_tokens) return false;
  return true;
}

bool Scheduler::never_fits(const Sequence& seq, int64_t num_tokens, int64_t chunk) const {
  const int64_t bs = blocks_->block_size();
  if ((num_tokens + bs - 1) / bs > blocks_->num_blocks()) return true;
  if (!config_.chunked_prefill && chunk > config_.max_num_batched_tokens) return true;
  return false;
}

bool Scheduler::older(const Sequence* a, const Sequence* b) const {
  if (a->arrival_time != b->arrival_time) return a->arrival_time < b->arrival_time;
  auto ia = order_.find(a->id);
  auto ib = order_.find(b->id);
  const uint64_t oa = ia == order_.end() ? 0 : ia->second;
  const uint64_t ob = ib == order_.end() ? 0 : ib->second;
  return oa < ob;
}

void Scheduler::insert_running(Sequence* seq) {
  auto pos = std::upper_bound(running_.begin(), running_.end(), seq,
                              [this](const Sequence* a, const Sequence* b) { return older(a, b); });
  running_.insert(pos, seq);
}

void Scheduler::preempt(Sequence* seq) {
  blocks_->free(seq->id);
  seq->num_computed = 0;
  seq->status = SeqStatus::kWaiting;
  seq->num_preemptions++;
  total_preemptions_++;
  waiting_.push_front(seq);
}

SchedulerOutput Scheduler::schedule() {
  SchedulerOutput out;
  int64_t budget = config_.max_num_batched_tokens;
  // Steps of earlier schedule() calls still running (PP micro-batches).
  const bool others_in_flight = !in_flight_.empty();

  auto emit = [&](Sequence* seq, int64_t len) {
    ScheduledChunk c;
    c.seq = seq;
    c.start = seq->num_computed;
    c.len = len;
    c.sample = c.start + c.len == seq->total_len();
    out.chunks.push_back(c);
    in_flight_.insert(seq);
    out.num_tokens += len;
    budget -= len;
  };
  auto abort_now = [&](Sequence* seq) {
    out.aborted.push_back(seq);
    finish(seq, FinishReason::kAborted);
  };

  // 1. Running sequences, oldest first.
  size_t i = 0;
  while (i < running_.size() && budget > 0 &&
         static_cast<int64_t>(out.chunks.size()) < config_.max_num_seqs) {
    Sequence* seq = running_[i];
    const int64_t need = seq->total_len() - seq->num_computed;
    // In flight, or nothing to compute (the caller has not appended a token yet).
    if (in_flight(seq) || need <= 0) {
      ++i;
      continue;
    }
    if (!config_.chunked_prefill && need > budget) {
      if (never_fits(*seq, seq->total_len(), need)) {
        abort_now(seq);  // erases running_[i]
      } else {
        ++i;
      }
      continue;
    }
    const int64_t len = std::min(need, budget);
    if (never_fits(*seq, seq->num_computed + len, len)) {
      abort_now(seq);
      continue;
    }
    bool scheduled = true;
    while (!blocks_->ensure_capacity(seq->id, seq->num_computed + len)) {
      // The newest sequence not in flight; seq itself at worst (index >= i).
      size_t v = running_.size() - 1;
      while (v > i && in_flight(running_[v])) --v;
      Sequence* victim = running_[v];
      if (victim == seq && others_in_flight) {
        // Only in-flight sequences could make room: wait for them rather than
        // throw away seq's cache; they will be preemptable next time.
        scheduled = false;
        break;
      }
      running_.erase(running_.begin() + static_cast<std::ptrdiff_t>(v));
      preempt(victim);
      out.preempted.push_back(victim);
      if (victim == seq) {
        scheduled = false;
        break;
      }
    }
    // seq was the newest left that is not in flight: all after it are gone or in flight.
    if (!scheduled) break;
    emit(seq, len);
    ++i;
  }

  // 2. Waiting sequences, strict FCFS, unless this step had to preempt.
  if (out.preempted.empty()) {
    while (!waiting_.empty() && budget > 0 &&
           static_cast<int64_t>(running_.size()) < config_.max_num_seqs &&
           static_cast<int64_t>(out.chunks.size()) < config_.max_num_seqs) {
      Sequence* seq = waiting_.front();
      const int64_t need = seq->total_len() - seq->num_computed;
      if (need <= 0) {  // empty prompt: nothing to compute, nothing to sample from
        abort_now(seq);
        continue;
      }
      if (!config_.chunked_prefill && need > budget) {
        if (never_fits(*seq, seq->total_len(), need)) {
          abort_now(seq);
          continue;
        }
        break;
      }
      const int64_t len = std::min(need, budget);
      if (never_fits(*seq, seq->num_computed + len, len)) {
        abort_now(seq);
        continue;
      }
      if (!blocks_->ensure_capacity(seq->id, seq->num_computed + len)) break;
      waiting_.pop_front();
      seq->status = SeqStatus::kRunning;
      insert_running(seq);
      emit(seq, len);
    }
  }
  return out;
}

void Scheduler::on_step_done(const SchedulerOutput& out) {
  for (const ScheduledChunk& c : out.chunks) {
    Sequence* seq = c.seq;
    // Finished (e.g. aborted) or preempted since schedule(): its progress is gone.
    in_flight_.erase(seq);
    if (seq == nullptr || seq->status != SeqStatus::kRunning) continue;
    if (seq->num_computed != c.start) continue;
    seq->num_computed = c.start + c.len;
  }
}

void Scheduler::cancel_step(const SchedulerOutput& out) {
  for (const ScheduledChunk& c : out.chunks) in_flight_.erase(c.seq);
}

void Scheduler::finish(Sequence* seq, FinishReason reason) {
  seq->status = SeqStatus::kFinished;
  seq->finish_reason = reason;
  blocks_->free(seq->id);
  auto r = std::find(running_.begin(), running_.end(), seq);
  if (r != running_.end()) running_.erase(r);
  auto w = std::find(waiting_.begin(), waiting_.end(), seq);
  if (w != waiting_.end()) waiting_.erase(w);
  order_.erase(seq->id);
  in_flight_.erase(seq);
}

bool Scheduler::abort(int64_t seq_id) {
  auto match = [seq_id](const Sequence* s) { return s->id == seq_id; };
  auto r = std::find_if(running_.begin(), running_.end(), match);
  if (r != running_.end()) {
    finish(*r, FinishReason::kAborted);
    return true;
  }
  auto w = std::find_if(waiting_.begin(), waiting_.end(), match);
  if (w != waiting_.end()) {
    finish(*w, FinishReason::kAborted);
    return true;
  }
  return false;
}

}  // namespace shardlm
