// Skinny linear layers (decode at small batch): y[m, n] = x[m, k] · w[n, k]ᵀ
// (+ bias[n]) for m ≤ 8, bf16 x and w, f32 accumulation, bf16 or f32 y.
//
// At m ≤ 8 a linear is a stream over the weight matrix: every weight byte is
// read once and used m times, so the time is weight bytes / HBM bandwidth.
// One warp owns one output row n: lanes read the row in 16-byte pieces (8
// bf16, lane-contiguous so a warp reads 512 contiguous bytes), U pieces (8 at
// m = 1, 4 above) in flight per lane before the first use, marked evict-first
// (the weights will not be re-read this step); x (≤ 8 rows, a few KB) is read
// through L1.
// (That the U pieces really are in flight at once is up to ptxas's schedule:
// see gemv_kernel_m1.)
// Each lane keeps m partial dots; a xor-shuffle tree sums them and lane 0
// writes y[·, n]. 8 warps per block, one row each.
// gemv_silu_mul (the MLP's gate|up linear fused with silu·up): the warp of
// output n dots both weight rows n (gate) and inter + n (up) in the same
// loop, rounds each to bf16 as the unfused linear would, and writes
// silu(gate)·up; the [m, 2·inter] intermediate never reaches memory.
// With overlap_prologue the kernel is launched as a programmatic dependent
// launch (Hopper): its blocks start while the previous kernel drains, request
// their first weight pieces into registers, and only then wait for that
// kernel's output x — the first DRAM round trip of each small linear overlaps
// the kernel before it. (An L2 prefetch of whole rows here doubled the L2
// traffic and was slower: bench/NOTES_runs_01-12.md run 4, NOTES_runs_13-17.md run 13.)
// Launched ordinarily, the kernel lets the next one be scheduled as soon as it
// starts (griddepcontrol.launch_dependents): a latency-bound kernel launched
// programmatically behind it (decode attention, add+RMSNorm) then issues its
// first loads during this gemv's last wave instead of after its launch gap.
// gemv_add_rmsnorm (m = 1): the gemv, then add+RMSNorm of its output row done
// by the gemv's last block. Each block, once its warps have stored their
// rows, counts itself in (one acq_rel atomic); the block that arrives last
// sees every row and normalises the whole output as the add_rmsnorm kernel
// would (norm_row.cuh, the same sums in the same order). A decode layer's two
// norms then cost no launch, and no grid drain + release of their own.
#include <algorithm>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/kernel_timeline.cuh"
#include "kernels/cuda/norm_row.cuh"

