// Internal to the CPU kernels: a fixed-order dot product that the compiler can
// vectorise without -ffast-math.
//
// The summation order is part of the contract (batch invariance, DESIGN §4):
// a dot product of length n keeps kLanes = 8 partial sums, lane l summing the
// products at indices l, l + 8, l + 16, … in increasing order; the lanes are then
// combined as ((s0+s4) + (s2+s6)) + ((s1+s5) + (s3+s7)). Every caller that
// reduces over k uses this order, whatever the vector width of the build, so a
// value never depends on how many rows were computed with it.
//
// The lanes are held as two 4-float GCC/Clang vectors (vector_size(16)): plain
// SSE2 on x86-64, NEON on arm64, no target flags needed.
#pragma once

#include <cstdint>
#include <cstring>

namespace shardlm::kernels::cpu::detail {

typedef float f32x4 __attribute__((vector_size(16)));

constexpr int kLanes = 8;

inline f32x4 load4(const float* p) {
  f32x4 v;
  std::memcpy(&v, p, sizeof v);  // unaligned load
  return v;
}

inline void store4(float* p, f32x4 v) { std::memcpy(p, &v, sizeof v); }

// Lanes 0..3 in `lo`, 4..7 in `hi`; combined in the fixed order above.
inline float reduce_lanes(f32x4 lo, f32x4 hi) {
  f32x4 s = lo + hi;  // s_l = lane l + lane l+4
  return (s[0] + s[2]) + (s[1] + s[3]);
}

// Adds a[i]·b[i] for the tail i in [k0, n), n - k0 < kLanes, into lane i - k0.
inline void accumulate_tail(const float* a, const float* b, int64_t k0, int64_t n, f32x4& lo,
                            f32x4& hi) {
  for (int64_t i = k0; i < n; ++i) {
    int l = static_cast<int>(i - k0);
    if (l < 4)
      lo[l] += a[i] * b[i];
    else
      hi[l - 4] += a[i] * b[i];
  }
}

// Σ a[i]·b[i] in the fixed lane order.
inline float dot(const float* a, const float* b, int64_t n) {
  f32x4 lo = {0, 0, 0, 0}, hi = {0, 0, 0, 0};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    lo += load4(a + i) * load4(b + i);
    hi += load4(a + i + 4) * load4(b + i + 4);
  }
  accumulate_tail(a, b, i, n, lo, hi);
  return reduce_lanes(lo, hi);
}

// y[i] += a·x[i] (elementwise: no reduction, so vectorising changes nothing).
inline void axpy(float a, const float* x, float* y, int64_t n) {
  int64_t i = 0;
  const f32x4 av = {a, a, a, a};
  for (; i + 4 <= n; i += 4) store4(y + i, load4(y + i) + av * load4(x + i));
  for (; i < n; ++i) y[i] += a * x[i];
}

}  // namespace shardlm::kernels::cpu::detail
