// Lamport all-reduce (TensorRT-LLM / FlashInfer style; DESIGN §3.3).
//
// Algorithm. Every rank's workspace is mapped by every peer (CUDA IPC or cuMem
// fabric handles; comm/symmetric_buffer.h). A slot byte that still holds the
// dtype's −0.0 pattern means "not arrived": writers store inputs with −0
// replaced by +0, readers poll with volatile (L1-bypassing) 16-byte loads until
// no element of the vector has the sentinel bits (bitwise compare: a float
// compare would treat −0 == +0). The data is its own flag, so no barrier.
//   one-shot: each rank stores its whole input into slot[rank] of every
//     peer's stage0 (and its own); then each rank polls slot 0..W−1 and sums
//     in that fixed order in f32 → every rank gets bitwise-identical results.
//   two-shot: vector (plain) / row (fused) t belongs to rank t mod W. Each rank
//     stores its t-th piece into owner's stage0 slot[rank]; the owner sums the
//     W slots (fixed order, f32), rounds, and unicast-stores the sum into every
//     peer's stage1 (no multicast anywhere); every rank then polls its stage1.
// Three groups rotate mod 3: call k writes group k%3 and clears group
// (k−1)%3 (used by the previous call, fully read by us before this kernel
// started: stream order / griddepcontrol.wait). A fast peer may already be in
// call k+1 writing group (k+1)%3, cleared during call k−1, and can never be in
// k+2 (that needs our k+1 stores). The last block to finish advances the
// device flags, so CUDA-graph replays keep rotating without the host.
// Every spin-wait is bounded by %globaltimer: on expiry the thread records
// (op << 16) | (1 + awaited rank) in the error flag and every other waiter
// leaves at its next check; the host reads the flag after synchronising.
// The phases that spin need all blocks co-resident: grids are ≤ max_blocks
// (≤ SM count) and ≤ what the occupancy calculator says fits, so a spinning
// block never starves one that must store first.
// Fused all-reduce + residual + RMSNorm, three kernels by shape: rows of
// ≤ 1024 vectors in registers, cut over a cluster of blocks while every row
// gets its own cluster (small token counts), else one block per row
// (lamport_fused_reg_kernel); wider rows loop (lamport_fused_kernel).
#include "kernels/cuda/allreduce/lamport_allreduce.h"

#include <cooperative_groups.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <tuple>