namespace shardlm::kernels::cuda {
namespace {

using namespace detail;

constexpr int kWarps = 8;
// Pieces of 16 bytes in flight per lane and weight row: 8 at m = 1 (with the
// m = 1 kernel's launch bound below; 0.4 % faster at batch 1 than 4 on an H100,
// bench/NOTES.md run 22), 4 above. The order of each lane's sums does not
// depend on it (increasing piece).
template <int M>
constexpr int kUnrollFor = M == 1 ? 8 : 4;

// x as one 16-byte load a piece through the read-only path (x is the input,
// never written by this kernel). A member-wise copy of Bf16x8 compiled to four
// 4-byte loads, and their registers are what pushed the weight loads apart
// (gemv_kernel_m1 below).
__device__ __forceinline__ Bf16x8 load_x8(const bf16* p) {
  const uint4 v = __ldg(reinterpret_cast<const uint4*>(p));
  return *reinterpret_cast<const Bf16x8*>(&v);
}

// How a gemv is launched: ordinarily (it lets the next kernel be scheduled at
// once); programmatically with its first weights requested before the wait;
// programmatically, waiting first (behind a latency-bound kernel: its blocks
// are resident when that kernel ends, and request nothing while it runs).
// kSmemPrologue (m = 1): a grid of one wave whose blocks loop over the row
// groups, each having its first group's rows bulk-copied into shared memory
// before it waits (gemv_rows_smem below). Behind a latency-bound kernel
// (the decode attention) the gemv's first wave thus fetches its weights while
// HBM would idle. (Copying every block's rows whole before any use measured
// 9 % slower at batch 1, bench/NOTES.md run 24.)
enum LaunchMode : int { kOrdinary = 0, kPrologueLoads = 1, kWaitFirst = 2, kSmemPrologue = 3 };

// Shared memory a kSmemPrologue block may fill (two blocks an SM beside a
// decode attention block's ~70 KB: 2 × 64 + 70 < 227 KB).
constexpr int64_t kSmemPrologueMaxBytes = 64 << 10;

// The add+RMSNorm after gemv_add_rmsnorm's linear (GemvNorm::counter null:
// none). Shapes: the gemv's output row y [n] is the norm's x.
struct GemvNorm {
  bf16* residual;    // [n], updated in place
  const bf16* w;     // [n] norm weight
  bf16* out;         // [n] normalised row
  float eps;
  int32_t* counter;  // blocks arrived; zero before the kernel, left zero
};

// The pieces of one warp's weight row(s): wr[r] is row r's first piece.
template <int kRows, int kUnroll>
__device__ __forceinline__ void load_step(Bf16x8 (&wv)[kRows][kUnroll], const Bf16x8* const (&wr)[kRows], int64_t at) {
#pragma unroll
  for (int r = 0; r < kRows; ++r)
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const uint4 raw = __ldcs(reinterpret_cast<const uint4*>(wr[r] + at + 32 * u));
      wv[r][u] = *reinterpret_cast<const Bf16x8*>(&raw);
    }
}

// acc += the row(s) from piece p (this lane's first, p ≡ lane mod 32) to the
// end, kUnroll pieces a lane in flight per step, then one at a time; with
// `loaded` the first step's pieces are already in wv.
template <int M, int kRows, int kUnroll>
__device__ __forceinline__ void stream_rest(float (&acc)[kRows][M], Bf16x8 (&wv)[kRows][kUnroll],
                                            const Bf16x8* const (&wr)[kRows], const bf16* __restrict__ x, int64_t k,
                                            int64_t p, bool loaded) {
  const int64_t pieces = k / 8;
  for (; p + 32 * (kUnroll - 1) < pieces; p += 32 * kUnroll) {
    if (!loaded) load_step<kRows, kUnroll>(wv, wr, p);
    loaded = false;
#pragma unroll
    for (int u = 0; u < kUnroll; ++u)
#pragma unroll
      for (int m = 0; m < M; ++m) {
        const Bf16x8 xv = load_x8(x + m * k + (p + 32 * u) * 8);
#pragma unroll
        for (int r = 0; r < kRows; ++r) dot8(wv[r][u], xv, acc[r][m]);
      }
  }
  for (; p < pieces; p += 32) {
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      const uint4 raw = __ldcs(reinterpret_cast<const uint4*>(wr[r] + p));
      const Bf16x8 w1 = *reinterpret_cast<const Bf16x8*>(&raw);
#pragma unroll
      for (int m = 0; m < M; ++m) dot8(w1, load_x8(x + m * k + p * 8), acc[r][m]);
    }
  }
}

// The warp's sums reduced and y[·, row] written by lane 0 (kSiLU: rows row
// and n + row of w gave gate and up).
template <int M, bool kF32Out, bool kSiLU, int kRows>
__device__ __forceinline__ void finish_row(float (&acc)[kRows][M], const bf16* __restrict__ bias, void* __restrict__ y,
                                           int64_t n, int64_t row, int lane) {
#pragma unroll
  for (int r = 0; r < kRows; ++r)
#pragma unroll
    for (int m = 0; m < M; ++m) acc[r][m] = warp_sum(acc[r][m]);
  if (lane != 0) return;
  if constexpr (kSiLU) {
    const float bg = bias ? __bfloat162float(bias[row]) : 0.0f;
    const float bu = bias ? __bfloat162float(bias[n + row]) : 0.0f;
#pragma unroll
    for (int m = 0; m < M; ++m)  // gate and up rounded to bf16 first: the unfused linear's output
      static_cast<bf16*>(y)[m * n + row] =
          __float2bfloat16(silu_times(round_bf16(acc[0][m] + bg), round_bf16(acc[1][m] + bu)));
  } else {
    const float b = bias ? __bfloat162float(bias[row]) : 0.0f;
#pragma unroll
    for (int m = 0; m < M; ++m) {
      if constexpr (kF32Out)
        static_cast<float*>(y)[m * n + row] = acc[0][m] + b;
      else
        static_cast<bf16*>(y)[m * n + row] = __float2bfloat16(acc[0][m] + b);
    }
  }
}

