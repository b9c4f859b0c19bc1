// Shared device helpers for the CUDA kernels: bf16 vectors of 8 (one 16-byte
// access), warp/block reductions, and launch-error plumbing.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <atomic>
#include <cstdint>
#include <utility>

namespace shardlm::kernels::cuda::detail {

using bf16 = __nv_bfloat16;

// 8 bf16 = 16 bytes: the widest single load a thread issues.
struct alignas(16) Bf16x8 {
  __nv_bfloat162 h[4];
};

__device__ __forceinline__ void bf16x8_to_floats(const uint4 raw, float (&f)[8]) {
  const Bf16x8 v = *reinterpret_cast<const Bf16x8*>(&raw);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 t = __bfloat1622float2(v.h[i]);
    f[2 * i] = t.x;
    f[2 * i + 1] = t.y;
  }
}

// One 16-byte access each (a member-wise copy of Bf16x8 compiled to four
// 4-byte ones); p is 16-byte aligned, as for any Bf16x8.
__device__ __forceinline__ void load8(const bf16* p, float (&f)[8]) {
  bf16x8_to_floats(*reinterpret_cast<const uint4*>(p), f);
}

// load8 through L2 only (ld.global.cg): for data other blocks of the running
// kernel wrote, which this SM's L1 must not serve.
__device__ __forceinline__ void load8_l2(const bf16* p, float (&f)[8]) {
  bf16x8_to_floats(__ldcg(reinterpret_cast<const uint4*>(p)), f);
}

__device__ __forceinline__ void store8(bf16* p, const float (&f)[8]) {
  Bf16x8 v;
#pragma unroll
  for (int i = 0; i < 4; ++i) v.h[i] = __floats2bfloat162_rn(f[2 * i], f[2 * i + 1]);
  *reinterpret_cast<uint4*>(p) = *reinterpret_cast<const uint4*>(&v);
}

__device__ __forceinline__ float round_bf16(float x) { return __bfloat162float(__float2bfloat16(x)); }

// silu(g)·u of the gated MLP: silu in f32, rounded to bf16, times u (the
// caller rounds the product). One definition for silu_mul and the fused gemv.
__device__ __forceinline__ float silu_times(float g, float u) {
  return round_bf16(g / (1.0f + __expf(-g))) * u;
}

