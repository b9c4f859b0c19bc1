// One row of RMSNorm / add+RMSNorm by one block, the row held in registers
// between its two passes: what the add_rmsnorm kernel (norm_elementwise.cu)
// does for rows of ≤ kRegVecs · 8 · blockDim columns, and what the last block
// of a gemv followed by its norm does (gemv.cu, gemv_add_rmsnorm). One
// definition, so that both sum in the same order and round alike (bitwise).
//
// Column c of thread t in vector i: c = (i · blockDim + t) · 8; Σx² per thread
// over i ascending, then block_sum. residual = bf16(residual + x) is stored
// and normalised as stored; y = bf16(w · bf16(x · rsqrt(mean + eps))).
// Needs cols % 8 == 0 and 16-byte aligned rows (load8 / store8).
#pragma once

#include "kernels/cuda/common.cuh"

namespace shardlm::kernels::cuda::detail {

// Vectors of 8 a thread holds in registers: rows ≤ 8192 at 256 threads (the
// decode rows of every model we serve), both users' limit.
constexpr int kNormRowRegVecs = 4;

template <bool kAdd, int kRegVecs>
struct NormRow {
  float v[kRegVecs][8];                    // x, then (with kAdd) the new residual, then y
  float g[kRegVecs][8];                    // the norm weight
  float rs[kAdd ? kRegVecs : 1][8];        // the residual before the add

  __device__ __forceinline__ static int64_t col(int i) {
    return (static_cast<int64_t>(i) * blockDim.x + threadIdx.x) * 8;
  }

  // The operands no earlier kernel of the step writes late: a kernel launched
  // programmatically may load them before its griddepcontrol.wait.
  __device__ __forceinline__ void load_weight_residual(const bf16* w, const bf16* rr, int64_t cols) {
#pragma unroll
    for (int i = 0; i < kRegVecs; ++i) {
      const int64_t c = col(i);
      if (c < cols) {
        load8(w + c, g[i]);  // the weight's load overlaps the reduction
        if constexpr (kAdd) load8(rr + c, rs[i]);
      }
    }
  }

  // x, the add, Σx², the output. kXFromL2: x was written by other blocks of
  // the running kernel (read through L2, not L1).
  template <bool kXFromL2>
  __device__ __forceinline__ void finish(const bf16* xr, bf16* rr, bf16* yr, int64_t cols, float eps) {
    float ss = 0.0f;
#pragma unroll
    for (int i = 0; i < kRegVecs; ++i) {
      const int64_t c = col(i);
      if (c < cols) {
        if constexpr (kXFromL2) load8_l2(xr + c, v[i]);
        else load8(xr + c, v[i]);
        if constexpr (kAdd) {
#pragma unroll
          for (int e = 0; e < 8; ++e) v[i][e] = round_bf16(rs[i][e] + v[i][e]);
          store8(rr + c, v[i]);
        }
#pragma unroll
        for (int e = 0; e < 8; ++e) ss += v[i][e] * v[i][e];
      }
    }
    const float r = rsqrtf(block_sum(ss) / static_cast<float>(cols) + eps);
#pragma unroll
    for (int i = 0; i < kRegVecs; ++i) {
      const int64_t c = col(i);
      if (c < cols) {
#pragma unroll
        for (int e = 0; e < 8; ++e) v[i][e] = g[i][e] * round_bf16(v[i][e] * r);
        store8(yr + c, v[i]);
      }
    }
  }
};

}  // namespace shardlm::kernels::cuda::detail
