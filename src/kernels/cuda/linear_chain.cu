// A chain of skinny linears in one persistent kernel (decode at batch ≤ 4):
// the stretch of a decoder layer between two attentions — o_proj, add+RMSNorm,
// gate|up·silu, down, add+RMSNorm, the next layer's qkv — as one launch
// instead of six.
//
// Status: opt-in (CudaBackendOptions::linear_chain). At batch 1 it measured
// within 1 % of the kernel per op (H100 0.8 % slower, H200 0.7 % faster;
// bench/NOTES_runs_13-17.md run 17): a grid barrier costs ~2.5 µs, the input fetch + norm
// after it 0.5–1.5 µs and the stage tails 1–4 µs, about what kernel boundaries
// cost (with the norm in registers: parity with the per-op kernels on H100).
//
// Why: at batch 1 a linear is a stream over its weights, and each kernel
// boundary costs ~3 µs of ramp (the first DRAM round trip of the next kernel)
// and drain (the last rows of this one) whatever the matrix size
// (bench/NOTES_runs_01-12.md run 10, bench/NOTES_runs_13-17.md run 13): ~12 µs a layer
// on the H200, the part of batch 1's distance to the roofline the per-op
// kernels cannot remove.
//
// How: a cooperative grid of one 512-thread block per SM runs the
// stages in order with a grid barrier between them. Stage rows are dealt
// round-robin over the blocks (row r → block r mod G, then the block's warps),
// so every SM streams the same share of every matrix. Before a warp waits at
// the barrier it has already requested its first weight pieces of the next
// stage (weights do not depend on the barrier), so HBM keeps streaming while
// the last rows of the stage finish and the barrier resolves.
// Each block copies the stage input x [m, k] into shared memory after the
// barrier (L2 reads: cross-block data is read with ld.global.cg so no stale L1
// line is used). A stage with a norm computes add+RMSNorm itself: the old
// residual and the norm weight are copied to shared memory before the barrier
// (nothing in the stage before writes them), every block sums each row (256
// threads per row in add_rmsnorm's exact order, so the values are
// add_rmsnorm's bit for bit) and normalises into its copy of x, and each block
// stores its slice of the new residual and of the norm's output buffer.
// The dot products are gemv.cu's (each lane sums the same pieces in the same
// order, then the same shuffle tree), so every output equals the unfused
// kernels' bit for bit.
#include <algorithm>
#include <cstdio>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/cuda_kernels.h"

