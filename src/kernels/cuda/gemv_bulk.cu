// Skinny linears as a bulk-copy stream: y[m, n] = x[m, k] · w[n, k]ᵀ (+ bias)
// for m ≤ 8, the same contract as gemv.cu's warp-per-row kernel.
//
// Why a second kernel: at batch 1 a linear is a stream over w, and the
// warp-per-row kernel keeps only the bytes its registers hold in flight (4 ×
// 16 bytes per lane); Nsight Compute put the small decode matrices at 56–69 %
// of DRAM bandwidth (o_proj 33 MB in 12 µs; bench/NOTES.md run 10): each warp
// waits a full memory round trip per 2 KB, and 512 blocks over 132 SMs leave
// some SMs a quarter idle at the end. Here the copy engine (TMA,
// cp.async.bulk) fills shared memory instead:
//   * each block owns a contiguous range of rows, n / grid of them (one or two
//     blocks per SM, so every SM streams the same bytes ± one row); those rows
//     are contiguous in memory, one byte stream;
//   * the stream is cut into "rounds" of ≤ 256 16-byte pieces, each inside
//     one row (row r's round j = its pieces [256 j, 256 j + 256)); a stage is
//     4 consecutive rounds (16 KB), one bulk copy, completed on an mbarrier;
//     `stages` of them are in flight (64 KB per block by default), refilled
//     by thread 0 as soon as every warp has read one;
//   * thread t takes piece 256 j + t of each round, dots it with x (read
//     through L1), and keeps a running sum per row; at a row's last round
//     each warp sums its lanes and parks the sum in a small ring of shared
//     slots; after the stage the block adds the 8 warps' sums in warp order
//     and writes y.
// The order of the sum depends only on the piece's position in its row, so
// results are deterministic, and gemv_silu_mul (gate and up rows streamed
// side by side, 2 rounds of each per stage) is bit for bit this kernel on the
// stacked [gate; up] matrix followed by silu_mul.
// With overlap_prologue (programmatic dependent launch) the first stages are
// requested before the kernel waits for the previous one: they depend only
// on w, and land in shared memory, not in L2 a second time.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/gemv_bulk.h"

namespace shardlm::kernels::cuda {
namespace {

using namespace detail;

constexpr int kThreads = 256;  // 8 warps: one round (256 pieces of 16 bytes, 4 KB) per pass
constexpr int kWarpsPerBlock = kThreads / 32;
constexpr int kStageBytes = 16384;  // 4 rounds; big enough that one bulk copy per stage suffices
constexpr int kMaxStages = 8;
// Partial-sum slots, in rows: a stage completes at most 4 rows (rows of one
// round), and the slots of stage i's rows are read before stage i + 2 writes.
constexpr int kRing = 16;

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void mbar_init(uint64_t* bar, uint32_t count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(smem_addr(bar)), "r"(count));
}

__device__ __forceinline__ void mbar_expect_tx(uint64_t* bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(smem_addr(bar)), "r"(bytes) : "memory");
}

__device__ __forceinline__ void mbar_wait(uint64_t* bar, uint32_t parity) {
  asm volatile(
      "{\n"
      ".reg .pred done;\n"
      "WAIT_%=:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
      "@!done bra WAIT_%=;\n"
      "}\n" ::"r"(smem_addr(bar)),
      "r"(parity)
      : "memory");
}

// Global → shared bulk copy of `bytes` (multiple of 16), completing on bar;
// the weights are read once per step, so they are marked evict-first in L2.
__device__ __forceinline__ void bulk_load(void* dst, const void* src, uint32_t bytes, uint64_t* bar, uint64_t policy) {
  asm volatile(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes.L2::cache_hint [%0], [%1], %2, [%3], %4;" ::"r"(
          smem_addr(dst)),
      "l"(src), "r"(bytes), "r"(smem_addr(bar)), "l"(policy)
      : "memory");
}

__device__ __forceinline__ void dot8(const Bf16x8& w, const Bf16x8& x, float& acc) {
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 a = __bfloat1622float2(w.h[i]);
    const float2 b = __bfloat1622float2(x.h[i]);
    acc = fmaf(a.x, b.x, acc);
    acc = fmaf(a.y, b.y, acc);
  }
}

// Walks the block's rounds in order: round g is row rl = g / R, pieces
// [j·256, j·256 + 256) of it (j = g % R), starting at piece `off` of the
// block's contiguous stream. Advanced one round at a time: no divisions in
// the loop.
struct RoundCursor {
  uint32_t rl = 0, j = 0;
  int64_t off = 0;
  __device__ __forceinline__ void next(uint32_t R, int64_t kp) {
    if (++j == R) {
      j = 0;
      ++rl;
      off = static_cast<int64_t>(rl) * kp;
    } else {
      off += kThreads;
    }
  }
};