namespace shardlm::kernels::cuda {
namespace {

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
__device__ void finish_call(const LamportParams& p, const Groups& g, uint32_t used_vecs) {
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

template <int D, bool kTwoShot>
__global__ void __launch_bounds__(kPlainThreads) lamport_plain_kernel(LamportParams p, const void* in, void* out,
                                                                     size_t count) {
  pdl_wait_and_trigger();
  constexpr int N = Vec<D>::N;
  constexpr int op = kTwoShot ? kOpTwoShot : kOpOneShot;
  const Groups g = read_groups(p);
  const size_t n_vecs = (count + N - 1) / N;
  const size_t tid = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x;
  bool failed = false;

  // 1. push
  for (size_t v = tid; v < n_vecs; v += stride)
    push_vec<kTwoShot>(p, g, static_cast<int>(v % p.world), v, load_input<D>(in, v, count));
  // 2. clear the previous call's group (ours only)
  clear_previous<D>(p, g);
  // 3. reduce
  if constexpr (!kTwoShot) {
    for (size_t v = tid; v < n_vecs; v += stride) {
      float acc[N];
      sum_slots<D>(p, g, v, op, acc, failed);
      store_output<D>(out, v, count, pack<D>(acc));
    }
  } else {
    // 3a. reduce the vectors we own, broadcast the sums into every stage1
    for (size_t v = p.rank + tid * p.world; v < n_vecs; v += stride * p.world)
      reduce_and_broadcast<D>(p, g, v, op, failed);
    // 3b. gather every sum from our stage1
    for (size_t v = tid; v < n_vecs; v += stride) {
      uint4 s = poll<D>(stage1(p.peer_ws[p.rank], g, g.cur, p.world) + v, p.flags, p.timeout_ns, op,
                        static_cast<int>(v % p.world), failed);
      store_output<D>(out, v, count, s);
    }
  }
  finish_call(p, g, static_cast<uint32_t>(n_vecs));
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
// T(residual + s); out = T(w · T(residual · rsqrt(mean(residual²) + eps))).
template <int D, typename SumFn>
__device__ void add_rmsnorm_row(SumFn sum_vec, const void* residual, const void* weight, float eps,
                                void* out_residual, void* out, int row, int hidden, float* red) {
  constexpr int N = Vec<D>::N;
  const int hv = hidden / N;
  const size_t base = static_cast<size_t>(row) * hv;
  float ss = 0.f;
  for (int j = threadIdx.x; j < hv; j += blockDim.x) {
    const uint4 s = sum_vec(j);
    reinterpret_cast<uint4*>(out_residual)[base + j] =
        add_residual<D>(s, reinterpret_cast<const uint4*>(residual)[base + j], ss);
  }
  const float inv = rsqrtf(block_sum(ss, red) / static_cast<float>(hidden) + eps);
  for (int j = threadIdx.x; j < hv; j += blockDim.x) {
    const uint4 rv = reinterpret_cast<const uint4*>(out_residual)[base + j];  // this thread's own store
    reinterpret_cast<uint4*>(out)[base + j] =
        norm_times_weight<D>(rv, reinterpret_cast<const uint4*>(weight)[j], inv);
  }
}

template <int D, bool kTwoShot>
__global__ void __launch_bounds__(kFusedThreads) lamport_fused_kernel(LamportParams p, const void* in, const void* residual,
                                                             const void* weight, float eps, void* out_residual,
                                                             void* out, int rows, int hidden) {
  pdl_wait_and_trigger();
  constexpr int N = Vec<D>::N;
  constexpr int op = kTwoShot ? kOpFusedTwoShot : kOpFusedOneShot;
  __shared__ float red[32];
  const Groups g = read_groups(p);
  const int hv = hidden / N;
  bool failed = false;

  // 1. push rows (row t: to everyone, or to its owner t mod W)
  for (int t = blockIdx.x; t < rows; t += gridDim.x) {
    for (int j = threadIdx.x; j < hv; j += blockDim.x) {
      const size_t v = static_cast<size_t>(t) * hv + j;
      push_vec<kTwoShot>(p, g, t % p.world, v, fix_neg_zero<D>(reinterpret_cast<const uint4*>(in)[v]));
    }
  }
  clear_previous<D>(p, g);

  if constexpr (kTwoShot) {
    // 2. owners reduce their rows and unicast the sums into every stage1
    const int owned = (rows - p.rank + p.world - 1) / p.world;
    for (int k = blockIdx.x; k < owned; k += gridDim.x) {
      const int t = p.rank + k * p.world;
      for (int j = threadIdx.x; j < hv; j += blockDim.x)
        reduce_and_broadcast<D>(p, g, static_cast<size_t>(t) * hv + j, op, failed);
    }
  }
  // 3. every rank: sums of each row → residual add → RMSNorm
  for (int t = blockIdx.x; t < rows; t += gridDim.x) {
    const size_t base = static_cast<size_t>(t) * hv;
    auto sum_vec = [&](int j) -> uint4 {
      if constexpr (kTwoShot) {
        return poll<D>(stage1(p.peer_ws[p.rank], g, g.cur, p.world) + base + j, p.flags, p.timeout_ns, op,
                       t % p.world, failed);
      } else {
        float acc[N];
        sum_slots<D>(p, g, base + j, op, acc, failed);
        return pack<D>(acc);
      }
    };
    add_rmsnorm_row<D>(sum_vec, residual, weight, eps, out_residual, out, t, hidden, red);
  }
  finish_call(p, g, static_cast<uint32_t>(static_cast<size_t>(rows) * hv));
}

// Register-row fused kernel (rows of ≤ 1024 vectors: bf16/f16 hidden ≤ 8192,
// f32 ≤ 4096). A cluster of C blocks (C = 1: a plain block) owns one row at a
// time (rows c, c + clusters, …); block q holds vectors [q·T, (q+1)·T) of it,
// one per thread, in registers from the sum to the final store (the residual
// is not re-read for the norm). Residual and weight are loaded before the
// poll, so their latency hides under the wait for the peers.
// Why C > 1 at small token counts: one SM moving a whole row (input, pushes,
// the clear of the previous call, polls, residual, two outputs: ~200 KB at
// hidden 8192) is slower than the all-reduce alone, which spreads the row over
// several SMs (bench/ALLREDUCE_NOTES.md). The row's Σ r² then crosses blocks:
// each warp stores its partial into slot [row parity][q][warp] of every
// block's shared memory (distributed shared memory), one cluster barrier, and
// each block sums the C × warps slots in order (same bits everywhere). The parity
// keeps a block that has passed the barrier and moved on to the next row from
// overwriting a slot not yet read; after the last barrier no block touches
// another's shared memory, so blocks may exit.
// Numerics as add_rmsnorm_row: s rounded, residual rounded, normalise, round,
// × weight, round.
template <int D, bool kTwoShot>
__global__ void __launch_bounds__(kRegRowThreads) lamport_fused_reg_kernel(LamportParams p, const void* in,
                                                                   const void* residual, const void* weight,
                                                                   float eps, void* out_residual, void* out,
                                                                   int rows, int hidden) {
  pdl_wait_and_trigger();
  constexpr int N = Vec<D>::N;
  constexpr int op = kTwoShot ? kOpFusedTwoShot : kOpFusedOneShot;
  namespace cg = cooperative_groups;
  __shared__ float red[32];
  // Σ r² of each warp of each block of the cluster ([block][warp]), by row parity.
  __shared__ float part[2][kMaxRowCluster * (kRegRowThreads / 32)];
  cg::cluster_group cluster = cg::this_cluster();
  const int C = static_cast<int>(cluster.num_blocks());
  const int q = static_cast<int>(cluster.block_rank());
  const int clusters = static_cast<int>(gridDim.x) / C;
  const int c = static_cast<int>(blockIdx.x) / C;
  const Groups g = read_groups(p);
  const int hv = hidden / N;
  const int j = q * static_cast<int>(blockDim.x) + static_cast<int>(threadIdx.x);
  const bool mine = j < hv;
  bool failed = false;
  // A block's shared memory takes remote stores only once it runs: arrive now,
  // wait before the first remote store (CUDA guide, distributed shared memory).
  if (C > 1) asm volatile("barrier.cluster.arrive.relaxed.aligned;" ::: "memory");
  bool started = false;

  // 1. push our part of each row (to everyone, or to the row's owner t mod W)
  if (mine) {
    for (int t = c; t < rows; t += clusters) {
      const size_t v = static_cast<size_t>(t) * hv + j;
      push_vec<kTwoShot>(p, g, t % p.world, v, fix_neg_zero<D>(reinterpret_cast<const uint4*>(in)[v]));
    }
  }
  clear_previous<D>(p, g);
  const uint4 wv = mine ? reinterpret_cast<const uint4*>(weight)[j] : make_uint4(0, 0, 0, 0);

  if constexpr (kTwoShot) {
    // 2. the rows we own: reduce and unicast the sums into every stage1
    if (mine) {
      for (int t = c; t < rows; t += clusters)
        if (t % p.world == p.rank) reduce_and_broadcast<D>(p, g, static_cast<size_t>(t) * hv + j, op, failed);
    }
  }
  // 3. every rank: the row's sums → residual add → RMSNorm
  for (int t = c; t < rows; t += clusters) {
    const size_t v = static_cast<size_t>(t) * hv + j;
    float ss = 0.f;
    uint4 rv = make_uint4(0, 0, 0, 0);
    if (mine) {
      const uint4 res = reinterpret_cast<const uint4*>(residual)[v];  // issued before the poll
      uint4 s;
      if constexpr (kTwoShot) {
        s = poll<D>(stage1(p.peer_ws[p.rank], g, g.cur, p.world) + v, p.flags, p.timeout_ns, op, t % p.world, failed);
      } else {
        float acc[N];
        sum_slots<D>(p, g, v, op, acc, failed);
        s = pack<D>(acc);
      }
      rv = add_residual<D>(s, res, ss);
    }
    float total;
    if (C == 1) {
      total = block_sum(ss, red);
    } else {
      // Each warp's Σ r² goes straight into slot [block q][warp] of every
      // block of the cluster, and the one cluster barrier is also the block's:
      // no block-level reduction (two __syncthreads) on the way. Every block
      // then adds the C × warps slots in the same order: the same bits.
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
      const int warps = static_cast<int>(blockDim.x) >> 5, lane = static_cast<int>(threadIdx.x) & 31;
      if (!started) {
        asm volatile("barrier.cluster.wait.aligned;" ::: "memory");
        started = true;
      }
      if (lane < C) *cluster.map_shared_rank(&part[t & 1][q * warps + (threadIdx.x >> 5)], lane) = ss;
      cluster.sync();
      total = 0.f;
      for (int i = 0; i < C * warps; ++i) total += part[t & 1][i];
    }
    const float inv = rsqrtf(total / static_cast<float>(hidden) + eps);
    // Both stores after the barrier: its release then has no global store to wait for.
    if (mine) {
      reinterpret_cast<uint4*>(out_residual)[v] = rv;
      reinterpret_cast<uint4*>(out)[v] = norm_times_weight<D>(rv, wv, inv);
    }
  }
  finish_call(p, g, static_cast<uint32_t>(static_cast<size_t>(rows) * hv));
}

__global__ void fill_kernel(uint32_t* p, size_t words, uint32_t pattern) {
  for (size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < words;
       i += static_cast<size_t>(gridDim.x) * blockDim.x)
    p[i] = pattern;
}
__global__ void init_flags_kernel(uint32_t* flags, uint32_t capacity_vecs) {
  for (int i = 0; i < kLamportFlagCount; ++i) flags[i] = 0;
  flags[kCurGroup] = 0;
  flags[kClearGroup] = 2;  // nothing to clear yet (kClearVecs = 0)
  flags[kCapacity] = capacity_vecs;
}

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

int dt_index(LamportDType dt) { return static_cast<int>(dt); }

using FusedRegKernel = void (*)(LamportParams, const void*, const void*, const void*, float, void*, void*, int, int);

// Clusters of `cluster` blocks of `threads` (cluster 1: plain blocks) of
// kernel k the device holds at once, asked once per (kernel, cluster,
// threads): it does not change while the process runs. 0 when it cannot say.
int resident_clusters(FusedRegKernel k, int cluster, int threads) {
  static std::mutex mu;
  static std::map<std::tuple<FusedRegKernel, int, int>, int> cache;
  std::lock_guard<std::mutex> lock(mu);
  const auto key = std::make_tuple(k, cluster, threads);
  if (auto it = cache.find(key); it != cache.end()) return it->second;
  int n = 0;
  if (cluster == 1) {
    int per_sm = 0, dev = 0, sms = 0;
    if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, k, threads, 0) == cudaSuccess &&
        cudaGetDevice(&dev) == cudaSuccess &&
        cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) == cudaSuccess)
      n = per_sm * sms;
  } else {
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3(static_cast<unsigned>(cluster));
    cfg.blockDim = dim3(static_cast<unsigned>(threads));
    cudaLaunchAttribute attr;
    attr.id = cudaLaunchAttributeClusterDimension;
    attr.val.clusterDim.x = static_cast<unsigned>(cluster);
    attr.val.clusterDim.y = 1;
    attr.val.clusterDim.z = 1;
    cfg.attrs = &attr;
    cfg.numAttrs = 1;
    if (cudaOccupancyMaxActiveClusters(&n, k, &cfg) != cudaSuccess) n = 0;
  }
  (void)cudaGetLastError();
  return cache[key] = n;
}

// Launches the register-row kernel with `cluster` blocks per row; false if
// the grid it needs cannot be resident at once (the caller falls back).
bool launch_reg_rows(const LamportParams& p, FusedRegKernel k, int cluster, int hv, int rows, cudaStream_t stream,
                     const void* in, const void* residual, const void* weight, float eps, void* out_residual,
                     void* out, int hidden, cudaError_t* err) {
  const int threads = ((hv + cluster - 1) / cluster + 31) / 32 * 32;
  // Blocks spin on peers, so the whole grid must be resident at once.
  const int clusters = std::min({rows, p.max_blocks / cluster, resident_clusters(k, cluster, threads)});
  if (clusters < 1 || (cluster > 1 && clusters < rows)) return false;  // clusters only where every row has its own
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(static_cast<unsigned>(clusters * cluster));
  cfg.blockDim = dim3(static_cast<unsigned>(threads));
  cfg.stream = stream;
  cudaLaunchAttribute attr[2];
  int na = 0;
  if (cluster > 1) {
    attr[na].id = cudaLaunchAttributeClusterDimension;
    attr[na].val.clusterDim.x = static_cast<unsigned>(cluster);
    attr[na].val.clusterDim.y = 1;
    attr[na].val.clusterDim.z = 1;
    ++na;
  }
  if (p.pdl) {
    attr[na].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[na].val.programmaticStreamSerializationAllowed = 1;
    ++na;
  }
  cfg.attrs = attr;
  cfg.numAttrs = na;
  *err = cudaLaunchKernelEx(&cfg, k, p, in, residual, weight, eps, out_residual, out, rows, hidden);
  if (*err != cudaSuccess && p.pdl) {
    (void)cudaGetLastError();  // programmatic launch refused here: without it
    cfg.numAttrs = na - 1;
    *err = cudaLaunchKernelEx(&cfg, k, p, in, residual, weight, eps, out_residual, out, rows, hidden);
  }
  return true;
}
}  // namespace

