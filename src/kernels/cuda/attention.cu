// Paged attention for prefill, chunked prefill and decode (the semantics of
// cpu::paged_attention), flash-decoding style:
//
//   grid  = (query row t, kv head × head group, split)
//   block = 128 threads. One block serves up to MAXH query heads that share a
//           kv head (GQA): each K/V vector is loaded once for all of them.
//   Thread layout: a key row of head_dim (padded to HDP, a power of two) is
//           covered by TPR = HDP/8 threads holding 8 dims each (one 16-byte
//           load); KPI = 128/TPR keys are processed side by side.
//   Keys    the row's visible range [lo, pos] is cut into splits of P keys
//           (split-K); a block walks its split in tiles of 64 keys:
//             1. scores s = (q·scale)·k for the tile → shared memory
//                (the TPR partial dots are summed with xor shuffles);
//             2. online softmax per head: m' = max(m, max s), p = exp(s − m'),
//                l' = l·exp(m − m') + Σp, acc ·= exp(m − m');
//             3. acc += Σ p·v (each thread its 8 dims of its keys).
//           At the end the per-key-slot partials are summed (shuffles, then
//           shared memory across the 4 warps).
//   Splits  with one split the block writes out = acc / l in bf16; otherwise
//           (acc, m, l) go to an f32 workspace and a combine kernel merges
//           them: out = Σ e^{m_i−M} acc_i / Σ e^{m_i−M} l_i.
//   The split count is chosen so that rows × kv heads × splits ≥ 4 × the SMs of
//   the GPU (decode at small batch), capped at 64 splits, and depends only on
//   (rows, max_context): a CUDA graph captured for a bound stays valid.
//
// All arithmetic in f32 (bf16 cache and q); scores are not rounded to bf16.
// Sequences with ≥ kPrefillTensorCoreRows query rows in the step (prompts,
// prefill chunks) go to the tensor-core kernel of attention_prefill.cu when
// head_dim is 64 or 128; this kernel skips their rows. The other rows take the
// tensor-core decode kernel of that file when head_dim is 64 or 128 and a kv
// head has ≤ 16 query heads (it reuses this file's split plan and workspace;
// small grids merge their splits in-kernel, larger ones through the combine
// kernel); this kernel serves the remaining shapes.
#include <algorithm>

#include "kernels/cuda/attention_tc.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/cuda_kernels.h"

