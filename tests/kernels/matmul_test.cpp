// matmul against a double reference, and its batch invariance (bitwise).
#include <cmath>
#include <tuple>
#include <vector>

#include "kernels/cpu/cpu_kernels.h"
#include "kernel_test_util.h"

namespace shardlm::kernels::cpu {
namespace {

using testing::bitwise_equal;
using testing::expect_close;
using testing::random_vec;

std::vector<double> reference(const std::vector<float>& x, const std::vector<float>& w,
                              const float* bias, int64_t m, int64_t n, int64_t k) {
  std::vector<double> y(m * n);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double s = bias ? bias[j] : 0.0;
      for (int64_t p = 0; p < k; ++p) s += double(x[i * k + p]) * double(w[j * k + p]);
      y[i * n + j] = s;
    }
  return y;
}

class MatmulShapes : public ::testing::TestWithParam<std::tuple<int64_t, int64_t, int64_t>> {};

TEST_P(MatmulShapes, MatchesDoubleReference) {
  auto [m, n, k] = GetParam();
  auto x = random_vec(m * k, 1 + m);
  auto w = random_vec(n * k, 2 + n);
  auto b = random_vec(n, 3 + k);
  // f32 dot products of length k with terms ~1: error grows like sqrt(k)·eps.
  const double atol = 2e-6 * std::sqrt(double(k)) + 1e-6;
  for (bool with_bias : {false, true}) {
    std::vector<float> y(m * n, NAN);
    matmul(x.data(), w.data(), with_bias ? b.data() : nullptr, y.data(), m, n, k);
    expect_close(y, reference(x, w, with_bias ? b.data() : nullptr, m, n, k), atol, 1e-5,
                 with_bias ? "with bias" : "no bias");
  }
}

INSTANTIATE_TEST_SUITE_P(
    OddShapes, MatmulShapes,
    ::testing::Values(std::make_tuple(1, 1, 1), std::make_tuple(1, 7, 96),
                      std::make_tuple(3, 131, 40), std::make_tuple(5, 96, 131),
                      std::make_tuple(17, 64, 7), std::make_tuple(2, 9, 8),
                      std::make_tuple(33, 130, 257), std::make_tuple(1, 1000, 512),
                      std::make_tuple(64, 1030, 1024)));

// Row i of a batch of m rows equals row i computed alone and row i placed among
// different neighbours, bit for bit.
TEST(Matmul, BatchInvariantBitwise) {
  for (auto [n, k] : {std::pair<int64_t, int64_t>{131, 96}, {96, 131}, {1030, 257}, {7, 4096}}) {
    const int64_t m = 37;
    auto x = random_vec(m * k, 10 + k);
    auto w = random_vec(n * k, 11 + n);
    auto b = random_vec(n, 12);
    std::vector<float> y(m * n);
    matmul(x.data(), w.data(), b.data(), y.data(), m, n, k);

    for (int64_t i : {int64_t{0}, int64_t{5}, m - 1}) {
      std::vector<float> alone(n);
      matmul(x.data() + i * k, w.data(), b.data(), alone.data(), 1, n, k);
      EXPECT_TRUE(bitwise_equal(alone.data(), y.data() + i * n, n)) << "alone, row " << i << " n " << n;

      // Row i as row 2 of a 3-row batch with other random rows.
      auto other = random_vec(3 * k, 100 + i);
      std::copy(x.begin() + i * k, x.begin() + (i + 1) * k, other.begin() + 2 * k);
      std::vector<float> y3(3 * n);
      matmul(other.data(), w.data(), b.data(), y3.data(), 3, n, k);
      EXPECT_TRUE(bitwise_equal(y3.data() + 2 * n, y.data() + i * n, n)) << "mixed, row " << i;
    }
  }
}

}  // namespace
}  // namespace shardlm::kernels::cpu