namespace shardlm::kernels::cuda {
namespace {

using namespace detail;

constexpr int kThreads = 512;  // 16 warps, one block an SM
constexpr int kWarps = kThreads / 32;
constexpr int kNormGroup = 256;  // add_rmsnorm's block: its per-thread sums and tree, reproduced per row
// Pieces of 16 bytes in flight per lane and weight row: 8 at m = 1 (8 KB of a
// row pair per warp step, 128 KB an SM requested at once: an H200 needs
// ~55 KB an SM in flight at ~1.5 µs loaded latency), 4 above (8 spills at
// 128 registers).
// The order of each lane's sums does not depend on it (increasing piece).
template <int M>
constexpr int kUnrollFor = M == 1 ? 8 : 4;
// A barrier that has not resolved in 5 s means a block never arrived (the
// cooperative launch rules that out); report and trap rather than spin forever.
constexpr unsigned long long kBarrierTimeoutNs = 5000000000ull;

struct ChainParams {
  LinearChainStage st[kLinearChainMaxStages];
  int n_stages;
  unsigned* sync;  // [0] grid-barrier arrivals, [1] barrier generation
  unsigned long long* timeline;  // null, or [gridDim][1 + 4 · n_stages] global ns (linear_chain_timeline)
  int prefetch;                  // pieces of the next stage's first step requested during a barrier: 0, kU / 2, kU
};

__device__ __forceinline__ unsigned ld_acquire(const unsigned* p) {
  unsigned v;
  asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}

__device__ __forceinline__ unsigned long long global_ns() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

__device__ __forceinline__ uint4 ld_cg(const void* p) { return __ldcg(reinterpret_cast<const uint4*>(p)); }

// Sense-reversing grid barrier in two halves: the last block to arrive
// resets the count and bumps the generation the others wait on. Between
// arrive and wait a block issues loads that do not depend on the barrier
// (the next stage's first weights): issued before the arrival they would
// queue ahead of its atomic and of the polls, and the barrier would last as
// long as they take to drain (measured: ~5 µs a barrier on H100). Writes
// before arrive (any thread of any block) are visible to reads after wait
// through thread 0's fences and the block barriers around them.
__device__ unsigned barrier_arrive(unsigned* sync) {
  unsigned gen = 0;
  __syncthreads();
  if (threadIdx.x == 0) {
    gen = ld_acquire(sync + 1);
    __threadfence();
    if (atomicAdd(sync, 1u) == gridDim.x - 1) {
      atomicExch(sync, 0u);
      __threadfence();
      atomicAdd(sync + 1, 1u);
    }
  }
  return gen;  // thread 0's is the one wait uses
}

__device__ void barrier_wait(unsigned* sync, unsigned gen, int stage) {
  if (threadIdx.x == 0) {
    const unsigned long long t0 = global_ns();
    while (ld_acquire(sync + 1) == gen) {
      if (global_ns() - t0 > kBarrierTimeoutNs) {
        printf("shardlm linear_chain: block %d waited 5 s at the barrier after stage %d (%u of %u blocks arrived)\n",
               blockIdx.x, stage, ld_acquire(sync), gridDim.x);
        __trap();
      }
    }
    __threadfence();
  }
  __syncthreads();
}

// A warp streams two weight rows at once (64 bytes in flight per lane per
// row; one 512-thread block per SM, so 64 KB an SM): with silu the gate and up
// rows of one output (gemv_silu_mul's pair), else two outputs, row and
// row + stride. Each row's sum is the same per-lane sequence of pieces as
// gemv.cu's, so the pairing changes no bit.
template <bool kSiLU>
__device__ __forceinline__ int64_t second_row(const LinearChainStage& S, int64_t row, int64_t stride) {
  return kSiLU ? S.n + row : (row + stride < S.n ? row + stride : -1);
}

// The first `pieces_first` pieces (kU or kU / 2) of `row`'s pair (gemv.cu's
// load_step at p = lane); returns how many were requested (0: the pair has no
// unrolled step).
template <bool kSiLU, int kU>
__device__ __forceinline__ int load_first(const LinearChainStage& S, int64_t row, int64_t stride, int lane,
                                          Bf16x8 (&wv)[2][kU], int pieces_first) {
  const int64_t pieces = S.k / 8;
  if (pieces_first <= 0 || row >= S.n || lane + 32 * (kU - 1) >= pieces) return 0;
  const int64_t rows[2] = {row, second_row<kSiLU>(S, row, stride)};
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    if (rows[r] < 0) break;
    const Bf16x8* wr = reinterpret_cast<const Bf16x8*>(S.w + rows[r] * S.k);
#pragma unroll
    for (int u = 0; u < kU; ++u) {
      if (u >= pieces_first) continue;
      const uint4 raw = __ldcs(reinterpret_cast<const uint4*>(wr + lane + 32 * u));
      wv[r][u] = *reinterpret_cast<const Bf16x8*>(&raw);
    }
  }
  return pieces_first;
}

template <int kU>
__device__ __forceinline__ int prefetch(const LinearChainStage& S, int64_t row, int64_t stride, int lane,
                                        Bf16x8 (&wv)[2][kU], int pieces_first) {
  return S.silu ? load_first<true, kU>(S, row, stride, lane, wv, pieces_first)
                : load_first<false, kU>(S, row, stride, lane, wv, pieces_first);
}

// gemv.cu's warp-per-row loop over this warp's row pairs of the stage; x is
// the block's shared copy [M, k]. Loads run ahead of the sums so a warp never
// waits with nothing in flight: the pieces u = 0, 1 of the next step are
// requested as soon as those of this step are summed (then u = 2, 3), and the
// next pair's first step before this pair's shuffle tree and store. The sums
// keep gemv.cu's order. `loaded`: pieces of the first pair's first step already in wv.
template <int M, bool kSiLU, int kU = kUnrollFor<M>>
__device__ void stage_rows(const LinearChainStage& S, const bf16* xs, int64_t first, int64_t stride, int lane,
                           Bf16x8 (&wv)[2][kU], int loaded) {
  const int64_t n = S.n, k = S.k, pieces = k / 8;
  const int64_t pair_step = kSiLU ? stride : 2 * stride;
  for (int64_t row = first; row < n; row += pair_step) {
    const int64_t row2 = second_row<kSiLU>(S, row, stride);
    const bool two = row2 >= 0;  // warp-uniform
    const Bf16x8* wr[2] = {reinterpret_cast<const Bf16x8*>(S.w + row * k),
                           reinterpret_cast<const Bf16x8*>(S.w + (two ? row2 : row) * k)};
    auto load = [&](int64_t at, int u0, int u1) {
#pragma unroll
      for (int r = 0; r < 2; ++r)
#pragma unroll
        for (int u = 0; u < kU; ++u) {
          if (u < u0 || u >= u1 || (r == 1 && !two)) continue;
          const uint4 raw = __ldcs(reinterpret_cast<const uint4*>(wr[r] + at + 32 * u));
          wv[r][u] = *reinterpret_cast<const Bf16x8*>(&raw);
        }
    };
    float acc[2][M];
#pragma unroll
    for (int r = 0; r < 2; ++r)
#pragma unroll
      for (int m = 0; m < M; ++m) acc[r][m] = 0.0f;
    auto consume = [&](int64_t at, int u0, int u1) {
#pragma unroll
      for (int u = 0; u < kU; ++u) {
        if (u < u0 || u >= u1) continue;
#pragma unroll
        for (int m = 0; m < M; ++m) {
          const Bf16x8 xv = *reinterpret_cast<const Bf16x8*>(xs + m * k + (at + 32 * u) * 8);
          dot8(wv[0][u], xv, acc[0][m]);
          if (two) dot8(wv[1][u], xv, acc[1][m]);
        }
      }
    };
    int64_t p = lane;
    if (loaded < kU && p + 32 * (kU - 1) < pieces) load(p, loaded, kU);
    for (; p + 32 * (kU - 1) < pieces; p += 32 * kU) {
      const bool next = p + 32 * kU + 32 * (kU - 1) < pieces;
      consume(p, 0, kU / 2);
      if (next) load(p + 32 * kU, 0, kU / 2);
      consume(p, kU / 2, kU);
      if (next) load(p + 32 * kU, kU / 2, kU);
    }
    // The last < kU pieces of each lane: requested together, summed in order.
    if (p < pieces) {
#pragma unroll
      for (int r = 0; r < 2; ++r)
#pragma unroll
        for (int u = 0; u < kU; ++u) {
          if ((r == 1 && !two) || p + 32 * u >= pieces) continue;
          const uint4 raw = __ldcs(reinterpret_cast<const uint4*>(wr[r] + p + 32 * u));
          wv[r][u] = *reinterpret_cast<const Bf16x8*>(&raw);
        }
#pragma unroll
      for (int u = 0; u < kU; ++u) {
        if (p + 32 * u >= pieces) continue;
#pragma unroll
        for (int m = 0; m < M; ++m) {
          const Bf16x8 xv = *reinterpret_cast<const Bf16x8*>(xs + m * k + (p + 32 * u) * 8);
          dot8(wv[0][u], xv, acc[0][m]);
          if (two) dot8(wv[1][u], xv, acc[1][m]);
        }
      }
    }
    loaded = load_first<kSiLU, kU>(S, row + pair_step, stride, lane, wv, kU);  // the next pair's first step
#pragma unroll
    for (int r = 0; r < 2; ++r)
#pragma unroll
      for (int m = 0; m < M; ++m) acc[r][m] = warp_sum(acc[r][m]);
    if (lane == 0) {
      if constexpr (kSiLU) {
        const float bg = S.bias ? __bfloat162float(S.bias[row]) : 0.0f;
        const float bu = S.bias ? __bfloat162float(S.bias[n + row]) : 0.0f;
#pragma unroll
        for (int m = 0; m < M; ++m)
          S.y[m * n + row] = __float2bfloat16(silu_times(round_bf16(acc[0][m] + bg), round_bf16(acc[1][m] + bu)));
      } else {
#pragma unroll
        for (int m = 0; m < M; ++m) {
          S.y[m * n + row] = __float2bfloat16(acc[0][m] + (S.bias ? __bfloat162float(S.bias[row]) : 0.0f));
          if (two) S.y[m * n + row2] = __float2bfloat16(acc[1][m] + (S.bias ? __bfloat162float(S.bias[row2]) : 0.0f));
        }
      }
    }
  }
}

// Copies nvec 16-byte vectors from global (through L2: cross-block data) to
// shared memory, four loads in flight per thread before the first store.
__device__ __forceinline__ void copy_to_smem(bf16* dst, const bf16* src, int64_t nvec) {
  constexpr int kBatch = 4;
  for (int64_t base = threadIdx.x; base < nvec; base += kBatch * kThreads) {
    uint4 v[kBatch];
#pragma unroll
    for (int j = 0; j < kBatch; ++j)
      if (base + j * kThreads < nvec) v[j] = ld_cg(src + (base + j * kThreads) * 8);
#pragma unroll
    for (int j = 0; j < kBatch; ++j)
      if (base + j * kThreads < nvec) *reinterpret_cast<uint4*>(dst + (base + j * kThreads) * 8) = v[j];
  }
}

// The next norm stage's old residual [M, k] and norm weight [k] into shared
// memory, requested at the start of the stage before it (nothing in that
// stage writes them: no two norm stages are adjacent) as asynchronous copies
// that no thread waits on until the norm needs them (cp.async; waited in
// stage_x), so after the barrier only x is fetched.
__device__ __forceinline__ void cp_async16(bf16* dst, const bf16* src) {
  const unsigned d = static_cast<unsigned>(__cvta_generic_to_shared(dst));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(d), "l"(src) : "memory");
}

