// Row normalisation and elementwise kernels, bf16 in/out with f32 arithmetic,
// rounding where HF's bf16 modules round (so results sit within one bf16 ulp
// of HF's bf16 forward and of the f32 CPU reference up to bf16 rounding):
//   rmsnorm       one block per row: Σx² in f32 (block reduction), r = rsqrt(mean + eps),
//                 y = bf16(w · bf16(x · r)); 16-byte accesses when cols % 8 == 0.
//   add_rmsnorm   the same block first stores residual = bf16(residual + x), then
//                 normalises the stored (rounded) residual, as the unfused pair does.
//   Rows of ≤ 8192 (the decode case): each thread keeps its ≤ 4 vectors and
//   their weights in registers across the block reduction, so the second pass
//   re-reads nothing (one dependent L2 round trip less per norm: two norms a
//   layer at batch 1); the same sums in the same order as the looping path.
//   Launched programmatically behind a gemv (add_rmsnorm's `programmatic`),
//   that path loads the residual and the weight before waiting for the gemv
//   and only x after it.
//   head_rmsnorm  one warp per (token, head) of the packed qkv rows.
//   silu_mul      grid-stride; silu in f32, rounded to bf16, times up, rounded.
//   add, converts, fills: grid-stride loops.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/kernel_timeline.cuh"
#include "kernels/cuda/norm_row.cuh"

namespace shardlm::kernels::cuda {
namespace {

using namespace detail;

constexpr int kNormThreads = 256;  // 8 warps: a 4096-wide row is 2 vectors of 8 per thread

// kRegVecs > 0: the row (≤ kRegVecs · 8 · blockDim columns, cols % 8 == 0)
// stays in registers between the two passes.
// pre_wait (kRegVecs with kAdd, launched programmatically behind a kernel
// that writes neither the residual nor w): those are loaded before waiting
// for the previous kernel, x after.
// Blocks from `rows` on (kRegVecs only) prefetch pf into L2 after the wait
// (before it the previous gemv still streams its own weights).
template <bool kVec, bool kAdd, int kRegVecs = 0>
__global__ void rmsnorm_kernel(const bf16* __restrict__ x, bf16* __restrict__ residual,
                               const bf16* __restrict__ w, bf16* y, int64_t cols, float eps, bool pre_wait,
                               int64_t rows, L2Prefetch pf, bool trigger_early) {
  if (trigger_early) griddep_trigger();  // add_rmsnorm's trigger_early (cuda_kernels.h)
  if (kRegVecs > 0 && blockIdx.x >= rows) {
    griddep_wait();
    if (threadIdx.x < 32)
      l2_prefetch_part(pf.ptr, pf.rows, pf.stride, pf.bytes_per_row, blockIdx.x - rows, gridDim.x - rows);
    return;
  }
  SHARDLM_TL_BEGIN();
  constexpr bool kTl = kAdd && kRegVecs > 0;  // the decode step's add+RMSNorm is the one stamped
  if (kTl && threadIdx.x == 0) SHARDLM_TL_STAMP(kTlNorm, blockIdx.x, 0);
  if (kRegVecs == 0 || !kAdd || !pre_wait) griddep_wait();
  const int64_t row = blockIdx.x;
  const bf16* xr = x + row * cols;
  bf16* rr = kAdd ? residual + row * cols : nullptr;
  if constexpr (kRegVecs > 0) {
    NormRow<kAdd, kRegVecs> nr;
    nr.load_weight_residual(w, rr, cols);
    if (kAdd && pre_wait) griddep_wait();
    if (kTl && threadIdx.x == 0) SHARDLM_TL_STAMP(kTlNorm, blockIdx.x, 1);
    nr.template finish<false>(xr, rr, y + row * cols, cols, eps);
    if (kTl && threadIdx.x == 0) SHARDLM_TL_STAMP(kTlNorm, blockIdx.x, 2);
    return;
  }
  // The values normalised: x, or the updated residual (rounded to bf16 first).
  const bf16* src = kAdd ? rr : xr;
  float ss = 0.0f;
  if constexpr (kVec) {
    for (int64_t c = threadIdx.x * 8; c < cols; c += blockDim.x * 8) {
      float v[8];
      load8(xr + c, v);
      if constexpr (kAdd) {
        float r[8];
        load8(rr + c, r);
#pragma unroll
        for (int i = 0; i < 8; ++i) v[i] = round_bf16(r[i] + v[i]);
        store8(rr + c, v);
      }
#pragma unroll
      for (int i = 0; i < 8; ++i) ss += v[i] * v[i];
    }
  } else {
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
      float v = __bfloat162float(xr[c]);
      if constexpr (kAdd) {
        v = round_bf16(__bfloat162float(rr[c]) + v);
        rr[c] = __float2bfloat16(v);
      }
      ss += v * v;
    }
  }
  // Each thread re-reads only the elements it wrote itself, so no barrier is
  // needed between the residual store and the second pass beyond block_sum's.
  const float total = block_sum(ss);
  const float r = rsqrtf(total / static_cast<float>(cols) + eps);
  bf16* yr = y + row * cols;
  if constexpr (kVec) {
    for (int64_t c = threadIdx.x * 8; c < cols; c += blockDim.x * 8) {
      float v[8], g[8];
      load8(src + c, v);
      load8(w + c, g);
#pragma unroll
      for (int i = 0; i < 8; ++i) v[i] = g[i] * round_bf16(v[i] * r);
      store8(yr + c, v);
    }
  } else {
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
      const float v = __bfloat162float(src[c]);
      yr[c] = __float2bfloat16(__bfloat162float(w[c]) * round_bf16(v * r));
    }
  }
}