// acc += w · x over 8 bf16 pairs, in order (f32 fma): the dot of the gemv
// kernels, shared so gemv.cu and linear_chain.cu sum bit for bit alike.
__device__ __forceinline__ void dot8(const Bf16x8& w, const Bf16x8& x, float& acc) {
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 a = __bfloat1622float2(w.h[i]);
    const float2 b = __bfloat1622float2(x.h[i]);
    acc = fmaf(a.x, b.x, acc);
    acc = fmaf(a.y, b.y, acc);
  }
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum over the block (blockDim.x a multiple of 32, ≤ 1024); every thread gets the result.
__device__ __forceinline__ float block_sum(float v) {
  __shared__ float part[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  v = warp_sum(v);
  __syncthreads();  // part[] may still be read by a previous call
  if (lane == 0) part[warp] = v;
  __syncthreads();
  const int nw = (blockDim.x + 31) >> 5;
  float t = lane < nw ? part[lane] : 0.0f;
  return warp_sum(t);
}

__device__ __forceinline__ float block_max(float v) {
  __shared__ float part[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) part[warp] = v;
  __syncthreads();
  const int nw = (blockDim.x + 31) >> 5;
  float t = lane < nw ? part[lane] : -INFINITY;
  return warp_max(t);
}

// splitmix64: a counter-based hash, so random fills and draws need no state.
__host__ __device__ __forceinline__ uint64_t mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// Uniform in [0, 1) from the top 24 bits.
__device__ __forceinline__ float uniform01(uint64_t h) { return static_cast<float>(h >> 40) * (1.0f / 16777216.0f); }

// One HF rotate_half rotation of the pair (a, b) = (x[i], x[i + half]) at
// angle f32(pos) · inv_freq[i], rounded once to bf16. Every kernel that rotates
// (rope_qk, rope_kv_write, the decode attention kernel's fused RoPE) calls
// this, and the products are spelled out (no compiler-chosen fma
// contraction), so all of them agree bit for bit. sincosf keeps its full
// range reduction: angles reach 10^5 rad.
// Split in two for callers that know the angle before the values
// (rope_angle, then rope_apply; the same operations as rope_rotate).
__device__ __forceinline__ void rope_angle(int32_t pos, float inv_freq, float* sn, float* cs) {
  sincosf(__fmul_rn(static_cast<float>(pos), inv_freq), sn, cs);
}
__device__ __forceinline__ void rope_apply(float a, float b, float sn, float cs, bf16* x0, bf16* x1) {
  *x0 = __float2bfloat16(__fmaf_rn(a, cs, -__fmul_rn(b, sn)));
  *x1 = __float2bfloat16(__fmaf_rn(b, cs, __fmul_rn(a, sn)));
}
__device__ __forceinline__ void rope_rotate(float a, float b, int32_t pos, float inv_freq, bf16* x0, bf16* x1) {
  float sn, cs;
  rope_angle(pos, inv_freq, &sn, &cs);
  rope_apply(a, b, sn, cs, x0, x1);
}

// Programmatic dependent launch (Hopper): a kernel launched with the
// programmatic-serialization attribute may be scheduled while the previous
// kernel in the stream drains; it must call griddep_wait() before touching
// memory that kernel writes (every hot-path kernel here calls it first, so the
// stream order is kept and only the launch gap is hidden). Process-wide switch,
// off by default; the CUDA backend turns it on (set_programmatic_launch).
inline bool& programmatic_launch_flag() {
  static bool on = false;
  return on;
}

// *p += v as one gpu-scope acq_rel atomic; returns the old value. The
// arrival of a block at a counter (its stores before it, by every thread
// when a block barrier precedes it; what the other arrivals stored visible
// after it): one instruction where __threadfence() + atomicAdd is a full
// sequentially consistent fence (MEMBAR.SC) in every thread that runs it.
__device__ __forceinline__ int atomic_add_acq_rel_gpu(int* p, int v) {
  int old;
  asm volatile("atom.acq_rel.gpu.global.add.s32 %0, [%1], %2;" : "=r"(old) : "l"(p), "r"(v) : "memory");
  return old;
}

// Waits for the previous kernel (a no-op when not launched programmatically),
// then lets the next kernel's blocks be scheduled: they fill SM slots this
// kernel's last wave leaves idle and wait there in turn. Every block of this
// kernel has started by the time the next one may launch, so no slot is taken
// from it.
__device__ __forceinline__ void griddep_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// griddep_wait without letting the next kernel be scheduled: a kernel that
// triggers its dependents itself, later (griddep_trigger).
__device__ __forceinline__ void griddep_wait_only() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

// Lets the next kernel in the stream, when it is launched programmatically,
// be scheduled now (it still waits in griddep_wait() for this one to finish
// before reading what this one writes). Called first thing by kernels that
// were not launched programmatically themselves, so everything before them
// has finished: the next kernel may read anything but their outputs before
// its wait.
__device__ __forceinline__ void griddep_trigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// Part `part` of `parts` of an L2 prefetch (Hopper bulk prefetch: the lines
// go to L2 and nowhere else, the instruction returns at once and nothing
// waits for it): the first bytes_per_row bytes of `rows` rows `stride` bytes
// apart from p, in pieces of ≤ 64 KB, issued by the 32 lanes of the calling
// warp. A hint with no effect on results: a kernel on the latency-bound
// stretch between two batch-1 linears, when HBM idles, pulls the next
// linear's first weights into L2 for it. p, stride and bytes_per_row are
// multiples of 16 (the launchers check).
__device__ __forceinline__ void l2_prefetch_part(const void* p, int64_t rows, int64_t stride, int64_t bytes_per_row,
                                                 int64_t part, int64_t parts) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  if (p == nullptr || rows <= 0 || bytes_per_row <= 0 || parts <= 0) return;
  constexpr int64_t kPiece = 64 << 10;  // per instruction; the size operand is 32-bit
  const int64_t per_row = (bytes_per_row + kPiece - 1) / kPiece;
  const int64_t units = rows * per_row, share = (units + parts - 1) / parts;
  const int64_t end = min(units, (part + 1) * share);
  for (int64_t u = part * share + (threadIdx.x & 31); u < end; u += 32) {
    const int64_t r = u / per_row, c = (u - r * per_row) * kPiece;
    const uint32_t n = static_cast<uint32_t>(min(kPiece, bytes_per_row - c));
    asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(static_cast<const char*>(p) + r * stride + c),
                 "r"(n)
                 : "memory");
  }
