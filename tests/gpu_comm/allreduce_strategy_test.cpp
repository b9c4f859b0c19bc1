// The all-reduce strategy choice (pure CPU): small → one-shot, medium →
// two-shot, above the table or the Lamport capacity → NCCL; forcing an
// algorithm still never overflows the workspace.
#include <gtest/gtest.h>

#include "comm/allreduce_strategy.h"
#include "comm/allreduce_strategy_table.h"

namespace shardlm {
namespace {

TEST(AllReduceStrategy, FollowsTheTableAndTheCapacity) {
  const size_t cap = 64u << 20;
  const auto& row = kAllReduceStrategyTable[0];
  ASSERT_EQ(row.world, 2);
  EXPECT_EQ(pick_allreduce(2, 4096, cap), AllReduceAlgo::kOneShot);
  EXPECT_EQ(pick_allreduce(2, row.one_shot_max_bytes, cap), AllReduceAlgo::kOneShot);
  // World 2 (measured): two-shot never wins, so past one-shot comes NCCL.
  EXPECT_EQ(row.one_shot_max_bytes, row.two_shot_max_bytes);
  EXPECT_EQ(pick_allreduce(2, row.one_shot_max_bytes + 16, cap), AllReduceAlgo::kNccl);
  // World 8 (provisional) has a two-shot band.
  const auto& row8 = kAllReduceStrategyTable[2];
  ASSERT_EQ(row8.world, 8);
  EXPECT_EQ(pick_allreduce(8, row8.one_shot_max_bytes + 16, cap), AllReduceAlgo::kTwoShot);
  EXPECT_EQ(pick_allreduce(8, row8.two_shot_max_bytes + 16, cap), AllReduceAlgo::kNccl);
  EXPECT_EQ(pick_allreduce(2, 4096, 0), AllReduceAlgo::kNccl);            // no workspace
  EXPECT_EQ(pick_allreduce(2, 2 << 20, 1 << 20), AllReduceAlgo::kNccl);   // over capacity
  EXPECT_EQ(pick_allreduce(2, 1 << 20, 1 << 20), pick_allreduce(2, 1 << 20, cap));  // exactly fits
  EXPECT_EQ(pick_allreduce(2, 100, cap, AllReduceAlgo::kTwoShot), AllReduceAlgo::kTwoShot);
  EXPECT_EQ(pick_allreduce(2, 2 << 20, 1 << 20, AllReduceAlgo::kOneShot), AllReduceAlgo::kNccl);
  EXPECT_EQ(pick_allreduce(3, 4096, cap), AllReduceAlgo::kOneShot);  // between rows: next larger world's row
  EXPECT_EQ(pick_allreduce(64, 1 << 20, cap), AllReduceAlgo::kTwoShot);
}

TEST(AllReduceStrategy, ParsesNames) {
  EXPECT_EQ(parse_allreduce_algo("oneshot"), AllReduceAlgo::kOneShot);
  EXPECT_EQ(parse_allreduce_algo("lamport-twoshot"), AllReduceAlgo::kTwoShot);
  EXPECT_EQ(parse_allreduce_algo("nccl"), AllReduceAlgo::kNccl);
  EXPECT_FALSE(parse_allreduce_algo("ring").has_value());
}

}  // namespace
}  // namespace shardlm
