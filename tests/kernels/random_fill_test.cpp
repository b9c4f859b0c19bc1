// The counter-hash random fill (dummy weights): a block of a tensor holds the
// numbers of the same rows/columns of the whole tensor, whatever the split,
// every value is a bf16 number in [-scale, scale], and the seed matters.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/cpu/cpu_kernels.h"
#include "tensor/dtype.h"

namespace k = shardlm::kernels::cpu;

TEST(RandomFill, BlocksAreSlicesOfTheWholeTensor) {
  const int64_t R = 7, C = 13;  // odd sizes
  const uint64_t seed = 12345;
  std::vector<float> full(R * C);
  k::fill_random_block(full.data(), 0, R, C, C, 0, 0, seed, 0.5f);
  // Column split 13 = 5 + 8 (row-parallel shards), stacked under a 2-row offset.
  std::vector<float> left(4 * 5, -9.0f), right(R * 8);
  k::fill_random_block(left.data(), 2, 2, 5, C, 3, 0, seed, 0.5f);  // rows 3..4, columns 0..4
  k::fill_random_block(right.data(), 0, R, 8, C, 0, 5, seed, 0.5f);
  for (int64_t r = 0; r < 2; ++r)
    for (int64_t c = 0; c < 5; ++c) EXPECT_EQ(left[(2 + r) * 5 + c], full[(3 + r) * C + c]);
  for (int64_t r = 0; r < 2 * 5; ++r) EXPECT_EQ(left[r], -9.0f);  // rows before dst_row untouched
  for (int64_t r = 0; r < R; ++r)
    for (int64_t c = 0; c < 8; ++c) EXPECT_EQ(right[r * 8 + c], full[r * C + 5 + c]);
}

TEST(RandomFill, ValuesAreBf16InRangeAndDependOnTheSeed) {
  std::vector<float> a(1000), b(1000);
  k::fill_random_block(a.data(), 0, 1000, 1, 1, 0, 0, 1, 0.25f);
  k::fill_random_block(b.data(), 0, 1000, 1, 1, 0, 0, 2, 0.25f);
  double sum = 0;
  int same = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_LE(std::fabs(a[i]), 0.25f);
    EXPECT_EQ(shardlm::bf16_to_f32(shardlm::f32_to_bf16(a[i])), a[i]);
    EXPECT_EQ(a[i], k::random_weight_value(1, i, 0.25f));
    sum += a[i];
    same += a[i] == b[i];
  }
  EXPECT_LT(std::fabs(sum / a.size()), 0.03);  // mean ≈ 0 (σ of the mean ≈ 0.0046)
  EXPECT_LT(same, 20);
  // splitmix64 of 0 is its published first output.
  EXPECT_EQ(k::splitmix64(0), 0xe220a8397b1dcdafull);
}