namespace shardlm::kernels::cuda {
namespace {

using namespace detail;

constexpr int kThreads = 128;
constexpr int kTile = 64;       // keys per tile: two scores per lane in the softmax step
constexpr int kMaxSplits = 64;  // bounds the workspace at small batch and long context

struct Plan {
  int nh = 1;       // query heads per block
  int maxh = 1;     // template bound ≥ nh
  int hgroups = 1;  // blocks per kv head
  int64_t P = 0;    // keys per split
  int nsplits = 1;
};

struct KArgs {
  const bf16* q;
  int64_t q_stride;
  const bf16* kc;
  const bf16* vc;
  bf16* out;
  const int32_t* token_seq;
  const int32_t* q_start;
  const int32_t* ctx_len;
  const int32_t* block_tables;
  int64_t max_blocks, block_size, nq, nkv, hd, window, P;
  float scale;
  int nh, hgroups, nsplits;
  int skip_q;     // > 0: rows of sequences with ≥ skip_q query rows belong to the tensor-core kernel
  float* ws_acc;  // [ntok, nq, nsplits, hd]
  float* ws_ml;   // [ntok, nq, nsplits, 2]
};

struct RowRange {
  int64_t lo, pos;
};

__device__ __forceinline__ RowRange row_range(const KArgs& a, int64_t t, int64_t s) {
  const int64_t q_len = a.q_start[s + 1] - a.q_start[s];
  const int64_t pos = a.ctx_len[s] - q_len + (t - a.q_start[s]);
  const int64_t lo = a.window > 0 ? max(static_cast<int64_t>(0), pos - a.window + 1) : 0;
  return {lo, pos};
}

template <int HDP, int MAXH>
__global__ void __launch_bounds__(kThreads) paged_attention_kernel(const KArgs a) {
  griddep_wait();
  constexpr int TPR = HDP / 8;        // threads per key row
  constexpr int KPI = kThreads / TPR; // keys side by side
  constexpr int U = kTile / KPI;      // keys per thread per tile
  static_assert(U >= 1, "tile smaller than one pass");
  __shared__ float sc[MAXH][kTile];
  __shared__ float m_s[MAXH], l_s[MAXH], alpha_s[MAXH];
  __shared__ float red[kThreads / 32][MAXH][HDP];

  const int64_t t = blockIdx.x;
  const int64_t g = blockIdx.y / a.hgroups;
  const int64_t head0 = g * (a.nq / a.nkv) + static_cast<int64_t>(blockIdx.y % a.hgroups) * a.nh;
  const int split = blockIdx.z;
  const int64_t s = a.token_seq[t];
  if (a.skip_q > 0 && a.q_start[s + 1] - a.q_start[s] >= a.skip_q) return;
  const RowRange rr = row_range(a, t, s);
  const int64_t k_begin = rr.lo + split * a.P;
  if (k_begin > rr.pos) return;  // this row needs fewer splits (combine knows)
  const int64_t k_end = min(k_begin + a.P, rr.pos + 1);

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int kslot = tid / TPR, chunk = tid % TPR;
  const int64_t d0 = static_cast<int64_t>(chunk) * 8;
  const bool dim_ok = d0 < a.hd;

  float qv[MAXH][8];
#pragma unroll
  for (int h = 0; h < MAXH; ++h) {
    if (h < a.nh && dim_ok) {
      load8(a.q + t * a.q_stride + (head0 + h) * a.hd + d0, qv[h]);
#pragma unroll
      for (int i = 0; i < 8; ++i) qv[h][i] *= a.scale;
    } else {
#pragma unroll
      for (int i = 0; i < 8; ++i) qv[h][i] = 0.0f;
    }
  }
  float acc[MAXH][8];
#pragma unroll
  for (int h = 0; h < MAXH; ++h)
#pragma unroll
    for (int i = 0; i < 8; ++i) acc[h][i] = 0.0f;
  if (tid < MAXH) {
    m_s[tid] = -INFINITY;
    l_s[tid] = 0.0f;
  }
  const int32_t* table = a.block_tables + s * a.max_blocks;
  const int64_t block_elems = a.nkv * a.hd * a.block_size;  // head-major blocks [nkv][bs][hd]

  const int bs = static_cast<int>(a.block_size);
  for (int64_t tile = k_begin; tile < k_end; tile += kTile) {
    int64_t off[U];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int j = static_cast<int>(tile) + kslot + u * KPI;  // positions < 2^31
      off[u] = -1;
      if (j < k_end) {
        const int64_t blk = table[j / bs];
        off[u] = blk * block_elems + (g * bs + j % bs) * a.hd + d0;
      }
    }
    // K and V of the tile are both requested before any use: the V loads are in
    // flight during the dot products and the softmax step (raw bf16 in registers).
    Bf16x8 kraw[U], vraw[U];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      kraw[u] = Bf16x8{};
      vraw[u] = Bf16x8{};
      if (off[u] >= 0 && dim_ok) {
        kraw[u] = *reinterpret_cast<const Bf16x8*>(a.kc + off[u]);
        vraw[u] = *reinterpret_cast<const Bf16x8*>(a.vc + off[u]);
      }
    }
    // 1. scores
#pragma unroll
    for (int u = 0; u < U; ++u) {
      float kf[8];
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const float2 t2 = __bfloat1622float2(kraw[u].h[i]);
        kf[2 * i] = t2.x;
        kf[2 * i + 1] = t2.y;
      }
#pragma unroll
      for (int h = 0; h < MAXH; ++h) {
        float d = 0.0f;
#pragma unroll
        for (int i = 0; i < 8; ++i) d = fmaf(qv[h][i], kf[i], d);
#pragma unroll
        for (int o = 1; o < TPR; o <<= 1) d += __shfl_xor_sync(0xffffffffu, d, o);
        if (chunk == 0) sc[h][kslot + u * KPI] = off[u] >= 0 ? d : -INFINITY;
      }
    }
    __syncthreads();
    // 2. online softmax, one warp per head
    for (int h = warp; h < MAXH; h += kThreads / 32) {
      const float v0 = sc[h][lane], v1 = sc[h][lane + 32];
      const float m_old = m_s[h];
      const float m_new = fmaxf(m_old, warp_max(fmaxf(v0, v1)));
      const float m_use = m_new == -INFINITY ? 0.0f : m_new;
      const float p0 = __expf(v0 - m_use), p1 = __expf(v1 - m_use);
      sc[h][lane] = p0;
      sc[h][lane + 32] = p1;
      const float sum = warp_sum(p0 + p1);
      if (lane == 0) {
        const float alpha = __expf(m_old - m_use);
        m_s[h] = m_new;
        l_s[h] = l_s[h] * alpha + sum;
        alpha_s[h] = alpha;
      }
    }
    __syncthreads();
    // 3. values
#pragma unroll
    for (int h = 0; h < MAXH; ++h) {
      const float al = alpha_s[h];
#pragma unroll
      for (int i = 0; i < 8; ++i) acc[h][i] *= al;
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      float vf[8];
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const float2 t2 = __bfloat1622float2(vraw[u].h[i]);
        vf[2 * i] = t2.x;
        vf[2 * i + 1] = t2.y;
      }
#pragma unroll
      for (int h = 0; h < MAXH; ++h) {
        const float p = sc[h][kslot + u * KPI];
#pragma unroll
        for (int i = 0; i < 8; ++i) acc[h][i] = fmaf(p, vf[i], acc[h][i]);
      }
    }
    __syncthreads();  // sc is rewritten by the next tile
  }

  // Sum the key slots: inside the warp (lanes with the same chunk), then across warps.
