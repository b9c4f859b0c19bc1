// Helpers for the CPU kernel tests: seeded random inputs and a tolerance check
// |got - ref| <= atol + rtol·|ref| against double-precision references.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace shardlm::kernels::cpu::testing {

// Uniform in [lo, hi), fixed seed. Never all zeros (and exact 0 is re-drawn).
inline std::vector<float> random_vec(size_t n, uint64_t seed, float lo = -1.0f, float hi = 1.0f) {
  std::mt19937_64 gen(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) {
    do x = dist(gen);
    while (x == 0.0f);
  }
  return v;
}

// Checks every element; reports the first few mismatches with their index.
inline void expect_close(const std::vector<float>& got, const std::vector<double>& ref, double atol,
                         double rtol, const std::string& what) {
  ASSERT_EQ(got.size(), ref.size()) << what;
  int failures = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double err = std::fabs(static_cast<double>(got[i]) - ref[i]);
    if (!(err <= atol + rtol * std::fabs(ref[i]))) {
      ADD_FAILURE() << what << ": element " << i << " got " << got[i] << " want " << ref[i]
                    << " (err " << err << ")";
      if (++failures >= 5) return;
    }
  }
}

inline bool bitwise_equal(const float* a, const float* b, size_t n) {
  return std::memcmp(a, b, n * sizeof(float)) == 0;
}

}  // namespace shardlm::kernels::cpu::testing
