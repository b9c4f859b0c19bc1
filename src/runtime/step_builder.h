// Turns a scheduler decision into the backend's StepInput: token ids,
// positions, cache slots, per-sequence query ranges, context lengths, block
// tables and the rows whose logits are needed (the last row of every chunk
// that samples; every prompt row of sequences that want prompt logprobs).
#pragma once

#include <functional>
#include <vector>

#include "graph/program.h"
#include "runtime/dist_messages.h"
#include "runtime/kv_block_manager.h"
#include "runtime/scheduler.h"

namespace shardlm {

// `wants_prompt_logprobs(seq)` may be empty (no sequence wants them).
void build_step_input(const SchedulerOutput& out, const KvBlockManager& blocks, graph::StepInput* in,
                      std::vector<LogitRow>* rows,
                      const std::function<bool(const Sequence&)>& wants_prompt_logprobs = {});

}  // namespace shardlm