template <int M>
__device__ void preload_norm(const LinearChainStage& S, bf16* rs, bf16* gs) {
  const int64_t vecs = S.k / 8;
  for (int64_t i = threadIdx.x; i < M * vecs; i += kThreads) cp_async16(rs + i * 8, S.residual + i * 8);
  for (int64_t i = threadIdx.x; i < vecs; i += kThreads) cp_async16(gs + i * 8, S.norm_w + i * 8);
  asm volatile("cp.async.commit_group;" ::: "memory");
}

// Sum of ss over this thread's 256-thread norm group, every thread getting
// its group's total: add_rmsnorm's block_sum (warp tree, then the 8 warp
// sums by one warp), per group. Contains the block barrier part[] needs.
__device__ __forceinline__ float norm_group_sum(float ss, float* part) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, group = threadIdx.x / kNormGroup;
  ss = warp_sum(ss);
  if (lane == 0) part[warp] = ss;
  __syncthreads();
  return warp_sum(lane < kNormGroup / 32 ? part[group * (kNormGroup / 32) + lane] : 0.0f);
}

// The stage's x [M, k] into shared memory (and, before a norm, the preloaded
// residual and weight complete).
template <int M>
__device__ void stage_x(const LinearChainStage& S, bf16* xs) {
  copy_to_smem(xs, S.x, M * S.k / 8);
  if (S.norm_w) asm volatile("cp.async.wait_all;" ::: "memory");  // this thread's part of preload_norm
  __syncthreads();
}

