// Shared pieces of the tensor-core attention kernels (attention_tc.cu:
// prefill, attention_tc_decode.cu: decode): tile geometry, the swizzled
// shared-memory layout, cp.async / ldmatrix / mma wrappers, the paged K/V
// tile gather and the online-softmax step. Each including file gets its own
// copy (anonymous namespace): the kernels live in one file each.
#pragma once


#include "kernels/cuda/common.cuh"

namespace shardlm::kernels::cuda {
namespace {

using namespace detail;

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kBM = 16 * kWarps;  // query rows per block: one m16 slab per warp
constexpr int kBN = 64;           // keys per shared-memory tile
constexpr float kLog2e = 1.4426950408889634f;

// Element offset of (row, 16-byte chunk) in a [rows][HD] bf16 tile, chunks
// xor-swizzled by row (see the top of attention_tc.cu).
template <int HD>
__device__ __forceinline__ int swz(int row, int chunk) {
  return row * HD + ((chunk ^ (row & 7)) << 3);
}

__device__ __forceinline__ unsigned smem_addr(const void* p) {
  return static_cast<unsigned>(__cvta_generic_to_shared(p));
}

// 16-byte async copy global → shared; valid = false writes 16 zero bytes.
__device__ __forceinline__ void cp_async16(void* dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(dst)), "l"(src),
               "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const bf16* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const bf16* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}

// d[16×8] += a[16×16] · b[16×8]; fragment layouts of the PTX ISA (m16n8k16).
__device__ __forceinline__ void mma_bf16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Two floats → one register of bf16x2 (lo in the low half: the lower k index).
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}

// Keys [kt, kt + kBN) of one sequence's kv head (cache column col0) into the
// shared-memory stage sK/sV through its block table; keys ≥ k_end are zeros.
template <int HD>
__device__ __forceinline__ void gather_kv_tile(bf16* sK, bf16* sV, const bf16* kc, const bf16* vc,
                                               const int32_t* table, int block_size, int bs_shift,
                                               int block_elems, int64_t g, int64_t kt, int64_t k_end) {
  // Thread owns 16-byte chunk c of rows r, r + kThreads / C, …: the chunk and
  // the head's offset inside a block are fixed per thread, so a row costs a
  // shift, one (L1-resident) block-table load and one multiply-add. The
  // decode kernel issues more instructions than it waits (ncu: 6.8 cycles per
  // issued instruction at 10 warps per SM), and a runtime division per row
  // was most of this loop.
  constexpr int C = HD / 8;
  static_assert(kThreads % C == 0, "a thread keeps its chunk column across rows");
  const int c = threadIdx.x % C;
  const int head_off = static_cast<int>(g) * block_size * HD + c * 8;  // < block_elems < 2^31
#pragma unroll
  for (int r = threadIdx.x / C; r < kBN; r += kThreads / C) {
    const int64_t j = kt + r;
    const bool ok = j < k_end;
    int64_t off = 0;
    if (ok) {
      const int jj = static_cast<int>(j);  // positions < 2^31
      const int blk = bs_shift >= 0 ? jj >> bs_shift : jj / block_size;
      const int in_blk = jj - blk * block_size;
      off = static_cast<int64_t>(table[blk]) * block_elems + (head_off + in_blk * HD);
    }
    cp_async16(sK + swz<HD>(r, c), kc + off, ok);
    cp_async16(sV + swz<HD>(r, c), vc + off, ok);
  }
}

// One online-softmax step on this thread's scores of a key tile (MMA
// accumulator layout: rows gr and gr + 8, already masked to −∞ and scaled
// into the log2 domain): row max over the quad, m' = max(m, max s),
// p = 2^(s − m'), l' = l·2^(m − m') + Σp (this thread's columns; the quad sum
// is taken at the end), O ·= 2^(m − m'). sc becomes p.
template <int NT, int HD>
__device__ __forceinline__ void online_softmax_step(float (&sc)[NT][4], float (&m_r)[2], float (&l_r)[2],
                                                    float (&o)[HD / 8][4]) {
  float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
  for (int n = 0; n < NT; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e) mx[e >> 1] = fmaxf(mx[e >> 1], sc[n][e]);
  float alpha[2], mu[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
    mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
    const float m_new = fmaxf(m_r[r], mx[r]);
    mu[r] = m_new == -INFINITY ? 0.0f : m_new;  // a row with nothing visible yet stays at p = 0
    alpha[r] = exp2f(m_r[r] - mu[r]);
    m_r[r] = m_new;
  }
  float psum[2] = {0.0f, 0.0f};
#pragma unroll
  for (int n = 0; n < NT; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      sc[n][e] = exp2f(sc[n][e] - mu[e >> 1]);
      psum[e >> 1] += sc[n][e];
    }
#pragma unroll
  for (int r = 0; r < 2; ++r) l_r[r] = l_r[r] * alpha[r] + psum[r];
#pragma unroll
  for (int d = 0; d < HD / 8; ++d) {
    o[d][0] *= alpha[0];
    o[d][1] *= alpha[0];
    o[d][2] *= alpha[1];
    o[d][3] *= alpha[1];
  }
}

// The gather's view of the cache: log2(block_size) (-1: not a power of two,
// divide instead) and the elements of one block of one layer, which must fit
// in an int (its offset arithmetic is 32-bit inside a block).
bool cache_geometry(int64_t block_size, int64_t nkv, int64_t head_dim, int* bs_shift, int* block_elems) {
  if (block_size <= 0 || nkv <= 0 || block_size * nkv * head_dim > 0x7fffffff) return false;
  *bs_shift = (block_size & (block_size - 1)) == 0 ? __builtin_ctzll(static_cast<unsigned long long>(block_size)) : -1;
  *block_elems = static_cast<int>(block_size * nkv * head_dim);
  return true;
}

}  // namespace
}  // namespace shardlm::kernels::cuda