#endif
}

// A one-shot shared-memory barrier for Hopper bulk copies (TMA without a
// tensor map): thread 0 inits it (bulk_barrier_init, then a block barrier
// before anyone waits), announces the bytes and issues the copies
// (bulk_expect_bytes, bulk_copy_g2s); every thread that reads the copied
// bytes waits for phase 0 (bulk_wait). The copies bypass the registers: a
// block's weight rows stream into shared memory while its threads wait for
// the previous kernel.
__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
__device__ __forceinline__ void bulk_barrier_init(uint64_t* bar) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" ::"r"(smem_addr(bar)) : "memory");
  // The copy engine (the async proxy) must see the initialised barrier.
  asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
#endif
}
__device__ __forceinline__ void bulk_expect_bytes(uint64_t* bar, uint32_t bytes) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(smem_addr(bar)), "r"(bytes) : "memory");
#endif
}
// bytes (a multiple of 16, 16-byte aligned src and dst) from global memory to
// this block's shared memory, marked evict-first in L2 (weights read once).
__device__ __forceinline__ void bulk_copy_g2s(void* dst, const void* src, uint32_t bytes, uint64_t* bar) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  uint64_t policy;
  asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(policy));
  asm volatile(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes.L2::cache_hint [%0], [%1], %2, [%3], %4;" ::"r"(
          smem_addr(dst)),
      "l"(src), "r"(bytes), "r"(smem_addr(bar)), "l"(policy)
      : "memory");
#endif
}
__device__ __forceinline__ void bulk_wait(uint64_t* bar) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile(
      "{\n .reg .pred done;\n"
      "bulk_wait_%=:\n mbarrier.try_wait.parity.shared::cta.b64 done, [%0], 0;\n"
      " @!done bra bulk_wait_%=;\n}" ::"r"(smem_addr(bar))
      : "memory");
#endif
}

// Launches `kernel` as a programmatic dependent of the previous kernel in the
// stream when `programmatic` holds, as an ordinary launch otherwise.
template <typename... KArgs, typename... Args>
inline cudaError_t launch_k_as(bool programmatic, void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem,
                               cudaStream_t s, Args&&... args) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = s;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = attr;
  cfg.numAttrs = programmatic ? 1 : 0;
  return cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...);
}

template <typename... KArgs, typename... Args>
inline cudaError_t launch_k(void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem, cudaStream_t s,
                            Args&&... args) {
  return launch_k_as(programmatic_launch_flag(), kernel, grid, block, smem, s, std::forward<Args>(args)...);
}

// > 48 KB of dynamic shared memory needs an opt-in per kernel and device:
// done once per (kernel, device), not on every launch of a hot-path kernel.
// prefer_max_shared: also ask for the largest shared-memory carveout, so that
// the SM's configuration does not depend on which kernel reached it first (an
// SM is reconfigured only when idle; blocks that want another split wait).
template <auto Kernel>  // the kernel itself, so every kernel has its own flags
inline cudaError_t allow_dynamic_smem(size_t bytes, bool prefer_max_shared = false) {
  static std::atomic<uint64_t> done{0};  // bit d: set on device d
  int dev = 0;
  if (const cudaError_t e = cudaGetDevice(&dev); e != cudaSuccess) return e;
  const uint64_t bit = dev < 64 ? 1ull << dev : 0;
  if (bit && (done.load(std::memory_order_acquire) & bit)) return cudaSuccess;
  cudaError_t e = cudaFuncSetAttribute(Kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes));
  if (e == cudaSuccess && prefer_max_shared)
    e = cudaFuncSetAttribute(Kernel, cudaFuncAttributePreferredSharedMemoryCarveout, cudaSharedmemCarveoutMaxShared);
  if (e == cudaSuccess) done.fetch_or(bit, std::memory_order_release);
  return e;
}

inline int grid_for(int64_t n, int threads, int64_t cap = 65535LL * 8) {
  int64_t g = (n + threads - 1) / threads;
  if (g < 1) g = 1;
  if (g > cap) g = cap;
  return static_cast<int>(g);
}

}  // namespace shardlm::kernels::cuda::detail
