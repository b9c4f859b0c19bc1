// Helpers for the 2-GPU communication tests: the gtest process forks one child
// per GPU (tests/comm/multiproc.h; it never touches CUDA itself, since a child
// forked after CUDA initialisation cannot use the GPU), counts GPUs in a
// forked probe, and builds deterministic inputs whose every rank's values any
// rank can recompute, so the float64 reference needs no communication.
#pragma once

#include <cuda_runtime.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <cstdlib>
#include <string>
#include <vector>

#include "../comm/multiproc.h"
#include "comm/symmetric_buffer.h"
#include "tensor/dtype.h"

namespace shardlm::testing {

// Ranks (one GPU each) of the 2-GPU suite; SHARDLM_GPU_TEST_WORLD runs the same
// suite at another world size (4 and 8 on larger machines).
inline int gpu_test_world() {
  const char* v = std::getenv("SHARDLM_GPU_TEST_WORLD");
  const int w = v ? std::atoi(v) : 2;
  return w >= 2 ? w : 2;
}
inline const int kWorld = gpu_test_world();

// Visible GPUs, counted in a forked child (the parent stays CUDA-free), or -1.
inline int gpu_count_forked() {
  pid_t p = fork();
  if (p == 0) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) n = 0;
    _exit(n > 100 ? 100 : n);
  }
  int st = 0;
  if (p < 0 || waitpid(p, &st, 0) != p || !WIFEXITED(st)) return -1;
  return WEXITSTATUS(st);
}

#define SKIP_WITHOUT_TWO_GPUS()                                                                      \
  do {                                                                                               \
    int _n = ::shardlm::testing::gpu_count_forked();                                                 \
    if (_n < ::shardlm::testing::kWorld)                                                             \
      GTEST_SKIP() << "needs " << ::shardlm::testing::kWorld << " GPUs (one process each); this "     \
                   << "machine has " << _n;                                                          \
  } while (0)