// add+RMSNorm of (residual rs, x xs) into xs, with the weight in gs.
template <int M>
__device__ void stage_norm(const LinearChainStage& S, bf16* xs, bf16* rs, const bf16* gs) {
  const int64_t k = S.k, vecs = k / 8;
  // Two groups of 256 threads, a row each at a time; a thread's columns and
  // the order of its sums are add_rmsnorm's (c = t·8, t·8 + 2048, …).
  __shared__ float part[kThreads / 32];
  const int group = threadIdx.x / kNormGroup, t = threadIdx.x % kNormGroup;
  for (int m0 = 0; m0 < M; m0 += kThreads / kNormGroup) {
    const int m = m0 + group;
    float ss = 0.0f;
    if (m < M) {
      for (int64_t c = t * 8; c < k; c += kNormGroup * 8) {
        float v[8], r[8];
        load8(xs + m * k + c, v);
        load8(rs + m * k + c, r);
#pragma unroll
        for (int e = 0; e < 8; ++e) {
          v[e] = round_bf16(r[e] + v[e]);
          ss += v[e] * v[e];
        }
        store8(rs + m * k + c, v);  // the new residual (exact: v is a bf16 value)
      }
    }
    const float tot = norm_group_sum(ss, part);
    if (m < M) {
      const float r = rsqrtf(tot / static_cast<float>(k) + S.eps);
      for (int64_t c = t * 8; c < k; c += kNormGroup * 8) {
        float v[8], g[8];
        load8(rs + m * k + c, v);
        load8(gs + c, g);
#pragma unroll
        for (int e = 0; e < 8; ++e) v[e] = g[e] * round_bf16(v[e] * r);
        store8(xs + m * k + c, v);
      }
    }
    __syncthreads();  // part[] is reused by the next pair of rows; xs and rs complete
  }
  // Every block read the old residual before the barrier, so each now writes
  // its slice of the new residual and of the norm's output (add_rmsnorm's stores).
  const int64_t chunk = (vecs + gridDim.x - 1) / gridDim.x, lo = blockIdx.x * chunk;
  const int64_t hi = lo + chunk < vecs ? lo + chunk : vecs;
  for (int64_t i = threadIdx.x; i < M * chunk; i += kThreads) {
    const int64_t m = i / chunk, v = lo + i % chunk;
    if (v >= hi) continue;
    const int64_t at = (m * vecs + v) * 8;
    *reinterpret_cast<uint4*>(S.residual + at) = *reinterpret_cast<const uint4*>(rs + at);
    *reinterpret_cast<uint4*>(S.norm_out + at) = *reinterpret_cast<const uint4*>(xs + at);
  }
}