template <int M, bool kF32Out, bool kSiLU, bool kPrologue>
__global__ void __launch_bounds__(kThreads) gemv_bulk_kernel(const bf16* __restrict__ x, const bf16* __restrict__ w,
                                                             const bf16* __restrict__ bias, void* __restrict__ y,
                                                             int64_t n, int64_t k, int stages) {
  constexpr int kRows = kSiLU ? 2 : 1;                                      // streams: w, or gate and up
  constexpr int kRoundsPerStage = kStageBytes / (16 * kThreads * kRows);  // 4, or 2 of each
  constexpr int kStreamBytes = kStageBytes / kRows;
  extern __shared__ __align__(128) unsigned char smem[];
  // [stages × kStageBytes] | partial sums float [kRing][kRows][M][8 warps] | mbarriers [stages]
  float* part = reinterpret_cast<float*>(smem + stages * kStageBytes);
  uint64_t* full = reinterpret_cast<uint64_t*>(part + kRing * kRows * M * kWarpsPerBlock);

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * n / gridDim.x;
  const int64_t rows = static_cast<int64_t>(blockIdx.x + 1) * n / gridDim.x - row0;
  const int64_t kp = k / 8;  // 16-byte pieces per row
  const uint32_t R = static_cast<uint32_t>((kp + kThreads - 1) / kThreads);
  const uint32_t rounds = static_cast<uint32_t>(rows) * R;  // < 2^31: checked by the launcher
  const uint32_t chunks = (rounds + kRoundsPerStage - 1) / kRoundsPerStage;

  // Thread 0 requests stage c % stages = rounds [c·Q, c·Q + Q) (Q = kRoundsPerStage).
  uint64_t policy = 0;
  RoundCursor issued;  // thread 0: the first round not yet requested
  uint32_t next_chunk = 0;
  auto issue = [&]() {
    const int s = static_cast<int>(next_chunk % stages);
    const int64_t p0 = issued.off;
    for (int q = 0; q < kRoundsPerStage && next_chunk * kRoundsPerStage + q < rounds; ++q) issued.next(R, kp);
    const uint32_t bytes = static_cast<uint32_t>((issued.off - p0) * 16);
    mbar_expect_tx(&full[s], bytes * kRows);
#pragma unroll
    for (int r = 0; r < kRows; ++r)
      bulk_load(smem + s * kStageBytes + r * kStreamBytes, w + (r * n + row0) * k + p0 * 8, bytes, &full[s], policy);
    ++next_chunk;
  };
  if (tid == 0) {
    asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(policy));
    for (int s = 0; s < stages; ++s) mbar_init(&full[s], 1);
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");  // visible to the copy engine
    while (next_chunk < chunks && next_chunk < static_cast<uint32_t>(stages)) issue();
  }
  if (kPrologue) griddep_wait();  // x is the previous kernel's output; w was not
  __syncthreads();

  float acc[kRows][M];
#pragma unroll
  for (int r = 0; r < kRows; ++r)