#pragma unroll
  for (int h = 0; h < MAXH; ++h)
#pragma unroll
    for (int i = 0; i < 8; ++i)
#pragma unroll
      for (int o = TPR; o < 32; o <<= 1) acc[h][i] += __shfl_xor_sync(0xffffffffu, acc[h][i], o);
  if (lane < TPR) {
#pragma unroll
    for (int h = 0; h < MAXH; ++h)
#pragma unroll
      for (int i = 0; i < 8; ++i) red[warp][h][chunk * 8 + i] = acc[h][i];
  }
  __syncthreads();
  for (int64_t e = tid; e < a.nh * a.hd; e += kThreads) {
    const int h = static_cast<int>(e / a.hd);
    const int64_t d = e % a.hd;
    float v = 0.0f;
#pragma unroll
    for (int w = 0; w < kThreads / 32; ++w) v += red[w][h][d];
    const int64_t head = head0 + h;
    if (a.nsplits == 1) {
      a.out[(t * a.nq + head) * a.hd + d] = __float2bfloat16(v / l_s[h]);
    } else {
      const int64_t idx = (t * a.nq + head) * a.nsplits + split;
      a.ws_acc[idx * a.hd + d] = v;
      if (d == 0) {
        a.ws_ml[idx * 2] = m_s[h];
        a.ws_ml[idx * 2 + 1] = l_s[h];
      }
    }
  }
}

__global__ void combine_kernel(const KArgs a) {
  griddep_wait();
  const int64_t t = blockIdx.x, head = blockIdx.y;
  const int64_t s = a.token_seq[t];
  if (a.skip_q > 0 && a.q_start[s + 1] - a.q_start[s] >= a.skip_q) return;
  const RowRange rr = row_range(a, t, s);
  const int64_t n_vis = rr.pos - rr.lo + 1;
  const int nact = static_cast<int>((n_vis + a.P - 1) / a.P);
  const int64_t base = (t * a.nq + head) * a.nsplits;
  float M = -INFINITY;
  for (int i = 0; i < nact; ++i) M = fmaxf(M, a.ws_ml[(base + i) * 2]);
  float L = 0.0f;
  for (int i = 0; i < nact; ++i) L += __expf(a.ws_ml[(base + i) * 2] - M) * a.ws_ml[(base + i) * 2 + 1];
  for (int64_t d = threadIdx.x; d < a.hd; d += blockDim.x) {
    float o = 0.0f;
    for (int i = 0; i < nact; ++i) o += __expf(a.ws_ml[(base + i) * 2] - M) * a.ws_acc[(base + i) * a.hd + d];
    a.out[(t * a.nq + head) * a.hd + d] = __float2bfloat16(o / L);
  }
}

int num_sms() {
  static int n = [] {
    int dev = 0, v = 0;
    if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess)
      v = 132;  // H100/H200 SXM
    return v;
  }();
  return n;
}

int padded_head_dim(int64_t hd) {
  switch (hd) {
    case 16: return 16;
    case 32: return 32;
    case 40: case 64: return 64;
    case 80: case 96: case 128: return 128;
    case 256: return 256;
    default: return 0;
  }
}

