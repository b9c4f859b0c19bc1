#include "runtime/step_builder.h"

#include <algorithm>

namespace shardlm {

void build_step_input(const SchedulerOutput& out, const KvBlockManager& blocks, graph::StepInput* in,
                      std::vector<LogitRow>* rows,
                      const std::function<bool(const Sequence&)>& wants_prompt_logprobs) {
  int64_t max_blocks = 1;
  for (const auto& c : out.chunks)
    max_blocks = std::max<int64_t>(max_blocks, blocks.block_table(c.seq->id).size());
  in->max_blocks_per_seq = max_blocks;
  in->q_start.push_back(0);
  for (const auto& c : out.chunks) {
    const Sequence& s = *c.seq;
    const bool plp = wants_prompt_logprobs && wants_prompt_logprobs(s);
    const int64_t prompt_len = static_cast<int64_t>(s.prompt.size());
    for (int64_t pos = c.start; pos < c.start + c.len; ++pos) {
      const int32_t row = static_cast<int32_t>(in->token_ids.size());
      in->token_ids.push_back(s.token_at(pos));
      in->positions.push_back(static_cast<int32_t>(pos));
      in->slot_mapping.push_back(blocks.slot(s.id, pos));
      if (plp && pos + 1 < prompt_len) {
        in->logit_rows.push_back(row);
        if (rows) rows->push_back(LogitRow{s.id, 1, s.prompt[pos + 1], pos});
      }
    }
    in->q_start.push_back(static_cast<int32_t>(in->token_ids.size()));
    in->ctx_len.push_back(static_cast<int32_t>(c.start + c.len));
    const auto& table = blocks.block_table(s.id);
    for (int64_t j = 0; j < max_blocks; ++j)
      in->block_tables.push_back(j < static_cast<int64_t>(table.size()) ? table[j] : -1);
    if (c.sample) {
      in->logit_rows.push_back(static_cast<int32_t>(in->token_ids.size()) - 1);
      if (rows) rows->push_back(LogitRow{s.id, 0, 0, c.start + c.len - 1});
    }
  }
}

}  // namespace shardlm
