// Decode attention on tensor cores over the paged KV cache (the semantics of
// cpu::paged_attention for rows with few query rows; attention_tc.cu has the
// prefill kernel, attention_tc_common.cuh what both share).
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
// Given PagedAttentionParams::l2_prefetch (the first weights of the o_proj
// gemv that follows), each block, once its K/V tiles have landed, requests
// its share of them into L2: HBM idles through the rest of this kernel.
//
// head_dim 64 and 128 are compiled (every architecture we serve but the small
// test ones); other head dims stay on the SIMT kernel (attention.cu).
#include "kernels/cuda/attention_tc.h"

#include "kernels/cuda/attention_tc_common.cuh"
#include "kernels/cuda/kernel_timeline.cuh"

namespace shardlm::kernels::cuda {
namespace {

using namespace detail;

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
  bool trigger_early;  // PagedAttentionParams::trigger_dependents_early
  bool trigger_late;   // PagedAttentionParams::trigger_dependents_after_arrival (and not trigger_early)
  L2Prefetch pf;  // PagedAttentionParams::l2_prefetch (valid or empty): a share per block
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
  if (a.trigger_early) griddep_trigger();
  if (!a.pre_wait) a.trigger_late ? griddep_wait_only() : griddep_wait();
  constexpr int C = HD / 8;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  bf16* sQ = reinterpret_cast<bf16*>(smem_raw);  // [kDecRows][HD]
  bf16* sK = sQ + kDecRows * HD;                  // [2][kBN][HD]
  bf16* sV = sK + 2 * kBN * HD;                   // [2][kBN][HD]

  const int64_t t = blockIdx.x, g = blockIdx.y;
  const int split = blockIdx.z;
  // This block's share of the L2 prefetch, issued by its last warp once the
  // block's own K/V tiles have landed: issued beside the tile requests, the
  // prefetch queued ahead of them at the memory controllers and delayed the
  // attention by about what the gemv after it then saved (bench/NOTES.md
  // run 20). A block with no keys to read leaves without its share.
  auto prefetch_share = [&] {
    if (a.pf.rows > 0 && threadIdx.x >= kThreads - 32)
      l2_prefetch_part(a.pf.ptr, a.pf.rows, a.pf.stride, a.pf.bytes_per_row,
                       blockIdx.x + gridDim.x * (blockIdx.y + static_cast<int64_t>(gridDim.y) * blockIdx.z),
                       static_cast<int64_t>(gridDim.x) * gridDim.y * gridDim.z);
  };
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
    if (a.pre_wait) a.trigger_late ? griddep_wait_only() : griddep_wait();  // q, new k/v: the previous kernel's output
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
    if (tile == n_tiles - 1) prefetch_share();  // this block's K/V reads are done
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
  // and counts itself in; the last of the row's active splits merges
  // out = Σ e^{m_i−M} acc_i / Σ e^{m_i−M} l_i and resets the counter.
  // Publishing: the block barrier orders every thread's partial stores
  // before thread 0's arrival, one acq_rel atomic at gpu scope (release of
  // what the block stored; acquire of what the earlier arrivals released),
  // and the second barrier passes that acquire on to the threads that merge,
  // which read the partials from L2 (__ldcg). (A __threadfence() in every
  // thread before and after the counter, MEMBAR.SC.GPU in the SASS, cost
  // ~0.8 µs on the H200 (run 21) and ~4 µs when the o_proj gemv's shared-memory
  // copies load HBM at the same time (kernel timeline, bench/NOTES.md run 25).)
  __shared__ int is_last;
  __syncthreads();
  const int nact = static_cast<int>((pos - lo + 1 + a.P - 1) / a.P);  // splits that ran for this row
  if (tid == 0) {
    int32_t* c = a.counters + t * a.nkv + g;
    is_last = atomic_add_acq_rel_gpu(c, 1) == nact - 1;
    if (is_last) *c = 0;  // every split has arrived: ready for the next call
  }
  __syncthreads();
  if (threadIdx.x == 0) SHARDLM_TL_STAMP(kTlAttention, tl_slot, 5);  // arrival counted
  if (a.trigger_late) griddep_trigger();  // only the merge is left (the other blocks exit here)
  if (!is_last) return;
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

}  // namespace

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
  if (p.l2_prefetch.valid()) a.pf = p.l2_prefetch;
  a.trigger_early = p.trigger_dependents_early;
  a.trigger_late = p.trigger_dependents_after_arrival && !p.trigger_dependents_early;
  return p.head_dim == 64 ? launch_decode<64>(a, p.num_tokens, stream) : launch_decode<128>(a, p.num_tokens, stream);
}

}  // namespace shardlm::kernels::cuda
