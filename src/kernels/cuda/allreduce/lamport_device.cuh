// Device-side pieces shared by the Lamport all-reduce kernels (plain:
// lamport_allreduce.cu; fused with residual + RMSNorm: lamport_fused.cu):
// the −0.0 sentinel per dtype, bounded polls, the rotating workspace groups,
// pushes and fixed-order sums. The algorithm is described at the top of
// lamport_allreduce.cu. Included by those two files only.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "kernels/cuda/allreduce/lamport_allreduce.h"

namespace shardlm::kernels::cuda::lamport {

constexpr int kPlainThreads = 512;   // 16 warps: enough loads in flight per SM
constexpr int kCheckEvery = 64;      // polls between timer/error-flag checks
// ≤ 512 threads per fused block keeps 128 registers per thread (1024 spilled the
// f32 accumulators); hidden 8192 bf16 is then 2 vectors per thread.
constexpr int kFusedThreads = 512;
// Register-row fused kernel: one vector per thread, so a hidden-8192 bf16 row
// is 1024 threads (≤ 64 registers each: the whole register file of an SM).
constexpr int kRegRowThreads = 1024;
constexpr int kMaxRowCluster = 8;  // the portable cluster size limit

template <int D>
struct Vec;  // D = LamportDType as int; a 16-byte vector of elements

template <>
struct Vec<0> {  // f32: 4 lanes, sentinel 0x80000000
  static constexpr int N = 4;
  __device__ static float get(const uint4& v, int i) { return __uint_as_float((&v.x)[i]); }
  __device__ static void set(uint4& v, int i, float f) { (&v.x)[i] = __float_as_uint(f); }
  __device__ static bool pending(const uint4& v) {
    return v.x == 0x80000000u || v.y == 0x80000000u || v.z == 0x80000000u || v.w == 0x80000000u;
  }
  __device__ static uint32_t fix_word(uint32_t w) { return w == 0x80000000u ? 0u : w; }
  static constexpr uint32_t kSentinelWord = 0x80000000u;
};

__device__ __forceinline__ bool half_pending(uint32_t w) {
  return (w & 0xffffu) == 0x8000u || (w >> 16) == 0x8000u;
}
__device__ __forceinline__ uint32_t half_fix(uint32_t w) {
  if ((w & 0xffffu) == 0x8000u) w &= 0xffff0000u;
  if ((w >> 16) == 0x8000u) w &= 0x0000ffffu;
  return w;
}

template <int D>
struct HalfVec {  // f16 / bf16: 8 lanes, sentinel 0x8000 per lane
  static constexpr int N = 8;
  __device__ static float to_f(uint16_t h) {
    if constexpr (D == 1) return __half2float(__ushort_as_half(h));
    else return __bfloat162float(__ushort_as_bfloat16(h));
  }
  __device__ static uint16_t from_f(float f) {
    if constexpr (D == 1) return __half_as_ushort(__float2half_rn(f));
    else return __bfloat16_as_ushort(__float2bfloat16_rn(f));
  }
  __device__ static float get(const uint4& v, int i) {
    uint32_t w = (&v.x)[i >> 1];
    return to_f(static_cast<uint16_t>((i & 1) ? (w >> 16) : (w & 0xffffu)));
  }
  __device__ static void set(uint4& v, int i, float f) {
    uint32_t& w = (&v.x)[i >> 1];
    uint32_t h = from_f(f);
    w = (i & 1) ? ((w & 0x0000ffffu) | (h << 16)) : ((w & 0xffff0000u) | h);
  }
  __device__ static bool pending(const uint4& v) {
    return half_pending(v.x) || half_pending(v.y) || half_pending(v.z) || half_pending(v.w);
  }
  __device__ static uint32_t fix_word(uint32_t w) { return half_fix(w); }
  static constexpr uint32_t kSentinelWord = 0x80008000u;
};
template <>
struct Vec<1> : HalfVec<1> {};
template <>
struct Vec<2> : HalfVec<2> {};

template <int D>
__device__ __forceinline__ uint4 fix_neg_zero(uint4 v) {
  v.x = Vec<D>::fix_word(v.x);
  v.y = Vec<D>::fix_word(v.y);
  v.z = Vec<D>::fix_word(v.z);
  v.w = Vec<D>::fix_word(v.w);
  return v;
}

__device__ __forceinline__ uint4 ld_volatile(const uint4* p) {
  uint4 v;
  asm volatile("ld.volatile.global.v4.u32 {%0,%1,%2,%3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p)
               : "memory");
  return v;
}
__device__ __forceinline__ void st_volatile(uint4* p, uint4 v) {
  asm volatile("st.volatile.global.v4.u32 [%0], {%1,%2,%3,%4};" ::"l"(p), "r"(v.x), "r"(v.y), "r"(v.z),
               "r"(v.w)
               : "memory");
}
__device__ __forceinline__ unsigned long long global_ns() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}
__device__ __forceinline__ void pdl_wait_and_trigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  // Wait for the previous kernel (its output is our input, and its last block
  // advanced the flags), then let the next one start its prologue.
  asm volatile("griddepcontrol.wait;" ::: "memory");
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// Loads a pushed vector, polling until no lane holds the sentinel; bounded.
// `failed` makes every later poll of this thread return at once.
template <int D>
__device__ __forceinline__ uint4 poll(const uint4* p, uint32_t* flags, unsigned long long timeout_ns, int op,
                                      int from_rank, bool& failed) {
  uint4 v = ld_volatile(p);
  if (!Vec<D>::pending(v) || failed) return v;
  unsigned long long start = global_ns();
  for (unsigned it = 1;; ++it) {
    v = ld_volatile(p);
    if (!Vec<D>::pending(v)) return v;
    if (it % kCheckEvery == 0) {
      if (*reinterpret_cast<volatile uint32_t*>(&flags[kError]) != 0) {
        failed = true;
        return v;
      }
      if (global_ns() - start > timeout_ns) {
        atomicCAS(&flags[kError], 0u, (static_cast<uint32_t>(op) << 16) | static_cast<uint32_t>(1 + from_rank));
        failed = true;
        return v;
      }
    }
  }
}

