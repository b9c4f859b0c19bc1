// Decode attention on tensor cores with the key tiles spread evenly over the
// resident blocks ("balanced"), for steps whose per-split grid would run for
// more than two waves (batch 64 and up at a few hundred keys of context).
//
// Why: the per-split kernel (attention_tc.cu) gives each block one (row, kv
// head, split) of a few 64-key tiles. A block's first tile waits for three
// dependent loads (row metadata, block table, keys) with nothing else in
// flight, and the grid ends in a partial wave, so at batch 64 it streams the
// cache at ~58 % of DRAM bandwidth, and a combine kernel (~6 µs) follows.
//
// Work: unit = one 64-key tile of one item, item = (row t, kv head g), units
// ordered row-major: item (t, g) holds units [row_start[t] + g·n(t),
// … + n(t)), n(t) = its tiles. The grid is exactly the blocks that fit the
// GPU at once (B); block b takes units [⌊b·U/B⌋, ⌊(b+1)·U/B⌋) of the U in the
// step. Every block scans the rows' tile counts itself (≤ kMaxRows rows, into
// the idle K stages), so nothing about the step is baked into a captured
// graph but the grid size.
//
// Per block: one cp.async pipeline over its whole range, across item
// boundaries: unit i + 1 (and, at an item's first tile, the item's Q rows into
// the other of two Q buffers) is requested before unit i is computed. Unit
// compute is the per-split kernel's: the G ≤ 16 query heads of the kv head are
// the rows of one m16 slab; 4 warps take 16 keys each of a tile; QKᵀ,
// online softmax (log2 domain), P·V, all mma.sync m16n8k16 bf16 → f32.
// At an item's last unit in the block the warps merge through the stage just
// consumed (the next one is still in flight in the other). An item wholly in
// the block is written out; otherwise the block stores its part (O, m, l) in
// slot 0 (the part holding the block's first unit) or 1 (its last unit) and
// adds its tile count to the item's counter; the part that completes the
// count merges every part in block order (deterministic) and re-zeroes it.
#include "kernels/cuda/attention_tc.h"

#include "kernels/cuda/attention_tc_common.cuh"

