// Row movers and the rotary embedding:
//   embedding   thread per (token, 8 columns): copies a table row (zeros for ids
//               outside this vocab shard, as the CPU kernel).
//   rope_qk     thread per (token, head, pair i): angle = f32(pos) · inv_freq[i],
//               sincosf with full range reduction (not the __sinf intrinsic: positions
//               reach 10^5 rad), x' = (a·cos − b·sin, b·cos + a·sin) in f32, one rounding
//               (rope_rotate in common.cuh, shared with the fused decode attention).
//   kv_write    thread per (token, element) of the k and v parts of a packed qkv row
//               into cache slot slot_mapping[t] of the head-major cache
//               [blocks, nkv, block_size, hd] (cache_offset below).
//   rope_kv_write  both in one launch: the rope threads of k heads also store the
//               rotated pair into the cache, then a second grid-stride loop copies v.
//   gather_rows thread per 4-byte (or 2-byte) word of the selected rows.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/cuda_kernels.h"

namespace shardlm::kernels::cuda {
namespace {

using namespace detail;

template <bool kVec>
__global__ void embedding_kernel(const bf16* __restrict__ table, int64_t vocab, int64_t hidden,
                                 const int32_t* __restrict__ ids, int64_t n, bf16* __restrict__ out,
                                 int64_t offset) {
  griddep_wait();
  const int64_t per_row = kVec ? hidden / 8 : hidden;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n * per_row;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t t = i / per_row, c = i % per_row;
    const int64_t row = static_cast<int64_t>(ids[t]) - offset;
    const bool in = row >= 0 && row < vocab;
    if constexpr (kVec) {
      Bf16x8 v{};
      if (in) v = *reinterpret_cast<const Bf16x8*>(table + row * hidden + c * 8);
      *reinterpret_cast<Bf16x8*>(out + t * hidden + c * 8) = v;
    } else {
      out[t * hidden + c] = in ? table[row * hidden + c] : __float2bfloat16(0.0f);
    }
  }
}

__global__ void rope_kernel(bf16* qkv, int64_t row_stride, const int32_t* __restrict__ positions, int64_t ntok,
                            int64_t nheads, int64_t half, const float* __restrict__ inv_freq) {
  griddep_wait();
  const int64_t per_tok = nheads * half;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < ntok * per_tok;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t t = i / per_tok, r = i % per_tok;
    const int64_t h = r / half, d = r % half;
    bf16* v = qkv + t * row_stride + h * 2 * half;  // q heads then k heads, each head_dim = 2·half
    bf16 x0, x1;
    rope_rotate(__bfloat162float(v[d]), __bfloat162float(v[d + half]), positions[t], inv_freq[d], &x0, &x1);
    v[d] = x0;
    v[d + half] = x1;
  }
}

// Element offset of kv head g of cache slot `slot` (block·bs + offset) in the
// head-major cache [blocks, nkv, bs, hd].
__device__ __forceinline__ int64_t cache_offset(int64_t slot, int64_t g, int64_t nkv, int64_t bs, int64_t hd) {
  return ((slot / bs * nkv + g) * bs + slot % bs) * hd;
}

__global__ void rope_kv_write_kernel(bf16* qkv, int64_t row_stride, const int32_t* __restrict__ positions,
                                     const int32_t* __restrict__ slots, int64_t ntok, int64_t nq, int64_t nkv,
                                     int64_t half, int64_t bs, const float* __restrict__ inv_freq,
                                     bf16* __restrict__ kc, bf16* __restrict__ vc) {
  griddep_wait();
  const int64_t per_tok = (nq + nkv) * half, hd = 2 * half, kv_width = nkv * hd;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < ntok * per_tok; i += stride) {
    const int64_t t = i / per_tok, r = i % per_tok;
    const int64_t h = r / half, d = r % half;
    bf16* v = qkv + t * row_stride + h * hd;  // q heads then k heads
    bf16 x0, x1;
    rope_rotate(__bfloat162float(v[d]), __bfloat162float(v[d + half]), positions[t], inv_freq[d], &x0, &x1);
    v[d] = x0;
    v[d + half] = x1;
    if (h >= nq) {
      const int64_t slot = slots[t];
      if (slot >= 0) {
        bf16* dst = kc + cache_offset(slot, h - nq, nkv, bs, hd);
        dst[d] = x0;
        dst[d + half] = x1;
      }
    }
  }
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < ntok * kv_width; i += stride) {
    const int64_t t = i / kv_width, e = i % kv_width;
    const int64_t slot = slots[t];
    if (slot >= 0) vc[cache_offset(slot, e / hd, nkv, bs, hd) + e % hd] = qkv[t * row_stride + (nq + nkv) * hd + e];
  }
}

__global__ void kv_write_kernel(const bf16* __restrict__ qkv, int64_t row_stride, int64_t k_off, int64_t v_off,
                                bf16* __restrict__ kc, bf16* __restrict__ vc, const int32_t* __restrict__ slots,
                                int64_t ntok, int64_t nkv, int64_t hd, int64_t bs) {
  griddep_wait();
  const int64_t width = nkv * hd;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < ntok * width;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t t = i / width, e = i % width;
    const int64_t slot = slots[t];
    if (slot < 0) continue;
    const int64_t at = cache_offset(slot, e / hd, nkv, bs, hd) + e % hd;
    kc[at] = qkv[t * row_stride + k_off + e];
    vc[at] = qkv[t * row_stride + v_off + e];
  }
}

