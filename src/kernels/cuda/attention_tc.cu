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
// head_dim 64 and 128 are compiled (every architecture we serve but the small
// test ones); other head dims stay on the SIMT kernel (attention.cu).
#include "kernels/cuda/attention_tc.h"

#include "kernels/cuda/attention_tc_common.cuh"

namespace shardlm::kernels::cuda {
namespace {

using namespace detail;

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

}  // namespace shardlm::kernels::cuda
