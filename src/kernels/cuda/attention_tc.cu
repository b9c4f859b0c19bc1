// Attention on tensor cores over the paged KV cache, two kernels with the
// semantics of cpu::paged_attention (causal, optional sliding window):
//
// PREFILL: the rows of a sequence with many query rows in this step (a whole
// prompt, or a chunk of one against its cached prefix), FlashAttention-2
// schedule:
//
//   grid  = (tile of kBM = 64 query rows of one sequence, query head)
//   block = 4 warps; warp w owns query rows 16w … 16w+15 of the tile (one m16
//           MMA row slab), the whole head_dim.
//   Keys  the tile's visible range [lo(first row), pos(last row)] is walked in
//         tiles of kBN = 64 keys. K and V rows are gathered from the paged
//         cache (block table lookup per key) into shared memory with cp.async,
//         double buffered: tile i+1 is in flight while tile i is computed.
//   Per key tile, per warp (mma.sync m16n8k16, bf16 in, f32 accumulate):
//         S = Q·Kᵀ (16 × 64; Q fragments stay in registers for the whole walk),
//         mask (causal, window, rows past the sequence), online softmax in the
//         log2 domain: m' = max(m, rowmax S·scale·log2e), p = 2^(s − m'),
//         l' = l·2^(m − m') + Σp, O ·= 2^(m − m'); then O += P·V with P
//         rounded to bf16 (the accumulator layout of S is the A-operand layout
//         of the second MMA, so P never leaves registers).
//   Shared memory rows of head_dim bf16 are stored with their 16-byte chunks
//   xor-swizzled by (row mod 8), so ldmatrix reads of 8 rows hit 8 different
//   bank groups (an unswizzled 256-byte row stride would be an 8-way conflict).
//   Output: O / l in bf16, written once; no split-K (a prefill has rows × heads
//   blocks to fill the GPU).
//
// DECODE: the rows of sequences with few query rows (decode steps), GQA
// folded into the MMA rows: one block per (row, kv head, split); the G ≤ 16
// query heads that share the kv head are the rows of one m16 slab, so each K/V
// byte is read once for all of them. The 4 warps split each 64-key tile (16
// keys each) and keep their own (m, l, O); at the end they are merged through
// shared memory (O = Σ_w 2^(m_w − M)·O_w, l likewise). The split-K plan and
// the (acc, m, l) workspace are the SIMT kernel's (attention.cu). Given
// arrival counters, the last block of a (row, kv head) to finish merges the
// splits and no combine kernel follows; without them the caller combines.
// The cache is head-major inside a block ([nkv][block_size][HD]), so a tile's
// keys of one kv head are 64 / block_size contiguous runs (4 KB each at block
// 16, hd 128), not 64 rows of 256 bytes strided by the other heads' rows.
// Decode is bound by KV bytes in flight:
// cp.async double buffering keeps two 32 KB tiles in flight per block (hd 128)
// where the SIMT kernel held one in registers.
// With RoPE fused (decode steps: PagedAttentionParams::rope_inv_freq) the
// block rotates its q heads into shared memory while its first tile is in
// flight, and the block whose keys end at the row's position rotates the new
// key, stores it and the new value to the cache for later steps and writes
// both into its last tile after that tile lands, so no rope_kv_write launch
// (and no ordering on its cache write) precedes the kernel. Launched
// programmatically behind the qkv gemv (PagedAttentionParams::programmatic),
// a block reads the step inputs and requests its first cached tile during
// the gemv's last wave, and waits for the gemv only before reading q: the
// launch gap and two dependent round trips leave the critical path.
//
// head_dim 64 and 128 are compiled (every architecture we serve but the small
// test ones); other head dims stay on the SIMT kernel (attention.cu).
#include "kernels/cuda/attention_tc.h"

#include <atomic>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/kernel_timeline.cuh"