__global__ void head_rmsnorm_kernel(bf16* qkv, int64_t row_stride, int64_t nq, int64_t nkv, int64_t hd,
                                    const bf16* __restrict__ wq, const bf16* __restrict__ wk, float eps) {
  griddep_wait();
  const int64_t t = blockIdx.x;
  const int64_t head = static_cast<int64_t>(blockIdx.y) * (blockDim.x / 32) + (threadIdx.x >> 5);
  if (head >= nq + nkv) return;
  const int lane = threadIdx.x & 31;
  bf16* v = qkv + t * row_stride + head * hd;  // k heads follow the q heads directly
  const bf16* w = head < nq ? wq : wk;
  float ss = 0.0f;
  for (int64_t i = lane; i < hd; i += 32) {
    const float a = __bfloat162float(v[i]);
    ss += a * a;
  }
  const float r = rsqrtf(warp_sum(ss) / static_cast<float>(hd) + eps);
  for (int64_t i = lane; i < hd; i += 32)
    v[i] = __float2bfloat16(__bfloat162float(w[i]) * round_bf16(__bfloat162float(v[i]) * r));
}

__global__ void add_kernel(const bf16* a, const bf16* b, bf16* y, int64_t n) {
  griddep_wait();
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    y[i] = __float2bfloat16(__bfloat162float(a[i]) + __bfloat162float(b[i]));
}

template <bool kVec>
__global__ void silu_mul_kernel(const bf16* __restrict__ gu, bf16* __restrict__ out, int64_t rows,
                                int64_t inter) {
  griddep_wait();
  const int64_t per_row = kVec ? inter / 8 : inter;
  const int64_t n = rows * per_row;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / per_row, c = i % per_row;
    const bf16* g = gu + r * 2 * inter;
    if constexpr (kVec) {
      float a[8], b[8];
      load8(g + c * 8, a);
      load8(g + inter + c * 8, b);
#pragma unroll
      for (int k = 0; k < 8; ++k) a[k] = silu_times(a[k], b[k]);
      store8(out + r * inter + c * 8, a);
    } else {
      out[r * inter + c] = __float2bfloat16(silu_times(__bfloat162float(g[c]), __bfloat162float(g[inter + c])));
    }
  }
}

__global__ void f32_to_bf16_kernel(const float* in, bf16* out, int64_t n) {
  griddep_wait();
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    out[i] = __float2bfloat16(in[i]);
}

