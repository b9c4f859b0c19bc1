// The messages of the distributed executor (DESIGN §3.2), one type per flow:
//   ScheduleMsg  rank 0 → stage 0 → stage 1 → …      ("sched" channel)
//   CountMsg     rank 0 → stage 0 → stage 1 → …      ("count" channel)
//   RelayMsg     last stage → stage 0 → … → pp−2 (and rank 0's coordinator)
// Every rank applies the same schedules and retires the same micro-batches in
// the same order, so all hold the same request state at every iteration.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/status.h"
#include "graph/program.h"
#include "runtime/sequence.h"

namespace shardlm {

// A request as every rank first learns it (the replica's starting state).
struct NewRequest {
  int64_t id = 0;
  std::vector<int32_t> prompt;
  SamplingParams params;  // has_seed is always true: rank 0 draws seeds
};

// What one logit row of a micro-batch is for.
struct LogitRow {
  int64_t seq_id = 0;
  int32_t kind = 0;    // 0: sample the next token; 1: prompt logprob of `target`
  int32_t target = 0;  // kind 1: the token whose log-probability is wanted
  int64_t position = 0;
};

struct ScheduleMsg {
  uint64_t iteration = 0;
  std::vector<NewRequest> new_requests;
  std::vector<int64_t> finished;  // replicas to drop (finished or aborted at rank 0)
  bool has_batch = false;
  uint64_t mb_id = 0;
  graph::StepInput step;
  std::vector<LogitRow> rows;     // one per step.logit_rows entry
};

struct CountMsg {
  uint64_t iteration = 0;
  uint64_t retire = 0;  // micro-batches to retire now, oldest first
};

struct SampledToken {
  int64_t seq_id = 0;
  TokenLogprob token;  // token.token is the sampled id
};

struct PromptLogprob {
  int64_t seq_id = 0;
  int64_t position = 0;  // log p(prompt[position + 1] | prompt[..position])
  double logprob = 0;
};

struct RelayMsg {
  uint64_t mb_id = 0;
  std::vector<SampledToken> tokens;
  std::vector<PromptLogprob> prompt_logprobs;
};

std::string encode(const ScheduleMsg& m);
std::string encode(const CountMsg& m);
std::string encode(const RelayMsg& m);
Expected<ScheduleMsg> decode_schedule(const std::string& s);
Expected<CountMsg> decode_count(const std::string& s);
Expected<RelayMsg> decode_relay(const std::string& s);

}  // namespace shardlm
