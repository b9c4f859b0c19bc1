// Row-wise softmax, in place: exp(x - max) / Σ exp(x - max). The exponentials
// are f32; their sum is taken in double in index order, then rounded to f32.
#include <algorithm>
#include <cmath>

#include "base/thread_pool.h"
#include "kernels/cpu/cpu_kernels.h"

namespace shardlm::kernels::cpu {

void softmax(float* x, int64_t rows, int64_t cols) {
  parallel_for(
      rows,
      [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) {
          float* row = x + r * cols;
          float mx = -INFINITY;
          for (int64_t c = 0; c < cols; ++c) mx = std::max(mx, row[c]);
          if (mx == -INFINITY) mx = 0.0f;  // all -inf: 0 / 0 = NaN, as torch gives
          double sum = 0.0;
          for (int64_t c = 0; c < cols; ++c) {
            row[c] = std::exp(row[c] - mx);
            sum += row[c];
          }
          const float s = static_cast<float>(sum);
          for (int64_t c = 0; c < cols; ++c) row[c] = row[c] / s;
        }
      },
      std::max<int64_t>(1, (8 << 10) / std::max<int64_t>(cols, 1)));
}

}  // namespace shardlm::kernels::cpu