namespace shardlm::kernels::cuda {
namespace {

using namespace detail;
using namespace tc;

constexpr int kRows = 16;      // one m16 slab: the query heads of one kv head
constexpr int kMaxRows = 1024;  // rows one block scans: row_start (8 B each) must fit a K stage

struct BalancedArgs {
  const bf16* q;
  int64_t q_stride;
  const bf16* kc;
  const bf16* vc;
  bf16* out;
  const int32_t* token_seq;
  const int32_t* positions;
  const int32_t* block_tables;
  int64_t max_blocks, window;
  int nq, nkv, ntok;
  int block_size, bs_shift, block_elems;
  float scale_log2;
  float* part_o;      // [2·B][G][HD] unnormalised O of a block's parts (slot 0, 1)
  float* part_ml;     // [2·B][G][2]  m (log2 domain), l
  int32_t* counters;  // [ntok, nkv] tiles of an item stored so far; zero between calls
};

__device__ __forceinline__ int64_t row_lo(int64_t pos, int64_t window) {
  return window > 0 ? max(static_cast<int64_t>(0), pos - window + 1) : 0;
}
__device__ __forceinline__ int row_tiles(int64_t pos, int64_t window) {
  return static_cast<int>((pos - row_lo(pos, window) + kBN) / kBN);
}

// Where a block is in the unit order: item (t, g), its tile, and what the
// gather needs for it. Advanced identically by every thread.
struct Cursor {
  int t, g, tile, n;  // n: tiles of row t's items
  int s;              // sequence of row t
  int64_t pos, lo;
  int64_t item_u;     // unit index of the item's first tile
};

__device__ __forceinline__ void enter_row(const BalancedArgs& a, Cursor& c) {
  c.pos = a.positions[c.t];
  c.s = a.token_seq[c.t];
  c.lo = row_lo(c.pos, a.window);
  c.n = row_tiles(c.pos, a.window);
}

__device__ __forceinline__ void advance(const BalancedArgs& a, Cursor& c) {
  if (++c.tile < c.n) return;
  c.tile = 0;
  c.item_u += c.n;
  if (++c.g < a.nkv) return;
  c.g = 0;
  if (++c.t < a.ntok) enter_row(a, c);
}

// First unit of block b: ⌊b·U/B⌋; the block owning unit u is the last b with
// ⌊b·U/B⌋ ≤ u, i.e. ⌈(u+1)·B/U⌉ − 1.
__device__ __forceinline__ int64_t block_start(int64_t b, int64_t U, int64_t B) { return b * U / B; }
__device__ __forceinline__ int64_t block_of(int64_t u, int64_t U, int64_t B) { return ((u + 1) * B + U - 1) / U - 1; }

template <int HD>
__global__ void __launch_bounds__(kThreads) decode_balanced_kernel(const BalancedArgs a) {
  griddep_wait();
  constexpr int C = HD / 8;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  bf16* sQ = reinterpret_cast<bf16*>(smem_raw);  // [2][kRows][HD]
  bf16* sK = sQ + 2 * kRows * HD;                 // [2][kBN][HD]
  bf16* sV = sK + 2 * kBN * HD;                   // [2][kBN][HD]
  __shared__ int64_t warp_total[kWarps];
  __shared__ float red_m[kWarps][kRows], red_l[kWarps][kRows];
  __shared__ int is_last;

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int G = a.nq / a.nkv;
  const int64_t B = gridDim.x, b = blockIdx.x;

  // 1. row_start[t] = Σ_{t' < t} nkv·n(t'), a block-wide exclusive scan; each
  //    thread owns R consecutive rows. Scratch: the K stages, idle until step 2.
  int64_t* row_start = reinterpret_cast<int64_t*>(sK);  // [ntok + 1]
  const int R = (a.ntok + kThreads - 1) / kThreads;
  const int r0 = tid * R;
  int64_t local = 0;
  for (int i = 0; i < R && r0 + i < a.ntok; ++i) local += static_cast<int64_t>(a.nkv) * row_tiles(a.positions[r0 + i], a.window);
  int64_t incl = local;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const int64_t v = __shfl_up_sync(0xffffffffu, incl, o);
    if (lane >= o) incl += v;
  }
  if (lane == 31) warp_total[warp] = incl;
  __syncthreads();
  int64_t run = incl - local, U = 0;
#pragma unroll
  for (int w = 0; w < kWarps; ++w) {
    if (w < warp) run += warp_total[w];
    U += warp_total[w];
  }
  for (int i = 0; i < R && r0 + i < a.ntok; ++i) {
    row_start[r0 + i] = run;
    run += static_cast<int64_t>(a.nkv) * row_tiles(a.positions[r0 + i], a.window);
  }
  if (tid == 0) row_start[a.ntok] = U;
  __syncthreads();
  const int64_t u0 = block_start(b, U, B), u1 = block_start(b + 1, U, B);
  if (u0 >= u1) return;  // more resident blocks than tiles in this step

  // The block's first unit: the last row with row_start ≤ u0 (every row has ≥ 1 tile).
  int lo_t = 0, hi_t = a.ntok - 1;
  while (lo_t < hi_t) {
    const int mid = (lo_t + hi_t + 1) / 2;
    if (row_start[mid] <= u0) lo_t = mid; else hi_t = mid - 1;
  }
  Cursor cc;
  cc.t = lo_t;
  enter_row(a, cc);
  const int64_t rem = u0 - row_start[cc.t];
  cc.g = static_cast<int>(rem / cc.n);
  cc.tile = static_cast<int>(rem % cc.n);
  cc.item_u = row_start[cc.t] + static_cast<int64_t>(cc.g) * cc.n;
  const int first_tile = cc.tile;  // > 0: the block's first item started in an earlier block
  __syncthreads();                 // row_start is dead: the stages are the gather's from here