template <int kRows, int M>
__device__ __forceinline__ void zero(float (&acc)[kRows][M]) {
#pragma unroll
  for (int r = 0; r < kRows; ++r)
#pragma unroll
    for (int m = 0; m < M; ++m) acc[r][m] = 0.0f;
}

// The timeline region of a gemv of this shape (kernel_timeline.cuh).
template <bool kSiLU>
__device__ __forceinline__ int timeline_region(int64_t n, int64_t k) {
  return kSiLU ? kTlGemvSiLU : k > 8192 ? kTlGemvWide : n > 16384 ? kTlGemvHead : n > 4096 ? kTlGemvQkv : kTlGemvSmall;
}

// kRows = 1: y[·, row] = x·w[row]ᵀ. kRows = 2 (kSiLU): rows row and n + row
// of w, y[·, row] = silu(gate)·up; y is [m, n] with n = inter.
// kMode: how the kernel was launched (LaunchMode above; not kSmemPrologue).
template <int M, bool kF32Out, int kMode, bool kSiLU>
__device__ __forceinline__ void gemv_rows(const bf16* __restrict__ x, const bf16* __restrict__ w,
                                          const bf16* __restrict__ bias, void* __restrict__ y, int64_t n, int64_t k) {
  constexpr int kRows = kSiLU ? 2 : 1;
  constexpr int kUnroll = kUnrollFor<M>;
  // An ordinary launch (everything before it has finished): the kernel after
  // it, when launched programmatically (a decode attention or add+RMSNorm),
  // may take SM slots now and read its inputs that this gemv does not write.
  constexpr bool kPrologue = kMode == kPrologueLoads;
  SHARDLM_TL_BEGIN();
  [[maybe_unused]] const int tl_region = timeline_region<kSiLU>(n, k);
  if (threadIdx.x == 0) SHARDLM_TL_STAMP(tl_region, blockIdx.x, 0);
  if constexpr (kMode == kOrdinary) griddep_trigger();
  if constexpr (kMode == kWaitFirst) griddep_wait();
  if (kMode == kWaitFirst && threadIdx.x == 0) SHARDLM_TL_STAMP(tl_region, blockIdx.x, 1);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarps + warp;
  if (row >= n) return;
  const Bf16x8* wr[kRows];
#pragma unroll
  for (int r = 0; r < kRows; ++r) wr[r] = reinterpret_cast<const Bf16x8*>(w + (row + r * n) * k);
  float acc[kRows][M];
  zero(acc);
  // With kPrologue the first step's weights are requested before
  // griddep_wait() (they do not depend on the previous kernel), so a block
  // made resident early has its first DRAM round trip under way while that
  // kernel drains; x, which that kernel writes, is read only after the wait.
  Bf16x8 wv[kRows][kUnroll];
  bool loaded = false;
  if (kPrologue) {
    if (lane + 32 * (kUnroll - 1) < k / 8) {
      load_step<kRows, kUnroll>(wv, wr, lane);
      loaded = true;
    }
    griddep_wait();
    if (threadIdx.x == 0) SHARDLM_TL_STAMP(tl_region, blockIdx.x, 1);
  }
  stream_rest<M, kRows, kUnroll>(acc, wv, wr, x, k, lane, loaded);
  finish_row<M, kF32Out, kSiLU>(acc, bias, y, n, row, lane);
  if (lane == 0) SHARDLM_TL_STAMP(tl_region, blockIdx.x, 2 + (threadIdx.x >> 5));  // this warp's row is done
}