#pragma unroll
    for (int m = 0; m < M; ++m) acc[r][m] = 0.0f;

  RoundCursor cur;  // every thread: the round being read
  for (uint32_t c = 0; c < chunks; ++c) {
    const int s = static_cast<int>(c % stages);
    mbar_wait(&full[s], (c / stages) & 1);
    const unsigned char* stage = smem + s * kStageBytes;
    const int64_t base = cur.off;
    // The stage's rounds: all their smem (and, at m = 1, x) loads are issued
    // before the first use, so a warp waits one latency per stage, not per round.
    const uint32_t left = rounds - c * kRoundsPerStage;
    const int nq = left < kRoundsPerStage ? static_cast<int>(left) : kRoundsPerStage;
    RoundCursor rc[kRoundsPerStage];
    rc[0] = cur;
#pragma unroll
    for (int q = 1; q < kRoundsPerStage; ++q) {
      rc[q] = rc[q - 1];
      rc[q].next(R, kp);
    }
    cur = rc[kRoundsPerStage - 1];  // the next stage's first round (only the block's last stage is short)
    cur.next(R, kp);
    constexpr int kXHoist = M == 1 ? kRoundsPerStage : 1;  // x registers: 4 per round at m = 1
    Bf16x8 wv[kRoundsPerStage][kRows];
    Bf16x8 xh[kXHoist];
#pragma unroll
    for (int q = 0; q < kRoundsPerStage; ++q) {
      const int64_t piece = static_cast<int64_t>(rc[q].j) * kThreads + tid;
      if (q < nq && piece < kp) {
        const int64_t at = rc[q].off - base + tid;
#pragma unroll
        for (int r = 0; r < kRows; ++r) wv[q][r] = reinterpret_cast<const Bf16x8*>(stage + r * kStreamBytes)[at];
        if constexpr (M == 1) {
          const uint4 raw = __ldg(reinterpret_cast<const uint4*>(x) + piece);
          xh[q % kXHoist] = *reinterpret_cast<const Bf16x8*>(&raw);
        }
      }
    }
    uint32_t first_done = 0, ndone = 0;
#pragma unroll
    for (int q = 0; q < kRoundsPerStage; ++q) {
      if (q >= nq) break;
      const int64_t piece = static_cast<int64_t>(rc[q].j) * kThreads + tid;  // this thread's piece of row rc[q].rl
      if (piece < kp) {
#pragma unroll
        for (int m = 0; m < M; ++m) {
          Bf16x8 xv;
          if constexpr (M == 1) {
            xv = xh[q % kXHoist];
          } else {
            const uint4 raw = __ldg(reinterpret_cast<const uint4*>(x + m * k) + piece);
            xv = *reinterpret_cast<const Bf16x8*>(&raw);
          }
#pragma unroll
          for (int r = 0; r < kRows; ++r) dot8(wv[q][r], xv, acc[r][m]);
        }
      }
      if (rc[q].j == R - 1) {  // row rc[q].rl is done in this thread: park the warp's sum
        if (ndone++ == 0) first_done = rc[q].rl;
        float* slot = part + (rc[q].rl % kRing) * kRows * M * kWarpsPerBlock;
#pragma unroll
        for (int r = 0; r < kRows; ++r)
#pragma unroll
          for (int m = 0; m < M; ++m) {
            const float v = warp_sum(acc[r][m]);
            if (lane == 0) slot[(r * M + m) * kWarpsPerBlock + warp] = v;
            acc[r][m] = 0.0f;
          }
      }
    }
    __syncthreads();  // stage s is read and the finished rows' warp sums are parked
    if (tid == 0 && next_chunk < chunks) issue();
    for (uint32_t i = tid; i < ndone * M; i += kThreads) {
      const uint32_t rl = first_done + i / M;
      const int m = static_cast<int>(i % M);
      const float* slot = part + (rl % kRing) * kRows * M * kWarpsPerBlock;
      float sum[kRows];
#pragma unroll
      for (int r = 0; r < kRows; ++r) {
        sum[r] = 0.0f;
#pragma unroll
        for (int v = 0; v < kWarpsPerBlock; ++v) sum[r] += slot[(r * M + m) * kWarpsPerBlock + v];
      }
      const int64_t row = row0 + rl;
      if constexpr (kSiLU) {
        const float bg = bias ? __bfloat162float(bias[row]) : 0.0f;
        const float bu = bias ? __bfloat162float(bias[n + row]) : 0.0f;
        // gate and up rounded to bf16 first: the unfused linear's output
        static_cast<bf16*>(y)[m * n + row] =
            __float2bfloat16(silu_times(round_bf16(sum[0] + bg), round_bf16(sum[1] + bu)));
      } else {
        const float b = bias ? __bfloat162float(bias[row]) : 0.0f;
        if constexpr (kF32Out)
          static_cast<float*>(y)[m * n + row] = sum[0] + b;
        else
          static_cast<bf16*>(y)[m * n + row] = __float2bfloat16(sum[0] + b);
      }
    }
  }
}

int sm_count() {
  static int count[64] = {};
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || dev < 0 || dev >= 64) return 0;
  if (count[dev] == 0) cudaDeviceGetAttribute(&count[dev], cudaDevAttrMultiProcessorCount, dev);
  return count[dev];
}