  auto load = [&](const Cursor& c, int buf, int qbuf, bool with_q) {
    if (with_q) {
      bf16* q_dst = sQ + qbuf * kRows * HD;
      for (int i = tid; i < kRows * C; i += kThreads) {
        const int r = i / C, ch = i % C;
        const bool ok = r < G;
        cp_async16(q_dst + swz<HD>(r, ch),
                   a.q + c.t * a.q_stride + (static_cast<int64_t>(c.g) * G + (ok ? r : 0)) * HD + ch * 8, ok);
      }
    }
    gather_kv_tile<HD>(sK + buf * kBN * HD, sV + buf * kBN * HD, a.kc, a.vc,
                       a.block_tables + static_cast<int64_t>(c.s) * a.max_blocks, a.block_size, a.bs_shift,
                       a.block_elems, c.g, c.lo + static_cast<int64_t>(c.tile) * kBN, c.pos + 1);
    cp_async_commit();
  };

  Cursor pc = cc;
  int c_item = 0, p_item = 0;  // items begun by the compute and the prefetch side (Q buffer parity)
  load(pc, 0, 0, true);

  const int gr = lane >> 2, tq = lane & 3;
  uint32_t qf[HD / 16][4];
  float o[HD / 8][4];
  float m_r[2], l_r[2];
  auto reset = [&] {
#pragma unroll
    for (int d = 0; d < HD / 8; ++d)
#pragma unroll
      for (int e = 0; e < 4; ++e) o[d][e] = 0.0f;
    m_r[0] = m_r[1] = -INFINITY;
    l_r[0] = l_r[1] = 0.0f;
  };
  reset();