// kSmemPrologue (m = 1): a grid of at most as many blocks as are resident at
// once, each taking groups of kWarps rows blockIdx.x, + gridDim.x, … (so every
// block is of the first wave). Before it waits for the kernel before it, a
// block has the first `pre` pieces (a multiple of 32) of its first group's
// rows bulk-copied into shared memory (one copy engine request a row, no
// registers held) and, when that covers the rows whole, its warps request
// the first step of their rows in the next group into registers. After the
// wait: the first group from shared memory (then the rest of its rows from
// HBM), the next group from the registers on. Behind a latency-bound kernel
// (the decode attention) HBM thus streams the gemv's first wave and more
// while that kernel runs, and no block launches after it. Each lane sums its
// pieces in increasing order as gemv_rows does: bit for bit the other modes.
template <int M, bool kF32Out, bool kSiLU>
__device__ __forceinline__ void gemv_rows_smem(const bf16* __restrict__ x, const bf16* __restrict__ w,
                                               const bf16* __restrict__ bias, void* __restrict__ y, int64_t n,
                                               int64_t k, int64_t pre) {
  constexpr int kRows = kSiLU ? 2 : 1;
  constexpr int kUnroll = kUnrollFor<M>;
  SHARDLM_TL_BEGIN();
  [[maybe_unused]] const int tl_region = timeline_region<kSiLU>(n, k);
  if (threadIdx.x == 0) SHARDLM_TL_STAMP(tl_region, blockIdx.x, 0);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t pieces = k / 8, groups = (n + kWarps - 1) / kWarps;
  __shared__ uint64_t pre_bar;
  extern __shared__ __align__(16) uint4 pre_w[];  // [kRows][kWarps][pre] pieces
  int64_t g = blockIdx.x;
  const int64_t row0 = g * kWarps;
  if (threadIdx.x == 0) bulk_barrier_init(&pre_bar);
  __syncthreads();
  if (threadIdx.x == 0) {
    const int here = static_cast<int>(min(static_cast<int64_t>(kWarps), n - row0));
    bulk_expect_bytes(&pre_bar, static_cast<uint32_t>(here * kRows * pre * 16));
#pragma unroll
    for (int r = 0; r < kRows; ++r)
      for (int i = 0; i < here; ++i)
        bulk_copy_g2s(pre_w + (r * kWarps + i) * pre, w + (row0 + i + r * n) * k, static_cast<uint32_t>(pre * 16),
                      &pre_bar);
  }
  auto rows_of = [&](int64_t row, const Bf16x8* (&wr)[kRows]) {
#pragma unroll
    for (int r = 0; r < kRows; ++r) wr[r] = reinterpret_cast<const Bf16x8*>(w + (row + r * n) * k);
  };
  // The next group's first step, while the copy is under way (rows whole in
  // shared memory only: otherwise wv streams the first group's rest).
  Bf16x8 wv[kRows][kUnroll];
  bool loaded = false;
  const int64_t next_row = (g + gridDim.x) * kWarps + warp;
  if (pre == pieces && g + gridDim.x < groups && next_row < n && lane + 32 * (kUnroll - 1) < pieces) {
    const Bf16x8* wr[kRows];
    rows_of(next_row, wr);
    load_step<kRows, kUnroll>(wv, wr, lane);
    loaded = true;
  }
  griddep_wait();
  if (threadIdx.x == 0) SHARDLM_TL_STAMP(tl_region, blockIdx.x, 1);
  bulk_wait(&pre_bar);
  if (threadIdx.x == 0) SHARDLM_TL_STAMP(tl_region, blockIdx.x, 10);  // its first group's copy has landed
  if (const int64_t row = row0 + warp; row < n) {
    float acc[kRows][M];
    zero(acc);
    const uint4* sw[kRows];
#pragma unroll
    for (int r = 0; r < kRows; ++r) sw[r] = pre_w + (r * kWarps + warp) * pre;
#pragma unroll 4
    for (int64_t q = lane; q < pre; q += 32) {
      Bf16x8 ws[kRows];
#pragma unroll
      for (int r = 0; r < kRows; ++r) {
        const uint4 raw = sw[r][q];
        ws[r] = *reinterpret_cast<const Bf16x8*>(&raw);
      }
#pragma unroll
      for (int m = 0; m < M; ++m) {
        const Bf16x8 xv = load_x8(x + m * k + q * 8);
#pragma unroll
        for (int r = 0; r < kRows; ++r) dot8(ws[r], xv, acc[r][m]);
      }
    }
    if (pre < pieces) {  // the rest of the rows from HBM
      const Bf16x8* wr[kRows];
      rows_of(row, wr);
      stream_rest<M, kRows, kUnroll>(acc, wv, wr, x, k, pre + lane, false);
    }
    finish_row<M, kF32Out, kSiLU>(acc, bias, y, n, row, lane);
  }
  for (g += gridDim.x; g < groups; g += gridDim.x) {
    const int64_t row = g * kWarps + warp;
    if (row >= n) break;
    const Bf16x8* wr[kRows];
    rows_of(row, wr);
    float acc[kRows][M];
    zero(acc);
    stream_rest<M, kRows, kUnroll>(acc, wv, wr, x, k, lane, loaded);
    loaded = false;
    finish_row<M, kF32Out, kSiLU>(acc, bias, y, n, row, lane);
  }
  if (lane == 0) SHARDLM_TL_STAMP(tl_region, blockIdx.x, 2 + (threadIdx.x >> 5));  // this warp's rows are done
}

