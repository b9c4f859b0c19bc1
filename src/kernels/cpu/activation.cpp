// Elementwise kernels: silu(gate)·up (the gated MLP) and add.
#include <algorithm>
#include <cmath>

#include "base/thread_pool.h"
#include "kernels/cpu/cpu_kernels.h"

namespace shardlm::kernels::cpu {

// silu(g) = g / (1 + exp(-g)), in f32 as torch computes it.
void silu_mul(const float* gate_up, float* out, int64_t rows, int64_t inter) {
  parallel_for(
      rows,
      [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) {
          const float* gate = gate_up + r * 2 * inter;
          const float* up = gate + inter;
          float* o = out + r * inter;
          for (int64_t i = 0; i < inter; ++i) {
            const float g = gate[i];
            o[i] = (g / (1.0f + std::exp(-g))) * up[i];
          }
        }
      },
      std::max<int64_t>(1, (8 << 10) / std::max<int64_t>(inter, 1)));
}

void add(const float* a, const float* b, float* y, int64_t n) {
  parallel_for(
      n,
      [&](int64_t i0, int64_t i1) {
        for (int64_t i = i0; i < i1; ++i) y[i] = a[i] + b[i];
      },
      1 << 16);
}

}  // namespace shardlm::kernels::cpu