inline uint64_t mix(uint64_t x) {  // splitmix64
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// Value i of rank r's input for `seed`, as f32 before rounding to the dtype:
// −0.0, subnormals of the dtype and large magnitudes are mixed in.
inline float input_value(DType dt, int rank, uint64_t seed, size_t i) {
  uint64_t h = mix(seed * 1315423911ull + static_cast<uint64_t>(rank) * 2654435761ull + i);
  const float sign = (h >> 63) ? -1.f : 1.f;
  switch (i % 97) {
    case 0: return -0.0f;
    case 1:  // subnormals
      if (dt == DType::kF16) return sign * std::ldexp(static_cast<float>(1 + h % 1000), -24);
      return sign * std::ldexp(static_cast<float>(1 + h % 1000), -140);
    case 2:  // large: an f16 sum of kWorld of them (each ≤ 1.75 × 3e4 / W) stays below 65504
      if (dt == DType::kF16) return sign * (3.0e4f / static_cast<float>(kWorld)) * (1.f + (h % 7) / 8.f);
      return sign * 1.0e30f * (1.f + (h % 7) / 8.f);
    default: break;
  }
  float u = static_cast<float>((h >> 11) & 0xffffff) / 16777216.f * 2.f - 1.f;
  return u * std::ldexp(1.f, static_cast<int>(h % 9) - 4);
}

inline void to_dtype(DType dt, const std::vector<float>& f, std::vector<uint8_t>& out) {
  out.resize(f.size() * dtype_size(dt));
  convert_from_f32(dt, f.data(), out.data(), f.size());
}

// Rank r's input bytes (count elements of dt).
inline std::vector<uint8_t> make_input(DType dt, int rank, uint64_t seed, size_t count) {
  std::vector<float> f(count);
  for (size_t i = 0; i < count; ++i) f[i] = input_value(dt, rank, seed, i);
  std::vector<uint8_t> b;
  to_dtype(dt, f, b);
  return b;
}

// float64 sum of every rank's (dtype-rounded) input.
inline std::vector<double> reference_sum(DType dt, uint64_t seed, size_t count, int world) {
  std::vector<double> ref(count, 0.0);
  std::vector<float> tmp(count);
  for (int r = 0; r < world; ++r) {
    auto in = make_input(dt, r, seed, count);
    convert_to_f32(dt, in.data(), tmp.data(), count);
    for (size_t i = 0; i < count; ++i) ref[i] += tmp[i];
  }
  return ref;
}

struct Tol {
  double atol, rtol;
};
// One rounding of the result per extra rank: an f32 sum of W inputs rounds up
// to W − 1 times (NCCL's ring, in its own order), and the inputs may cancel,
// hence an absolute term per rank too. At W = 2 this is the exact-sum bound.
inline Tol tolerance(DType dt) {
  const double extra = kWorld > 2 ? kWorld - 1 : 1;
  switch (dt) {
    case DType::kF32: return {kWorld > 2 ? 2e-7 * kWorld : 1e-44, 1.2e-7 * extra};
    case DType::kF16: return {6.0e-8 * kWorld, 9.8e-4 * extra};   // 2^-24 atol, 2^-10
    case DType::kBF16: return {1.0e-40, 7.9e-3 * extra};          // 2^-7
    default: return {0, 0};
  }
}

// float64 Σ_r |input_r[i]| (dtype-rounded inputs): the scale of the f32
// accumulation error when the inputs cancel.
inline std::vector<double> reference_abs_sum(DType dt, uint64_t seed, size_t count, int world) {
  std::vector<double> s(count, 0.0);
  std::vector<float> tmp(count);
  for (int r = 0; r < world; ++r) {
    auto in = make_input(dt, r, seed, count);
    convert_to_f32(dt, in.data(), tmp.data(), count);
    for (size_t i = 0; i < count; ++i) s[i] += std::fabs(static_cast<double>(tmp[i]));
  }
  return s;
}

// Unit roundoff of the type partial sums are kept in: f32 for the Lamport
// kernels (they accumulate in f32 and round once at the end); the buffer's
// dtype for NCCL (its ring adds in float but stores each hop's partial sum
// in the buffer's dtype).
inline double unit_roundoff(DType accumulate) {
  switch (accumulate) {
    case DType::kF16: return 0x1p-11;
    case DType::kBF16: return 0x1p-8;
    default: return 0x1p-24;
  }
}
// Bound on the accumulation error of a sum of W terms in any order (NCCL's
// ring/tree, Lamport's rank order): each of the ≤ W − 1 additions rounds a
// partial sum whose magnitude is ≤ Σ|x|, so |error| ≤ (W − 1)·u·Σ|x| (1 %
// margin for the second-order term). The result-relative tolerance above
// cannot cover this when the inputs cancel (W = 4, NCCL f32 count 1000,
// element 86: inputs up to 16, a partial sum in [16, 32) rounded by
// 2^-20 = 9.5e-7, the sum is 0.11). At W = 2 the sum x0 + x1 rounds once,
// relative to the result: no term, the W = 2 checks are unchanged. A missing,
// stale or doubled rank contribution is off by a whole input, far outside.
inline double accumulation_bound(double abs_sum, double unit = 0x1p-24) {
  return kWorld > 2 ? (kWorld - 1) * unit * 1.01 * abs_sum : 0.0;
}

// Index of the first element outside tolerance, or -1. abs_sum (optional):
// reference_abs_sum() of the same inputs, adds accumulation_bound(·, unit).
inline int64_t first_mismatch(DType dt, const std::vector<uint8_t>& out, const std::vector<double>& ref,
                              std::string* why, const std::vector<double>* abs_sum = nullptr,
                              double unit = 0x1p-24) {
  std::vector<float> f(ref.size());
  convert_to_f32(dt, out.data(), f.data(), ref.size());
  Tol t = tolerance(dt);
  for (size_t i = 0; i < ref.size(); ++i) {
    double d = std::fabs(static_cast<double>(f[i]) - ref[i]);
    const double acc = abs_sum ? accumulation_bound((*abs_sum)[i], unit) : 0.0;
    if (!(d <= t.atol + t.rtol * std::fabs(ref[i]) + acc)) {
      if (why) *why = fmt::format("element {}: got {:.9g}, float64 reference {:.9g}", i, f[i], ref[i]);
      return static_cast<int64_t>(i);
    }
  }
  return -1;
}

// Host → device copy that is complete before anything later enqueued on
// `stream` runs. A plain cudaMemcpy from pageable memory may return before its
// DMA has landed (CUDA "API synchronization behavior": it returns once the
// data is in the staging buffer), and it runs on the legacy default stream,
// which a cudaStreamNonBlocking stream does not wait for: a kernel launched
// on `stream` right after could read the tail of the buffer's old bytes.
inline cudaError_t upload(void* dst, const void* src, size_t bytes, cudaStream_t stream) {
  cudaError_t e = cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream);
  if (e != cudaSuccess) return e;
  return cudaStreamSynchronize(stream);
}

inline uint64_t hash_bytes(const void* p, size_t n) {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; ++i) h = (h ^ static_cast<const uint8_t*>(p)[i]) * 1099511628211ull;
  return h;
}

inline CommGroup group_of(Rendezvous* rv, int rank, const std::string& prefix = "tp") {
  CommGroup g;
  g.rv = rv;
  g.prefix = prefix;
  for (int r = 0; r < kWorld; ++r) g.ranks.push_back(r);
  g.index = rank;
  return g;
}

#define CUDA_CHILD(rank, call)                                                                          \
  do {                                                                                                  \
    cudaError_t _e = (call);                                                                            \
    if (_e != cudaSuccess) return ::shardlm::testing::child_fail(rank, #call ": " + std::string(cudaGetErrorString(_e))); \
  } while (0)

}  // namespace shardlm::testing