// The gemv, then (kNorm: gemv_add_rmsnorm, m = 1, bf16 y) the
// add+RMSNorm of y by the block that finishes last. The barrier orders the
// warps' row stores before thread 0's release; its acquire, passed on by the
// second barrier, makes every block's rows visible to the last block, which
// reads them through L2.
template <int M, bool kF32Out, int kMode, bool kSiLU, bool kNorm>
__device__ __forceinline__ void gemv_body(const bf16* __restrict__ x, const bf16* __restrict__ w,
                                          const bf16* __restrict__ bias, void* __restrict__ y, int64_t n, int64_t k,
                                          int64_t pre, const GemvNorm& nrm) {
  if constexpr (kMode == kSmemPrologue)
    gemv_rows_smem<M, kF32Out, kSiLU>(x, w, bias, y, n, k, pre);
  else
    gemv_rows<M, kF32Out, kMode, kSiLU>(x, w, bias, y, n, k);
  if constexpr (kNorm) {
    static_assert(M == 1 && !kF32Out && !kSiLU, "gemv_add_rmsnorm: one bf16 row");
    __shared__ int is_last;
    __syncthreads();
    if (threadIdx.x == 0) {
      is_last = atomic_add_acq_rel_gpu(nrm.counter, 1) == static_cast<int>(gridDim.x) - 1;
      if (is_last) *nrm.counter = 0;  // every block has arrived: ready for the next launch
    }
    __syncthreads();
    if (!is_last) return;
    NormRow<true, kNormRowRegVecs> nr;
    nr.load_weight_residual(nrm.w, nrm.residual, n);
    nr.template finish<true>(static_cast<const bf16*>(y), nrm.residual, nrm.out, n, nrm.eps);
  }
}