template <int M, bool kF32Out, bool kSiLU, bool kPrologue>
cudaError_t launch(const bf16* x, const bf16* w, const bf16* bias, void* y, int64_t n, int64_t k,
                   const GemvBulkShape& cfg, cudaStream_t s) {
  constexpr int kRows = kSiLU ? 2 : 1;
  auto kernel = gemv_bulk_kernel<M, kF32Out, kSiLU, kPrologue>;
  const int stages = cfg.stages;
  const size_t smem = static_cast<size_t>(stages) * kStageBytes +
                      sizeof(float) * kRing * kRows * M * kWarpsPerBlock + sizeof(uint64_t) * stages;
  // The largest dynamic shared memory any launch asks for: set once per kernel.
  static const cudaError_t attr = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                       kMaxStages * kStageBytes + 16 * 1024);
  if (attr != cudaSuccess) return attr;
  const int sms = sm_count();
  if (sms <= 0) return cudaErrorInvalidDevice;
  const int64_t grid = std::min<int64_t>(n, static_cast<int64_t>(sms) * cfg.blocks_per_sm);
  // Rounds of one block index a 32-bit counter.
  const int64_t rounds_per_block = ((n + grid - 1) / grid) * ((k / 8 + kThreads - 1) / kThreads);
  if (rounds_per_block >= (int64_t{1} << 31)) return cudaErrorInvalidValue;
  cudaLaunchConfig_t lc = {};
  lc.gridDim = dim3(static_cast<unsigned>(grid));
  lc.blockDim = dim3(kThreads);
  lc.dynamicSmemBytes = smem;
  lc.stream = s;
  cudaLaunchAttribute a[1];
  a[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  a[0].val.programmaticStreamSerializationAllowed = 1;
  lc.attrs = a;
  lc.numAttrs = kPrologue ? 1 : 0;
  return cudaLaunchKernelEx(&lc, kernel, x, w, bias, y, n, k, stages);
}

template <int M, bool kSiLU>
cudaError_t launch_m(const bf16* x, const bf16* w, const bf16* bias, void* y, bool f32, int64_t n, int64_t k,
                     const GemvBulkShape& cfg, bool prologue, cudaStream_t s) {
  if constexpr (kSiLU) {
    return prologue ? launch<M, false, true, true>(x, w, bias, y, n, k, cfg, s)
                    : launch<M, false, true, false>(x, w, bias, y, n, k, cfg, s);
  } else {
    if (f32)
      return prologue ? launch<M, true, false, true>(x, w, bias, y, n, k, cfg, s)
                      : launch<M, true, false, false>(x, w, bias, y, n, k, cfg, s);
    return prologue ? launch<M, false, false, true>(x, w, bias, y, n, k, cfg, s)
                    : launch<M, false, false, false>(x, w, bias, y, n, k, cfg, s);
  }
}

template <bool kSiLU>
cudaError_t dispatch(const bf16* x, const bf16* w, const bf16* bias, void* y, bool f32, int64_t m, int64_t n,
                     int64_t k, const GemvBulkShape& cfg, bool prologue, cudaStream_t s) {
  switch (m) {
    case 1: return launch_m<1, kSiLU>(x, w, bias, y, f32, n, k, cfg, prologue, s);
    case 2: return launch_m<2, kSiLU>(x, w, bias, y, f32, n, k, cfg, prologue, s);
    case 3: return launch_m<3, kSiLU>(x, w, bias, y, f32, n, k, cfg, prologue, s);
    case 4: return launch_m<4, kSiLU>(x, w, bias, y, f32, n, k, cfg, prologue, s);
    case 5: return launch_m<5, kSiLU>(x, w, bias, y, f32, n, k, cfg, prologue, s);
    case 6: return launch_m<6, kSiLU>(x, w, bias, y, f32, n, k, cfg, prologue, s);
    case 7: return launch_m<7, kSiLU>(x, w, bias, y, f32, n, k, cfg, prologue, s);
    default: return launch_m<8, kSiLU>(x, w, bias, y, f32, n, k, cfg, prologue, s);
  }
}

}  // namespace

cudaError_t gemv_bulk(const bf16* x, const bf16* w, const bf16* bias, void* y, bool y_f32, int64_t m, int64_t n,
                      int64_t k, const GemvBulkShape& cfg, bool overlap_prologue, cudaStream_t s) {
  if (cfg.stages < 1 || cfg.stages > kMaxStages || cfg.blocks_per_sm < 1 || cfg.blocks_per_sm > 8)
    return cudaErrorInvalidValue;
  return dispatch<false>(x, w, bias, y, y_f32, m, n, k, cfg, overlap_prologue, s);
}

cudaError_t gemv_bulk_silu_mul(const bf16* x, const bf16* w, const bf16* bias, bf16* y, int64_t m, int64_t inter,
                               int64_t k, const GemvBulkShape& cfg, bool overlap_prologue, cudaStream_t s) {
  if (cfg.stages < 1 || cfg.stages > kMaxStages || cfg.blocks_per_sm < 1 || cfg.blocks_per_sm > 8)
    return cudaErrorInvalidValue;
  return dispatch<true>(x, w, bias, y, false, m, inter, k, cfg, overlap_prologue, s);
}

}  // namespace shardlm::kernels::cuda
