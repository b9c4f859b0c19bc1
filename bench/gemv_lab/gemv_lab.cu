// gemv_lab: a standalone bench of batch-1 gemv variants on the 8B decode
// shapes, beside a pure-read kernel of the same bytes (the ceiling a stream
// over the weights can reach) and the device-to-device copy bandwidth.
//
// Why standalone: each idea for the batch-1 linear (more bytes in flight per
// warp, two rows a warp, a persistent grid, an L2 sector hint, the entry load
// of the kernel-timeline build) is a template argument here, so one binary
// built in seconds times them all in one device call, interleaved, on cold L2
// (weights rotate over copies that together exceed the L2 several times).
// What wins moves into src/kernels/cuda/gemv.cu with its CPU-reference tests.
//
// Built by CMake as `gemv_lab` (CUDA builds); by hand: nvcc -O3 -std=c++17 -arch=sm_90a -Isrc -o gemv_lab
// bench/gemv_lab/gemv_lab.cu. Run it on the GPU machine: ./gemv_lab
// Options: --rounds N (interleaved rounds, default 2), --reps N (graph replays, default 10).
//
// Every variant sums each lane's pieces in increasing order and reduces with
// the same shuffle tree, so its y must equal variant A's bit for bit; the
// lab checks that, prints the mismatches and exits 1 before timing anything.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "kernels/cuda/common.cuh"

#define CK(x)                                                                                  \
  do {                                                                                         \
    cudaError_t e_ = (x);                                                                      \
    if (e_ != cudaSuccess) {                                                                   \
      std::fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_)); \
      std::exit(1);                                                                            \
    }                                                                                          \
  } while (0)

// The dot and the warp reduction are gemv.cu's own (kernels/cuda/common.cuh, a
// kernel-layer header with no engine dependencies), so a variant differs from
// the engine's gemv only in what it is meant to test.
using shardlm::kernels::cuda::detail::bf16;
using shardlm::kernels::cuda::detail::Bf16x8;
using shardlm::kernels::cuda::detail::dot8;
using shardlm::kernels::cuda::detail::warp_sum;

// Load kinds: 0 = ld.global.cs (evict-first, what gemv.cu uses); 1 = the
// non-coherent path with a 256-byte L2 sector prefetch hint; 2 = plain __ldg.
// LK >= 10: as LK % 10, and x read as one 16-byte load a piece (uint4 through
// the read-only path) instead of the member-wise copy of a Bf16x8, which
// compiles to four 4-byte loads.
template <int LK>
__device__ __forceinline__ Bf16x8 ldx(const bf16* p) {
  if constexpr (LK >= 10) {
    const uint4 v = __ldg(reinterpret_cast<const uint4*>(p));
    return *reinterpret_cast<const Bf16x8*>(&v);
  } else {
    return *reinterpret_cast<const Bf16x8*>(p);
  }
}
template <int LK0>
__device__ __forceinline__ uint4 ldw(const uint4* p) {
  constexpr int LK = LK0 % 10;
  if constexpr (LK == 0) return __ldcs(p);
  if constexpr (LK == 1) {
    uint4 v;
    asm volatile("ld.global.nc.L1::no_allocate.L2::256B.v4.u32 {%0,%1,%2,%3}, [%4];"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "l"(p));
    return v;
  }
  return __ldg(p);
}

// The kernel-timeline build's entry: a pointer loaded from a device variable,
// thread 0 branches on it before the first weight load; lane 0 of each warp
// again at its end. Nothing attaches it here (null), as in `bench gemv`.
__device__ unsigned long long* g_stamp = nullptr;
__device__ __forceinline__ unsigned long long now_ns() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

