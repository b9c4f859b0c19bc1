// See allreduce_strategy.h.
#include "comm/allreduce_strategy.h"

#include "comm/allreduce_strategy_table.h"

namespace shardlm {

const char* allreduce_algo_name(AllReduceAlgo a) {
  switch (a) {
    case AllReduceAlgo::kOneShot: return "lamport-oneshot";
    case AllReduceAlgo::kTwoShot: return "lamport-twoshot";
    case AllReduceAlgo::kNccl: return "nccl";
  }
  return "?";
}

std::optional<AllReduceAlgo> parse_allreduce_algo(const std::string& s) {
  if (s == "oneshot" || s == "lamport-oneshot" || s == "one-shot") return AllReduceAlgo::kOneShot;
  if (s == "twoshot" || s == "lamport-twoshot" || s == "two-shot") return AllReduceAlgo::kTwoShot;
  if (s == "nccl") return AllReduceAlgo::kNccl;
  return std::nullopt;
}

AllReduceAlgo pick_allreduce(int world, size_t bytes, size_t lamport_capacity, std::optional<AllReduceAlgo> forced) {
  if (world <= 1) return AllReduceAlgo::kOneShot;  // a copy; never reaches NCCL
  // Lamport slots hold 16-byte vectors: a message uses ⌈bytes/16⌉·16.
  const bool fits = lamport_capacity > 0 && (bytes + 15) / 16 * 16 <= lamport_capacity;
  if (forced) return (*forced != AllReduceAlgo::kNccl && !fits) ? AllReduceAlgo::kNccl : *forced;
  if (!fits) return AllReduceAlgo::kNccl;
  const AllReduceStrategyRow* row = &kAllReduceStrategyTable[0];
  for (const auto& r : kAllReduceStrategyTable) {
    row = &r;
    if (r.world >= world) break;
  }
  if (bytes <= row->one_shot_max_bytes) return AllReduceAlgo::kOneShot;
  if (bytes <= row->two_shot_max_bytes) return AllReduceAlgo::kTwoShot;
  return AllReduceAlgo::kNccl;
}

}  // namespace shardlm