// Why a min-blocks bound of 1 at m = 1: with the threads bound alone, ptxas
// packed the kernel into 32 registers (8 blocks an SM, full occupancy) and to
// fit it issued the 4 weight loads of a step one after another, each
// behind the FMAs of the one before: about one of the 4 pieces in flight per
// lane (the SASS showed it; the kernel-timeline build, whose extra
// entry code changed that schedule, ran batch 1 1.6 % faster on an H200 for
// that reason). Bounded at 1 block, ptxas keeps every load of a step ahead of
// its first use (56 registers at 4 pieces, 4 blocks an SM; at the 8 pieces
// used, 90 registers, 113 with silu, 2 blocks an SM). bench/NOTES.md run 22:
// the layer's four linears 3.5 % faster in `bench gemv`, batch 1 1.6–2.4 %
// faster (H100). m ≥ 2 (not the default path: gemv_max_rows is 1) keeps the
// threads bound alone (46–64 registers now that x is one load a piece); a
// bound of 1 there was not timed, and capping registers lower spills.
template <int M, bool kF32Out, int kMode, bool kSiLU, bool kNorm>
__global__ void __launch_bounds__(kWarps * 32, 1)
    gemv_kernel_m1(const bf16* __restrict__ x, const bf16* __restrict__ w, const bf16* __restrict__ bias,
                   void* __restrict__ y, int64_t n, int64_t k, int64_t pre, GemvNorm nrm) {
  gemv_body<M, kF32Out, kMode, kSiLU, kNorm>(x, w, bias, y, n, k, pre, nrm);
}
// The shared-memory prologue (one row a warp) capped at 88 registers: two
// of its blocks (2 × 256 × 88) beside a decode attention block (128 × 160)
// fill the 64 K registers of an SM exactly, so the whole first wave is
// resident while the attention runs (at its natural 96, one block fewer on
// each SM that holds an attention block). ptxas spills nothing at 88.
template <int M, bool kF32Out, int kMode, bool kSiLU, bool kNorm>
__global__ void __maxnreg__(88)
    gemv_kernel_m1_smem(const bf16* __restrict__ x, const bf16* __restrict__ w, const bf16* __restrict__ bias,
                        void* __restrict__ y, int64_t n, int64_t k, int64_t pre, GemvNorm nrm) {
  gemv_body<M, kF32Out, kMode, kSiLU, kNorm>(x, w, bias, y, n, k, pre, nrm);
}
template <int M, bool kF32Out, int kMode, bool kSiLU, bool kNorm>
__global__ void __launch_bounds__(kWarps * 32)
    gemv_kernel_mn(const bf16* __restrict__ x, const bf16* __restrict__ w, const bf16* __restrict__ bias,
                   void* __restrict__ y, int64_t n, int64_t k, int64_t pre, GemvNorm nrm) {
  gemv_body<M, kF32Out, kMode, kSiLU, kNorm>(x, w, bias, y, n, k, pre, nrm);
}
// The kernel for m rows.
template <int M, bool kF32Out, int kMode, bool kSiLU, bool kNorm>
constexpr auto gemv_kernel() {
  if constexpr (M == 1 && kMode == kSmemPrologue && !kSiLU) return gemv_kernel_m1_smem<M, kF32Out, kMode, kSiLU, kNorm>;
  else if constexpr (M == 1) return gemv_kernel_m1<M, kF32Out, kMode, kSiLU, kNorm>;
  else return gemv_kernel_mn<M, kF32Out, kMode, kSiLU, kNorm>;
}

// Pieces of each row a kSmemPrologue block copies to shared memory: as many
// as kSmemPrologueMaxBytes holds for its kWarps · kRows rows, a multiple of 32
// (0: too short a row for the mode).
int64_t smem_prologue_pieces(int64_t k, int rows_per_warp) {
  const int64_t fit = kSmemPrologueMaxBytes / (kWarps * rows_per_warp * 16);
  return std::min(k / 8, fit) / 32 * 32;
}

// Blocks of `Kernel` resident on the whole device at once (its first wave),
// per device, computed once; -1 on a CUDA error.
template <auto Kernel>
int64_t resident_blocks(int threads, size_t smem) {
  static std::atomic<int64_t> cached[64] = {};
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess) return -1;
  if (dev < 64 && cached[dev].load(std::memory_order_relaxed) > 0) return cached[dev].load(std::memory_order_relaxed);
  int per_sm = 0, sms = 0;
  if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, Kernel, threads, smem) != cudaSuccess ||
      cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess)
    return -1;
  const int64_t blocks = static_cast<int64_t>(per_sm) * sms;
  if (dev < 64) cached[dev].store(blocks, std::memory_order_relaxed);
  return blocks;
}

