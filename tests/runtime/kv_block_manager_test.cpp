#include "runtime/kv_block_manager.h"

#include <gtest/gtest.h>

#include <set>

namespace shardlm {
namespace {

TEST(KvBlockManager, FreshPoolIsEmpty) {
  KvBlockManager m(8, 4);
  EXPECT_EQ(m.num_blocks(), 8);
  EXPECT_EQ(m.block_size(), 4);
  EXPECT_EQ(m.num_free_blocks(), 8);
  EXPECT_DOUBLE_EQ(m.usage(), 0.0);
  EXPECT_FALSE(m.has(1));
  EXPECT_TRUE(m.block_table(1).empty());
  EXPECT_EQ(m.capacity(1), 0);
}

TEST(KvBlockManager, BlocksNeededRoundsUp) {
  KvBlockManager m(8, 4);
  EXPECT_EQ(m.blocks_needed(1, 0), 0);
  EXPECT_EQ(m.blocks_needed(1, 1), 1);
  EXPECT_EQ(m.blocks_needed(1, 4), 1);
  EXPECT_EQ(m.blocks_needed(1, 5), 2);
  ASSERT_TRUE(m.ensure_capacity(1, 5));
  EXPECT_EQ(m.blocks_needed(1, 8), 0);
  EXPECT_EQ(m.blocks_needed(1, 9), 1);
  EXPECT_EQ(m.blocks_needed(1, 3), 0);  // never negative
}

TEST(KvBlockManager, AllocateAppendFreeUsage) {
  KvBlockManager m(8, 4);
  ASSERT_TRUE(m.ensure_capacity(1, 3));
  EXPECT_TRUE(m.has(1));
  EXPECT_EQ(m.block_table(1).size(), 1u);
  EXPECT_EQ(m.num_free_blocks(), 7);
  EXPECT_DOUBLE_EQ(m.usage(), 1.0 / 8);

  // Appending within the block allocates nothing; crossing it appends one.
  ASSERT_TRUE(m.ensure_capacity(1, 4));
  EXPECT_EQ(m.block_table(1).size(), 1u);
  const int32_t first = m.block_table(1)[0];
  ASSERT_TRUE(m.ensure_capacity(1, 5));
  ASSERT_EQ(m.block_table(1).size(), 2u);
  EXPECT_EQ(m.block_table(1)[0], first);  // existing blocks keep their place
  EXPECT_EQ(m.capacity(1), 8);

  ASSERT_TRUE(m.ensure_capacity(2, 16));
  EXPECT_EQ(m.block_table(2).size(), 4u);
  EXPECT_EQ(m.num_free_blocks(), 2);
  EXPECT_DOUBLE_EQ(m.usage(), 6.0 / 8);
  EXPECT_EQ(m.num_tables(), 2);

  m.free(1);
  EXPECT_FALSE(m.has(1));
  EXPECT_EQ(m.num_free_blocks(), 4);
  m.free(1);  // no-op
  EXPECT_EQ(m.num_free_blocks(), 4);
  m.free(2);
  EXPECT_EQ(m.num_free_blocks(), 8);
  EXPECT_DOUBLE_EQ(m.usage(), 0.0);
  EXPECT_EQ(m.num_tables(), 0);
}

TEST(KvBlockManager, NoBlockIsHandedOutTwice) {
  KvBlockManager m(10, 2);
  std::set<int32_t> seen;
  for (int64_t s = 0; s < 5; ++s) {
    ASSERT_TRUE(m.ensure_capacity(s, 4));
    for (int32_t b : m.block_table(s)) {
      EXPECT_GE(b, 0);
      EXPECT_LT(b, 10);
      EXPECT_TRUE(seen.insert(b).second) << "block " << b << " in two tables";
    }
  }
  EXPECT_EQ(m.num_free_blocks(), 0);
  EXPECT_FALSE(m.ensure_capacity(99, 1));
}

TEST(KvBlockManager, SlotComputation) {
  KvBlockManager m(6, 4);
  ASSERT_TRUE(m.ensure_capacity(7, 4));   // takes one block
  ASSERT_TRUE(m.ensure_capacity(8, 4));   // another, so seq 9's blocks are not 0..
  ASSERT_TRUE(m.ensure_capacity(9, 10));  // three blocks
  const auto& t = m.block_table(9);
  ASSERT_EQ(t.size(), 3u);
  for (int64_t pos = 0; pos < 12; ++pos) {
    EXPECT_EQ(m.slot(9, pos), t[pos / 4] * 4 + pos % 4) << pos;
  }
  EXPECT_EQ(m.slot(9, 12), -1);  // beyond its blocks
  EXPECT_EQ(m.slot(9, -1), -1);
  EXPECT_EQ(m.slot(42, 0), -1);  // unknown sequence
  // Slots of different sequences never collide.
  std::set<int32_t> slots;
  for (int64_t s : {7, 8, 9}) {
    for (int64_t pos = 0; pos < m.capacity(s); ++pos) EXPECT_TRUE(slots.insert(m.slot(s, pos)).second);
  }
}

TEST(KvBlockManager, FailedEnsureCapacityChangesNothing) {
  KvBlockManager m(4, 4);
  ASSERT_TRUE(m.ensure_capacity(1, 8));
  const auto before = m.block_table(1);
  EXPECT_FALSE(m.ensure_capacity(1, 17));  // needs 3 more, 2 free
  EXPECT_EQ(m.block_table(1), before);
  EXPECT_EQ(m.num_free_blocks(), 2);
  EXPECT_FALSE(m.ensure_capacity(2, 12));  // new sequence, needs 3
  EXPECT_FALSE(m.has(2));
  EXPECT_EQ(m.num_free_blocks(), 2);
  EXPECT_TRUE(m.ensure_capacity(2, 8));    // exactly the rest
  EXPECT_EQ(m.num_free_blocks(), 0);
  EXPECT_TRUE(m.ensure_capacity(2, 8));    // already held: no-op success
}

TEST(KvBlockManager, AllBlocksReturnAfterChurn) {
  KvBlockManager m(16, 3);
  uint64_t x = 12345;
  auto next = [&]() { x = x * 6364136223846793005ull + 1442695040888963407ull; return x >> 33; };
  std::vector<int64_t> live;
  for (int iter = 0; iter < 2000; ++iter) {
    const int64_t s = static_cast<int64_t>(next() % 8);
    if (next() % 3 == 0) {
      m.free(s);
    } else {
      const int64_t want = m.capacity(s) + static_cast<int64_t>(next() % 7);
      const int64_t free_before = m.num_free_blocks();
      const auto table_before = m.block_table(s);
      if (!m.ensure_capacity(s, want)) {
        EXPECT_EQ(m.num_free_blocks(), free_before);
        EXPECT_EQ(m.block_table(s), table_before);
      } else {
        EXPECT_GE(m.capacity(s), want);
      }
    }
    int64_t used = 0;
    std::set<int32_t> all;
    for (int64_t q = 0; q < 8; ++q) {
      used += static_cast<int64_t>(m.block_table(q).size());
      for (int32_t b : m.block_table(q)) ASSERT_TRUE(all.insert(b).second);
    }
    ASSERT_EQ(used + m.num_free_blocks(), m.num_blocks());
  }
  for (int64_t q = 0; q < 8; ++q) m.free(q);
  EXPECT_EQ(m.num_free_blocks(), 16);
}

}  // namespace
}  // namespace shardlm
