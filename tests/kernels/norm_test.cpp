// rmsnorm and add_rmsnorm against a double reference (HF's formula).
#include <cmath>
#include <vector>

#include "kernels/cpu/cpu_kernels.h"
#include "kernel_test_util.h"

namespace shardlm::kernels::cpu {
namespace {

using testing::expect_close;
using testing::random_vec;

std::vector<double> rms_reference(const std::vector<float>& x, const std::vector<float>& w,
                                  int64_t rows, int64_t cols, double eps) {
  std::vector<double> y(rows * cols);
  for (int64_t r = 0; r < rows; ++r) {
    double ss = 0;
    for (int64_t c = 0; c < cols; ++c) ss += double(x[r * cols + c]) * x[r * cols + c];
    const double scale = 1.0 / std::sqrt(ss / cols + eps);
    for (int64_t c = 0; c < cols; ++c) y[r * cols + c] = double(w[c]) * x[r * cols + c] * scale;
  }
  return y;
}

struct NormShape {
  int64_t rows, cols;
};

class NormShapes : public ::testing::TestWithParam<NormShape> {};

TEST_P(NormShapes, RmsnormMatchesReference) {
  auto [rows, cols] = GetParam();
  auto x = random_vec(rows * cols, 1 + cols, -3.0f, 3.0f);
  auto w = random_vec(cols, 2 + cols, 0.5f, 1.5f);
  for (float eps : {1e-6f, 1e-5f}) {
    std::vector<float> y(rows * cols, NAN);
    rmsnorm(x.data(), w.data(), y.data(), rows, cols, eps);
    expect_close(y, rms_reference(x, w, rows, cols, eps), 1e-6, 2e-6, "rmsnorm");
  }
  // In place (y aliases x).
  std::vector<float> inplace = x;
  rmsnorm(inplace.data(), w.data(), inplace.data(), rows, cols, 1e-6f);
  expect_close(inplace, rms_reference(x, w, rows, cols, 1e-6f), 1e-6, 2e-6, "rmsnorm in place");
}

TEST_P(NormShapes, AddRmsnormMatchesReference) {
  auto [rows, cols] = GetParam();
  auto x = random_vec(rows * cols, 3 + cols, -2.0f, 2.0f);
  auto res0 = random_vec(rows * cols, 4 + cols, -2.0f, 2.0f);
  auto w = random_vec(cols, 5 + cols, 0.5f, 1.5f);
  std::vector<float> sum(rows * cols);
  std::vector<double> sum_ref(rows * cols);
  for (size_t i = 0; i < sum.size(); ++i) {
    sum[i] = res0[i] + x[i];  // exactly what the kernel must store into residual
    sum_ref[i] = sum[i];
  }
  auto residual = res0;
  std::vector<float> y(rows * cols, NAN);
  add_rmsnorm(x.data(), residual.data(), w.data(), y.data(), rows, cols, 1e-5f);
  expect_close(residual, sum_ref, 0, 0, "residual");
  expect_close(y, rms_reference(sum, w, rows, cols, 1e-5), 1e-6, 2e-6, "add_rmsnorm");

  // y aliasing x (the sublayer output is consumed).
  residual = res0;
  auto xy = x;
  add_rmsnorm(xy.data(), residual.data(), w.data(), xy.data(), rows, cols, 1e-5f);
  expect_close(xy, rms_reference(sum, w, rows, cols, 1e-5), 1e-6, 2e-6, "add_rmsnorm y=x");
}

INSTANTIATE_TEST_SUITE_P(OddShapes, NormShapes,
                         ::testing::Values(NormShape{1, 96}, NormShape{3, 7}, NormShape{5, 131},
                                           NormShape{1, 1}, NormShape{40, 4096},
                                           NormShape{257, 64}));

TEST(Rmsnorm, RowsAreIndependentBitwise) {
  const int64_t rows = 9, cols = 131;
  auto x = random_vec(rows * cols, 7);
  auto w = random_vec(cols, 8);
  std::vector<float> y(rows * cols), one(cols);
  rmsnorm(x.data(), w.data(), y.data(), rows, cols, 1e-6f);
  rmsnorm(x.data() + 4 * cols, w.data(), one.data(), 1, cols, 1e-6f);
  EXPECT_TRUE(testing::bitwise_equal(one.data(), y.data() + 4 * cols, cols));
}

}  // namespace
}  // namespace shardlm::kernels::cpu