template <int M, bool kF32Out, bool kSiLU = false, bool kNorm = false>
cudaError_t launch2(const bf16* x, const bf16* w, const bf16* bias, void* y, int64_t n, int64_t k, int mode,
                    bool programmatic, cudaStream_t s, const GemvNorm& nrm = {}) {
  const unsigned grid = static_cast<unsigned>((n + kWarps - 1) / kWarps);
  const dim3 block(kWarps * 32);
  if constexpr (M == 1) {
    const int64_t pre = mode == kSmemPrologue ? smem_prologue_pieces(k, kSiLU ? 2 : 1) : 0;
    if (pre > 0) {
      constexpr auto kernel = gemv_kernel<M, kF32Out, kSmemPrologue, kSiLU, kNorm>();
      if (const cudaError_t e = allow_dynamic_smem<kernel>(kSmemPrologueMaxBytes, /*prefer_max_shared=*/true);
          e != cudaSuccess)
        return e;
      const size_t smem = static_cast<size_t>(kWarps * (kSiLU ? 2 : 1) * pre * 16);
      const int64_t first_wave = resident_blocks<kernel>(block.x, kSmemPrologueMaxBytes);
      if (first_wave <= 0) return cudaErrorUnknown;
      const unsigned blocks = static_cast<unsigned>(std::min<int64_t>(grid, first_wave));
      return launch_k_as(programmatic, kernel, dim3(blocks), block, smem, s, x, w, bias, y, n, k, pre, nrm);
    }
  }
  if (mode == kSmemPrologue) mode = programmatic ? kWaitFirst : kOrdinary;  // m > 1 or rows too short
  if (mode == kOrdinary) {
    gemv_kernel<M, kF32Out, kOrdinary, kSiLU, kNorm>()<<<grid, block, 0, s>>>(x, w, bias, y, n, k, 0, nrm);
    return cudaGetLastError();
  }
  // Programmatic dependent launch: blocks may start before the previous kernel
  // in the stream has finished; the kernel waits (griddepcontrol.wait) before reading x.
  return mode == kPrologueLoads
             ? launch_k_as(true, gemv_kernel<M, kF32Out, kPrologueLoads, kSiLU, kNorm>(), dim3(grid), block, 0, s, x,
                           w, bias, y, n, k, int64_t{0}, nrm)
             : launch_k_as(true, gemv_kernel<M, kF32Out, kWaitFirst, kSiLU, kNorm>(), dim3(grid), block, 0, s, x, w,
                           bias, y, n, k, int64_t{0}, nrm);
}

template <int M>
cudaError_t launch(const bf16* x, const bf16* w, const bf16* bias, void* y, int64_t n, int64_t k, bool f32, int mode,
                   bool programmatic, cudaStream_t s) {
  return f32 ? launch2<M, true>(x, w, bias, y, n, k, mode, programmatic, s)
             : launch2<M, false>(x, w, bias, y, n, k, mode, programmatic, s);
}

template <int M>
cudaError_t launch_silu(const bf16* x, const bf16* w, const bf16* bias, bf16* y, int64_t inter, int64_t k, int mode,
                        bool programmatic, cudaStream_t s) {
  return launch2<M, false, true>(x, w, bias, y, inter, k, mode, programmatic, s);
}

// The launch mode from the public flags (cuda_kernels.h).
int launch_mode(bool overlap_prologue, bool programmatic, bool smem_prologue) {
  return smem_prologue ? kSmemPrologue : overlap_prologue ? kPrologueLoads : programmatic ? kWaitFirst : kOrdinary;
}

}  // namespace

bool gemv_supported(int64_t m, int64_t k, const void* x, const void* w) {
  return m >= 1 && m <= kGemvMaxRows && k % 8 == 0 && (reinterpret_cast<uintptr_t>(x) & 15) == 0 &&
         (reinterpret_cast<uintptr_t>(w) & 15) == 0;
}