cudaError_t lamport_init(void* ws, size_t bytes, LamportDType dt, uint32_t* flags, size_t capacity_bytes,
                         cudaStream_t stream) {
  const uint32_t pattern = dt == LamportDType::kF32 ? 0x80000000u : 0x80008000u;
  fill_kernel<<<1024, 256, 0, stream>>>(reinterpret_cast<uint32_t*>(ws), bytes / 4, pattern);
  init_flags_kernel<<<1, 1, 0, stream>>>(flags, static_cast<uint32_t>(capacity_bytes / 16));
  return cudaGetLastError();
}

cudaError_t lamport_allreduce(const LamportParams& p, LamportDType dt, const void* in, void* out, size_t count,
                              bool two_shot, cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  const int n = dt == LamportDType::kF32 ? 4 : 8;
  const size_t n_vecs = (count + n - 1) / n;
  if (n_vecs * 16 > p.capacity_bytes || p.world < 1 || p.world > kLamportMaxRanks) return cudaErrorInvalidValue;
  if ((reinterpret_cast<uintptr_t>(in) | reinterpret_cast<uintptr_t>(out)) & 15) return cudaErrorMisalignedAddress;
  size_t blocks = (n_vecs + kPlainThreads - 1) / kPlainThreads;
  if (blocks > static_cast<size_t>(p.max_blocks)) blocks = p.max_blocks;
  if (blocks < 1) blocks = 1;
  dim3 grid(static_cast<unsigned>(blocks)), block(kPlainThreads);
  switch (dt_index(dt) * 2 + (two_shot ? 1 : 0)) {
    case 0: return launch(p, lamport_plain_kernel<0, false>, grid, block, stream, p, in, out, count);
    case 1: return launch(p, lamport_plain_kernel<0, true>, grid, block, stream, p, in, out, count);
    case 2: return launch(p, lamport_plain_kernel<1, false>, grid, block, stream, p, in, out, count);
    case 3: return launch(p, lamport_plain_kernel<1, true>, grid, block, stream, p, in, out, count);
    case 4: return launch(p, lamport_plain_kernel<2, false>, grid, block, stream, p, in, out, count);
    case 5: return launch(p, lamport_plain_kernel<2, true>, grid, block, stream, p, in, out, count);
  }
  return cudaErrorInvalidValue;
}

