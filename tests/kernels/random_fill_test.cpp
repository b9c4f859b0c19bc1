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

// The counter-based sampler (the CPU reference of the CUDA one).
TEST(CounterSampling, GreedyTopKOneAndTinyTopPAreTheArgmax) {
  std::vector<float> logits = {0.5f, 2.0f, -1.0f, 2.0f, 1.9f, NAN};
  k::CounterSampling g;  // temperature 0
  EXPECT_EQ(k::sample_row_counter(logits.data(), 6, g), 1);  // lowest id of the tie; NaN never wins
  k::CounterSampling t;
  t.temperature = 1.0f;
  t.top_k = 1;
  for (uint64_t s = 0; s < 50; ++s) {
    t.seed = s;
    const int32_t tok = k::sample_row_counter(logits.data(), 5, t);
    EXPECT_TRUE(tok == 1 || tok == 3) << tok;  // both tied at the top are kept
  }
  k::CounterSampling p;
  p.temperature = 1.0f;
  p.top_p = 1e-6f;
  logits[3] = 1.0f;
  for (uint64_t s = 0; s < 50; ++s) {
    p.seed = s;
    EXPECT_EQ(k::sample_row_counter(logits.data(), 5, p), 1);
  }
}

TEST(CounterSampling, DeterministicInSeedAndOffsetAndFollowsTheSoftmax) {
  const std::vector<float> logits = {0.0f, 1.0f, 2.0f, 0.5f};  // softmax ≈ .087 .237 .644 .032 (odd vocab 4)
  k::CounterSampling c;
  c.temperature = 1.0f;
  std::vector<int> counts(4, 0);
  const int n = 20000;
  for (int i = 0; i < n; ++i) {
    c.seed = 99;
    c.offset = static_cast<uint64_t>(i);
    const int32_t a = k::sample_row_counter(logits.data(), 4, c);
    EXPECT_EQ(a, k::sample_row_counter(logits.data(), 4, c));
    ++counts[a];
  }
  double z = 0;
  for (float l : logits) z += std::exp(static_cast<double>(l));
  for (int j = 0; j < 4; ++j) {
    const double want = std::exp(static_cast<double>(logits[j])) / z;
    EXPECT_NEAR(counts[j] / double(n), want, 0.015) << "token " << j;  // ~4.5 σ at n = 20000
  }
}