struct Groups {
  size_t slot_vecs;   // capacity in 16-byte vectors
  uint32_t cur;       // group this call writes
  uint32_t clear;     // group this call clears
  uint32_t clear_vecs;
};

__device__ __forceinline__ Groups read_groups(const LamportParams& p) {
  Groups g;
  g.slot_vecs = p.capacity_bytes / 16;
  g.cur = *reinterpret_cast<volatile uint32_t*>(&p.flags[kCurGroup]);
  g.clear = *reinterpret_cast<volatile uint32_t*>(&p.flags[kClearGroup]);
  g.clear_vecs = *reinterpret_cast<volatile uint32_t*>(&p.flags[kClearVecs]);
  return g;
}

// stage0 slot `slot` of group `group` in workspace `ws`.
__device__ __forceinline__ uint4* stage0(void* ws, const Groups& g, uint32_t group, int world, int slot) {
  return reinterpret_cast<uint4*>(ws) + (static_cast<size_t>(group) * (world + 1) + slot) * g.slot_vecs;
}
__device__ __forceinline__ uint4* stage1(void* ws, const Groups& g, uint32_t group, int world) {
  return reinterpret_cast<uint4*>(ws) + (static_cast<size_t>(group) * (world + 1) + world) * g.slot_vecs;
}

// Rewrites the previous call's region of our own workspace with the sentinel.
template <int D>
__device__ void clear_previous(const LamportParams& p, const Groups& g) {
  const uint32_t s = Vec<D>::kSentinelWord;
  const uint4 sv = make_uint4(s, s, s, s);
  const size_t per_slot = g.clear_vecs;
  const size_t total = per_slot * (p.world + 1);
  const size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x;
  for (size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride) {
    size_t slot = i / per_slot, v = i % per_slot;
    stage0(p.peer_ws[p.rank], g, g.clear, p.world, static_cast<int>(slot))[v] = sv;
  }
}

// The last block to arrive advances the rotation: this call's group becomes
// the one to clear, the next group becomes current.
__device__ inline void finish_call(const LamportParams& p, const Groups& g, uint32_t used_vecs) {
  __syncthreads();
  if (threadIdx.x == 0) {
    __threadfence();
    uint32_t done = atomicAdd(&p.flags[kCounter], 1u);
    if (done == gridDim.x - 1) {
      p.flags[kClearGroup] = g.cur;
      p.flags[kClearVecs] = used_vecs;
      p.flags[kCurGroup] = (g.cur + 1) % 3;
      p.flags[kCounter] = 0;
      __threadfence();
    }
  }
}

// Loads input vector v of `n_vecs` (the last may be partial: `count` elements
// in all), −0 → +0, padding lanes +0 so the reader's full-vector check passes.
template <int D>
__device__ __forceinline__ uint4 load_input(const void* in, size_t v, size_t count) {
  constexpr int N = Vec<D>::N;
  const size_t first = v * N;
  uint4 x;
  if (first + N <= count) {
    x = reinterpret_cast<const uint4*>(in)[v];
  } else {
    x = make_uint4(0, 0, 0, 0);
    const int esz = 16 / N;
    const char* src = reinterpret_cast<const char*>(in) + first * esz;
    char* dst = reinterpret_cast<char*>(&x);
    for (size_t i = 0; i < (count - first) * esz; ++i) dst[i] = src[i];
  }
  return fix_neg_zero<D>(x);
}
template <int D>
__device__ __forceinline__ void store_output(void* out, size_t v, size_t count, const uint4& x) {
  constexpr int N = Vec<D>::N;
  const size_t first = v * N;
  if (first + N <= count) {
    reinterpret_cast<uint4*>(out)[v] = x;
  } else {
    const int esz = 16 / N;
    char* dst = reinterpret_cast<char*>(out) + first * esz;
    const char* src = reinterpret_cast<const char*>(&x);
    for (size_t i = 0; i < (count - first) * esz; ++i) dst[i] = src[i];
  }
}