// stage_norm for rows of ≤ kNormRegCols: each of the 256 norm threads loads
// its ≤ 4 vectors of x straight into registers (no copy of x through shared
// memory first) and keeps v there (as bf16, which it is exactly: 16 registers,
// so the prefetched weights keep theirs), so the new residual and the norm's
// output slices are stored from registers too; only the normalised rows go to xs.
// The same columns, sums and order as stage_norm (and add_rmsnorm).
constexpr int kNormRegVecs = 4;
constexpr int64_t kNormRegCols = kNormRegVecs * kNormGroup * 8;  // 8192

template <int M>
__device__ void stage_norm_regs(const LinearChainStage& S, bf16* xs, const bf16* rs, const bf16* gs) {
  const int64_t k = S.k, vecs = k / 8;
  __shared__ float part[kThreads / 32];
  const int group = threadIdx.x / kNormGroup, t = threadIdx.x % kNormGroup;
  const int64_t chunk = (vecs + gridDim.x - 1) / gridDim.x, lo = blockIdx.x * chunk;
  const int64_t hi = lo + chunk < vecs ? lo + chunk : vecs;  // this block's slice of the stores, in vectors
  for (int m0 = 0; m0 < M; m0 += kThreads / kNormGroup) {
    const int m = m0 + group;
    uint4 xr[kNormRegVecs];  // x, then v = bf16(residual + x)
    float ss = 0.0f;
    if (m < M) {
#pragma unroll
      for (int i = 0; i < kNormRegVecs; ++i) {
        const int64_t c = (static_cast<int64_t>(i) * kNormGroup + t) * 8;
        if (c < k) xr[i] = ld_cg(S.x + m * k + c);  // all requested before the first is used
      }
#pragma unroll
      for (int i = 0; i < kNormRegVecs; ++i) {
        const int64_t c = (static_cast<int64_t>(i) * kNormGroup + t) * 8;
        if (c >= k) continue;
        float v[8], r[8];
        load8(reinterpret_cast<const bf16*>(&xr[i]), v);
        load8(rs + m * k + c, r);
#pragma unroll
        for (int e = 0; e < 8; ++e) {
          v[e] = round_bf16(r[e] + v[e]);
          ss += v[e] * v[e];
        }
        store8(reinterpret_cast<bf16*>(&xr[i]), v);
      }
    }
    const float tot = norm_group_sum(ss, part);
    if (m < M) {
      const float r = rsqrtf(tot / static_cast<float>(k) + S.eps);
#pragma unroll
      for (int i = 0; i < kNormRegVecs; ++i) {
        const int64_t c = (static_cast<int64_t>(i) * kNormGroup + t) * 8;
        if (c >= k) continue;
        float v[8], g[8], y[8];
        load8(reinterpret_cast<const bf16*>(&xr[i]), v);
        load8(gs + c, g);
#pragma unroll
        for (int e = 0; e < 8; ++e) y[e] = g[e] * round_bf16(v[e] * r);
        store8(xs + m * k + c, y);
        if (c / 8 >= lo && c / 8 < hi) {  // every block read the old residual before the barrier
          *reinterpret_cast<uint4*>(S.residual + m * k + c) = xr[i];
          store8(S.norm_out + m * k + c, y);
        }
      }
    }
    __syncthreads();  // part[] is reused by the next pair of rows; xs complete
  }
}