__global__ void bf16_to_f32_kernel(const bf16* in, float* out, int64_t n) {
  griddep_wait();
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    out[i] = __bfloat162float(in[i]);
}

__global__ void fill_random_kernel(bf16* p, int64_t n, uint64_t seed, float scale) {
  griddep_wait();
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    p[i] = __float2bfloat16((2.0f * uniform01(mix64(seed ^ mix64(static_cast<uint64_t>(i)))) - 1.0f) * scale);
}

// The random number of element (row0 + r, col0 + c) of a [·, full_cols] tensor,
// written to dst[(dst_row + r) · cols + c]: a shard gets the same numbers as the
// slice of the full tensor made by fill_random_kernel.
__global__ void fill_random_block_kernel(bf16* dst, int64_t dst_row, int64_t rows, int64_t cols, int64_t full_cols,
                                         int64_t row0, int64_t col0, uint64_t seed, float scale) {
  griddep_wait();
  const int64_t n = rows * cols;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / cols, c = i % cols;
    const uint64_t full = static_cast<uint64_t>((row0 + r) * full_cols + col0 + c);
    dst[(dst_row + r) * cols + c] = __float2bfloat16((2.0f * uniform01(mix64(seed ^ mix64(full))) - 1.0f) * scale);
  }
}

__global__ void fill_kernel(bf16* p, int64_t n, float value) {
  griddep_wait();
  const bf16 v = __float2bfloat16(value);
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    p[i] = v;
}

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

template <bool kAdd>
cudaError_t launch_norm(const bf16* x, bf16* residual, const bf16* w, bf16* y, int64_t rows, int64_t cols,
                        float eps, bool programmatic, L2Prefetch pf, cudaStream_t s, bool trigger_early = false) {
  if (rows <= 0) return cudaSuccess;
  if (cols <= 0 || rows > 0x7fffffff - kL2PrefetchBlocks) return cudaErrorInvalidValue;
  const bool vec = cols % 8 == 0 && aligned16(x) && aligned16(w) && aligned16(y) && (!kAdd || aligned16(residual));
  const dim3 grid(static_cast<unsigned>(rows));
  cudaError_t e;
  if (vec && cols <= static_cast<int64_t>(kNormRowRegVecs) * 8 * kNormThreads) {
    // Only this path loads before its wait (and prefetches); the others are launched as usual.
    const dim3 grid_pf(static_cast<unsigned>(rows + (pf.valid() ? kL2PrefetchBlocks : 0)));
    e = launch_k_as(programmatic || programmatic_launch_flag(), rmsnorm_kernel<true, kAdd, kNormRowRegVecs>, grid_pf,
                    kNormThreads, 0, s, x, residual, w, y, cols, eps, programmatic, rows,
                    pf.valid() ? pf : L2Prefetch{}, trigger_early);
  } else if (vec) {
    e = launch_k(rmsnorm_kernel<true, kAdd>, grid, kNormThreads, 0, s, x, residual, w, y, cols, eps, false, rows,
                 L2Prefetch{}, trigger_early);
  } else {
    e = launch_k(rmsnorm_kernel<false, kAdd>, grid, kNormThreads, 0, s, x, residual, w, y, cols, eps, false, rows,
                 L2Prefetch{}, trigger_early);
  }
  return e != cudaSuccess ? e : cudaGetLastError();
}

}  // namespace

void set_programmatic_launch(bool on) { detail::programmatic_launch_flag() = on; }

cudaError_t rmsnorm(const bf16* x, const bf16* w, bf16* y, int64_t rows, int64_t cols, float eps, cudaStream_t s) {
  return launch_norm<false>(x, nullptr, w, y, rows, cols, eps, false, {}, s);
}

cudaError_t add_rmsnorm(const bf16* x, bf16* residual, const bf16* w, bf16* y, int64_t rows, int64_t cols,
                        float eps, cudaStream_t s, bool programmatic, L2Prefetch prefetch, bool trigger_early) {
  return launch_norm<true>(x, residual, w, y, rows, cols, eps, programmatic, prefetch, s, trigger_early);
}