// y[row] = x · w[row]ᵀ, m = 1. U pieces of 16 B in flight per lane and row;
// R rows a warp (interleaved in one loop); W warps a block; P: persistent grid
// (warps stride over the rows) instead of one row group per warp.
// MB > 0: __launch_bounds__(threads, MB), so ptxas may use up to 65536 / (MB · threads)
// registers; MB = 0: the threads bound alone (gemv.cu today: ptxas then packs
// the kernel into 32 registers for full occupancy and issues the U weight
// loads of a step one after another, each behind the FMAs of the one before).
template <int U, int R, int W, int LK, bool ENTRY, bool P>
__device__ __forceinline__ void gemv_body(const bf16* __restrict__ x, const bf16* __restrict__ w,
                                          bf16* __restrict__ y, int n, int k) {
  unsigned long long* stamp = nullptr;
  if constexpr (ENTRY) {
    stamp = g_stamp;
    if (threadIdx.x == 0 && stamp) stamp[blockIdx.x] = now_ns();
  }
  const int lane = threadIdx.x & 31;
  const int warps_total = P ? gridDim.x * W : 0;
  const int pieces = k / 8;
  for (int row0 = (blockIdx.x * W + (threadIdx.x >> 5)) * R; row0 < n; row0 += P ? warps_total * R : n) {
    const Bf16x8* wr[R];
#pragma unroll
    for (int r = 0; r < R; ++r) wr[r] = reinterpret_cast<const Bf16x8*>(w + (int64_t)min(row0 + r, n - 1) * k);
    float acc[R];
#pragma unroll
    for (int r = 0; r < R; ++r) acc[r] = 0.0f;
    int p = lane;
    for (; p + 32 * (U - 1) < pieces; p += 32 * U) {
      Bf16x8 wv[R][U];
#pragma unroll
      for (int r = 0; r < R; ++r)
#pragma unroll
        for (int u = 0; u < U; ++u) {
          const uint4 raw = ldw<LK>(reinterpret_cast<const uint4*>(wr[r] + p + 32 * u));
          wv[r][u] = *reinterpret_cast<const Bf16x8*>(&raw);
        }
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const Bf16x8 xv = ldx<LK>(x + (p + 32 * u) * 8);
#pragma unroll
        for (int r = 0; r < R; ++r) dot8(wv[r][u], xv, acc[r]);
      }
    }
    for (; p < pieces; p += 32) {
#pragma unroll
      for (int r = 0; r < R; ++r) {
        const uint4 raw = ldw<LK>(reinterpret_cast<const uint4*>(wr[r] + p));
        dot8(*reinterpret_cast<const Bf16x8*>(&raw), ldx<LK>(x + p * 8), acc[r]);
      }
    }
#pragma unroll
    for (int r = 0; r < R; ++r) acc[r] = warp_sum(acc[r]);
    if (lane == 0) {
#pragma unroll
      for (int r = 0; r < R; ++r)
        if (row0 + r < n) y[row0 + r] = __float2bfloat16(acc[r]);
      if constexpr (ENTRY)
        if (stamp) stamp[blockIdx.x] = now_ns();
    }
  }
}

template <int U, int R, int W, int LK, bool ENTRY, bool P, int MB>
__global__ void __launch_bounds__(W * 32, MB) gemv_mb(const bf16* __restrict__ x, const bf16* __restrict__ w,
                                                      bf16* __restrict__ y, int n, int k) {
  gemv_body<U, R, W, LK, ENTRY, P>(x, w, y, n, k);
}
template <int U, int R, int W, int LK, bool ENTRY, bool P>
__global__ void __launch_bounds__(W * 32) gemv_v(const bf16* __restrict__ x, const bf16* __restrict__ w,
                                                 bf16* __restrict__ y, int n, int k) {
  gemv_body<U, R, W, LK, ENTRY, P>(x, w, y, n, k);
}

