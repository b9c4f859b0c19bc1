// Rotary position embedding, mirroring HF transformers operation by operation
// in f32 so that logits match HF goldens closely:
//   inv_freq = 1.0 / (base ** (arange(0, dim, 2).float() / dim))
//     (torch evaluates `1.0 / t` as t.reciprocal() * 1.0 and `base ** t` as
//      powf(float(base), t));
//   llama3 scaling as _compute_llama3_parameters (every scalar of the formula
//     is rounded to f32 first, as a 0-dim wrapped tensor is; `s / t` is again
//     t.reciprocal() * s);
//   freqs = float(pos) * inv_freq;  cos/sin of freqs in f32;
//   out = x * cos + rotate_half(x) * sin.
#include <algorithm>
#include <cmath>
#include <numbers>
#include <vector>

#include "base/thread_pool.h"
#include "kernels/cpu/cpu_kernels.h"

namespace shardlm::kernels::cpu {
namespace {

// torch's `scalar / tensor` on one element: reciprocal, then a multiply.
float rdiv(double scalar, float t) { return (1.0f / t) * static_cast<float>(scalar); }

float llama3_scale(float inv, const RopeParams& p) {
  const float factor = static_cast<float>(p.factor);
  const float low = static_cast<float>(p.low_freq_factor);
  const double old_ctx = static_cast<double>(p.original_max_position);
  const float low_freq_wavelen = static_cast<float>(old_ctx / p.low_freq_factor);
  const float high_freq_wavelen = static_cast<float>(old_ctx / p.high_freq_factor);

  const float wavelen = rdiv(2.0 * std::numbers::pi, inv);
  // wavelen > low_freq_wavelen: low frequency, divided by factor.
  float scaled = wavelen > low_freq_wavelen ? inv / factor : inv;
  const bool medium = !(wavelen < high_freq_wavelen) && !(wavelen > low_freq_wavelen);
  if (medium) {
    const float smooth = (rdiv(old_ctx, wavelen) - low) /
                         static_cast<float>(p.high_freq_factor - p.low_freq_factor);
    scaled = (1.0f - smooth) * scaled / factor + smooth * scaled;
  }
  return scaled;
}

}  // namespace

void rope_inv_freq(const RopeParams& p, float* inv_freq) {
  const int64_t dim = p.rotary_dim > 0 ? p.rotary_dim : p.head_dim;
  const float base = static_cast<float>(p.theta);
  for (int64_t i = 0; i < dim / 2; ++i) {
    const float e = static_cast<float>(2 * i) / static_cast<float>(dim);
    // powf correctly rounded (torch's vectorised powf is within 1 ulp of it).
    const float pw = static_cast<float>(std::pow(static_cast<double>(base), static_cast<double>(e)));
    float inv = rdiv(1.0, pw);
    if (p.llama3_scaling) inv = llama3_scale(inv, p);
    inv_freq[i] = inv;
  }
}

void rope(float* x, const int32_t* positions, int64_t ntok, int64_t nheads, int64_t head_dim,
          int64_t rotary_dim, const float* inv_freq) {
  const int64_t half = rotary_dim / 2;
  parallel_for(
      ntok,
      [&](int64_t t0, int64_t t1) {
        std::vector<float> cos_v(half), sin_v(half);
        for (int64_t t = t0; t < t1; ++t) {
          const float pos = static_cast<float>(positions[t]);
          for (int64_t i = 0; i < half; ++i) {
            const float f = pos * inv_freq[i];
            // cos/sin of an f32 argument, rounded once to f32.
            cos_v[i] = static_cast<float>(std::cos(static_cast<double>(f)));
            sin_v[i] = static_cast<float>(std::sin(static_cast<double>(f)));
          }
          for (int64_t h = 0; h < nheads; ++h) {
            float* v = x + (t * nheads + h) * head_dim;
            for (int64_t i = 0; i < half; ++i) {
              const float a = v[i], b = v[i + half];
              v[i] = a * cos_v[i] - b * sin_v[i];
              v[i + half] = b * cos_v[i] + a * sin_v[i];
            }
          }
        }
      },
      std::max<int64_t>(1, (4 << 10) / std::max<int64_t>(nheads * head_dim, 1)));
}

}  // namespace shardlm::kernels::cpu
