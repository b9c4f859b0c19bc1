// Continuous batching scheduler (one step at a time, vLLM-v1 style):
//   1. running sequences first, in arrival order: each gets the tokens it still
//      needs (1 when decoding, the rest of its prompt when prefilling), capped by
//      the step's token budget (chunked prefill); if the block pool cannot hold
//      them, the newest running sequence is preempted (blocks freed, progress
//      reset, back to the front of the waiting queue: recompute later);
//   2. then waiting sequences in arrival order while the budget, max_num_seqs and
//      free blocks allow.
// A chunk that reaches the sequence's last known token is marked `sample`.
#pragma once

#include <cstdint>
#include <deque>
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
  int64_t num_tokens = 0;
  bool empty() const { return chunks.empty(); }
};

class Scheduler {
 public:
  Scheduler(SchedulerConfig config, KvBlockManager* blocks);

  void add(Sequence* seq);  // joins the waiting queue (status kWaiting)
  SchedulerOutput schedule();
  // After the step ran: advances num_computed of every chunk.
  void on_step_done(const SchedulerOutput& out);
  // Marks finished (status, reason), frees its blocks, removes it from the queues.
  void finish(Sequence* seq, FinishReason reason);
  // finish(kAborted) by id; false if unknown or already finished.
  bool abort(int64_t seq_id);

  bool has_unfinished() const { return !waiting_.empty() || !running_.empty(); }
  int64_t num_waiting() const { return static_cast<int64_t>(waiting_.size()); }
  int64_t num_running() const { return static_cast<int64_t>(running_.size()); }
  int64_t total_preemptions() const { return total_preemptions_; }
  const KvBlockManager& blocks() const { return *blocks_; }

 private:
  void preempt(Sequence* seq);

  SchedulerConfig config_;
  KvBlockManager* blocks_;
  std::deque<Sequence*> waiting_;
  std::vector<Sequence*> running_;  // arrival order
  int64_t total_preemptions_ = 0;
};

}  // namespace shardlm
