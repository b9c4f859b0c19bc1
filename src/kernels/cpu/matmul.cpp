// y[m, n] = x[m, k] · w[n, k]ᵀ (+ bias): batch-invariant by construction.
//
// Every output y[i, j] is one detail::dot-ordered reduction of row i of x with
// row j of w (vec.h: 8 lanes over k, combined in a fixed order), computed by
// the same code whatever m is and whatever the other rows hold: rows are never
// blocked together, and the split of the n columns into tiles depends on n
// only. Threads take contiguous ranges of column tiles, so threading changes
// who computes y[i, j], never how.
//
// Speed comes from the column tile (4 rows of w share each load of x; wider
// tiles or tiles of several rows measured no faster with SSE2's 16 registers)
// and from cache blocking: a block of x rows small enough for L2 meets every
// column tile of the thread's range, each tile's 4 w rows staying in L1.
#include <algorithm>

#include "base/thread_pool.h"
#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/vec.h"

namespace shardlm::kernels::cpu {
namespace {

using detail::f32x4;
using detail::load4;

constexpr int64_t kTileCols = 4;            // columns of y per micro-kernel call
constexpr int64_t kBlockBytes = 256 << 10;  // x rows kept hot in L2 per block

// y[0, c] = dot(x, w[c, :]) (+ bias[c]) for c < C; w rows are k apart.
template <int C>
void tile(const float* x, const float* w, const float* bias, float* y, int64_t k) {
  f32x4 lo[C], hi[C];
#pragma GCC unroll 4
  for (int c = 0; c < C; ++c) lo[c] = hi[c] = f32x4{0, 0, 0, 0};
  int64_t kk = 0;
  for (; kk + detail::kLanes <= k; kk += detail::kLanes) {
    const f32x4 x0 = load4(x + kk), x1 = load4(x + kk + 4);
#pragma GCC unroll 4
    for (int c = 0; c < C; ++c) {
      lo[c] += x0 * load4(w + c * k + kk);
      hi[c] += x1 * load4(w + c * k + kk + 4);
    }
  }
  for (int c = 0; c < C; ++c) {
    detail::accumulate_tail(x, w + c * k, kk, k, lo[c], hi[c]);
    float v = detail::reduce_lanes(lo[c], hi[c]);
    y[c] = bias ? v + bias[c] : v;
  }
}

// Columns [j, j + cols) of one row, cols <= kTileCols.
void row_tile(const float* x, const float* w, const float* bias, float* y, int64_t k,
              int64_t cols) {
  switch (cols) {
    case 4: tile<4>(x, w, bias, y, k); break;
    case 3: tile<3>(x, w, bias, y, k); break;
    case 2: tile<2>(x, w, bias, y, k); break;
    default: tile<1>(x, w, bias, y, k); break;
  }
}

}  // namespace

void matmul(const float* x, const float* w, const float* bias, float* y, int64_t m, int64_t n,
            int64_t k) {
  if (m <= 0 || n <= 0) return;
  const int64_t tiles = (n + kTileCols - 1) / kTileCols;
  const int64_t block_rows = std::max<int64_t>(1, kBlockBytes / (std::max<int64_t>(k, 1) * 4));
  // Enough work per thread to be worth a hand-off (~64k multiply-adds).
  const int64_t min_tiles = std::max<int64_t>(1, (64 << 10) / (kTileCols * m * k + 1));
  parallel_for(
      tiles,
      [&](int64_t t0, int64_t t1) {
        for (int64_t i0 = 0; i0 < m; i0 += block_rows) {
          const int64_t i1 = std::min(m, i0 + block_rows);
          for (int64_t t = t0; t < t1; ++t) {
            const int64_t j = t * kTileCols;
            const int64_t cols = std::min(kTileCols, n - j);
            for (int64_t i = i0; i < i1; ++i)
              row_tile(x + i * k, w + j * k, bias ? bias + j : nullptr, y + i * n + j, k, cols);
          }
        }
      },
      min_tiles);
}

}  // namespace shardlm::kernels::cpu
