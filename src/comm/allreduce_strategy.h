// Picks the all-reduce algorithm for a message (DESIGN §3.3): Lamport one-shot
// for small messages, two-shot for medium, NCCL above the Lamport workspace or
// the measured crossover (allreduce_strategy_table.h). Pure CPU logic, so it is
// unit-tested without a GPU. SHARDLM_ALLREDUCE=oneshot|twoshot|nccl forces one
// (benchmarks, debugging); a forced Lamport algorithm still falls back to NCCL
// when the message does not fit the workspace.
#pragma once

#include <cstddef>
#include <optional>
#include <string>

namespace shardlm {

enum class AllReduceAlgo { kOneShot, kTwoShot, kNccl };

const char* allreduce_algo_name(AllReduceAlgo a);
std::optional<AllReduceAlgo> parse_allreduce_algo(const std::string& s);

// `bytes`: the message on one rank; `lamport_capacity`: the workspace slot
// (0 = no Lamport workspace). World sizes between table rows use the row of the
// next larger world (more ranks: earlier crossovers); beyond the last, its row.
AllReduceAlgo pick_allreduce(int world, size_t bytes, size_t lamport_capacity,
                             std::optional<AllReduceAlgo> forced = std::nullopt);

}  // namespace shardlm