// Shared memory: xs [M, max k] the stage input; rs [M, max norm k] the
// residual; gs [max norm k] the norm weight.
struct SmemLayout {
  int64_t rs_at = 0, gs_at = 0, bytes = 0;  // element offsets of rs, gs; total bytes
};

__host__ __device__ inline SmemLayout smem_layout(int64_t M, const LinearChainStage* st, int n) {
  int64_t k = 0, kn = 0;
  for (int i = 0; i < n; ++i) {
    k = k > st[i].k ? k : st[i].k;
    if (st[i].norm_w) kn = kn > st[i].k ? kn : st[i].k;
  }
  SmemLayout L;
  L.rs_at = M * k;
  L.gs_at = L.rs_at + M * kn;
  L.bytes = (L.gs_at + kn) * 2;
  return L;
}

template <int M>
__global__ void __launch_bounds__(kThreads, 1) linear_chain_kernel(const __grid_constant__ ChainParams P) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const SmemLayout L = smem_layout(M, P.st, P.n_stages);
  bf16* xs = reinterpret_cast<bf16*>(smem_raw);
  bf16* rs = xs + L.rs_at;
  bf16* gs = xs + L.gs_at;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t G = gridDim.x;
  const int64_t first = static_cast<int64_t>(warp) * G + blockIdx.x;  // this warp's first row of every stage
  const int64_t stride = G * kWarps;
  unsigned long long* tl = P.timeline ? P.timeline + blockIdx.x * (1 + 4 * P.n_stages) : nullptr;
  auto stamp = [&](int at) {
    if (tl && threadIdx.x == 0) tl[at] = global_ns();
  };
  stamp(0);
  Bf16x8 wv[2][kUnrollFor<M>];
  int loaded = prefetch(P.st[0], first, stride, lane, wv, kUnrollFor<M>);
  for (int s = 0; s < P.n_stages; ++s) {
    const LinearChainStage& S = P.st[s];
    if (S.norm_w && S.k <= kNormRegCols) {
      asm volatile("cp.async.wait_all;" ::: "memory");  // this thread's part of preload_norm
      __syncthreads();
      stamp(1 + 4 * s);
      stage_norm_regs<M>(S, xs, rs, gs);
    } else {
      stage_x<M>(S, xs);
      stamp(1 + 4 * s);
      if (S.norm_w) stage_norm<M>(S, xs, rs, gs);
    }
    if (s + 1 < P.n_stages && P.st[s + 1].norm_w) preload_norm<M>(P.st[s + 1], rs, gs);
    stamp(2 + 4 * s);
    if (S.silu)
      stage_rows<M, true>(S, xs, first, stride, lane, wv, loaded);
    else
      stage_rows<M, false>(S, xs, first, stride, lane, wv, loaded);
    if (tl) __syncthreads();  // the block's last row done
    stamp(3 + 4 * s);
    if (s + 1 < P.n_stages) {
      // Arrive, then request the next stage's first weight pieces (they do
      // not depend on the barrier; P.prefetch of them a lane), then wait.
      const unsigned gen = barrier_arrive(P.sync);
      loaded = prefetch(P.st[s + 1], first, stride, lane, wv, P.prefetch);
      barrier_wait(P.sync, gen, s);
    }
    stamp(4 + 4 * s);
  }
}

