// Continuous batching scheduler (one step at a time, vLLM-v1 style):
//   1. running sequences first, in arrival order: each gets the tokens it still
//      needs (1 when decoding, the rest of its prompt when prefilling), capped by
//      the step's token budget (chunked prefill); if the block pool cannot hold
//      them, the newest running sequence is preempted (blocks freed, progress
//      reset, back to the front of the waiting queue: recompute later);
//   2. then waiting sequences in arrival order while the budget, max_num_seqs and
//      free blocks allow.
// A chunk that reaches the sequence's last known token is marked `sample`.
//
// Details:
//   - a decode needs blocks for num_computed + 1 tokens, a prefill chunk for
//     num_computed + len; preemption pops the newest running sequence until the
//     current one fits, and if the current one is itself the newest left it is
//     preempted too (so the oldest always makes progress; it retries alone);
//   - no waiting sequence is admitted in a step that preempted (vLLM v1);
//   - admission is strict FCFS: the first waiting sequence that cannot get its
//     blocks (or, with chunked_prefill=false, its whole prompt in the budget)
//     stops admission; nobody behind it is admitted;
//   - running_ stays sorted by (arrival_time, add() order), so a preempted and
//     re-admitted sequence keeps its seniority; "newest" is the back.
//   - steps in flight (PP, DESIGN §3.2): a sequence scheduled by one schedule()
//     whose on_step_done() has not come yet is in flight: later schedule() calls
//     skip it and never preempt it (the device may be writing its blocks); a
//     sequence that could only get blocks from in-flight ones waits (it is not
//     preempted itself while earlier steps are in flight). So each sequence is in
//     at most one micro-batch, and every schedule() output must be passed to
//     on_step_done() (or cancel_step() if it never ran) once. With one step at a
//     time nothing changes.
//   - an output with no chunks while work remains: only when this call preempted
//     or aborted something, or steps are in flight; otherwise it is a bug.
// Requests that could never run: the engine should refuse a request for which
// can_ever_fit() is false when it adds it. As a safety net, schedule() finishes
// with kAborted (and lists in SchedulerOutput::aborted) any sequence whose next
// chunk needs more blocks than the whole pool has, or (chunked_prefill=false)
// more tokens than max_num_batched_tokens, instead of looping forever.
#pragma once

#include <cstdint>
#include <deque>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "runtime/kv_block_manager.h"
#include "runtime/sequence.h"

namespace shardlm {

struct SchedulerConfig {
  int64_t max_num_seqs = 256;            // sequences in one step
  int64_t max_num_batched_tokens = 2048; // tokens in one step (prefill chunks + decodes)
  bool chunked_prefill = true;           // false: a prompt is scheduled whole or not at all
};

struct ScheduledChunk {
  Sequence* seq = nullptr;
  int64_t start = 0;   // first token position computed in this step (== seq->num_computed)
  int64_t len = 0;     // tokens computed in this step
  bool sample = false; // start + len == seq->total_len(): sample the next token
};

struct SchedulerOutput {
  std::vector<ScheduledChunk> chunks;
  std::vector<Sequence*> preempted;  // preempted during this schedule() call
  std::vector<Sequence*> aborted;    // finished (kAborted) here: could never fit
  int64_t num_tokens = 0;
  bool empty() const { return chunks.empty(); }
};

class Scheduler {
 public:
  Scheduler(SchedulerConfig config, KvBlockManager* blocks);

  void add(Sequence* seq);  // joins the waiting queue (status kWaiting)
  // Whether `seq` can ever run to its end (prompt + max_tokens − 1 tokens with
  // K/V, the last sampled token is never computed) under this config and pool:
  // false for an empty prompt, for more blocks than the pool has, and with
  // chunked_prefill=false for more tokens than max_num_batched_tokens (a
  // preempted sequence recomputes all its tokens in one step). Check at add time.
  bool can_ever_fit(const Sequence& seq) const;
  SchedulerOutput schedule();
  // After the step ran: advances num_computed of every chunk (and ends its
  // sequences' in-flight state).
  void on_step_done(const SchedulerOutput& out);
  // The step will not run (its forward failed): its sequences stop being in
  // flight and keep their progress, so the next schedule() redoes those chunks.
  void cancel_step(const SchedulerOutput& out);
  // Marks finished (status, reason), frees its blocks, removes it from the queues.
  void finish(Sequence* seq, FinishReason reason);
  // finish(kAborted) by id; false if unknown or already finished.
  bool abort(int64_t seq_id);

  bool has_unfinished() const { return !waiting_.empty() || !running_.empty(); }
  int64_t num_waiting() const { return static_cast<int64_t>(waiting_.size()); }
  int64_t num_running() const { return static_cast<int64_t>(running_.size()); }
  int64_t total_preemptions() const { return total_preemptions_; }
  const KvBlockManager& blocks() const { return *blocks_; }
  const SchedulerConfig& config() const { return config_; }
  const std::deque<Sequence*>& waiting() const { return waiting_; }
  const std::vector<Sequence*>& running() const { return running_; }  // oldest first
  bool in_flight(const Sequence* seq) const { return in_flight_.count(seq) != 0; }

 private:
  void preempt(Sequence* seq);
  bool older(const Sequence* a, const Sequence* b) const;  // a before b in arrival order
  void insert_running(Sequence* seq);
  // True when computing up to `num_tokens` tokens can never fit (pool or budget).
  bool never_fits(const Sequence& seq, int64_t num_tokens, int64_t chunk) const;

  SchedulerConfig config_;
  KvBlockManager* blocks_;
  std::deque<Sequence*> waiting_;
  std::vector<Sequence*> running_;  // arrival order
  int64_t total_preemptions_ = 0;
  uint64_t next_order_ = 0;
  std::unordered_map<int64_t, uint64_t> order_;  // seq id → add() order (ties of arrival_time)
  std::unordered_set<const Sequence*> in_flight_;  // scheduled, on_step_done not yet
};

}  // namespace shardlm
