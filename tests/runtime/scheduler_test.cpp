#include "runtime/scheduler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <deque>
#include <map>
#include <memory>
#include <ostream>
#include <random>
#include <set>

namespace shardlm {
namespace {

// Owns the sequences and plays the engine: schedule → "run" → on_step_done →
// append a fake token to every sampled chunk → finish at max_tokens.
struct Harness {
  KvBlockManager blocks;
  Scheduler sched;
  std::vector<std::unique_ptr<Sequence>> seqs;
  double clock = 0.0;

  Harness(SchedulerConfig cfg, int64_t num_blocks, int64_t block_size)
      : blocks(num_blocks, block_size), sched(cfg, &blocks) {}

  Sequence* make(int64_t prompt_len, int32_t max_tokens) {
    auto s = std::make_unique<Sequence>();
    s->id = static_cast<int64_t>(seqs.size());
    for (int64_t i = 0; i < prompt_len; ++i) s->prompt.push_back(static_cast<int32_t>(100 + i));
    s->params.max_tokens = max_tokens;
    s->arrival_time = clock;
    clock += 1.0;
    seqs.push_back(std::move(s));
    return seqs.back().get();
  }
  Sequence* add(int64_t prompt_len, int32_t max_tokens) {
    Sequence* s = make(prompt_len, max_tokens);
    sched.add(s);
    return s;
  }
  // Completes the step as the engine would; returns the sequences that finished.
  std::vector<Sequence*> complete(const SchedulerOutput& out) {
    sched.on_step_done(out);
    std::vector<Sequence*> done;
    for (const auto& c : out.chunks) {
      if (!c.sample || c.seq->finished()) continue;
      c.seq->output.push_back(static_cast<int32_t>(7 + c.seq->output.size()));
      if (static_cast<int64_t>(c.seq->output.size()) >= c.seq->params.max_tokens) {
        sched.finish(c.seq, FinishReason::kLength);
        done.push_back(c.seq);
      }
    }
    return done;
  }
  SchedulerOutput step() {
    SchedulerOutput out = sched.schedule();
    complete(out);
    return out;
  }
  int run_to_end(int max_steps = 10000) {
    int steps = 0;
    while (sched.has_unfinished() && steps < max_steps) {
      step();
      ++steps;
    }
    return steps;
  }
};

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

TEST(SequenceTest, FinishReasonNames) {
  EXPECT_STREQ(finish_reason_name(FinishReason::kStopToken), "stop");
  EXPECT_STREQ(finish_reason_name(FinishReason::kStopString), "stop");
  EXPECT_STREQ(finish_reason_name(FinishReason::kLength), "length");
  EXPECT_STREQ(finish_reason_name(FinishReason::kAborted), "abort");
  EXPECT_STREQ(finish_reason_name(FinishReason::kNone), "");
}

TEST(Scheduler, EmptySchedulerSchedulesNothing) {
  Harness h({}, 16, 4);
  EXPECT_FALSE(h.sched.has_unfinished());
  EXPECT_TRUE(h.sched.schedule().empty());
}

TEST(Scheduler, TokenBudgetAndMaxSeqsNeverExceeded) {
  SchedulerConfig cfg;
  cfg.max_num_seqs = 3;
  cfg.max_num_batched_tokens = 16;
  Harness h(cfg, 1000, 4);
  for (int i = 0; i < 10; ++i) h.add(5 + 3 * i, 4 + i % 3);
  int steps = 0;
  while (h.sched.has_unfinished()) {
    ASSERT_LT(++steps, 1000);
    SchedulerOutput out = h.sched.schedule();
    ASSERT_FALSE(out.empty());
    EXPECT_LE(static_cast<int64_t>(out.chunks.size()), cfg.max_num_seqs);
    EXPECT_LE(h.sched.num_running(), cfg.max_num_seqs);
    EXPECT_LE(out.num_tokens, cfg.max_num_batched_tokens);
    int64_t sum = 0;
    for (const auto& c : out.chunks) sum += c.len;
    EXPECT_EQ(sum, out.num_tokens);
    h.complete(out);
  }
  for (const auto& s : h.seqs) EXPECT_EQ(s->finish_reason, FinishReason::kLength);
}

TEST(Scheduler, ChunkedPrefillSplitsLongPrompt) {
  SchedulerConfig cfg;
  cfg.max_num_batched_tokens = 16;
  Harness h(cfg, 100, 4);
  Sequence* s = h.add(50, 3);
  const std::vector<int64_t> lens = {16, 16, 16, 2};
  int64_t pos = 0;
  for (size_t k = 0; k < lens.size(); ++k) {
    SchedulerOutput out = h.sched.schedule();
    ASSERT_EQ(out.chunks.size(), 1u);
    const auto& c = out.chunks[0];
    EXPECT_EQ(c.seq, s);
    EXPECT_EQ(c.start, pos);
    EXPECT_EQ(c.len, lens[k]);
    EXPECT_EQ(c.sample, k + 1 == lens.size()) << "only the last chunk samples";
    EXPECT_GE(h.blocks.capacity(s->id), pos + c.len);
    pos += c.len;
    h.complete(out);
    EXPECT_EQ(s->num_computed, pos);
  }
  EXPECT_EQ(s->output.size(), 1u);
  // Decode: one token per step, each sampled.
  for (int k = 0; k < 2; ++k) {
    SchedulerOutput out = h.sched.schedule();
    ASSERT_EQ(out.chunks.size(), 1u);
    EXPECT_EQ(out.chunks[0].start, s->total_len() - 1);
    EXPECT_EQ(out.chunks[0].len, 1);
    EXPECT_TRUE(out.chunks[0].sample);
    h.complete(out);
  }
  EXPECT_TRUE(s->finished());
  EXPECT_EQ(h.blocks.num_free_blocks(), 100);
}

TEST(Scheduler, DecodeAndPrefillShareAStep) {
  SchedulerConfig cfg;
  cfg.max_num_batched_tokens = 10;
  Harness h(cfg, 100, 4);
  Sequence* a = h.add(4, 10);
  h.step();  // a prefilled
  Sequence* b = h.add(30, 10);
  SchedulerOutput out = h.sched.schedule();
  ASSERT_EQ(out.chunks.size(), 2u);
  EXPECT_EQ(out.chunks[0].seq, a);  // running first
  EXPECT_EQ(out.chunks[0].len, 1);
  EXPECT_TRUE(out.chunks[0].sample);
  EXPECT_EQ(out.chunks[1].seq, b);
  EXPECT_EQ(out.chunks[1].len, 9);  // the rest of the budget
  EXPECT_FALSE(out.chunks[1].sample);
  EXPECT_EQ(out.num_tokens, 10);
}

TEST(Scheduler, AdmissionIsFcfs) {
  SchedulerConfig cfg;
  Harness h(cfg, 100, 4);
  std::vector<Sequence*> s;
  for (int i = 0; i < 5; ++i) s.push_back(h.add(3 + i, 2));
  SchedulerOutput out = h.sched.schedule();
  ASSERT_EQ(out.chunks.size(), 5u);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(out.chunks[i].seq, s[i]);
}

TEST(Scheduler, WaitingSequenceWithoutBlocksStopsAdmission) {
  SchedulerConfig cfg;
  Harness h(cfg, 4, 4);  // 16 token slots
  Sequence* x = h.add(12, 2);  // 3 blocks, then 4 at decode
  SchedulerOutput out = h.step();
  ASSERT_EQ(out.chunks.size(), 1u);
  EXPECT_EQ(h.blocks.num_free_blocks(), 1);
  Sequence* a = h.add(8, 1);  // needs 2 blocks: cannot
  Sequence* b = h.add(2, 1);  // needs 1 block: would fit, but is behind a
  out = h.sched.schedule();
  ASSERT_EQ(out.chunks.size(), 1u);
  EXPECT_EQ(out.chunks[0].seq, x);
  EXPECT_EQ(a->status, SeqStatus::kWaiting);
  EXPECT_EQ(b->status, SeqStatus::kWaiting);
  h.complete(out);  // x finishes (max_tokens 2), its blocks return
  EXPECT_TRUE(x->finished());
  out = h.sched.schedule();
  ASSERT_EQ(out.chunks.size(), 2u);
  EXPECT_EQ(out.chunks[0].seq, a);
  EXPECT_EQ(out.chunks[1].seq, b);
}

TEST(Scheduler, WholePromptWhenChunkingOff) {
  SchedulerConfig cfg;
  cfg.chunked_prefill = false;
  cfg.max_num_batched_tokens = 10;
  Harness h(cfg, 100, 4);
  Sequence* a = h.add(6, 3);
  Sequence* b = h.add(6, 3);
  Sequence* c = h.add(2, 3);  // would fit in the 4 left, but b is first
  SchedulerOutput out = h.sched.schedule();
  ASSERT_EQ(out.chunks.size(), 1u);
  EXPECT_EQ(out.chunks[0].seq, a);
  EXPECT_EQ(out.chunks[0].len, 6);
  EXPECT_TRUE(out.chunks[0].sample);
  h.complete(out);
  out = h.sched.schedule();  // a decodes (1), b whole (6), c whole (2)
  ASSERT_EQ(out.chunks.size(), 3u);
  EXPECT_EQ(out.chunks[0].seq, a);
  EXPECT_EQ(out.chunks[1].seq, b);
  EXPECT_EQ(out.chunks[1].len, 6);
  EXPECT_EQ(out.chunks[2].seq, c);
  EXPECT_EQ(out.chunks[2].len, 2);
  h.complete(out);
  EXPECT_EQ(h.run_to_end(), 2);
  for (Sequence* s : {a, b, c}) EXPECT_EQ(s->output.size(), 3u);
}

TEST(Scheduler, PreemptsNewestAndRecomputes) {
  SchedulerConfig cfg;
  Harness h(cfg, 4, 2);  // 8 token slots
  Sequence* a = h.add(3, 5);
  Sequence* b = h.add(3, 5);
  ASSERT_TRUE(h.sched.can_ever_fit(*a));
  SchedulerOutput out = h.step();  // both prefill: 2 blocks each
  ASSERT_EQ(out.chunks.size(), 2u);
  out = h.step();  // total_len 4: still 2 blocks each
  ASSERT_EQ(out.chunks.size(), 2u);
  EXPECT_TRUE(out.preempted.empty());
  EXPECT_EQ(h.blocks.num_free_blocks(), 0);

  // Now a needs a third block: b, the newest, is preempted.
  out = h.sched.schedule();
  ASSERT_EQ(out.preempted.size(), 1u);
  EXPECT_EQ(out.preempted[0], b);
  ASSERT_EQ(out.chunks.size(), 1u);
  EXPECT_EQ(out.chunks[0].seq, a);
  EXPECT_EQ(b->status, SeqStatus::kWaiting);
  EXPECT_EQ(b->num_computed, 0);
  EXPECT_EQ(b->num_preemptions, 1);
  EXPECT_FALSE(h.blocks.has(b->id));
  ASSERT_FALSE(h.sched.waiting().empty());
  EXPECT_EQ(h.sched.waiting().front(), b);
  EXPECT_EQ(h.sched.total_preemptions(), 1);
  EXPECT_EQ(b->output.size(), 2u);  // its output is kept
  h.complete(out);

  // b comes back once a is done and recomputes prompt + output in one chunk.
  bool recomputed = false;
  for (int k = 0; k < 20 && h.sched.has_unfinished(); ++k) {
    out = h.sched.schedule();
    for (const auto& c : out.chunks) {
      if (c.seq == b && !recomputed) {
        EXPECT_TRUE(a->finished());
        EXPECT_EQ(c.start, 0);
        EXPECT_EQ(c.len, 5);  // 3 prompt + 2 output
        EXPECT_TRUE(c.sample);
        recomputed = true;
      }
    }
    h.complete(out);
  }
  EXPECT_TRUE(recomputed);
  EXPECT_TRUE(a->finished());
  EXPECT_TRUE(b->finished());
  EXPECT_EQ(a->output.size(), 5u);
  EXPECT_EQ(b->output.size(), 5u);
  EXPECT_EQ(h.blocks.num_free_blocks(), 4);
}

TEST(Scheduler, CurrentSequenceIsPreemptedWhenItIsTheNewest) {
  SchedulerConfig cfg;
  Harness h(cfg, 4, 2);
  Sequence* a = h.add(3, 4);  // 2 blocks; total 4 after one token: still 2
  Sequence* b = h.add(4, 4);  // 2 blocks; total 5 after one token: needs 3
  h.step();
  SchedulerOutput out = h.sched.schedule();
  ASSERT_EQ(out.chunks.size(), 1u);
  EXPECT_EQ(out.chunks[0].seq, a);
  ASSERT_EQ(out.preempted.size(), 1u);
  EXPECT_EQ(out.preempted[0], b);
  EXPECT_EQ(h.sched.waiting().front(), b);
  h.complete(out);
  h.run_to_end();
  EXPECT_EQ(a->output.size(), 4u);
  EXPECT_EQ(b->output.size(), 4u);
  EXPECT_EQ(h.blocks.num_free_blocks(), 4);
}

TEST(Scheduler, PreemptionKeepsArrivalOrderInWaiting) {
  SchedulerConfig cfg;
  Harness h(cfg, 6, 2);
  Sequence* a = h.add(3, 6);  // grows to 8 tokens: 4 blocks
  Sequence* b = h.add(2, 2);
  Sequence* c = h.add(2, 2);
  Sequence* d = h.add(2, 6);
  h.step();  // a: 2 blocks, b, c: 1 each, d: 1 → 5 of 6
  h.step();  // b, c finish (2 tokens); a total 5 → 3 blocks; d total 3 → 2 blocks
  EXPECT_TRUE(b->finished());
  EXPECT_TRUE(c->finished());
  Sequence* e = h.add(3, 2);
  // a and d grow until one must go: d is newer than a, e is waiting behind it.
  int guard = 0;
  while (d->num_preemptions == 0 && guard++ < 10) h.step();
  ASSERT_EQ(d->num_preemptions, 1);
  EXPECT_EQ(a->num_preemptions, 0);
  ASSERT_GE(h.sched.waiting().size(), 1u);
  EXPECT_EQ(h.sched.waiting().front(), d);  // in front of e, which arrived later
  if (h.sched.waiting().size() > 1) {
    EXPECT_EQ(h.sched.waiting()[1], e);
  }
  h.run_to_end();
  for (Sequence* s : {a, d, e}) EXPECT_EQ(s->finish_reason, FinishReason::kLength);
  EXPECT_EQ(h.blocks.num_free_blocks(), 6);
}

TEST(Scheduler, RunningIsOrderedByArrivalTime) {
  // running() is oldest first by arrival_time (add() order breaks ties), so the
  // newest is the one preempted, whatever order the engine added them in.
  SchedulerConfig cfg;
  Harness h(cfg, 100, 4);
  Sequence* late = h.make(3, 3);
  Sequence* early = h.make(3, 3);
  Sequence* tie = h.make(3, 3);
  late->arrival_time = 5.0;
  early->arrival_time = 1.0;
  tie->arrival_time = 5.0;
  h.sched.add(late);
  h.sched.add(early);
  h.sched.add(tie);
  h.step();
  ASSERT_EQ(h.sched.running().size(), 3u);
  EXPECT_EQ(h.sched.running()[0], early);
  EXPECT_EQ(h.sched.running()[1], late);
  EXPECT_EQ(h.sched.running()[2], tie);
}

TEST(Scheduler, StepsInFlightAreNotRescheduledNorPreempted) {
  // Two micro-batches in flight (PP): the second schedule() must not repeat a
  // sequence of the first, nor free blocks the device may still be writing.
  SchedulerConfig cfg;
  cfg.max_num_batched_tokens = 8;
  Harness h(cfg, 5, 2);  // 10 token slots
  Sequence* a = h.add(3, 4);
  Sequence* b = h.add(3, 4);
  SchedulerOutput mb0 = h.sched.schedule();  // a and b prefill (2 blocks each)
  ASSERT_EQ(mb0.chunks.size(), 2u);
  EXPECT_TRUE(h.sched.in_flight(a));
  Sequence* c = h.add(4, 2);
  SchedulerOutput mb1 = h.sched.schedule();  // only c is free to run
  ASSERT_EQ(mb1.chunks.size(), 0u) << "c needs 2 blocks, 1 is free, nobody may be preempted";
  EXPECT_TRUE(mb1.preempted.empty());
  h.complete(mb0);
  EXPECT_FALSE(h.sched.in_flight(a));
  // a decodes (total 4: 2 blocks), b would need nothing new either; c still waits.
  SchedulerOutput mb2 = h.sched.schedule();
  ASSERT_EQ(mb2.chunks.size(), 2u);
  // While a and b are in flight, c's admission cannot preempt them.
  SchedulerOutput mb3 = h.sched.schedule();
  EXPECT_TRUE(mb3.empty());
  EXPECT_TRUE(mb3.preempted.empty());
  h.complete(mb2);
  h.complete(mb3);
  h.run_to_end();
  for (Sequence* s : {a, b, c}) EXPECT_EQ(s->finish_reason, FinishReason::kLength);
  EXPECT_EQ(h.blocks.num_free_blocks(), 5);
}

TEST(Scheduler, CancelledStepIsRescheduled) {
  SchedulerConfig cfg;
  cfg.max_num_batched_tokens = 4;
  Harness h(cfg, 10, 2);
  Sequence* a = h.add(6, 2);
  SchedulerOutput out = h.sched.schedule();
  ASSERT_EQ(out.chunks.size(), 1u);
  EXPECT_TRUE(h.sched.schedule().empty());  // in flight
  h.sched.cancel_step(out);                 // the forward failed
  EXPECT_FALSE(h.sched.in_flight(a));
  SchedulerOutput again = h.sched.schedule();
  ASSERT_EQ(again.chunks.size(), 1u);
  EXPECT_EQ(again.chunks[0].start, 0);
  EXPECT_EQ(again.chunks[0].len, 4);
  h.complete(again);
  h.run_to_end();
  EXPECT_EQ(a->finish_reason, FinishReason::kLength);
  EXPECT_EQ(h.blocks.num_free_blocks(), 10);
}

TEST(Scheduler, InFlightSequenceIsNeverTheVictim) {
  SchedulerConfig cfg;
  Harness h(cfg, 4, 2);
  Sequence* a = h.add(4, 5);
  Sequence* b = h.add(3, 5);
  SchedulerOutput mb0 = h.sched.schedule();  // a: 2 blocks, b: 2 blocks, pool full
  ASSERT_EQ(mb0.chunks.size(), 2u);
  h.sched.on_step_done(mb0);
  b->output.push_back(1);  // b's token is back, a's is still being relayed
  SchedulerOutput mb1 = h.sched.schedule();
  ASSERT_EQ(mb1.chunks.size(), 1u);  // a has nothing to compute yet
  EXPECT_EQ(mb1.chunks[0].seq, b);
  a->output.push_back(1);  // a's token arrives: a needs a 3rd block
  SchedulerOutput mb2 = h.sched.schedule();
  EXPECT_TRUE(mb2.empty());  // b is in flight: not preempted; a waits, keeps its cache
  EXPECT_TRUE(mb2.preempted.empty());
  EXPECT_EQ(a->status, SeqStatus::kRunning);
  EXPECT_EQ(a->num_computed, 4);
  EXPECT_EQ(b->status, SeqStatus::kRunning);
  h.sched.on_step_done(mb2);
  h.complete(mb1);  // b's step lands
  SchedulerOutput mb3 = h.sched.schedule();  // now b can be preempted
  ASSERT_EQ(mb3.preempted.size(), 1u);
  EXPECT_EQ(mb3.preempted[0], b);
  ASSERT_EQ(mb3.chunks.size(), 1u);
  EXPECT_EQ(mb3.chunks[0].seq, a);
  h.complete(mb3);
  h.run_to_end();
  EXPECT_EQ(a->output.size(), 5u);
  EXPECT_EQ(b->output.size(), 5u);
  EXPECT_EQ(h.blocks.num_free_blocks(), 4);
}

TEST(Scheduler, AbortFreesBlocks) {
  SchedulerConfig cfg;
  cfg.max_num_seqs = 2;
  Harness h(cfg, 20, 4);
  Sequence* a = h.add(10, 5);
  Sequence* b = h.add(10, 5);
  Sequence* c = h.add(10, 5);  // waits: no seat
  h.step();
  EXPECT_EQ(h.sched.num_running(), 2);
  EXPECT_EQ(h.sched.num_waiting(), 1);
  EXPECT_EQ(h.blocks.num_free_blocks(), 20 - 6);

  EXPECT_TRUE(h.sched.abort(c->id));  // waiting
  EXPECT_EQ(c->status, SeqStatus::kFinished);
  EXPECT_EQ(c->finish_reason, FinishReason::kAborted);
  EXPECT_EQ(h.sched.num_waiting(), 0);

  EXPECT_TRUE(h.sched.abort(a->id));  // running
  EXPECT_TRUE(a->finished());
  EXPECT_EQ(a->finish_reason, FinishReason::kAborted);
  EXPECT_FALSE(h.blocks.has(a->id));
  EXPECT_EQ(h.blocks.num_free_blocks(), 20 - 3);
  EXPECT_EQ(h.sched.num_running(), 1);

  EXPECT_FALSE(h.sched.abort(a->id));  // already finished
  EXPECT_FALSE(h.sched.abort(12345));  // unknown

  // Aborted while its step was in flight: on_step_done leaves it alone.
  SchedulerOutput out = h.sched.schedule();
  ASSERT_EQ(out.chunks.size(), 1u);
  EXPECT_TRUE(h.sched.abort(b->id));
  const int64_t before = b->num_computed;
  h.sched.on_step_done(out);
  EXPECT_EQ(b->num_computed, before);
  EXPECT_FALSE(h.sched.has_unfinished());
  EXPECT_EQ(h.blocks.num_free_blocks(), 20);
}

TEST(Scheduler, CanEverFit) {
  SchedulerConfig cfg;
  cfg.max_num_batched_tokens = 8;
  Harness h(cfg, 4, 4);  // 16 tokens
  EXPECT_TRUE(h.sched.can_ever_fit(*h.make(10, 7)));   // peak 16
  EXPECT_FALSE(h.sched.can_ever_fit(*h.make(10, 8)));  // peak 17
  EXPECT_FALSE(h.sched.can_ever_fit(*h.make(17, 1)));
  EXPECT_FALSE(h.sched.can_ever_fit(*h.make(0, 4)));   // empty prompt
  EXPECT_TRUE(h.sched.can_ever_fit(*h.make(16, 1)));
  EXPECT_TRUE(h.sched.can_ever_fit(*h.make(16, 0)));   // max_tokens < 1 counts as 1

  SchedulerConfig whole = cfg;
  whole.chunked_prefill = false;
  KvBlockManager pool(4, 4);
  Scheduler s(whole, &pool);
  EXPECT_TRUE(s.can_ever_fit(*h.make(4, 5)));   // recompute of 8 tokens fits the budget
  EXPECT_FALSE(s.can_ever_fit(*h.make(4, 6)));  // 9 > max_num_batched_tokens
}

TEST(Scheduler, SequenceThatCanNeverFitIsAbortedNotLooped) {
  SchedulerConfig cfg;
  Harness h(cfg, 4, 4);
  Sequence* big = h.add(20, 1);   // 5 blocks > pool
  Sequence* ok = h.add(4, 2);
  SchedulerOutput out = h.sched.schedule();
  ASSERT_EQ(out.aborted.size(), 1u);
  EXPECT_EQ(out.aborted[0], big);
  EXPECT_EQ(big->finish_reason, FinishReason::kAborted);
  ASSERT_EQ(out.chunks.size(), 1u);
  EXPECT_EQ(out.chunks[0].seq, ok);
  h.complete(out);

  // One that grows past the pool while decoding (the engine skipped can_ever_fit).
  Sequence* grow = h.add(14, 10);
  EXPECT_FALSE(h.sched.can_ever_fit(*grow));
  int steps = h.run_to_end(100);
  EXPECT_LT(steps, 100);
  EXPECT_EQ(grow->finish_reason, FinishReason::kAborted);
  EXPECT_EQ(grow->num_computed, 16);  // ran until the pool was full
  EXPECT_EQ(grow->total_len(), 17);   // the 17th would need a 5th block
  EXPECT_EQ(ok->finish_reason, FinishReason::kLength);
  EXPECT_EQ(h.blocks.num_free_blocks(), 4);
}

// ---- Randomized simulation with invariants checked every step.

struct SimParams {
  uint64_t seed;
  bool chunked;
  int depth = 1;  // micro-batches in flight (1: each step completes before the next)
};

// Printed in test names (ctest lists them): no raw bytes, no padding.
void PrintTo(const SimParams& p, std::ostream* os) {
  *os << "seed " << p.seed << (p.chunked ? " chunked" : " whole") << " depth " << p.depth;
}

class SchedulerSim : public ::testing::TestWithParam<SimParams> {};

TEST_P(SchedulerSim, InvariantsHoldAndEverythingFinishes) {
  const SimParams p = GetParam();
  std::mt19937_64 rng(p.seed);
  auto uni = [&](int64_t lo, int64_t hi) {  // inclusive
    return lo + static_cast<int64_t>(rng() % static_cast<uint64_t>(hi - lo + 1));
  };
  SchedulerConfig cfg;
  cfg.max_num_seqs = 6;
  cfg.max_num_batched_tokens = p.chunked ? 24 : 64;
  cfg.chunked_prefill = p.chunked;
  const int64_t kBlock = 4, kBlocks = 20;
  Harness h(cfg, kBlocks, kBlock);

  constexpr int kSeqs = 40;
  std::multimap<int64_t, Sequence*> arrivals;  // step → sequence
  for (int i = 0; i < kSeqs; ++i) {
    Sequence* s = h.make(uni(1, 40), static_cast<int32_t>(uni(1, 24)));
    ASSERT_TRUE(h.sched.can_ever_fit(*s));
    arrivals.emplace(uni(0, 80), s);
  }
  std::set<Sequence*> aborted_by_test;
  std::deque<SchedulerOutput> pending;  // in flight, oldest first
  int64_t step = 0;
  int64_t preempted_seen = 0;
  while (!arrivals.empty() || h.sched.has_unfinished() || !pending.empty()) {
    ASSERT_LT(step, 20000) << "no progress";
    for (auto it = arrivals.begin(); it != arrivals.end() && it->first <= step;) {
      h.sched.add(it->second);
      it = arrivals.erase(it);
    }
    // Now and then a client goes away.
    if (uni(0, 99) < 2 && h.sched.has_unfinished()) {
      std::vector<Sequence*> live;
      for (auto& s : h.seqs)
        if (!s->finished() && s->status != SeqStatus::kWaiting) live.push_back(s.get());
      for (Sequence* s : h.sched.waiting()) live.push_back(s);
      if (!live.empty()) {
        Sequence* victim = live[static_cast<size_t>(uni(0, static_cast<int64_t>(live.size()) - 1))];
        ASSERT_TRUE(h.sched.abort(victim->id));
        aborted_by_test.insert(victim);
      }
    }

    SchedulerOutput out = h.sched.schedule();
    EXPECT_TRUE(out.aborted.empty());
    preempted_seen += static_cast<int64_t>(out.preempted.size());
    ASSERT_LE(static_cast<int64_t>(out.chunks.size()), cfg.max_num_seqs);
    ASSERT_LE(out.num_tokens, cfg.max_num_batched_tokens);
    ASSERT_LE(h.sched.num_running(), cfg.max_num_seqs);
    if (h.sched.has_unfinished() && out.preempted.empty() && pending.empty()) {
      // Something is always scheduled when there is work and nothing was preempted.
      ASSERT_FALSE(out.empty()) << "step " << step;
    }
    std::set<Sequence*> in_step;
    int64_t sum = 0;
    for (const auto& c : out.chunks) {
      ASSERT_TRUE(in_step.insert(c.seq).second) << "sequence twice in one step";
      for (const auto& other : pending) {
        for (const auto& o : other.chunks) ASSERT_NE(o.seq, c.seq) << "sequence in two micro-batches";
      }
      ASSERT_EQ(c.seq->status, SeqStatus::kRunning);
      ASSERT_EQ(c.start, c.seq->num_computed);
      ASSERT_GE(c.len, 1);
      ASSERT_LE(c.start + c.len, c.seq->total_len());
      ASSERT_EQ(c.sample, c.start + c.len == c.seq->total_len());
      ASSERT_GE(h.blocks.capacity(c.seq->id), c.start + c.len);
      ASSERT_GE(static_cast<int64_t>(h.blocks.block_table(c.seq->id).size()),
                ceil_div(c.start + c.len, kBlock));
      if (!p.chunked) {
        ASSERT_TRUE(c.sample) << "whole prompt or nothing";
      }
      if (c.start > 0 && c.start == c.seq->total_len() - 1) {
        ASSERT_EQ(c.len, 1);
      }
      sum += c.len;
    }
    ASSERT_EQ(sum, out.num_tokens);
    for (Sequence* s : out.preempted) {
      ASSERT_EQ(s->status, SeqStatus::kWaiting);
      ASSERT_EQ(s->num_computed, 0);
      ASSERT_FALSE(h.blocks.has(s->id));
      ASSERT_EQ(in_step.count(s), 0u);
      for (const auto& other : pending) {
        for (const auto& o : other.chunks) ASSERT_NE(o.seq, s) << "in-flight sequence preempted";
      }
    }
    if (!out.preempted.empty()) {
      ASSERT_EQ(h.sched.waiting().front(), out.preempted.back());
    }

    // Pool accounting: no block in two tables, free + used == total.
    std::set<int32_t> held;
    int64_t used = 0;
    for (auto& s : h.seqs) {
      const auto& t = h.blocks.block_table(s->id);
      if (s->status != SeqStatus::kRunning) {
        ASSERT_TRUE(t.empty()) << "only running sequences hold blocks";
      }
      for (int32_t b : t) ASSERT_TRUE(held.insert(b).second) << "block " << b << " in two tables";
      used += static_cast<int64_t>(t.size());
    }
    ASSERT_EQ(used + h.blocks.num_free_blocks(), kBlocks);

    pending.push_back(std::move(out));
    while (static_cast<int>(pending.size()) >= p.depth ||
           (!pending.empty() && arrivals.empty() && !h.sched.has_unfinished())) {
      h.complete(pending.front());
      pending.pop_front();
    }
    for (Sequence* s : h.sched.running()) {
      ASSERT_GE(h.blocks.capacity(s->id), s->num_computed);
    }
    ++step;
  }
  for (auto& s : h.seqs) {
    ASSERT_TRUE(s->finished());
    if (aborted_by_test.count(s.get())) {
      EXPECT_EQ(s->finish_reason, FinishReason::kAborted);
    } else {
      EXPECT_EQ(s->finish_reason, FinishReason::kLength);
      EXPECT_EQ(static_cast<int64_t>(s->output.size()), s->params.max_tokens);
    }
  }
  EXPECT_EQ(h.blocks.num_free_blocks(), kBlocks);
  EXPECT_EQ(h.blocks.num_tables(), 0);
  EXPECT_EQ(h.sched.total_preemptions(), preempted_seen);
  EXPECT_GT(preempted_seen, 0) << "the pool is meant to be small enough to preempt";
}

INSTANTIATE_TEST_SUITE_P(Seeds, SchedulerSim,
                         ::testing::Values(SimParams{1, true}, SimParams{2, true}, SimParams{3, true},
                                           SimParams{42, true}, SimParams{1, false},
                                           SimParams{7, false}, SimParams{1, true, 2},
                                           SimParams{5, true, 3}, SimParams{9, false, 4}),
                         [](const ::testing::TestParamInfo<SimParams>& i) {
                           return std::string(i.param.chunked ? "chunked_" : "whole_") +
                                  std::to_string(i.param.seed) + "_inflight" +
                                  std::to_string(i.param.depth);
                         });

}  // namespace
}  // namespace shardlm