bool make_plan(const PagedAttentionParams& p, Plan* out) {
  if (p.nkv_heads <= 0 || p.nq_heads % p.nkv_heads != 0 || padded_head_dim(p.head_dim) == 0) return false;
  Plan pl;
  const int64_t G = p.nq_heads / p.nkv_heads;
  pl.nh = 1;
  for (int64_t d = std::min<int64_t>(G, 8); d >= 1; --d)
    if (G % d == 0) {
      pl.nh = static_cast<int>(d);
      break;
    }
  pl.maxh = pl.nh == 1 ? 1 : pl.nh <= 4 ? 4 : 8;
  pl.hgroups = static_cast<int>(G / pl.nh);
  int64_t max_ctx = std::max<int64_t>(1, p.max_context);
  if (p.sliding_window > 0) max_ctx = std::min<int64_t>(max_ctx, p.sliding_window);
  const int64_t base = std::max<int64_t>(1, p.num_tokens * p.nkv_heads * pl.hgroups);
  // Split only while (rows × kv heads × head groups) do not fill one wave of
  // the tensor-core decode kernel (3 blocks per SM): at batch 64 × 8 kv heads
  // (512 blocks) one split and no combine kernel measured 5.59 vs 5.75 ms a
  // step at contexts 129–256 and the same at 512 (bench/NOTES_runs_13-17.md run 15).
  const int64_t target = 3LL * num_sms();
  int64_t want = base >= target ? 1 : (target + base - 1) / base;
  want = std::min<int64_t>({want, kMaxSplits, (max_ctx + kTile - 1) / kTile});
  want = std::max<int64_t>(want, 1);
  const int64_t per = (max_ctx + want - 1) / want;
  pl.P = (per + kTile - 1) / kTile * kTile;
  pl.nsplits = static_cast<int>((max_ctx + pl.P - 1) / pl.P);
  *out = pl;
  return true;
}

template <int HDP, int MAXH>
cudaError_t launch(const KArgs& a, dim3 grid, cudaStream_t s) {
  return launch_k(paged_attention_kernel<HDP, MAXH>, grid, dim3(kThreads), 0, s, a);
}

template <int HDP>
cudaError_t launch_h(const KArgs& a, int maxh, dim3 grid, cudaStream_t s) {
  switch (maxh) {
    case 1: return launch<HDP, 1>(a, grid, s);
    case 4: return launch<HDP, 4>(a, grid, s);
    default: return launch<HDP, 8>(a, grid, s);
  }
}

}  // namespace

bool attention_head_dim_supported(int64_t head_dim) { return padded_head_dim(head_dim) != 0; }

namespace {
// Workspace: first the arrival counters of the tensor-core decode kernel's
// in-kernel merge, one int32 per (row, kv head), in an area of the same size
// for every call; then f32 (acc, m, l) per (row, head, split). Every call
// leaves its counters at zero, so calls of any shape may share them — but
// only at a fixed place: when they followed the partials, a batch-8 call's
// partials overwrote where a batch-1 call keeps its counters, and every
// batch-1 step after it skipped the merge (bench/NOTES.md run 19).
// The merge runs only in grids of ≤ 6 blocks an SM with ≥ 2 splits, so at
// most 3 × SMs (row, kv head) pairs count arrivals.
int64_t max_counted_pairs() { return 3LL * num_sms(); }
size_t counter_area_bytes() {
  constexpr size_t kAlign = 256;  // the partials after it are read as float4
  return (static_cast<size_t>(max_counted_pairs()) * sizeof(int32_t) + kAlign - 1) / kAlign * kAlign;
}
size_t partials_bytes(const PagedAttentionParams& p, const Plan& pl) {
  return static_cast<size_t>(p.num_tokens) * p.nq_heads * pl.nsplits * (p.head_dim + 2) * sizeof(float);
}
}  // namespace

size_t paged_attention_workspace_bytes(const PagedAttentionParams& p) {
  Plan pl;
  if (!make_plan(p, &pl) || pl.nsplits == 1) return 0;
  return counter_area_bytes() + partials_bytes(p, pl);
}

