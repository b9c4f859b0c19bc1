// The CPU reference of kernels/cuda/sampling.cu (same algorithm, serial, sums
// in double): greedy = argmax with the lowest id on ties; otherwise p_i =
// exp((l_i − max) / T), top-k and top-p cuts as thresholds on p found by 32
// halvings of [0, 1] (ties at a cut are all kept), and one uniform from
// splitmix64(seed ^ splitmix64(offset + 0x5bd1e995)) picks, in id order, the
// first kept token whose running mass exceeds u · mass. Deterministic in
// (seed, offset): a sequence draws the same tokens whatever batch it is in.
#include <cmath>
#include <limits>

#include "kernels/cpu/cpu_kernels.h"

namespace shardlm::kernels::cpu {

int32_t sample_row_counter(const float* logits, int64_t vocab, const CounterSampling& sp) {
  float best = -std::numeric_limits<float>::infinity();
  int64_t arg = 0;
  for (int64_t i = 0; i < vocab; ++i)
    if (logits[i] > best) {  // strict: the lowest id wins ties; NaN never wins
      best = logits[i];
      arg = i;
    }
  if (!(sp.temperature > 0.0f) || !(best > -std::numeric_limits<float>::infinity())) return static_cast<int32_t>(arg);
  const float inv_t = 1.0f / sp.temperature;
  auto prob = [&](int64_t i) { return std::exp((logits[i] - best) * inv_t); };

  float tau = 0.0f;
  if (sp.top_k > 0 && sp.top_k < vocab) {
    float lo = 0.0f, hi = 1.0f;  // #{p ≥ lo} ≥ k always; the largest p is 1
    for (int it = 0; it < 32; ++it) {
      const float mid = 0.5f * (lo + hi);
      int64_t c = 0;
      for (int64_t i = 0; i < vocab; ++i) c += prob(i) >= mid;
      if (c >= sp.top_k) lo = mid;
      else hi = mid;
    }
    tau = lo;
  }
  if (sp.top_p < 1.0f) {
    double m = 0;
    for (int64_t i = 0; i < vocab; ++i) {
      const float p = prob(i);
      m += p >= tau ? p : 0.0f;
    }
    const double want = static_cast<double>(sp.top_p) * m;
    float lo = tau, hi = 1.0f;
    for (int it = 0; it < 32; ++it) {
      const float mid = 0.5f * (lo + hi);
      double s = 0;
      for (int64_t i = 0; i < vocab; ++i) {
        const float p = prob(i);
        s += p >= mid ? p : 0.0f;
      }
      if (s >= want) lo = mid;
      else hi = mid;
    }
    tau = lo;
  }
  double total = 0;
  for (int64_t i = 0; i < vocab; ++i) {
    const float p = prob(i);
    total += p >= tau ? p : 0.0f;
  }
  const uint64_t h = splitmix64(sp.seed ^ splitmix64(sp.offset + 0x5bd1e995ull));
  const double u = static_cast<double>(static_cast<float>(h >> 40) * (1.0f / 16777216.0f)) * total;
  double run = 0;
  for (int64_t i = 0; i < vocab; ++i) {
    const float p = prob(i);
    if (p < tau) continue;
    run += p;
    if (run > u) return static_cast<int32_t>(i);
  }
  return static_cast<int32_t>(arg);  // rounding left u past the end
}

}  // namespace shardlm::kernels::cpu