namespace shardlm::kernels::cuda {
namespace {

using namespace detail;

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kBM = 16 * kWarps;  // query rows per block: one m16 slab per warp
constexpr int kBN = 64;           // keys per shared-memory tile
constexpr float kLog2e = 1.4426950408889634f;

struct TcArgs {
  const bf16* q;
  int64_t q_stride;
  const bf16* kc;
  const bf16* vc;
  bf16* out;
  const int32_t* q_start;
  const int32_t* ctx_len;
  const int32_t* block_tables;
  int64_t max_blocks, nq, nkv, window;
  int block_size, num_seqs, min_q;
  int bs_shift;     // log2(block_size), or -1 when it is not a power of two
  int block_elems;  // nkv · block_size · HD: one cache block of one layer (< 2^31)
  float scale_log2;
};

// Element offset of (row, 16-byte chunk) in a [rows][HD] bf16 tile, chunks
// xor-swizzled by row (see the top of the file).
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

template <int HD>
__global__ void __launch_bounds__(kThreads) prefill_tc_kernel(const TcArgs a) {
  griddep_wait();
  constexpr int C = HD / 8;  // 16-byte chunks per row
  extern __shared__ __align__(128) unsigned char smem_raw[];
  bf16* sQ = reinterpret_cast<bf16*>(smem_raw);  // [kBM][HD]
  bf16* sK = sQ + kBM * HD;                       // [2][kBN][HD]
  bf16* sV = sK + 2 * kBN * HD;                   // [2][kBN][HD]

  // This block's (sequence, first row): tiles of kBM rows over the sequences
  // with ≥ min_q rows, in sequence order (the grid is an upper bound).
  __shared__ int sh_seq, sh_r0;
  if (threadIdx.x == 0) {
    int seq = -1, r0 = 0;
    int64_t acc = 0;
    for (int s = 0; s < a.num_seqs; ++s) {
      const int ql = a.q_start[s + 1] - a.q_start[s];
      if (ql < a.min_q) continue;
      const int nt = (ql + kBM - 1) / kBM;
      if (blockIdx.x < acc + nt) {
        seq = s;
        r0 = static_cast<int>(blockIdx.x - acc) * kBM;
        break;
      }
      acc += nt;
    }
    sh_seq = seq;
    sh_r0 = r0;
  }
  __syncthreads();
  const int s = sh_seq;
  if (s < 0) return;
  const int r0 = sh_r0;
  const int h = blockIdx.y;
  const int64_t g = h / (a.nq / a.nkv);
  const int q0 = a.q_start[s];
  const int q_len = a.q_start[s + 1] - q0;
  const int rows = min(kBM, q_len - r0);
  const int64_t pos0 = static_cast<int64_t>(a.ctx_len[s]) - q_len + r0;  // position of the tile's first row
  const int64_t k_hi = pos0 + rows - 1;                                   // last visible key (inclusive)
  const int64_t k_lo = a.window > 0 ? max(static_cast<int64_t>(0), pos0 - a.window + 1) : 0;
  const int n_tiles = static_cast<int>((k_hi - k_lo + kBN) / kBN);
  const int32_t* table = a.block_tables + s * a.max_blocks;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;

  for (int i = tid; i < kBM * C; i += kThreads) {
    const int r = i / C, c = i % C;
    const bool ok = r < rows;
    cp_async16(sQ + swz<HD>(r, c), a.q + static_cast<int64_t>(q0 + r0 + (ok ? r : 0)) * a.q_stride + h * HD + c * 8,
               ok);
  }
  auto load_kv = [&](int tile, int buf) {
    gather_kv_tile<HD>(sK + buf * kBN * HD, sV + buf * kBN * HD, a.kc, a.vc, table, a.block_size, a.bs_shift, a.block_elems, g,
                       k_lo + static_cast<int64_t>(tile) * kBN, k_hi + 1);
  };
  load_kv(0, 0);
  cp_async_commit();

  // This thread's two rows of the warp's slab (MMA accumulator layout):
  // gr and gr + 8; its columns in each 8-wide n tile: 2·tq and 2·tq + 1.
  const int gr = lane >> 2, tq = lane & 3;
  const int wrow = warp * 16 + gr;
  const int64_t pos_r[2] = {wrow < rows ? pos0 + wrow : -1, wrow + 8 < rows ? pos0 + wrow + 8 : -1};
  int64_t lo_r[2];
#pragma unroll
  for (int i = 0; i < 2; ++i) lo_r[i] = a.window > 0 ? pos_r[i] - a.window + 1 : 0;

  uint32_t qf[HD / 16][4];
  float o[HD / 8][4];
#pragma unroll
  for (int d = 0; d < HD / 8; ++d)
#pragma unroll
    for (int e = 0; e < 4; ++e) o[d][e] = 0.0f;
  float m_r[2] = {-INFINITY, -INFINITY}, l_r[2] = {0.0f, 0.0f};

  for (int tile = 0; tile < n_tiles; ++tile) {
    const int buf = tile & 1;
    if (tile + 1 < n_tiles) {
      load_kv(tile + 1, buf ^ 1);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    if (tile == 0) {
#pragma unroll
      for (int ks = 0; ks < HD / 16; ++ks)
        ldmatrix_x4(qf[ks], sQ + swz<HD>(warp * 16 + (lane & 15), 2 * ks + (lane >> 4)));
    }
    const bf16* tK = sK + buf * kBN * HD;
    const bf16* tV = sV + buf * kBN * HD;

    // S = Q·Kᵀ: 8 n tiles of 8 keys.
    float sc[kBN / 8][4];
#pragma unroll
    for (int n = 0; n < kBN / 8; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) sc[n][e] = 0.0f;
#pragma unroll
    for (int np = 0; np < kBN / 16; ++np)
#pragma unroll
      for (int ks = 0; ks < HD / 16; ++ks) {
        uint32_t kb[4];
        ldmatrix_x4(kb, tK + swz<HD>(16 * np + (lane & 7) + ((lane >> 4) << 3), 2 * ks + ((lane >> 3) & 1)));
        mma_bf16(sc[2 * np], qf[ks], kb[0], kb[1]);
        mma_bf16(sc[2 * np + 1], qf[ks], kb[2], kb[3]);
      }

    // Mask (causal, window, rows past the sequence), scale into the log2 domain, online softmax.
    const int64_t kt = k_lo + static_cast<int64_t>(tile) * kBN;
#pragma unroll
    for (int n = 0; n < kBN / 8; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int r = e >> 1;
        const int64_t j = kt + n * 8 + 2 * tq + (e & 1);
        sc[n][e] = j <= pos_r[r] && j >= lo_r[r] ? sc[n][e] * a.scale_log2 : -INFINITY;
      }
    online_softmax_step<kBN / 8, HD>(sc, m_r, l_r, o);

    // O += P·V: 4 k steps of 16 keys; P from the S accumulators.
#pragma unroll
    for (int kk = 0; kk < kBN / 16; ++kk) {
      const uint32_t pa[4] = {pack_bf16(sc[2 * kk][0], sc[2 * kk][1]), pack_bf16(sc[2 * kk][2], sc[2 * kk][3]),
                              pack_bf16(sc[2 * kk + 1][0], sc[2 * kk + 1][1]),
                              pack_bf16(sc[2 * kk + 1][2], sc[2 * kk + 1][3])};
#pragma unroll
      for (int dp = 0; dp < HD / 16; ++dp) {
        uint32_t vb[4];
        ldmatrix_x4_trans(vb, tV + swz<HD>(16 * kk + (lane & 7) + (((lane >> 3) & 1) << 3), 2 * dp + (lane >> 4)));
        mma_bf16(o[2 * dp], pa, vb[0], vb[1]);
        mma_bf16(o[2 * dp + 1], pa, vb[2], vb[3]);
      }
    }
    __syncthreads();  // the next iteration overwrites the other buffer's neighbour
  }

#pragma unroll
  for (int r = 0; r < 2; ++r) {
    l_r[r] += __shfl_xor_sync(0xffffffffu, l_r[r], 1);
    l_r[r] += __shfl_xor_sync(0xffffffffu, l_r[r], 2);
  }
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    if (pos_r[r] < 0) continue;
    const float inv = 1.0f / l_r[r];  // l ≥ 1: the row's own key is always visible
    const int64_t t = q0 + r0 + wrow + 8 * r;
    bf16* dst = a.out + (t * a.nq + h) * HD + 2 * tq;
#pragma unroll
    for (int d = 0; d < HD / 8; ++d)
      *reinterpret_cast<__nv_bfloat162*>(dst + d * 8) =
          __floats2bfloat162_rn(o[d][2 * r] * inv, o[d][2 * r + 1] * inv);
  }
}

// > 48 KB of dynamic shared memory needs an opt-in per kernel and device:
// done once per (kernel, device), not on every launch of a hot-path kernel.
template <auto Kernel>  // the kernel itself, so every kernel has its own flags
cudaError_t allow_dynamic_smem(size_t bytes) {
  static std::atomic<uint64_t> done{0};  // bit d: set on device d
  int dev = 0;
  if (const cudaError_t e = cudaGetDevice(&dev); e != cudaSuccess) return e;
  const uint64_t bit = dev < 64 ? 1ull << dev : 0;
  if (bit && (done.load(std::memory_order_acquire) & bit)) return cudaSuccess;
  const cudaError_t e = cudaFuncSetAttribute(Kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes));
  if (e == cudaSuccess) done.fetch_or(bit, std::memory_order_release);
  return e;
}

struct TcDecodeArgs {
  const bf16* q;
  int64_t q_stride;
  bf16* kc;  // written only by the fused RoPE (the new token's k and v)
  bf16* vc;
  bf16* out;
  const int32_t* token_seq;
  const int32_t* positions;  // [ntok] or null (then derived from q_start and ctx_len)
  const int32_t* q_start;
  const int32_t* ctx_len;
  const int32_t* block_tables;
  int64_t max_blocks, nq, nkv, window, P;
  int block_size, nsplits, skip_q;
  int bs_shift;     // log2(block_size), or -1 when it is not a power of two
  int block_elems;  // nkv · block_size · HD: one cache block of one layer (< 2^31)
  float scale_log2;
  float* ws_acc;  // [ntok, nq, nsplits, hd] (nsplits > 1)
  float* ws_ml;   // [ntok, nq, nsplits, 2]: m (natural log domain), l
  int32_t* counters;  // [ntok, nkv]: splits of (row, kv head) that have written their partials
  const float* inv_freq;  // [HD / 2] or null: RoPE fused (q and the new k/v unrotated in the qkv rows)
  const int32_t* slots;   // [ntok] cache slot of each row's new token (with inv_freq)
  // With inv_freq: launched programmatically behind the qkv gemv, the block
  // gathers its first cached tile before waiting for it (nothing in the step
  // writes those cache rows or the step inputs before this kernel).
  bool pre_wait;
};

constexpr int kDecRows = 16;  // one m16 slab: the query heads of one kv head
// Row stride (floats) of the warps' O in shared memory for their merge. A
// lane (gr, tq) of the MMA accumulator stores row gr, columns 2·tq + 8·d: at
// stride HD every gr hits the same banks (8-way conflicts, ~1 µs of a
// batch-1 step's attention in the kernel timeline); HD + 8 puts the 8 rows
// 8 banks apart, so a warp's 64-bit stores take the two wavefronts they must.
template <int HD>
constexpr int kRedStride = HD + 8;

template <int HD>
__global__ void __launch_bounds__(kThreads) decode_tc_kernel(const TcDecodeArgs a) {
  SHARDLM_TL_BEGIN();
  [[maybe_unused]] const int64_t tl_slot = blockIdx.x + gridDim.x * (blockIdx.y + static_cast<int64_t>(gridDim.y) * blockIdx.z);
  if (threadIdx.x == 0) SHARDLM_TL_STAMP(kTlAttention, tl_slot, 0);
  if (!a.pre_wait) griddep_wait();
  constexpr int C = HD / 8;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  bf16* sQ = reinterpret_cast<bf16*>(smem_raw);  // [kDecRows][HD]
  bf16* sK = sQ + kDecRows * HD;                  // [2][kBN][HD]
  bf16* sV = sK + 2 * kBN * HD;                   // [2][kBN][HD]

  const int64_t t = blockIdx.x, g = blockIdx.y;
  const int split = blockIdx.z;
  const int64_t s = a.token_seq[t];
  int64_t pos;
  if (a.positions && a.skip_q <= 0) {
    pos = a.positions[t];  // loaded beside token_seq: the block table is the second load, not the third
  } else {
    const int q_len = a.q_start[s + 1] - a.q_start[s];
    if (a.skip_q > 0 && q_len >= a.skip_q) return;  // the prefill kernel's row
    pos = static_cast<int64_t>(a.ctx_len[s]) - q_len + (t - a.q_start[s]);
  }
  const int64_t lo = a.window > 0 ? max(static_cast<int64_t>(0), pos - a.window + 1) : 0;
  const int64_t k_begin = lo + split * a.P;
  if (k_begin > pos) return;  // this row needs fewer splits (combine knows)
  const int64_t k_end = min(k_begin + a.P, pos + 1);  // exclusive
  const int G = static_cast<int>(a.nq / a.nkv);
  const int64_t head0 = g * G;
  const int n_tiles = static_cast<int>((k_end - k_begin + kBN - 1) / kBN);
  const int32_t* table = a.block_tables + s * a.max_blocks;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;

  auto load_kv = [&](int tile, int buf) {
    gather_kv_tile<HD>(sK + buf * kBN * HD, sV + buf * kBN * HD, a.kc, a.vc, table, a.block_size, a.bs_shift, a.block_elems, g,
                       k_begin + static_cast<int64_t>(tile) * kBN, k_end);
  };
  // Fused RoPE: this block's rows are decode rows whose q and new k/v are
  // unrotated in the qkv row. The block whose keys end at pos owns the new
  // token: it rotates k, writes k and v to the cache for later steps, and
  // puts them into its last tile itself (the gather read that slot before
  // the write could land). Its new-key thread d < HD/2 holds pair (d, d+HD/2).
  constexpr int kHalf = HD / 2;
  const bf16* qkv_row = a.q + t * a.q_stride;
  const bool own_new = a.inv_freq && k_end == pos + 1;
  bf16 nk0{}, nk1{}, nv0{}, nv1{};
  if (!a.inv_freq) {
    for (int i = tid; i < kDecRows * C; i += kThreads) {
      const int r = i / C, c = i % C;
      const bool ok = r < G;
      cp_async16(sQ + swz<HD>(r, c), qkv_row + (head0 + (ok ? r : 0)) * HD + c * 8, ok);
    }
    load_kv(0, 0);
  } else {
    load_kv(0, 0);  // the cached keys first: their round trip covers the rotation below
    // Before the wait, what the qkv gemv does not write: this thread's angle
    // (its pair index d is the same in every row it rotates: kThreads is a
    // multiple of HD/2) and the new token's cache slot. After it, every load
    // of q and of the new k/v is issued before the first rotation, so the
    // rows cost one L2 round trip (kernel timeline, bench/NOTES.md run 19).
    static_assert(kThreads % kHalf == 0, "a thread rotates the same pair index in every row");
    constexpr int kRotSteps = kDecRows * kHalf / kThreads;
    const int d = tid % kHalf;
    float sn, cs;
    rope_angle(static_cast<int32_t>(pos), a.inv_freq[d], &sn, &cs);
    const bool new_kv = own_new && tid < kHalf;  // then d == tid
    const int32_t slot = new_kv ? a.slots[t] : -1;
    if (a.pre_wait) griddep_wait();  // q and the new k/v are the previous kernel's output
    if (threadIdx.x == 0) SHARDLM_TL_STAMP(kTlAttention, tl_slot, 1);
    bf16 qa[kRotSteps], qb[kRotSteps], ka{}, kb{};
#pragma unroll
    for (int k = 0; k < kRotSteps; ++k) {
      const int r = (tid + k * kThreads) / kHalf;
      if (r < G) {
        const bf16* h = qkv_row + (head0 + r) * HD;
        qa[k] = h[d];
        qb[k] = h[d + kHalf];
      }
    }
    if (new_kv) {
      const bf16* kr = qkv_row + (a.nq + g) * HD;
      const bf16* vr = qkv_row + (a.nq + a.nkv + g) * HD;
      ka = kr[d];
      kb = kr[d + kHalf];
      nv0 = vr[d];
      nv1 = vr[d + kHalf];
    }
#pragma unroll
    for (int k = 0; k < kRotSteps; ++k) {
      const int r = (tid + k * kThreads) / kHalf;
      bf16 x0 = __float2bfloat16(0.0f), x1 = x0;
      if (r < G) rope_apply(__bfloat162float(qa[k]), __bfloat162float(qb[k]), sn, cs, &x0, &x1);
      sQ[swz<HD>(r, d / 8) + d % 8] = x0;
      sQ[swz<HD>(r, (d + kHalf) / 8) + d % 8] = x1;
    }
    if (new_kv) {
      rope_apply(__bfloat162float(ka), __bfloat162float(kb), sn, cs, &nk0, &nk1);
      if (slot >= 0) {
        const int blk = a.bs_shift >= 0 ? slot >> a.bs_shift : slot / a.block_size;
        const int64_t at = static_cast<int64_t>(blk) * a.block_elems +
                           (static_cast<int>(g) * a.block_size + (slot - blk * a.block_size)) * HD;
        a.kc[at + d] = nk0;
        a.kc[at + d + kHalf] = nk1;
        a.vc[at + d] = nv0;
        a.vc[at + d + kHalf] = nv1;
      }
    }
  }
  cp_async_commit();
  if (threadIdx.x == 0) SHARDLM_TL_STAMP(kTlAttention, tl_slot, 2);  // q rotated, the new k/v written

  const int gr = lane >> 2, tq = lane & 3;
  uint32_t qf[HD / 16][4];
  float o[HD / 8][4];
#pragma unroll
  for (int d = 0; d < HD / 8; ++d)
#pragma unroll
    for (int e = 0; e < 4; ++e) o[d][e] = 0.0f;
  float m_r[2] = {-INFINITY, -INFINITY}, l_r[2] = {0.0f, 0.0f};

  for (int tile = 0; tile < n_tiles; ++tile) {
    const int buf = tile & 1;
    if (tile + 1 < n_tiles) {
      load_kv(tile + 1, buf ^ 1);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    if (own_new && tile == n_tiles - 1) {  // the new key is this tile's row pos − its first key
      const int r = static_cast<int>(pos - (k_begin + static_cast<int64_t>(tile) * kBN));
      if (tid < kHalf) {
        bf16* rk = sK + buf * kBN * HD;
        bf16* rv = sV + buf * kBN * HD;
        rk[swz<HD>(r, tid / 8) + tid % 8] = nk0;
        rk[swz<HD>(r, (tid + kHalf) / 8) + tid % 8] = nk1;
        rv[swz<HD>(r, tid / 8) + tid % 8] = nv0;
        rv[swz<HD>(r, (tid + kHalf) / 8) + tid % 8] = nv1;
      }
      __syncthreads();
    }
    if (tile == 0) {
#pragma unroll
      for (int ks = 0; ks < HD / 16; ++ks) ldmatrix_x4(qf[ks], sQ + swz<HD>(lane & 15, 2 * ks + (lane >> 4)));
    }
    const bf16* tK = sK + buf * kBN * HD;
    const bf16* tV = sV + buf * kBN * HD;
    const int key0 = 16 * warp;  // this warp's 16 keys of the tile

    float sc[2][4] = {{0.0f, 0.0f, 0.0f, 0.0f}, {0.0f, 0.0f, 0.0f, 0.0f}};
#pragma unroll
    for (int ks = 0; ks < HD / 16; ++ks) {
      uint32_t kb[4];
      ldmatrix_x4(kb, tK + swz<HD>(key0 + (lane & 7) + ((lane >> 4) << 3), 2 * ks + ((lane >> 3) & 1)));
      mma_bf16(sc[0], qf[ks], kb[0], kb[1]);
      mma_bf16(sc[1], qf[ks], kb[2], kb[3]);
    }
    const int64_t kt = k_begin + static_cast<int64_t>(tile) * kBN + key0;
#pragma unroll
    for (int n = 0; n < 2; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int64_t j = kt + n * 8 + 2 * tq + (e & 1);
        sc[n][e] = j < k_end ? sc[n][e] * a.scale_log2 : -INFINITY;
      }
    online_softmax_step<2, HD>(sc, m_r, l_r, o);  // a warp may see no visible key yet: p = 0
    const uint32_t pa[4] = {pack_bf16(sc[0][0], sc[0][1]), pack_bf16(sc[0][2], sc[0][3]),
                            pack_bf16(sc[1][0], sc[1][1]), pack_bf16(sc[1][2], sc[1][3])};
#pragma unroll
    for (int dp = 0; dp < HD / 16; ++dp) {
      uint32_t vb[4];
      ldmatrix_x4_trans(vb, tV + swz<HD>(key0 + (lane & 7) + (((lane >> 3) & 1) << 3), 2 * dp + (lane >> 4)));
      mma_bf16(o[2 * dp], pa, vb[0], vb[1]);
      mma_bf16(o[2 * dp + 1], pa, vb[2], vb[3]);
    }
    __syncthreads();  // the next iteration overwrites the other buffer
  }

  if (threadIdx.x == 0) SHARDLM_TL_STAMP(kTlAttention, tl_slot, 3);  // every tile computed
  // Merge the 4 warps' (m, l, O) through shared memory (the K/V tiles are done).
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    l_r[r] += __shfl_xor_sync(0xffffffffu, l_r[r], 1);
    l_r[r] += __shfl_xor_sync(0xffffffffu, l_r[r], 2);
  }
  float* red_m = reinterpret_cast<float*>(sK);  // [kWarps][kDecRows]
  float* red_l = red_m + kWarps * kDecRows;     // [kWarps][kDecRows]
  float* red_o = red_l + kWarps * kDecRows;     // [kWarps][kDecRows][kRedStride<HD>]; fits in the K and V tiles
  if (tq == 0) {
    red_m[warp * kDecRows + gr] = m_r[0];
    red_m[warp * kDecRows + gr + 8] = m_r[1];
    red_l[warp * kDecRows + gr] = l_r[0];
    red_l[warp * kDecRows + gr + 8] = l_r[1];
  }
#pragma unroll
  for (int d = 0; d < HD / 8; ++d) {
    float* row0 = red_o + (warp * kDecRows + gr) * kRedStride<HD> + d * 8 + 2 * tq;
    *reinterpret_cast<float2*>(row0) = make_float2(o[d][0], o[d][1]);
    *reinterpret_cast<float2*>(row0 + 8 * kRedStride<HD>) = make_float2(o[d][2], o[d][3]);
  }
  __syncthreads();
  if (threadIdx.x == 0) SHARDLM_TL_STAMP(kTlAttention, tl_slot, 7);  // the warps' (m, l, O) in shared memory
  constexpr float kLn2 = 0.6931471805599453f;
  for (int e = tid; e < G * HD; e += kThreads) {
    const int r = e / HD, d = e % HD;
    float M = -INFINITY;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) M = fmaxf(M, red_m[w * kDecRows + r]);
    float L = 0.0f, O = 0.0f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) {
      const float f = exp2f(red_m[w * kDecRows + r] - M);  // 0 for a warp that saw no key
      L += f * red_l[w * kDecRows + r];
      O += f * red_o[(w * kDecRows + r) * kRedStride<HD> + d];
    }
    const int64_t head = head0 + r;
    if (a.nsplits == 1) {
      a.out[(t * a.nq + head) * HD + d] = __float2bfloat16(O / L);
    } else {
      const int64_t idx = (t * a.nq + head) * a.nsplits + split;
      a.ws_acc[idx * HD + d] = O;
      if (d == 0) {
        a.ws_ml[idx * 2] = M * kLn2;  // natural-log domain, as the SIMT kernel's partials
        a.ws_ml[idx * 2 + 1] = L;
      }
    }
  }
  if (threadIdx.x == 0) SHARDLM_TL_STAMP(kTlAttention, tl_slot, 4);  // output or partials stored
  if (a.nsplits == 1 || !a.counters) return;  // no counters: the caller's combine kernel merges

  // Split-K merge without a second kernel: each block publishes its partials
  // (fence), counts itself in; the last of the row's active splits merges
  // out = Σ e^{m_i−M} acc_i / Σ e^{m_i−M} l_i and resets the counter.
  __shared__ int is_last;
  __threadfence();
  __syncthreads();
  const int nact = static_cast<int>((pos - lo + 1 + a.P - 1) / a.P);  // splits that ran for this row
  if (tid == 0) {
    int32_t* c = a.counters + t * a.nkv + g;
    is_last = atomicAdd(c, 1) == nact - 1;
    if (is_last) *c = 0;  // every split has arrived: ready for the next call
  }
  __syncthreads();
  if (threadIdx.x == 0) SHARDLM_TL_STAMP(kTlAttention, tl_slot, 5);  // arrival counted
  if (!is_last) return;
  __threadfence();
  // The merge is on the step's critical path (the o_proj gemv waits for it),
  // so each thread takes 4 adjacent outputs of one head and requests all its
  // splits' (m, l) pairs and float4 partials at once: one L2 round trip for
  // up to kMergeBatch splits. A loop of dependent scalar loads took ~4.5 µs
  // here (kernel timeline, bench/NOTES.md run 19). Same arithmetic in the
  // same order as before: M = max m_i, then L and O summed over i ascending.
  constexpr int kMergeBatch = 8;
  const float2* ml_all = reinterpret_cast<const float2*>(a.ws_ml);
  for (int u = tid; u < G * HD / 4; u += kThreads) {
    const int r = u / (HD / 4), d = (u % (HD / 4)) * 4;
    const int64_t base = (t * a.nq + head0 + r) * a.nsplits;
    const float2* ml = ml_all + base;
    const float4* acc = reinterpret_cast<const float4*>(a.ws_acc + base * HD + d);
    float M = -INFINITY, L = 0.0f;
    float4 O = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    auto accumulate = [&](const float2 mli, const float4 ai) {
      const float f = __expf(mli.x - M);
      L += f * mli.y;
      O.x += f * ai.x;
      O.y += f * ai.y;
      O.z += f * ai.z;
      O.w += f * ai.w;
    };
    if (nact <= kMergeBatch) {
      float2 mlv[kMergeBatch];
      float4 av[kMergeBatch];
#pragma unroll
      for (int i = 0; i < kMergeBatch; ++i)
        if (i < nact) {
          mlv[i] = __ldcg(ml + i);
          av[i] = __ldcg(acc + static_cast<int64_t>(i) * (HD / 4));
        }
#pragma unroll
      for (int i = 0; i < kMergeBatch; ++i)
        if (i < nact) M = fmaxf(M, mlv[i].x);
#pragma unroll
      for (int i = 0; i < kMergeBatch; ++i)
        if (i < nact) accumulate(mlv[i], av[i]);
    } else {  // long contexts: the max first, then the sums, each in batches of loads
      for (int i0 = 0; i0 < nact; i0 += kMergeBatch) {
        float mv[kMergeBatch];
#pragma unroll
        for (int i = 0; i < kMergeBatch; ++i) mv[i] = i0 + i < nact ? __ldcg(&ml[i0 + i].x) : -INFINITY;
#pragma unroll
        for (int i = 0; i < kMergeBatch; ++i) M = fmaxf(M, mv[i]);
      }
      for (int i0 = 0; i0 < nact; i0 += kMergeBatch) {
        float2 mlv[kMergeBatch];
        float4 av[kMergeBatch];
#pragma unroll
        for (int i = 0; i < kMergeBatch; ++i)
          if (i0 + i < nact) {
            mlv[i] = __ldcg(ml + i0 + i);
            av[i] = __ldcg(acc + static_cast<int64_t>(i0 + i) * (HD / 4));
          }
#pragma unroll
        for (int i = 0; i < kMergeBatch; ++i)
          if (i0 + i < nact) accumulate(mlv[i], av[i]);
      }
    }
    bf16* o_row = a.out + (t * a.nq + head0 + r) * HD + d;
    const __nv_bfloat162 lo = __floats2bfloat162_rn(O.x / L, O.y / L), hi = __floats2bfloat162_rn(O.z / L, O.w / L);
    if ((reinterpret_cast<uintptr_t>(o_row) & 7) == 0) {  // out from an allocator: always
      *reinterpret_cast<uint2*>(o_row) =
          make_uint2(*reinterpret_cast<const uint32_t*>(&lo), *reinterpret_cast<const uint32_t*>(&hi));
    } else {
      o_row[0] = lo.x;
      o_row[1] = lo.y;
      o_row[2] = hi.x;
      o_row[3] = hi.y;
    }
  }
  if (threadIdx.x == 0) SHARDLM_TL_STAMP(kTlAttention, tl_slot, 6);  // the splits merged (last block)
}