// Sums slot 0..W−1 at vector v of our stage0 (fixed order) into acc.
template <int D>
__device__ __forceinline__ void sum_slots(const LamportParams& p, const Groups& g, size_t v, int op,
                                          float (&acc)[Vec<D>::N], bool& failed) {
  constexpr int N = Vec<D>::N;
#pragma unroll
  for (int i = 0; i < N; ++i) acc[i] = 0.f;
  for (int r = 0; r < p.world; ++r) {
    uint4 x = poll<D>(stage0(p.peer_ws[p.rank], g, g.cur, p.world, r) + v, p.flags, p.timeout_ns, op, r, failed);
#pragma unroll
    for (int i = 0; i < N; ++i) acc[i] += Vec<D>::get(x, i);
  }
}

template <int D>
__device__ __forceinline__ uint4 pack(const float (&acc)[Vec<D>::N]) {
  uint4 x = make_uint4(0, 0, 0, 0);
#pragma unroll
  for (int i = 0; i < Vec<D>::N; ++i) Vec<D>::set(x, i, acc[i]);
  return x;
}

// Stores pushed vector v of this rank: to its owner's stage0 (two-shot) or to
// every rank's, starting with our right neighbour so ranks hit different
// links first (one-shot).
template <bool kTwoShot>
__device__ __forceinline__ void push_vec(const LamportParams& p, const Groups& g, int owner, size_t v,
                                         const uint4& x) {
  if constexpr (kTwoShot) {
    st_volatile(stage0(p.peer_ws[owner], g, g.cur, p.world, p.rank) + v, x);
  } else {
    for (int r = 0; r < p.world; ++r)
      st_volatile(stage0(p.peer_ws[(p.rank + r) % p.world], g, g.cur, p.world, p.rank) + v, x);
  }
}

// Two-shot owner: sums vector v over the ranks and unicast-stores the sum into every stage1.
template <int D>
__device__ __forceinline__ void reduce_and_broadcast(const LamportParams& p, const Groups& g, size_t v, int op,
                                                     bool& failed) {
  float acc[Vec<D>::N];
  sum_slots<D>(p, g, v, op, acc, failed);
  const uint4 s = fix_neg_zero<D>(pack<D>(acc));
  for (int r = 0; r < p.world; ++r) st_volatile(stage1(p.peer_ws[(p.rank + r) % p.world], g, g.cur, p.world) + v, s);
}

// The fused epilogue's arithmetic (the unfused path: kernels/cuda add_rmsnorm,
// HF LlamaRMSNorm): residual = T(s + residual), adding its squares to ss; then
// out = T(T(residual · inv) · w).
template <int D>
__device__ __forceinline__ uint4 add_residual(const uint4& s, const uint4& res, float& ss) {
  float r[Vec<D>::N];
#pragma unroll
  for (int i = 0; i < Vec<D>::N; ++i) r[i] = Vec<D>::get(s, i) + Vec<D>::get(res, i);
  const uint4 rv = pack<D>(r);
#pragma unroll
  for (int i = 0; i < Vec<D>::N; ++i) {
    const float q = Vec<D>::get(rv, i);
    ss += q * q;
  }
  return rv;
}
template <int D>
__device__ __forceinline__ uint4 norm_times_weight(const uint4& rv, const uint4& w, float inv) {
  float o[Vec<D>::N];
#pragma unroll
  for (int i = 0; i < Vec<D>::N; ++i) o[i] = Vec<D>::get(rv, i) * inv;
  const uint4 normed = pack<D>(o);  // normalise, round, then × weight
#pragma unroll
  for (int i = 0; i < Vec<D>::N; ++i) o[i] = Vec<D>::get(normed, i) * Vec<D>::get(w, i);
  return pack<D>(o);
}

__device__ __forceinline__ float block_sum(float x, float* red) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  __syncthreads();  // red[] may still be read from the previous row
  if (lane == 0) red[warp] = x;
  __syncthreads();
  float t = 0.f;
  const int warps = (blockDim.x + 31) >> 5;
  for (int w = 0; w < warps; ++w) t += red[w];
  return t;
}

// Residual add + RMSNorm of one row whose reduced sum vectors come from
// `sum_vec(j)`. Matches the unfused path (kernels/cuda add_rmsnorm, HF
// LlamaRMSNorm): s = the all-reduce output rounded to the dtype; residual =

template <typename Kernel, typename... Args>
cudaError_t launch(const LamportParams& p, Kernel k, dim3 grid, dim3 block, cudaStream_t s, Args... args) {
  if (p.pdl) {
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.stream = s;
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = attr;
    cfg.numAttrs = 1;
    cudaError_t e = cudaLaunchKernelEx(&cfg, k, args...);
    if (e == cudaSuccess) return e;
    (void)cudaGetLastError();  // unsupported here (e.g. some capture modes): plain launch
  }
  k<<<grid, block, 0, s>>>(args...);
  return cudaGetLastError();
}

inline int dt_index(LamportDType dt) { return static_cast<int>(dt); }

}  // namespace shardlm::kernels::cuda::lamport