  const int64_t units = u1 - u0;
  bool first_item = true;
  for (int64_t i = 0; i < units; ++i) {
    const int buf = static_cast<int>(i & 1);
    if (i + 1 < units) {
      advance(a, pc);
      if (pc.tile == 0) ++p_item;
      load(pc, buf ^ 1, p_item & 1, pc.tile == 0);
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    if (i == 0 || cc.tile == 0) {
      const bf16* q_src = sQ + (c_item & 1) * kRows * HD;
#pragma unroll
      for (int ks = 0; ks < HD / 16; ++ks) ldmatrix_x4(qf[ks], q_src + swz<HD>(lane & 15, 2 * ks + (lane >> 4)));
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
    const int64_t kt = cc.lo + static_cast<int64_t>(cc.tile) * kBN + key0;
#pragma unroll
    for (int n = 0; n < 2; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int64_t j = kt + n * 8 + 2 * tq + (e & 1);
        sc[n][e] = j <= cc.pos ? sc[n][e] * a.scale_log2 : -INFINITY;
      }
    online_softmax_step<2, HD>(sc, m_r, l_r, o);
    const uint32_t pa[4] = {pack_bf16(sc[0][0], sc[0][1]), pack_bf16(sc[0][2], sc[0][3]),
                            pack_bf16(sc[1][0], sc[1][1]), pack_bf16(sc[1][2], sc[1][3])};
#pragma unroll
    for (int dp = 0; dp < HD / 16; ++dp) {
      uint32_t vb[4];
      ldmatrix_x4_trans(vb, tV + swz<HD>(key0 + (lane & 7) + (((lane >> 3) & 1) << 3), 2 * dp + (lane >> 4)));
      mma_bf16(o[2 * dp], pa, vb[0], vb[1]);
      mma_bf16(o[2 * dp + 1], pa, vb[2], vb[3]);
    }
    __syncthreads();  // stage buf is consumed: the merge below may use it

    if (cc.tile == cc.n - 1 || i == units - 1) {
      // 2. The item's last unit in this block: merge the 4 warps' (m, l, O) —
      //    O rows < G only — through stage buf (warps 0–1 in its K half, 2–3 in its V half).
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        l_r[r] += __shfl_xor_sync(0xffffffffu, l_r[r], 1);
        l_r[r] += __shfl_xor_sync(0xffffffffu, l_r[r], 2);
      }
      float* red_o = reinterpret_cast<float*>((warp < 2 ? sK : sV) + buf * kBN * HD) + (warp & 1) * kRows * HD;
      if (tq == 0) {
        red_m[warp][gr] = m_r[0];
        red_m[warp][gr + 8] = m_r[1];
        red_l[warp][gr] = l_r[0];
        red_l[warp][gr + 8] = l_r[1];
      }
#pragma unroll
      for (int d = 0; d < HD / 8; ++d) {
        float* row0 = red_o + gr * HD + d * 8 + 2 * tq;
        row0[0] = o[d][0];
        row0[1] = o[d][1];
        row0[8 * HD] = o[d][2];
        row0[8 * HD + 1] = o[d][3];
      }
      __syncthreads();
      const bool whole = !(first_item && first_tile > 0) && cc.tile == cc.n - 1;
      const int slot = first_item ? 0 : 1;
      const int64_t part = 2 * b + slot;
      for (int e = tid; e < G * HD; e += kThreads) {
        const int r = e / HD, d = e % HD;
        float M = -INFINITY;
#pragma unroll
        for (int w = 0; w < kWarps; ++w) M = fmaxf(M, red_m[w][r]);
        float L = 0.0f, O = 0.0f;
#pragma unroll
        for (int w = 0; w < kWarps; ++w) {
          const float f = exp2f(red_m[w][r] - M);  // 0 for a warp that saw no key
          const float* wo = reinterpret_cast<const float*>((w < 2 ? sK : sV) + buf * kBN * HD) + (w & 1) * kRows * HD;
          L += f * red_l[w][r];
          O += f * wo[r * HD + d];
        }
        if (whole) {
          a.out[(static_cast<int64_t>(cc.t) * a.nq + static_cast<int64_t>(cc.g) * G + r) * HD + d] =
              __float2bfloat16(O / L);
        } else {
          a.part_o[(part * G + r) * HD + d] = O;
          if (d == 0) {
            a.part_ml[(part * G + r) * 2] = M;
            a.part_ml[(part * G + r) * 2 + 1] = L;
          }
        }
      }
      if (!whole) {
        // 3. Count this part's tiles in; the part that completes the item merges all of its parts.
        __threadfence();
        __syncthreads();
        if (tid == 0) {
          const int mine = cc.tile - (first_item ? first_tile : 0) + 1;
          int32_t* cnt = a.counters + static_cast<int64_t>(cc.t) * a.nkv + cc.g;
          is_last = atomicAdd(cnt, mine) + mine == cc.n;
          if (is_last) *cnt = 0;  // every part has arrived: ready for the next call
        }
        __syncthreads();
        if (is_last) {
          __threadfence();
          const int64_t bf = block_of(cc.item_u, U, B), bl = block_of(cc.item_u + cc.n - 1, U, B);
          for (int e = tid; e < G * HD; e += kThreads) {
            const int r = e / HD, d = e % HD;
            float M = -INFINITY;
            for (int64_t pb = bf; pb <= bl; ++pb) {
              const int64_t st = block_start(pb, U, B);
              if (st == block_start(pb + 1, U, B)) continue;  // an empty block
              const int64_t pp = 2 * pb + (st >= cc.item_u ? 0 : 1);
              M = fmaxf(M, __ldcg(a.part_ml + (pp * G + r) * 2));
            }
            float L = 0.0f, O = 0.0f;
            for (int64_t pb = bf; pb <= bl; ++pb) {
              const int64_t st = block_start(pb, U, B);
              if (st == block_start(pb + 1, U, B)) continue;
              const int64_t pp = 2 * pb + (st >= cc.item_u ? 0 : 1);
              const float f = exp2f(__ldcg(a.part_ml + (pp * G + r) * 2) - M);
              L += f * __ldcg(a.part_ml + (pp * G + r) * 2 + 1);
              O += f * __ldcg(a.part_o + (pp * G + r) * HD + d);
            }
            a.out[(static_cast<int64_t>(cc.t) * a.nq + static_cast<int64_t>(cc.g) * G + r) * HD + d] =
                __float2bfloat16(O / L);
          }
        }
      }
      __syncthreads();  // stage buf is free again before unit i + 2 is requested into it
      reset();
      first_item = false;
      ++c_item;
    }
    advance(a, cc);
  }
}

template <int HD>
constexpr size_t balanced_smem() {
  return static_cast<size_t>(2 * kRows + 4 * kBN) * HD * sizeof(bf16);  // 2×Q + 2×K + 2×V
}

// Resident blocks of the kernel: its grid (taken once, on the first device
// asked; the GPUs of one job are of one kind).
template <int HD>
int balanced_grid() {
  static const int blocks = [] {
    int dev = 0, sms = 0, per_sm = 0;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess ||
        allow_dynamic_smem<decode_balanced_kernel<HD>>(balanced_smem<HD>()) != cudaSuccess ||
        cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, decode_balanced_kernel<HD>, kThreads,
                                                      balanced_smem<HD>()) != cudaSuccess)
      return 0;
    return sms * per_sm;
  }();
  return blocks;
}