template <int HD>
cudaError_t launch_decode(const TcDecodeArgs& a, int64_t num_tokens, cudaStream_t s) {
  constexpr size_t smem = static_cast<size_t>(kDecRows + 4 * kBN) * HD * sizeof(bf16);  // Q + 2×K + 2×V
  static_assert(2 * kWarps * kDecRows * sizeof(float) + kWarps * kDecRows * kRedStride<HD> * sizeof(float) <=
                    4 * kBN * HD * sizeof(bf16),
                "the warp merge reuses the K/V tiles");
  if (const cudaError_t e = allow_dynamic_smem<decode_tc_kernel<HD>>(smem); e != cudaSuccess) return e;
  return launch_k_as(a.pre_wait || programmatic_launch_flag(), decode_tc_kernel<HD>,
                     dim3(static_cast<unsigned>(num_tokens), static_cast<unsigned>(a.nkv),
                          static_cast<unsigned>(a.nsplits)),
                     dim3(kThreads), smem, s, a);
}

template <int HD>
cudaError_t launch(const TcArgs& a, int64_t num_tokens, cudaStream_t s) {
  constexpr size_t smem = static_cast<size_t>(kBM + 4 * kBN) * HD * sizeof(bf16);  // Q + 2×K + 2×V
  if (const cudaError_t e = allow_dynamic_smem<prefill_tc_kernel<HD>>(smem); e != cudaSuccess) return e;
  // Σ ceil(q_len / kBM) over the sequences ≤ num_tokens / kBM + num_seqs.
  const int64_t tiles = (num_tokens + kBM - 1) / kBM + a.num_seqs;
  if (tiles > 0x7fffffff || a.nq > 65535) return cudaErrorInvalidValue;
  return launch_k(prefill_tc_kernel<HD>, dim3(static_cast<unsigned>(tiles), static_cast<unsigned>(a.nq)),
                  dim3(kThreads), smem, s, a);
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

bool prefill_tc_supported(int64_t head_dim) { return head_dim == 64 || head_dim == 128; }

cudaError_t paged_prefill_attention_tc(const bf16* q, int64_t q_stride, const bf16* k_cache, const bf16* v_cache,
                                       bf16* out, const PagedAttentionParams& p, int min_q_len, cudaStream_t stream) {
  if (!prefill_tc_supported(p.head_dim) || p.nkv_heads <= 0 || p.nq_heads % p.nkv_heads != 0)
    return cudaErrorNotSupported;
  if (p.num_seqs <= 0 || p.num_tokens <= 0) return cudaSuccess;
  if (!attention_operands_aligned(q, q_stride, k_cache, v_cache) || (reinterpret_cast<uintptr_t>(out) & 3))
    return cudaErrorMisalignedAddress;  // out: bf16 pairs
  if (p.block_size <= 0 || p.block_size > 0x7fffffff || p.num_seqs > 0x7fffffff) return cudaErrorInvalidValue;
  TcArgs a{};
  if (!cache_geometry(p.block_size, p.nkv_heads, p.head_dim, &a.bs_shift, &a.block_elems)) return cudaErrorInvalidValue;
  a.q = q;
  a.q_stride = q_stride;
  a.kc = k_cache;
  a.vc = v_cache;
  a.out = out;
  a.q_start = p.q_start;
  a.ctx_len = p.ctx_len;
  a.block_tables = p.block_tables;
  a.max_blocks = p.max_blocks_per_seq;
  a.nq = p.nq_heads;
  a.nkv = p.nkv_heads;
  a.window = p.sliding_window;
  a.block_size = static_cast<int>(p.block_size);
  a.num_seqs = static_cast<int>(p.num_seqs);
  a.min_q = min_q_len;
  a.scale_log2 = p.scale * kLog2e;
  return p.head_dim == 64 ? launch<64>(a, p.num_tokens, stream) : launch<128>(a, p.num_tokens, stream);
}


bool decode_tc_supported(int64_t head_dim, int64_t group) {
  return prefill_tc_supported(head_dim) && group >= 1 && group <= kDecRows;
}

bool decode_rope_fusable(const PagedAttentionParams& p) {
  return p.tensor_cores && p.max_q_len == 1 && p.positions && p.slot_mapping && p.nkv_heads > 0 &&
         p.nq_heads % p.nkv_heads == 0 && decode_tc_supported(p.head_dim, p.nq_heads / p.nkv_heads);
}

cudaError_t paged_decode_attention_tc(const bf16* q, int64_t q_stride, bf16* k_cache, bf16* v_cache,
                                      bf16* out, const PagedAttentionParams& p, const DecodeSplit& split,
                                      int skip_q_len, cudaStream_t stream) {
  if (p.nkv_heads <= 0 || p.nq_heads % p.nkv_heads != 0 || !decode_tc_supported(p.head_dim, p.nq_heads / p.nkv_heads))
    return cudaErrorNotSupported;
  if (p.num_tokens <= 0) return cudaSuccess;
  if (!attention_operands_aligned(q, q_stride, k_cache, v_cache)) return cudaErrorMisalignedAddress;
  if (p.block_size <= 0 || p.block_size > 0x7fffffff || p.num_tokens > 0x7fffffff || p.nkv_heads > 65535 ||
      split.nsplits < 1 || split.nsplits > 65535 || split.keys_per_split <= 0 ||
      (split.nsplits > 1 && (!split.ws_acc || !split.ws_ml)))
    return cudaErrorInvalidValue;
  TcDecodeArgs a{};
  if (!cache_geometry(p.block_size, p.nkv_heads, p.head_dim, &a.bs_shift, &a.block_elems)) return cudaErrorInvalidValue;
  a.q = q;
  a.q_stride = q_stride;
  a.kc = k_cache;
  a.vc = v_cache;
  a.out = out;
  a.token_seq = p.token_seq;
  a.positions = p.positions;
  a.q_start = p.q_start;
  a.ctx_len = p.ctx_len;
  a.block_tables = p.block_tables;
  a.max_blocks = p.max_blocks_per_seq;
  a.nq = p.nq_heads;
  a.nkv = p.nkv_heads;
  a.window = p.sliding_window;
  a.P = split.keys_per_split;
  a.block_size = static_cast<int>(p.block_size);
  a.nsplits = split.nsplits;
  a.skip_q = skip_q_len;
  a.scale_log2 = p.scale * kLog2e;
  a.ws_acc = split.ws_acc;
  a.ws_ml = split.ws_ml;
  a.counters = split.counters;
  if (p.rope_inv_freq) {
    if (!decode_rope_fusable(p) || skip_q_len > 0) return cudaErrorInvalidValue;
    a.inv_freq = p.rope_inv_freq;
    a.slots = p.slot_mapping;
    a.pre_wait = p.programmatic;
  }
  return p.head_dim == 64 ? launch_decode<64>(a, p.num_tokens, stream) : launch_decode<128>(a, p.num_tokens, stream);
}

}  // namespace shardlm::kernels::cuda