template <int M>
cudaError_t launch(const ChainParams& P, cudaStream_t s) {
  const size_t smem = static_cast<size_t>(smem_layout(M, P.st, P.n_stages).bytes);
  int dev = 0, sms = 0, per_sm = 0;
  cudaError_t e = cudaGetDevice(&dev);
  if (e == cudaSuccess) e = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
  if (e == cudaSuccess)
    e = cudaFuncSetAttribute(linear_chain_kernel<M>, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
  if (e == cudaSuccess)
    e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, linear_chain_kernel<M>, kThreads, smem);
  if (e != cudaSuccess) return e;
  if (per_sm < 1) return cudaErrorInvalidConfiguration;
  per_sm = 1;  // one block an SM (its 128 registers a thread take the SM's file): 64 KB of weights in flight
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(static_cast<unsigned>(sms * per_sm));
  cfg.blockDim = dim3(kThreads);
  cfg.dynamicSmemBytes = smem;
  cfg.stream = s;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeCooperative;  // every block resident at once, or the launch fails
  attr[0].val.cooperative = 1;
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  return cudaLaunchKernelEx(&cfg, linear_chain_kernel<M>, P);
}

}  // namespace

bool linear_chain_supported(const LinearChainStage* st, int n_stages, int64_t m) {
  if (m < 1 || m > kLinearChainMaxRows || n_stages < 1 || n_stages > kLinearChainMaxStages) return false;
  auto a16 = [](const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; };
  for (int i = 0; i < n_stages; ++i) {
    const LinearChainStage& S = st[i];
    if (S.k <= 0 || S.k % 8 != 0 || S.n <= 0 || !S.x || !S.w || !S.y || !a16(S.x) || !a16(S.w)) return false;
    if (!S.norm_w) continue;
    if (!S.residual || !S.norm_out || !a16(S.residual) || !a16(S.norm_out) || !a16(S.norm_w)) return false;
    // A norm reads the residual before the barrier into its stage: none in
    // stage 0 (no barrier before it) and never two in a row (the first one's
    // residual writes would race the second one's early read).
    if (i == 0 || st[i - 1].norm_w) return false;
  }
  int dev = 0, smem_max = 0;
  if (cudaGetDevice(&dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&smem_max, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  // x, residual and norm weight copies, plus the few hundred bytes of static shared memory.
  return smem_layout(m, st, n_stages).bytes + 1024 <= smem_max;
}

int linear_chain_grid() {
  int dev = 0, sms = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return sms;
}

cudaError_t linear_chain(const LinearChainStage* st, int n_stages, int64_t m, unsigned* workspace, cudaStream_t s,
                         unsigned long long* timeline, int prefetch_halves) {
  if (!linear_chain_supported(st, n_stages, m) || !workspace) return cudaErrorInvalidValue;
  ChainParams P = {};
  P.timeline = timeline;
  const int ku = m == 1 ? kUnrollFor<1> : kUnrollFor<4>;
  P.prefetch = prefetch_halves <= 0 ? 0 : prefetch_halves == 1 ? ku / 2 : ku;
  for (int i = 0; i < n_stages; ++i) P.st[i] = st[i];
  P.n_stages = n_stages;
  P.sync = workspace;
  switch (m) {
    case 1: return launch<1>(P, s);
    case 2: return launch<2>(P, s);
    case 3: return launch<3>(P, s);
    default: return launch<4>(P, s);
  }
}

}  // namespace shardlm::kernels::cuda
