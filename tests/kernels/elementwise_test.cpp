// embedding, add, silu_mul and softmax against double references.
#include <cmath>
#include <limits>
#include <vector>

#include "kernels/cpu/cpu_kernels.h"
#include "kernel_test_util.h"

namespace shardlm::kernels::cpu {
namespace {

using testing::expect_close;
using testing::random_vec;

TEST(Embedding, CopiesRows) {
  const int64_t vocab = 37, hidden = 131;
  auto table = random_vec(vocab * hidden, 1);
  const std::vector<int32_t> ids = {0, 36, 5, 5, 17};
  std::vector<float> out(ids.size() * hidden, NAN);
  embedding(table.data(), vocab, hidden, ids.data(), ids.size(), out.data());
  for (size_t i = 0; i < ids.size(); ++i)
    for (int64_t c = 0; c < hidden; ++c)
      ASSERT_EQ(out[i * hidden + c], table[ids[i] * hidden + c]) << "token " << i;
}

// Two vocab-parallel shards of a 10-row table: each returns its own rows and
// zeros elsewhere, and the shards sum to the full lookup.
TEST(Embedding, VocabShardsSumToFullLookup) {
  const int64_t vocab = 10, hidden = 7, shard = 5;
  auto table = random_vec(vocab * hidden, 2);
  const std::vector<int32_t> ids = {0, 4, 5, 9, 3, 7};
  const int64_t n = ids.size();
  std::vector<float> full(n * hidden), s0(n * hidden, NAN), s1(n * hidden, NAN);
  embedding(table.data(), vocab, hidden, ids.data(), n, full.data());
  embedding(table.data(), shard, hidden, ids.data(), n, s0.data(), 0);
  embedding(table.data() + shard * hidden, shard, hidden, ids.data(), n, s1.data(), shard);
  for (int64_t i = 0; i < n; ++i) {
    const bool in0 = ids[i] < shard;
    for (int64_t c = 0; c < hidden; ++c) {
      EXPECT_EQ(s0[i * hidden + c], in0 ? full[i * hidden + c] : 0.0f);
      EXPECT_EQ(s1[i * hidden + c], in0 ? 0.0f : full[i * hidden + c]);
      EXPECT_EQ(s0[i * hidden + c] + s1[i * hidden + c], full[i * hidden + c]);
    }
  }
  // Ids below the offset or past the end of the whole vocabulary: zeros too.
  const std::vector<int32_t> odd = {-1, 10, 1000};
  std::vector<float> z(odd.size() * hidden, NAN);
  embedding(table.data() + shard * hidden, shard, hidden, odd.data(), odd.size(), z.data(), shard);
  for (float v : z) EXPECT_EQ(v, 0.0f);
}

TEST(Add, ElementwiseAndAliasing) {
  for (int64_t n : {1, 7, 131, 100003}) {
    auto a = random_vec(n, 3);
    auto b = random_vec(n, 4);
    std::vector<float> y(n);
    add(a.data(), b.data(), y.data(), n);
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(y[i], a[i] + b[i]);
    auto a2 = a;
    add(a2.data(), b.data(), a2.data(), n);  // y aliases a
    EXPECT_EQ(a2, y);
    auto b2 = b;
    add(a.data(), b2.data(), b2.data(), n);  // y aliases b
    EXPECT_EQ(b2, y);
  }
}

TEST(SiluMul, MatchesReference) {
  for (auto [rows, inter] : {std::pair<int64_t, int64_t>{1, 96}, {3, 7}, {5, 131}, {64, 1000}}) {
    auto gu = random_vec(rows * 2 * inter, 5 + inter, -8.0f, 8.0f);
    std::vector<float> out(rows * inter, NAN);
    silu_mul(gu.data(), out.data(), rows, inter);
    std::vector<double> ref(rows * inter);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t i = 0; i < inter; ++i) {
        const double g = gu[r * 2 * inter + i], u = gu[r * 2 * inter + inter + i];
        ref[r * inter + i] = g * u / (1.0 + std::exp(-g));
      }
    expect_close(out, ref, 1e-6, 1e-6, "silu_mul");
  }
}

TEST(SiluMul, LargeMagnitudes) {
  // exp(-g) overflows for very negative g: silu → -0, never NaN.
  const std::vector<float> gu = {-200.0f, 200.0f, -1e30f, 0.5f, 1.0f, 1.0f, 1.0f, 1.0f};
  std::vector<float> out(4);
  silu_mul(gu.data(), out.data(), 1, 4);
  EXPECT_EQ(out[0], 0.0f);
  EXPECT_EQ(out[1], 200.0f);
  EXPECT_EQ(out[2], 0.0f);
  EXPECT_NEAR(out[3], 0.5 / (1 + std::exp(-0.5)), 1e-7);
}

TEST(Softmax, MatchesReference) {
  for (auto [rows, cols] : {std::pair<int64_t, int64_t>{1, 1}, {1, 96}, {3, 7}, {5, 131}, {2, 32000}}) {
    // Wide range of logits: a naive exp() without the max subtraction overflows.
    auto x = random_vec(rows * cols, 6 + cols, -100.0f, 100.0f);
    x[0] = 500.0f;
    std::vector<double> ref(rows * cols);
    for (int64_t r = 0; r < rows; ++r) {
      double mx = -INFINITY, sum = 0;
      for (int64_t c = 0; c < cols; ++c) mx = std::max(mx, double(x[r * cols + c]));
      for (int64_t c = 0; c < cols; ++c) sum += std::exp(x[r * cols + c] - mx);
      for (int64_t c = 0; c < cols; ++c) ref[r * cols + c] = std::exp(x[r * cols + c] - mx) / sum;
    }
    softmax(x.data(), rows, cols);
    expect_close(x, ref, 1e-7, 1e-5, "softmax");
  }
}

TEST(Softmax, MaskedEntries) {
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<float> x = {1.0f, -inf, 2.0f, -inf};
  softmax(x.data(), 1, 4);
  EXPECT_EQ(x[1], 0.0f);
  EXPECT_EQ(x[3], 0.0f);
  EXPECT_NEAR(x[0], 1 / (1 + std::exp(1.0)), 1e-7);
  EXPECT_NEAR(x[0] + x[2], 1.0, 1e-7);
}

}  // namespace
}  // namespace shardlm::kernels::cpu