cudaError_t paged_attention(const bf16* q, int64_t q_stride, bf16* k_cache, bf16* v_cache, bf16* out,
                            const PagedAttentionParams& p, float* workspace, size_t workspace_bytes,
                            cudaStream_t stream) {
  if (p.num_tokens <= 0) return cudaSuccess;
  if (p.rope_inv_freq && !decode_rope_fusable(p)) return cudaErrorInvalidValue;  // only the TC decode kernel rotates
  Plan pl;
  if (!make_plan(p, &pl)) return cudaErrorNotSupported;
  if (!attention_operands_aligned(q, q_stride, k_cache, v_cache)) return cudaErrorMisalignedAddress;
  if (p.block_size <= 0 || p.max_blocks_per_seq <= 0) return cudaErrorInvalidValue;
  KArgs a{};
  a.q = q;
  a.q_stride = q_stride;
  a.kc = k_cache;
  a.vc = v_cache;
  a.out = out;
  a.token_seq = p.token_seq;
  a.q_start = p.q_start;
  a.ctx_len = p.ctx_len;
  a.block_tables = p.block_tables;
  a.max_blocks = p.max_blocks_per_seq;
  a.block_size = p.block_size;
  a.nq = p.nq_heads;
  a.nkv = p.nkv_heads;
  a.hd = p.head_dim;
  a.window = p.sliding_window;
  a.P = pl.P;
  a.scale = p.scale;
  a.nh = pl.nh;
  a.hgroups = pl.hgroups;
  a.nsplits = pl.nsplits;
  int32_t* counters = nullptr;
  if (pl.nsplits > 1) {
    if (!workspace || workspace_bytes < counter_area_bytes() + partials_bytes(p, pl)) return cudaErrorInvalidValue;
    counters = reinterpret_cast<int32_t*>(workspace);
    a.ws_acc = reinterpret_cast<float*>(reinterpret_cast<char*>(workspace) + counter_area_bytes());
    a.ws_ml = a.ws_acc + static_cast<size_t>(p.num_tokens) * p.nq_heads * pl.nsplits * p.head_dim;
  }
  if (p.num_tokens > 0x7fffffff || p.nkv_heads * pl.hgroups > 65535) return cudaErrorInvalidValue;
  // Sequences with many query rows go to the tensor-core kernel; with one
  // sequence that is every row and the SIMT kernel is not launched at all.
  const bool tc = p.tensor_cores && p.num_seqs > 0 && p.max_q_len >= kPrefillTensorCoreRows &&
                  prefill_tc_supported(p.head_dim);
  a.skip_q = tc ? static_cast<int>(kPrefillTensorCoreRows) : 0;
  if (tc && p.num_seqs == 1)
    return paged_prefill_attention_tc(q, q_stride, k_cache, v_cache, out, p, a.skip_q, stream);
  if (tc) {
    const cudaError_t e = paged_prefill_attention_tc(q, q_stride, k_cache, v_cache, out, p, a.skip_q, stream);
    if (e != cudaSuccess) return e;
  }
  cudaError_t e = cudaErrorNotSupported;
  if (p.tensor_cores && decode_tc_supported(p.head_dim, p.nq_heads / p.nkv_heads)) {
    DecodeSplit ds;
    ds.keys_per_split = pl.P;
    ds.nsplits = pl.nsplits;
    ds.ws_acc = a.ws_acc;
    ds.ws_ml = a.ws_ml;
    // Splits merged by the last block of each (row, kv head) when the grid is
    // at most two waves (3 blocks per SM): that saves the combine launch at
    // small batch (batch 1: 4.43 → 4.34 ms/token on the 8B shape). In a longer
    // grid the merges pile up in its last wave (batch 64: 53 + 6 µs became
    // 66 µs), so the combine kernel runs instead.
    const int64_t blocks = p.num_tokens * p.nkv_heads * pl.nsplits;
    ds.counters = blocks <= 2 * 3 * static_cast<int64_t>(num_sms()) &&
                          p.num_tokens * p.nkv_heads <= max_counted_pairs()
                      ? counters
                      : nullptr;
    e = paged_decode_attention_tc(q, q_stride, k_cache, v_cache, out, p, ds, a.skip_q, stream);
    if (e != cudaSuccess || pl.nsplits == 1 || ds.counters) return e;
    return launch_k(combine_kernel, dim3(static_cast<unsigned>(p.num_tokens), static_cast<unsigned>(p.nq_heads)),
                    dim3(128), 0, stream, a);
  }
  const dim3 grid(static_cast<unsigned>(p.num_tokens), static_cast<unsigned>(p.nkv_heads * pl.hgroups),
                  static_cast<unsigned>(pl.nsplits));
  switch (padded_head_dim(p.head_dim)) {
    case 16: e = launch_h<16>(a, pl.maxh, grid, stream); break;
    case 32: e = launch_h<32>(a, pl.maxh, grid, stream); break;
    case 64: e = launch_h<64>(a, pl.maxh, grid, stream); break;
    case 128: e = launch_h<128>(a, pl.maxh, grid, stream); break;
    case 256: e = launch_h<256>(a, pl.maxh, grid, stream); break;
    default: return cudaErrorNotSupported;
  }
  if (e != cudaSuccess || pl.nsplits == 1) return e;
  return launch_k(combine_kernel, dim3(static_cast<unsigned>(p.num_tokens), static_cast<unsigned>(p.nq_heads)),
                  dim3(128), 0, stream, a);
}

}  // namespace shardlm::kernels::cuda