// The ceiling: read `bytes` once (16-byte loads, U in flight per thread,
// evict-first), fold them into one word so nothing is optimised away.
template <int U>
__global__ void __launch_bounds__(256) read_v(const uint4* __restrict__ p, int64_t n16, unsigned* __restrict__ sink) {
  unsigned acc = 0;
  const int64_t stride = (int64_t)gridDim.x * blockDim.x;
  int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  for (; i + (U - 1) * stride < n16; i += U * stride) {
    uint4 v[U];
#pragma unroll
    for (int u = 0; u < U; ++u) v[u] = __ldcs(p + i + u * stride);
#pragma unroll
    for (int u = 0; u < U; ++u) acc ^= v[u].x ^ v[u].y ^ v[u].z ^ v[u].w;
  }
  for (; i < n16; i += stride) {
    const uint4 v = __ldcs(p + i);
    acc ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  if (acc == 0x9e3779b9u) sink[0] = acc;
}

__global__ void empty_k() {}

__global__ void fill_k(bf16* p, int64_t n, unsigned seed) {
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    unsigned h = (unsigned)i * 2654435761u ^ seed;
    h ^= h >> 13;
    h *= 0x5bd1e995u;
    h ^= h >> 15;
    p[i] = __float2bfloat16(((int)(h & 0xffff) - 32768) * (1.0f / 32768.0f) * 0.05f);
  }
}

struct Shape {
  const char* name;
  int n, k;
};

using Launch = void (*)(const bf16*, const bf16*, bf16*, int, int, cudaStream_t, int sms);

template <int U, int R, int W, int LK, bool ENTRY, bool P, int MB = 0>
void launch_v(const bf16* x, const bf16* w, bf16* y, int n, int k, cudaStream_t s, int sms) {
  auto kern = MB ? gemv_mb<U, R, W, LK, ENTRY, P, (MB ? MB : 1)> : gemv_v<U, R, W, LK, ENTRY, P>;
  if (n < 0) {  // query: registers of this variant
    cudaFuncAttributes fa{};
    cudaFuncGetAttributes(&fa, kern);
    *reinterpret_cast<int*>(y) = fa.numRegs;
    return;
  }
  int grid = (n + W * R - 1) / (W * R);
  if (P) {
    int per_sm = 0;
    cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kern, W * 32, 0);
    grid = std::min(grid, per_sm * sms);
  }
  kern<<<grid, W * 32, 0, s>>>(x, w, y, n, k);
}

struct Variant {
  const char* name;
  const char* what;
  Launch fn;
};

static float time_graph(cudaGraphExec_t ge, cudaStream_t s, int reps) {
  cudaEvent_t a, b;
  CK(cudaEventCreate(&a));
  CK(cudaEventCreate(&b));
  for (int i = 0; i < 2; ++i) CK(cudaGraphLaunch(ge, s));
  CK(cudaEventRecord(a, s));
  for (int i = 0; i < reps; ++i) CK(cudaGraphLaunch(ge, s));
  CK(cudaEventRecord(b, s));
  CK(cudaEventSynchronize(b));
  float ms = 0;
  CK(cudaEventElapsedTime(&ms, a, b));
  CK(cudaEventDestroy(a));
  CK(cudaEventDestroy(b));
  return ms / reps;
}

