// Fused all-reduce + residual + RMSNorm (Lamport, one-shot and two-shot; the
// all-reduce itself is described at the top of lamport_allreduce.cu), by
// shape: rows of ≤ 1024 vectors in registers, cut over a cluster of blocks
// while every row gets its own cluster (small token counts), else one block
// per row (lamport_fused_reg_kernel); with fused_whole_row the clustered case
// runs lamport_fused_whole_row_kernel instead (each block sums the whole row;
// no Σ r² crosses blocks); wider rows loop (lamport_fused_kernel).
#include <cooperative_groups.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <tuple>

#include "kernels/cuda/allreduce/lamport_allreduce.h"
#include "kernels/cuda/allreduce/lamport_device.cuh"

namespace shardlm::kernels::cuda {
using namespace lamport;
namespace {

// Whole-row kernel: only used with clusters of ≥ 2 blocks, so a block holds
// at most half of a 1024-vector row. Its launch bounds also say 1 block per
// SM: without that ptxas held it to 64 registers and spilled the residuals.
constexpr int kWholeRowThreads = kRegRowThreads / 2;

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

// Whole-row variant of the clustered register-row kernel (small token
// counts; LamportParams::fused_whole_row). Block q of a row's cluster still
// pushes only its part and stores only its part, but sums the whole row
// itself: thread i polls and adds vectors i, i + T, …, i + (C−1)·T of the
// row (T threads per block), so every block computes the row's Σ r² alone,
// in the same order as every other block of the row (the same bits), and no
// partial crosses blocks. It trades C times the polls and residual loads
// (issued together, from L2) for the distributed-shared-memory exchange and
// the cluster barrier after the peers' data lands, which the bisection in
// bench/ALLREDUCE_NOTES.md put at ~0.75 µs of the fused kernel's ~1 µs over
// the all-reduce alone. The cluster stays for one reason: out_residual may
// alias residual, so no block may store its part before every block of the
// row has read the residual there; each block arrives on the cluster barrier
// once its residual loads have returned (long before the peers' data lands)
// and waits on it just before its stores.
template <int D, bool kTwoShot>
__global__ void __launch_bounds__(kWholeRowThreads, 1) lamport_fused_whole_row_kernel(
    LamportParams p, const void* in, const void* residual, const void* weight, float eps, void* out_residual,
    void* out, int rows, int hidden) {
  pdl_wait_and_trigger();
  constexpr int N = Vec<D>::N;
  constexpr int op = kTwoShot ? kOpFusedTwoShot : kOpFusedOneShot;
  namespace cg = cooperative_groups;
  __shared__ float red[32];
  cg::cluster_group cluster = cg::this_cluster();
  const int C = static_cast<int>(cluster.num_blocks());
  const int q = static_cast<int>(cluster.block_rank());
  const int t = static_cast<int>(blockIdx.x) / C;  // one row per cluster (launch_reg_rows: clusters == rows)
  const Groups g = read_groups(p);
  const int hv = hidden / N, T = static_cast<int>(blockDim.x), i = static_cast<int>(threadIdx.x);
  const size_t base = static_cast<size_t>(t) * hv;
  const int j = q * T + i;  // our vector of the row: pushed and stored by this thread
  const bool mine = j < hv;
  bool failed = false;

  // 1. push our part (to everyone, or to the row's owner t mod W)
  if (mine)
    push_vec<kTwoShot>(p, g, t % p.world, base + j, fix_neg_zero<D>(reinterpret_cast<const uint4*>(in)[base + j]));
  clear_previous<D>(p, g);
  // 2. the whole row's residual, and our weight, before the poll
  uint4 res[kMaxRowCluster];
#pragma unroll
  for (int k = 0; k < kMaxRowCluster; ++k) {
    const int jj = k * T + i;
    res[k] = (k < C && jj < hv) ? reinterpret_cast<const uint4*>(residual)[base + jj] : make_uint4(0, 0, 0, 0);
  }
  const uint4 wv = mine ? reinterpret_cast<const uint4*>(weight)[j] : make_uint4(0, 0, 0, 0);
  if constexpr (kTwoShot) {
    // the row's owner reduces our part and unicasts the sums into every stage1
    if (mine && t % p.world == p.rank) reduce_and_broadcast<D>(p, g, base + j, op, failed);
  }
  // The residual values are in registers (the empty asm consumes them, so
  // the loads have returned): our reads of the row are done.
#pragma unroll
  for (int k = 0; k < kMaxRowCluster; ++k)
    asm volatile("" ::"r"(res[k].x), "r"(res[k].y), "r"(res[k].z), "r"(res[k].w));
  asm volatile("barrier.cluster.arrive.relaxed.aligned;" ::: "memory");
  // 3. the whole row: sums → residual add → Σ r²; our part kept
  float ss = 0.f;
  uint4 own = make_uint4(0, 0, 0, 0);
#pragma unroll
  for (int k = 0; k < kMaxRowCluster; ++k) {
    const int jj = k * T + i;
    if (k < C && jj < hv) {
      uint4 s;
      if constexpr (kTwoShot) {
        s = poll<D>(stage1(p.peer_ws[p.rank], g, g.cur, p.world) + base + jj, p.flags, p.timeout_ns, op,
                    t % p.world, failed);
      } else {
        float acc[N];
        sum_slots<D>(p, g, base + jj, op, acc, failed);
        s = pack<D>(acc);
      }
      const uint4 rv = add_residual<D>(s, res[k], ss);
      if (k == q) own = rv;
    }
  }
  const float inv = rsqrtf(block_sum(ss, red) / static_cast<float>(hidden) + eps);
  // every block of the row has read its residual: now the part may be overwritten
  asm volatile("barrier.cluster.wait.aligned;" ::: "memory");
  if (mine) {
    reinterpret_cast<uint4*>(out_residual)[base + j] = own;
    reinterpret_cast<uint4*>(out)[base + j] = norm_times_weight<D>(own, wv, inv);
  }
  finish_call(p, g, static_cast<uint32_t>(static_cast<size_t>(rows) * hv));
}


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
    static const FusedRegKernel whole_row[6] = {
        lamport_fused_whole_row_kernel<0, false>, lamport_fused_whole_row_kernel<0, true>,
        lamport_fused_whole_row_kernel<1, false>, lamport_fused_whole_row_kernel<1, true>,
        lamport_fused_whole_row_kernel<2, false>, lamport_fused_whole_row_kernel<2, true>};
    const FusedRegKernel k = kernels[which];
    // Small token counts: C blocks per row, about fused_block_vectors vectors each.
    int cluster = 1;
    const int per_block = std::max(32, p.fused_block_vectors);
    while (cluster < kMaxRowCluster && (hv + cluster - 1) / cluster > per_block) cluster *= 2;
    cudaError_t e = cudaSuccess;
    if (cluster > 1 && launch_reg_rows(p, p.fused_whole_row ? whole_row[which] : k, cluster, hv, rows, stream, in,
                                       residual, weight, eps, out_residual, out, hidden, &e))
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