cudaError_t head_rmsnorm(bf16* qkv, int64_t row_stride, int64_t ntok, int64_t nq, int64_t nkv, int64_t hd,
                         const bf16* wq, const bf16* wk, float eps, cudaStream_t s) {
  if (ntok <= 0) return cudaSuccess;
  constexpr int kWarps = 4;
  const dim3 grid(static_cast<unsigned>(ntok), static_cast<unsigned>((nq + nkv + kWarps - 1) / kWarps));
  {
    cudaError_t _e = launch_k(head_rmsnorm_kernel, grid, kWarps * 32, 0, s, qkv, row_stride, nq, nkv, hd, wq, wk, eps);
    if (_e != cudaSuccess) return _e;
  }
  return cudaGetLastError();
}

cudaError_t add(const bf16* a, const bf16* b, bf16* y, int64_t n, cudaStream_t s) {
  if (n <= 0) return cudaSuccess;
  {
    cudaError_t _e = launch_k(add_kernel, grid_for(n, 256), 256, 0, s, a, b, y, n);
    if (_e != cudaSuccess) return _e;
  }
  return cudaGetLastError();
}

cudaError_t silu_mul(const bf16* gu, bf16* out, int64_t rows, int64_t inter, cudaStream_t s) {
  if (rows <= 0) return cudaSuccess;
  if (inter % 8 == 0 && aligned16(gu) && aligned16(out))
    {
    cudaError_t _e = launch_k(silu_mul_kernel<true>, grid_for(rows * inter / 8, 256), 256, 0, s, gu, out, rows, inter);
    if (_e != cudaSuccess) return _e;
  }
  else
    {
    cudaError_t _e = launch_k(silu_mul_kernel<false>, grid_for(rows * inter, 256), 256, 0, s, gu, out, rows, inter);
    if (_e != cudaSuccess) return _e;
  }
  return cudaGetLastError();
}

cudaError_t f32_to_bf16(const float* in, bf16* out, int64_t n, cudaStream_t s) {
  if (n <= 0) return cudaSuccess;
  {
    cudaError_t _e = launch_k(f32_to_bf16_kernel, grid_for(n, 256), 256, 0, s, in, out, n);
    if (_e != cudaSuccess) return _e;
  }
  return cudaGetLastError();
}

cudaError_t bf16_to_f32(const bf16* in, float* out, int64_t n, cudaStream_t s) {
  if (n <= 0) return cudaSuccess;
  {
    cudaError_t _e = launch_k(bf16_to_f32_kernel, grid_for(n, 256), 256, 0, s, in, out, n);
    if (_e != cudaSuccess) return _e;
  }
  return cudaGetLastError();
}

cudaError_t fill_random_bf16(bf16* p, int64_t n, uint64_t seed, float scale, cudaStream_t s) {
  if (n <= 0) return cudaSuccess;
  {
    cudaError_t _e = launch_k(fill_random_kernel, grid_for(n, 256), 256, 0, s, p, n, seed, scale);
    if (_e != cudaSuccess) return _e;
  }
  return cudaGetLastError();
}

cudaError_t fill_random_bf16_block(bf16* dst, int64_t dst_row, int64_t rows, int64_t cols, int64_t full_cols,
                                   int64_t row0, int64_t col0, uint64_t seed, float scale, cudaStream_t s) {
  if (rows <= 0 || cols <= 0) return cudaSuccess;
  {
    cudaError_t _e = launch_k(fill_random_block_kernel, grid_for(rows * cols, 256), 256, 0, s, dst, dst_row, rows,
                              cols, full_cols, row0, col0, seed, scale);
    if (_e != cudaSuccess) return _e;
  }
  return cudaGetLastError();
}

cudaError_t fill_bf16(bf16* p, int64_t n, float value, cudaStream_t s) {
  if (n <= 0) return cudaSuccess;
  {
    cudaError_t _e = launch_k(fill_kernel, grid_for(n, 256), 256, 0, s, p, n, value);
    if (_e != cudaSuccess) return _e;
  }
  return cudaGetLastError();
}

}  // namespace shardlm::kernels::cuda