template <typename W>
__global__ void gather_kernel(const W* __restrict__ in, W* __restrict__ out, const int32_t* __restrict__ rows,
                              int64_t n, int64_t words) {
  griddep_wait();
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n * words;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / words, c = i % words;
    out[r * words + c] = in[static_cast<int64_t>(rows[r]) * words + c];
  }
}

}  // namespace

cudaError_t embedding(const bf16* table, int64_t vocab, int64_t hidden, const int32_t* ids, int64_t n, bf16* out,
                      int64_t vocab_offset, cudaStream_t s) {
  if (n <= 0) return cudaSuccess;
  const bool vec = hidden % 8 == 0 && (reinterpret_cast<uintptr_t>(table) & 15) == 0 &&
                   (reinterpret_cast<uintptr_t>(out) & 15) == 0;
  if (vec)
    {
    cudaError_t _e = launch_k(embedding_kernel<true>, grid_for(n * hidden / 8, 256), 256, 0, s, table, vocab, hidden, ids, n, out,
                                                                         vocab_offset);
    if (_e != cudaSuccess) return _e;
  }
  else
    {
    cudaError_t _e = launch_k(embedding_kernel<false>, grid_for(n * hidden, 256), 256, 0, s, table, vocab, hidden, ids, n, out,
                                                                      vocab_offset);
    if (_e != cudaSuccess) return _e;
  }
  return cudaGetLastError();
}

cudaError_t rope_qk(bf16* qkv, int64_t row_stride, const int32_t* positions, int64_t ntok, int64_t nq,
                    int64_t nkv, int64_t head_dim, const float* inv_freq, cudaStream_t s) {
  if (ntok <= 0) return cudaSuccess;
  if (head_dim % 2 != 0) return cudaErrorInvalidValue;
  const int64_t half = head_dim / 2;
  {
    cudaError_t _e = launch_k(rope_kernel, grid_for(ntok * (nq + nkv) * half, 256), 256, 0, s, qkv, row_stride, positions, ntok, nq + nkv,
                                                                      half, inv_freq);
    if (_e != cudaSuccess) return _e;
  }
  return cudaGetLastError();
}

cudaError_t rope_kv_write(bf16* qkv, int64_t row_stride, const int32_t* positions, const int32_t* slot_mapping,
                          int64_t ntok, int64_t nq, int64_t nkv, int64_t head_dim, int64_t block_size,
                          const float* inv_freq, bf16* k_cache, bf16* v_cache, cudaStream_t s) {
  if (ntok <= 0) return cudaSuccess;
  if (head_dim % 2 != 0 || block_size <= 0) return cudaErrorInvalidValue;
  const int64_t half = head_dim / 2;
  return launch_k(rope_kv_write_kernel, grid_for(ntok * (nq + nkv) * half, 256), 256, 0, s, qkv, row_stride, positions,
                  slot_mapping, ntok, nq, nkv, half, block_size, inv_freq, k_cache, v_cache);
}

cudaError_t kv_write(const bf16* qkv, int64_t row_stride, int64_t k_offset, int64_t v_offset, bf16* k_cache,
                     bf16* v_cache, const int32_t* slot_mapping, int64_t ntok, int64_t nkv, int64_t hd,
                     int64_t block_size, cudaStream_t s) {
  if (ntok <= 0) return cudaSuccess;
  if (block_size <= 0) return cudaErrorInvalidValue;
  const int64_t width = nkv * hd;
  {
    cudaError_t _e = launch_k(kv_write_kernel, grid_for(ntok * width, 256), 256, 0, s, qkv, row_stride, k_offset, v_offset, k_cache, v_cache,
                                                              slot_mapping, ntok, nkv, hd, block_size);
    if (_e != cudaSuccess) return _e;
  }
  return cudaGetLastError();
}

cudaError_t gather_rows(const void* in, void* out, const int32_t* rows, int64_t n, int64_t row_bytes,
                        cudaStream_t s) {
  if (n <= 0) return cudaSuccess;
  if (row_bytes % 4 == 0)
    {
    cudaError_t _e = launch_k(gather_kernel<uint32_t>, grid_for(n * row_bytes / 4, 256), 256, 0, s, 
        static_cast<const uint32_t*>(in), static_cast<uint32_t*>(out), rows, n, row_bytes / 4);
    if (_e != cudaSuccess) return _e;
  }
  else if (row_bytes % 2 == 0)
    {
    cudaError_t _e = launch_k(gather_kernel<uint16_t>, grid_for(n * row_bytes / 2, 256), 256, 0, s, 
        static_cast<const uint16_t*>(in), static_cast<uint16_t*>(out), rows, n, row_bytes / 2);
    if (_e != cudaSuccess) return _e;
  }
  else
    return cudaErrorInvalidValue;
  return cudaGetLastError();
}

}  // namespace shardlm::kernels::cuda