cudaError_t gemv(const bf16* x, const bf16* w, const bf16* bias, void* y, bool y_f32, int64_t m, int64_t n, int64_t k,
                 cudaStream_t s, bool overlap_prologue, bool programmatic, bool smem_prologue) {
  if (!gemv_supported(m, k, x, w)) return cudaErrorInvalidValue;
  if (n <= 0) return cudaSuccess;
  const int mode = launch_mode(overlap_prologue, programmatic, smem_prologue);
  const bool pdl = overlap_prologue || programmatic;
  if ((n + kWarps - 1) / kWarps > 0x7fffffff) return cudaErrorInvalidValue;
  switch (m) {
    case 1: return launch<1>(x, w, bias, y, n, k, y_f32, mode, pdl, s);
    case 2: return launch<2>(x, w, bias, y, n, k, y_f32, mode, pdl, s);
    case 3: return launch<3>(x, w, bias, y, n, k, y_f32, mode, pdl, s);
    case 4: return launch<4>(x, w, bias, y, n, k, y_f32, mode, pdl, s);
    case 5: return launch<5>(x, w, bias, y, n, k, y_f32, mode, pdl, s);
    case 6: return launch<6>(x, w, bias, y, n, k, y_f32, mode, pdl, s);
    case 7: return launch<7>(x, w, bias, y, n, k, y_f32, mode, pdl, s);
    default: return launch<8>(x, w, bias, y, n, k, y_f32, mode, pdl, s);
  }
}

bool gemv_add_rmsnorm_supported(int64_t n, int64_t k, const void* x, const void* w, const void* y,
                                const void* residual, const void* norm_w, const void* norm_out) {
  const auto a16 = [](const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; };
  return gemv_supported(1, k, x, w) && n > 0 && n % 8 == 0 && n <= int64_t{kNormRowRegVecs} * 8 * kWarps * 32 &&
         a16(y) && a16(residual) && a16(norm_w) && a16(norm_out);
}

cudaError_t gemv_add_rmsnorm(const bf16* x, const bf16* w, const bf16* bias, bf16* y, int64_t n, int64_t k,
                             bf16* residual, const bf16* norm_w, bf16* norm_out, float eps, int32_t* counter,
                             cudaStream_t s, bool programmatic, bool smem_prologue) {
  if (!gemv_add_rmsnorm_supported(n, k, x, w, y, residual, norm_w, norm_out) || counter == nullptr)
    return cudaErrorInvalidValue;
  const GemvNorm nrm{residual, norm_w, norm_out, eps, counter};
  return launch2<1, false, false, true>(x, w, bias, y, n, k, launch_mode(false, programmatic, smem_prologue),
                                        programmatic, s, nrm);
}

cudaError_t gemv_silu_mul(const bf16* x, const bf16* w, const bf16* bias, bf16* y, int64_t m, int64_t inter,
                          int64_t k, cudaStream_t s, bool overlap_prologue, bool programmatic, bool smem_prologue) {
  if (!gemv_supported(m, k, x, w)) return cudaErrorInvalidValue;
  if (inter <= 0) return cudaSuccess;
  const int mode = launch_mode(overlap_prologue, programmatic, smem_prologue);
  const bool pdl = overlap_prologue || programmatic;
  if ((inter + kWarps - 1) / kWarps > 0x7fffffff) return cudaErrorInvalidValue;
  switch (m) {
    case 1: return launch_silu<1>(x, w, bias, y, inter, k, mode, pdl, s);
    case 2: return launch_silu<2>(x, w, bias, y, inter, k, mode, pdl, s);
    case 3: return launch_silu<3>(x, w, bias, y, inter, k, mode, pdl, s);
    case 4: return launch_silu<4>(x, w, bias, y, inter, k, mode, pdl, s);
    case 5: return launch_silu<5>(x, w, bias, y, inter, k, mode, pdl, s);
    case 6: return launch_silu<6>(x, w, bias, y, inter, k, mode, pdl, s);
    case 7: return launch_silu<7>(x, w, bias, y, inter, k, mode, pdl, s);
    default: return launch_silu<8>(x, w, bias, y, inter, k, mode, pdl, s);
  }
}

}  // namespace shardlm::kernels::cuda
