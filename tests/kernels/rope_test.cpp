// RoPE: inv_freq (default and llama3-scaled) and the rotation, against double
// references written the plain way (Meta's apply_scaling for llama3).
#include <cmath>
#include <numbers>
#include <vector>

#include "kernels/cpu/cpu_kernels.h"
#include "kernel_test_util.h"

namespace shardlm::kernels::cpu {
namespace {

using testing::expect_close;
using testing::random_vec;

std::vector<double> default_inv_freq(double theta, int64_t dim) {
  std::vector<double> f(dim / 2);
  for (int64_t i = 0; i < dim / 2; ++i) f[i] = std::pow(theta, -2.0 * i / dim);
  return f;
}

// Meta's llama3 apply_scaling (reference implementation), in double.
std::vector<double> llama3_reference(const RopeParams& p) {
  auto f = default_inv_freq(p.theta, p.head_dim);
  const double low_wavelen = p.original_max_position / p.low_freq_factor;
  const double high_wavelen = p.original_max_position / p.high_freq_factor;
  for (auto& freq : f) {
    const double wavelen = 2 * std::numbers::pi / freq;
    if (wavelen < high_wavelen) continue;
    if (wavelen > low_wavelen) {
      freq /= p.factor;
    } else {
      const double smooth = (p.original_max_position / wavelen - p.low_freq_factor) /
                            (p.high_freq_factor - p.low_freq_factor);
      freq = (1 - smooth) * freq / p.factor + smooth * freq;
    }
  }
  return f;
}

TEST(RopeInvFreq, DefaultMatchesReference) {
  for (double theta : {10000.0, 500000.0, 1000000.0}) {
    for (int64_t dim : {16, 40, 64, 128}) {
      RopeParams p;
      p.head_dim = dim;
      p.rotary_dim = dim;
      p.theta = theta;
      std::vector<float> inv(dim / 2);
      rope_inv_freq(p, inv.data());
      // The exponent 2i/dim is rounded to f32 as in HF: ~ln(theta)·2^-24 relative.
      expect_close(inv, default_inv_freq(theta, dim), 0, 2e-6, "theta " + std::to_string(theta));
      EXPECT_EQ(inv[0], 1.0f);
    }
  }
}

TEST(RopeInvFreq, RotaryDimZeroMeansHeadDim) {
  RopeParams a, b;
  a.head_dim = b.head_dim = 64;
  a.rotary_dim = 0;
  b.rotary_dim = 64;
  std::vector<float> fa(32), fb(32);
  rope_inv_freq(a, fa.data());
  rope_inv_freq(b, fb.data());
  EXPECT_EQ(fa, fb);
}

TEST(RopeInvFreq, Llama3ScalingMatchesReference) {
  struct Case {
    double theta, factor, low, high;
    int64_t orig, dim;
  };
  // Llama 3.1 (factor 8), Llama 3.2 (factor 32), and a small-theta variant whose
  // medium band holds more entries.
  for (const Case& c : {Case{500000, 8, 1, 4, 8192, 128}, Case{500000, 32, 1, 4, 8192, 64},
                        Case{10000, 4, 1, 4, 512, 64}, Case{500000, 8, 2, 8, 8192, 40}}) {
    RopeParams p;
    p.head_dim = p.rotary_dim = c.dim;
    p.theta = c.theta;
    p.llama3_scaling = true;
    p.factor = c.factor;
    p.low_freq_factor = c.low;
    p.high_freq_factor = c.high;
    p.original_max_position = c.orig;
    std::vector<float> inv(c.dim / 2);
    rope_inv_freq(p, inv.data());
    expect_close(inv, llama3_reference(p), 0, 4e-6, "llama3 dim " + std::to_string(c.dim));

    // The bands, bit for bit against the unscaled frequencies.
    RopeParams plain = p;
    plain.llama3_scaling = false;
    std::vector<float> base(c.dim / 2);
    rope_inv_freq(plain, base.data());
    int high = 0, low = 0, medium = 0;
    for (int64_t i = 0; i < c.dim / 2; ++i) {
      const double wavelen = 2 * std::numbers::pi / base[i];
      if (wavelen < c.orig / c.high) {
        EXPECT_EQ(inv[i], base[i]) << "high-frequency entry " << i << " must be unchanged";
        ++high;
      } else if (wavelen > c.orig / c.low) {
        EXPECT_EQ(inv[i], base[i] / static_cast<float>(c.factor)) << "low-frequency entry " << i;
        ++low;
      } else {
        EXPECT_LE(inv[i], base[i]);
        EXPECT_GE(inv[i], base[i] / static_cast<float>(c.factor));
        ++medium;
      }
    }
    EXPECT_GT(high, 0);
    EXPECT_GT(low, 0);
    EXPECT_GT(medium, 0);
  }
}

struct RopeShape {
  int64_t ntok, nheads, head_dim, rotary_dim;
};

class RopeShapes : public ::testing::TestWithParam<RopeShape> {};

TEST_P(RopeShapes, RotationMatchesReference) {
  auto [ntok, nheads, head_dim, rotary_dim] = GetParam();
  RopeParams p;
  p.head_dim = head_dim;
  p.rotary_dim = rotary_dim;
  p.theta = 10000.0;
  std::vector<float> inv(rotary_dim / 2);
  rope_inv_freq(p, inv.data());

  std::vector<int32_t> pos(ntok);
  const int32_t some[] = {0, 1, 17, 4095, 131071, 5, 2, 300000, 63};
  for (int64_t t = 0; t < ntok; ++t) pos[t] = some[t % 9] + static_cast<int32_t>(t / 9);
  auto x = random_vec(ntok * nheads * head_dim, 42 + head_dim);
  auto y = x;
  rope(y.data(), pos.data(), ntok, nheads, head_dim, rotary_dim, inv.data());

  std::vector<double> ref(x.size());
  const int64_t half = rotary_dim / 2;
  for (int64_t t = 0; t < ntok; ++t)
    for (int64_t h = 0; h < nheads; ++h) {
      const float* v = x.data() + (t * nheads + h) * head_dim;
      double* r = ref.data() + (t * nheads + h) * head_dim;
      for (int64_t d = 0; d < head_dim; ++d) r[d] = v[d];
      for (int64_t i = 0; i < half; ++i) {
        // HF's angle is the f32 product float(pos) * inv_freq; rotate exactly.
        const double angle = static_cast<float>(pos[t]) * inv[i];
        r[i] = v[i] * std::cos(angle) - v[i + half] * std::sin(angle);
        r[i + half] = v[i + half] * std::cos(angle) + v[i] * std::sin(angle);
      }
    }
  expect_close(y, ref, 1e-6, 1e-6, "rope");
  // Dims past rotary_dim pass through untouched.
  for (int64_t r = 0; r < ntok * nheads; ++r)
    for (int64_t d = rotary_dim; d < head_dim; ++d)
      ASSERT_EQ(y[r * head_dim + d], x[r * head_dim + d]);
}

INSTANTIATE_TEST_SUITE_P(OddShapes, RopeShapes,
                         ::testing::Values(RopeShape{1, 1, 64, 64}, RopeShape{5, 6, 40, 40},
                                           RopeShape{9, 3, 128, 128}, RopeShape{7, 5, 64, 32},
                                           RopeShape{2, 2, 2, 2}, RopeShape{100, 4, 16, 16}));

TEST(Rope, PositionZeroIsIdentity) {
  std::vector<float> inv(20);
  RopeParams p;
  p.head_dim = p.rotary_dim = 40;
  rope_inv_freq(p, inv.data());
  auto x = random_vec(3 * 40, 9);
  auto y = x;
  const int32_t pos[] = {0};
  rope(y.data(), pos, 1, 3, 40, 40, inv.data());
  EXPECT_EQ(x, y);
}

}  // namespace
}  // namespace shardlm::kernels::cpu