cudaError_t lamport_allreduce_add_rmsnorm(const LamportParams& p, LamportDType dt, const void* in,
                                          const void* residual, const void* weight, float eps,
                                          void* out_residual, void* out, int rows, int hidden, bool two_shot,
                                          cudaStream_t stream) {
  if (rows <= 0) return cudaSuccess;
  const int n = dt == LamportDType::kF32 ? 4 : 8;
  if (hidden <= 0 || hidden % n != 0) return cudaErrorInvalidValue;
  if (static_cast<size_t>(rows) * hidden / n * 16 > p.capacity_bytes) return cudaErrorInvalidValue;
  const int which = dt_index(dt) * 2 + (two_shot ? 1 : 0);
  const int hv = hidden / n;
  if (rows <= p.fused_reg_max_rows && hv <= kRegRowThreads) {
    static const FusedRegKernel kernels[6] = {lamport_fused_reg_kernel<0, false>, lamport_fused_reg_kernel<0, true>,
                                              lamport_fused_reg_kernel<1, false>, lamport_fused_reg_kernel<1, true>,
                                              lamport_fused_reg_kernel<2, false>, lamport_fused_reg_kernel<2, true>};
    const FusedRegKernel k = kernels[which];
    // Small token counts: C blocks per row, about fused_block_vectors vectors each.
    int cluster = 1;
    const int per_block = std::max(32, p.fused_block_vectors);
    while (cluster < kMaxRowCluster && (hv + cluster - 1) / cluster > per_block) cluster *= 2;
    cudaError_t e = cudaSuccess;
    if (cluster > 1 && launch_reg_rows(p, k, cluster, hv, rows, stream, in, residual, weight, eps, out_residual, out,
                                       hidden, &e))
      return e;
    if (launch_reg_rows(p, k, 1, hv, rows, stream, in, residual, weight, eps, out_residual, out, hidden, &e)) return e;
  }
  // Wider rows (or fused_reg_max_rows exceeded): one block per row, several vectors per thread.
  int threads = ((hv + 31) / 32) * 32;
  if (threads > kFusedThreads) threads = kFusedThreads;
  int blocks = rows < p.max_blocks ? rows : p.max_blocks;
  dim3 grid(blocks), block(threads);
  switch (which) {
#define SHARDLM_FUSED(i, D, TS)                                                                              \
  case i:                                                                                                    \
    return launch(p, lamport_fused_kernel<D, TS>, grid, block, stream, p, in, residual, weight, eps,         \
                  out_residual, out, rows, hidden);
    SHARDLM_FUSED(0, 0, false)
    SHARDLM_FUSED(1, 0, true)
    SHARDLM_FUSED(2, 1, false)
    SHARDLM_FUSED(3, 1, true)
    SHARDLM_FUSED(4, 2, false)
    SHARDLM_FUSED(5, 2, true)
#undef SHARDLM_FUSED
  }
  return cudaErrorInvalidValue;
}

}  // namespace shardlm::kernels::cuda