int main(int argc, char** argv) {
  int rounds = 2, reps = 10;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--rounds")) rounds = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--reps")) reps = std::atoi(argv[i + 1]);
  }
  cudaDeviceProp prop{};
  CK(cudaGetDeviceProperties(&prop, 0));
  const int sms = prop.multiProcessorCount;
  cudaStream_t s;
  CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  std::printf("device %s, %d SMs, L2 %d MB\n", prop.name, sms, prop.l2CacheSize >> 20);

  // Copy bandwidth (bytes read + written), 1 GiB, as bench decode measures it.
  const size_t cbytes = size_t(1) << 30;
  void *ca, *cb;
  CK(cudaMalloc(&ca, cbytes));
  CK(cudaMalloc(&cb, cbytes));
  CK(cudaMemsetAsync(ca, 1, cbytes, s));
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  auto copy_bw = [&] {
    for (int i = 0; i < 2; ++i) CK(cudaMemcpyAsync(cb, ca, cbytes, cudaMemcpyDeviceToDevice, s));
    CK(cudaEventRecord(e0, s));
    for (int i = 0; i < 10; ++i) CK(cudaMemcpyAsync(cb, ca, cbytes, cudaMemcpyDeviceToDevice, s));
    CK(cudaEventRecord(e1, s));
    CK(cudaEventSynchronize(e1));
    float ms;
    CK(cudaEventElapsedTime(&ms, e0, e1));
    return 2.0 * cbytes * 10 / (ms * 1e-3) / 1e9;
  };
  const double bw = copy_bw();
  std::printf("copy bandwidth %.0f GB/s (read + written)\n", bw);


  const Shape shapes[] = {{"qkv", 6144, 4096}, {"o_proj", 4096, 4096}, {"gate|up", 28672, 4096},
                          {"down", 4096, 14336}, {"lm_head", 128256, 4096}};
  constexpr int kShapes = 5;
  // Copies of each weight so that one graph pass touches >= 1.5 GB (cold L2).
  std::vector<std::vector<bf16*>> wcopies(kShapes);
  for (int si = 0; si < kShapes; ++si) {
    const size_t bytes = size_t(shapes[si].n) * shapes[si].k * 2;
    const int copies = std::max<int>(2, int((size_t(1536) << 20) / bytes));
    for (int c = 0; c < copies; ++c) {
      bf16* p;
      CK(cudaMalloc(&p, bytes));
      fill_k<<<1024, 256, 0, s>>>(p, size_t(shapes[si].n) * shapes[si].k, 17u * si + c);
      wcopies[si].push_back(p);
    }
  }
  bf16 *x, *y, *yref;
  CK(cudaMalloc(&x, 14336 * 2));
  CK(cudaMalloc(&y, 128256 * 2));
  CK(cudaMalloc(&yref, 128256 * 2));
  fill_k<<<64, 256, 0, s>>>(x, 14336, 99u);
  unsigned* sink;
  CK(cudaMalloc(&sink, 64));
  CK(cudaStreamSynchronize(s));

  const Variant variants[] = {
      {"A", "U4 R1 W8 ldcs (gemv.cu before run 22)", launch_v<4, 1, 8, 0, false, false>},
      {"B", "A + timeline-build entry load/branch", launch_v<4, 1, 8, 0, true, false>},
      {"C", "U8 R1 W8", launch_v<8, 1, 8, 0, false, false>},
      {"D", "U4 R2 W8 (two rows a warp)", launch_v<4, 2, 8, 0, false, false>},
      {"E", "U4 R1 W8 nc + L2::256B", launch_v<4, 1, 8, 1, false, false>},
      {"F", "U4 R1 W4", launch_v<4, 1, 4, 0, false, false>},
      {"G", "U4 R1 W8 persistent grid", launch_v<4, 1, 8, 0, false, true>},
      {"H", "U8 R2 W8", launch_v<8, 2, 8, 0, false, false>},
      {"I", "U8 R1 W8 nc + L2::256B", launch_v<8, 1, 8, 1, false, false>},
      {"J", "U4 R1 W8 __ldg", launch_v<4, 1, 8, 2, false, false>},
      {"K", "U2 R1 W8", launch_v<2, 1, 8, 0, false, false>},
      {"L", "U4 R2 W4", launch_v<4, 2, 4, 0, false, false>},
      {"M", "U4 R1 W8, min 4 blocks (<= 64 regs)", launch_v<4, 1, 8, 0, false, false, 4>},
      {"N", "U4 R1 W8, min 6 blocks (<= 40 regs)", launch_v<4, 1, 8, 0, false, false, 6>},
      {"O", "U4 R1 W8, min 5 blocks (<= 48 regs)", launch_v<4, 1, 8, 0, false, false, 5>},
      {"P", "U8 R1 W8, min 4 blocks", launch_v<8, 1, 8, 0, false, false, 4>},
      {"Q", "U8 R1 W8, min 3 blocks", launch_v<8, 1, 8, 0, false, false, 3>},
      {"S", "U4 R2 W8, min 4 blocks", launch_v<4, 2, 8, 0, false, false, 4>},
      {"T", "U4 R1 W4, min 8 blocks (<= 64 regs)", launch_v<4, 1, 4, 0, false, false, 8>},
      {"V", "U8 R1 W4, min 6 blocks", launch_v<8, 1, 4, 0, false, false, 6>},
      {"X", "U4 R1 W8, min 4, nc + L2::256B", launch_v<4, 1, 8, 1, false, false, 4>},
      {"a", "U4 R1 W8, x as uint4", launch_v<4, 1, 8, 10, false, false>},
      {"Z", "U4 R1 W8, x as uint4, min 1 (gemv.cu now)", launch_v<4, 1, 8, 10, false, false, 1>},
      {"b", "U4 R1 W8, x as uint4, min 4", launch_v<4, 1, 8, 10, false, false, 4>},
      {"c", "U4 R1 W8, x as uint4, min 5", launch_v<4, 1, 8, 10, false, false, 5>},
      {"d", "U4 R1 W8, x as uint4, min 6", launch_v<4, 1, 8, 10, false, false, 6>},
      {"e", "U8 R1 W8, x as uint4, min 4", launch_v<8, 1, 8, 10, false, false, 4>},
      {"f", "U4 R2 W8, x as uint4, min 4", launch_v<4, 2, 8, 10, false, false, 4>},
      {"g", "U4 R1 W4, x as uint4, min 8", launch_v<4, 1, 4, 10, false, false, 8>},
  };
  constexpr int kVariants = sizeof(variants) / sizeof(variants[0]);

  // Correctness: every variant's y equals A's bit for bit.
  long mismatches = 0;
  for (int si = 0; si < kShapes; ++si) {
    const Shape& sh = shapes[si];
    variants[0].fn(x, wcopies[si][0], yref, sh.n, sh.k, s, sms);
    std::vector<uint16_t> ref(sh.n), got(sh.n);
    CK(cudaMemcpyAsync(ref.data(), yref, sh.n * 2, cudaMemcpyDeviceToHost, s));
    CK(cudaStreamSynchronize(s));
    for (int vi = 1; vi < kVariants; ++vi) {
      CK(cudaMemsetAsync(y, 0xff, sh.n * 2, s));
      variants[vi].fn(x, wcopies[si][0], y, sh.n, sh.k, s, sms);
      CK(cudaGetLastError());
      CK(cudaMemcpyAsync(got.data(), y, sh.n * 2, cudaMemcpyDeviceToHost, s));
      CK(cudaStreamSynchronize(s));
      int bad = 0;
      for (int i = 0; i < sh.n; ++i) bad += ref[i] != got[i];
      mismatches += bad;
      if (bad) std::printf("MISMATCH variant %s shape %s: %d of %d outputs differ from A\n", variants[vi].name,
                           sh.name, bad, sh.n);
    }
  }
  if (mismatches) return 1;
  std::printf("all variants checked against A (bitwise)\n");

  // One graph per (variant, shape): one launch per weight copy, then (for the
  // layer) qkv, o_proj, gate|up, down over 4 copies each.
  auto graph_of = [&](auto&& body) {
    cudaGraph_t g;
    cudaGraphExec_t ge;
    CK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
    body();
    CK(cudaStreamEndCapture(s, &g));
    CK(cudaGraphInstantiate(&ge, g, 0));
    CK(cudaGraphDestroy(g));
    return ge;
  };
  std::vector<double> sum(kVariants * (kShapes + 1), 0.0);
  std::vector<double> rsum(kShapes + 1, 0.0);
  double empty_us = 0;
  for (int round = 0; round < rounds; ++round) {
    std::printf("round %d (copy bandwidth now %.0f GB/s)\n", round + 1, copy_bw());
    {  // launch cost: 64 empty kernels back to back in a graph
      cudaGraphExec_t ge = graph_of([&] {
        for (int i = 0; i < 64; ++i) empty_k<<<sms, 256, 0, s>>>();
      });
      empty_us += time_graph(ge, s, reps) * 1e3 / 64;
      CK(cudaGraphExecDestroy(ge));
    }
    for (int si = 0; si <= kShapes; ++si) {  // the ceiling: a read of each shape's bytes
      const bool layer = si == kShapes;
      cudaGraphExec_t ge = graph_of([&] {
        const int passes = layer ? 4 : (int)wcopies[si].size();
        for (int c = 0; c < passes; ++c) {
          for (int li = 0; li < (layer ? 4 : 1); ++li) {
            const int sj = layer ? li : si;
            const Shape& sh = shapes[sj];
            const int64_t n16 = int64_t(sh.n) * sh.k * 2 / 16;
            read_v<4><<<sms * 8, 256, 0, s>>>(reinterpret_cast<const uint4*>(wcopies[sj][c % wcopies[sj].size()]),
                                             n16, sink);
          }
        }
      });
      const int per = layer ? 4 : (int)wcopies[si].size();
      rsum[si] += time_graph(ge, s, reps) * 1e3 / per;
      CK(cudaGraphExecDestroy(ge));
    }
    for (int vi = 0; vi < kVariants; ++vi) {
      for (int si = 0; si <= kShapes; ++si) {
        const bool layer = si == kShapes;
        cudaGraphExec_t ge = graph_of([&] {
          const int passes = layer ? 4 : (int)wcopies[si].size();
          for (int c = 0; c < passes; ++c)
            for (int li = 0; li < (layer ? 4 : 1); ++li) {
              const int sj = layer ? li : si;
              const Shape& sh = shapes[sj];
              variants[vi].fn(x, wcopies[sj][c % wcopies[sj].size()], y, sh.n, sh.k, s, sms);
            }
        });
        const int per = layer ? 4 : (int)wcopies[si].size();
        sum[vi * (kShapes + 1) + si] += time_graph(ge, s, reps) * 1e3 / per;
        CK(cudaGraphExecDestroy(ge));
      }
    }
  }
  auto bytes_of = [&](int si) {
    if (si < kShapes) return double(shapes[si].n) * shapes[si].k * 2;
    double b = 0;
    for (int j = 0; j < 4; ++j) b += double(shapes[j].n) * shapes[j].k * 2;
    return b;
  };
  std::printf("\nempty kernel in a graph: %.2f us a launch\n", empty_us / rounds);
  std::printf("\nus per launch (%% of copy bandwidth %.0f GB/s), mean of %d rounds; 'layer' = qkv+o+gate|up+down\n", bw,
              rounds);
  std::printf("%-52s", "variant");
  for (int si = 0; si < kShapes; ++si) std::printf(" %15s", shapes[si].name);
  std::printf(" %15s\n", "layer");
  std::printf("%-52s", "at copy bandwidth");
  for (int si = 0; si <= kShapes; ++si) std::printf(" %15.2f", bytes_of(si) / (bw * 1e9) * 1e6);
  std::printf("\n");
  auto row = [&](const char* label, const double* t) {
    std::printf("%-52s", label);
    for (int si = 0; si <= kShapes; ++si) {
      const double us = t[si] / rounds;
      std::printf("  %7.2f (%3.0f%%)", us, bytes_of(si) / (bw * 1e9) * 1e6 / us * 100);
    }
    std::printf("\n");
  };
  row("read only (U4, 8 blocks/SM, grid-stride)", rsum.data());
  for (int vi = 0; vi < kVariants; ++vi) {
    int regs = 0;
    variants[vi].fn(nullptr, nullptr, reinterpret_cast<bf16*>(&regs), -1, 0, s, sms);
    char label[96];
    std::snprintf(label, sizeof label, "%s %s [%d regs]", variants[vi].name, variants[vi].what, regs);
    row(label, &sum[vi * (kShapes + 1)]);
  }
  return 0;
}
