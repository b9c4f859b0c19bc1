// Helpers for the GPU tests: skip without a device, device buffers, bf16
// rounding on the host, and a tolerance check against a reference.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace shardlm::cuda_testing {

inline std::string no_device_reason() {
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    cudaGetLastError();
    return std::string("no CUDA device: ") + cudaGetErrorString(e);
  }
  if (n == 0) return "no CUDA device: cudaGetDeviceCount returned 0";
  return "";
}

#define SHARDLM_REQUIRE_GPU()                                             \
  do {                                                                    \
    const std::string _why = ::shardlm::cuda_testing::no_device_reason(); \
    if (!_why.empty()) GTEST_SKIP() << _why;                              \
  } while (0)

#define CUDA_OK(expr) ASSERT_EQ((expr), cudaSuccess) << #expr << ": " << cudaGetErrorString(cudaGetLastError())

// Round-to-nearest-even f32 → bf16 bits (finite inputs), and back.
inline uint16_t to_bf16_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}
inline float from_bf16_bits(uint16_t b) {
  uint32_t u = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline float round_bf16(float f) { return from_bf16_bits(to_bf16_bits(f)); }

// Uniform in [lo, hi), rounded to bf16 so host and device see the same values.
inline std::vector<float> random_bf16_values(size_t n, uint64_t seed, float lo = -1.0f, float hi = 1.0f) {
  std::mt19937_64 g(seed);
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) {
    do x = round_bf16(d(g));
    while (x == 0.0f);
  }
  return v;
}

template <typename T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t n) : n_(n) {
    if (cudaMalloc(&p_, std::max<size_t>(n, 1) * sizeof(T)) != cudaSuccess) p_ = nullptr;
  }
  ~DeviceBuffer() { cudaFree(p_); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  T* get() const { return p_; }
  size_t size() const { return n_; }

 private:
  T* p_ = nullptr;
  size_t n_ = 0;
};

// Uploads f32 values as bf16.
inline void upload_bf16(DeviceBuffer<__nv_bfloat16>& d, const std::vector<float>& v) {
  std::vector<uint16_t> b(v.size());
  for (size_t i = 0; i < v.size(); ++i) b[i] = to_bf16_bits(v[i]);
  ASSERT_EQ(cudaMemcpy(d.get(), b.data(), b.size() * 2, cudaMemcpyHostToDevice), cudaSuccess);
}
inline std::vector<float> download_bf16(const DeviceBuffer<__nv_bfloat16>& d, size_t n) {
  std::vector<uint16_t> b(n);
  EXPECT_EQ(cudaMemcpy(b.data(), d.get(), n * 2, cudaMemcpyDeviceToHost), cudaSuccess);
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = from_bf16_bits(b[i]);
  return v;
}
template <typename T>
void upload(DeviceBuffer<T>& d, const std::vector<T>& v) {
  ASSERT_EQ(cudaMemcpy(d.get(), v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
}
template <typename T>
std::vector<T> download(const DeviceBuffer<T>& d, size_t n) {
  std::vector<T> v(n);
  EXPECT_EQ(cudaMemcpy(v.data(), d.get(), n * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
  return v;
}

// |got − ref| ≤ atol + rtol·|ref| for every element (NaN fails); reports the first few misses.
inline void expect_close(const std::vector<float>& got, const std::vector<float>& ref, double atol, double rtol,
                         const std::string& what) {
  ASSERT_EQ(got.size(), ref.size()) << what;
  int fails = 0;
  double worst = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double err = std::fabs(static_cast<double>(got[i]) - ref[i]);
    const double tol = atol + rtol * std::fabs(ref[i]);
    worst = std::max(worst, err / tol);
    if (!(err <= tol)) {
      ADD_FAILURE() << what << ": element " << i << " got " << got[i] << " want " << ref[i] << " (err " << err
                    << ", tol " << tol << ")";
      if (++fails >= 5) return;
    }
  }
  std::printf("  %s: worst err/tol %.3f over %zu values\n", what.c_str(), worst, got.size());
}

}  // namespace shardlm::cuda_testing