int grid_for_head_dim(int64_t hd) { return hd == 64 ? balanced_grid<64>() : hd == 128 ? balanced_grid<128>() : 0; }

}  // namespace

size_t decode_balanced_workspace_bytes(const PagedAttentionParams& p) {
  if (p.num_tokens <= 0 || p.num_tokens > kMaxRows || p.nkv_heads <= 0 || p.nq_heads % p.nkv_heads != 0 ||
      !decode_tc_supported(p.head_dim, p.nq_heads / p.nkv_heads))
    return 0;
  const int64_t B = grid_for_head_dim(p.head_dim);
  if (B <= 0) return 0;
  const int64_t G = p.nq_heads / p.nkv_heads;
  return static_cast<size_t>(2 * B * G * (p.head_dim + 2)) * sizeof(float) +
         static_cast<size_t>(p.num_tokens * p.nkv_heads) * sizeof(int32_t);
}

cudaError_t paged_decode_attention_balanced(const bf16* q, int64_t q_stride, const bf16* k_cache,
                                            const bf16* v_cache, bf16* out, const PagedAttentionParams& p,
                                            void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  const size_t need = decode_balanced_workspace_bytes(p);
  if (need == 0 || !p.positions || !workspace || workspace_bytes < need) return cudaErrorNotSupported;
  if (!attention_operands_aligned(q, q_stride, k_cache, v_cache)) return cudaErrorMisalignedAddress;
  BalancedArgs a{};
  if (!paged_cache_geometry(p.block_size, p.nkv_heads, p.head_dim, &a.bs_shift, &a.block_elems))
    return cudaErrorInvalidValue;
  const int64_t B = grid_for_head_dim(p.head_dim);
  const int64_t G = p.nq_heads / p.nkv_heads;
  a.q = q;
  a.q_stride = q_stride;
  a.kc = k_cache;
  a.vc = v_cache;
  a.out = out;
  a.token_seq = p.token_seq;
  a.positions = p.positions;
  a.block_tables = p.block_tables;
  a.max_blocks = p.max_blocks_per_seq;
  a.window = p.sliding_window;
  a.nq = static_cast<int>(p.nq_heads);
  a.nkv = static_cast<int>(p.nkv_heads);
  a.ntok = static_cast<int>(p.num_tokens);
  a.block_size = static_cast<int>(p.block_size);
  a.scale_log2 = p.scale * kLog2e;
  a.part_o = static_cast<float*>(workspace);
  a.part_ml = a.part_o + 2 * B * G * p.head_dim;
  a.counters = reinterpret_cast<int32_t*>(a.part_ml + 2 * B * G * 2);
  const dim3 grid(static_cast<unsigned>(B));
  // The > 48 KB opt-in is per device (the occupancy above was taken on the first one).
  if (const cudaError_t e = p.head_dim == 64 ? allow_dynamic_smem<decode_balanced_kernel<64>>(balanced_smem<64>())
                                             : allow_dynamic_smem<decode_balanced_kernel<128>>(balanced_smem<128>());
      e != cudaSuccess)
    return e;
  return p.head_dim == 64
             ? launch_k(decode_balanced_kernel<64>, grid, dim3(kThreads), balanced_smem<64>(), stream, a)
             : launch_k(decode_balanced_kernel<128>, grid, dim3(kThreads), balanced_smem<128>(), stream, a);
}

}  // namespace shardlm::kernels::cuda
