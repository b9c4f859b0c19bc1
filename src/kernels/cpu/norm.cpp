// RMSNorm in the order HF's LlamaRMSNorm uses (f32 throughout):
//   var = mean(x²);  h = x * (1 / sqrt(var + eps));  y = w * h
// The squares are rounded to f32 as HF's x.pow(2) does, then summed in double
// in index order (deterministic, and at least as accurate as torch's f32 sum).
#include <algorithm>
#include <cmath>

#include "base/thread_pool.h"
#include "kernels/cpu/cpu_kernels.h"

namespace shardlm::kernels::cpu {
namespace {

// 1 / sqrt(mean(x²) + eps) for one row, in f32 like torch.rsqrt.
float inv_rms(const float* x, int64_t cols, float eps) {
  double ss = 0.0;
  for (int64_t c = 0; c < cols; ++c) ss += static_cast<double>(x[c] * x[c]);
  const float var = static_cast<float>(ss / static_cast<double>(cols));
  return 1.0f / std::sqrt(var + eps);
}

void normalize_row(const float* x, const float* w, float* y, int64_t cols, float eps) {
  const float r = inv_rms(x, cols, eps);
  for (int64_t c = 0; c < cols; ++c) y[c] = w[c] * (x[c] * r);
}

int64_t min_rows(int64_t cols) { return std::max<int64_t>(1, (16 << 10) / std::max<int64_t>(cols, 1)); }

}  // namespace

void rmsnorm(const float* x, const float* w, float* y, int64_t rows, int64_t cols, float eps) {
  parallel_for(
      rows,
      [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) normalize_row(x + r * cols, w, y + r * cols, cols, eps);
      },
      min_rows(cols));
}

void add_rmsnorm(const float* x, float* residual, const float* w, float* y, int64_t rows,
                 int64_t cols, float eps) {
  parallel_for(
      rows,
      [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) {
          float* res = residual + r * cols;
          const float* xr = x + r * cols;
          for (int64_t c = 0; c < cols; ++c) res[c] = res[c] + xr[c];
          normalize_row(res, w, y + r * cols, cols, eps);
        }
      },
      min_rows(cols));
}

}  // namespace shardlm::kernels::cpu
