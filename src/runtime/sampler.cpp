#include "runtime/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

namespace shardlm {

namespace {

constexpr double kGreedyEps = 1e-5;  // vLLM's _SAMPLING_EPS

// NaN → -inf, so comparisons below are total.
inline float clean(float x) { return std::isnan(x) ? -std::numeric_limits<float>::infinity() : x; }

int32_t argmax(const std::vector<float>& l) {
  int32_t best = 0;
  float best_v = -std::numeric_limits<float>::infinity();
  bool any = false;
  for (size_t i = 0; i < l.size(); ++i) {
    const float v = clean(l[i]);
    if (!any || v > best_v) {  // strict: the lowest id wins a tie
      best = static_cast<int32_t>(i);
      best_v = v;
      any = true;
    }
  }
  return best;
}

void normalize(std::vector<double>& p) {
  double sum = 0.0;
  for (double x : p) sum += x;
  if (sum > 0.0) {
    for (double& x : p) x /= sum;
  }
}

}  // namespace

void apply_penalties(std::vector<float>& logits, const Sequence& seq) {
  const auto& sp = seq.params;
  const int64_t vocab = static_cast<int64_t>(logits.size());
  auto in_range = [vocab](int32_t t) { return t >= 0 && t < vocab; };

  if (sp.repetition_penalty != 1.0f && sp.repetition_penalty > 0.0f) {
    std::vector<uint8_t> seen(static_cast<size_t>(vocab), 0);
    auto mark = [&](const std::vector<int32_t>& toks) {
      for (int32_t t : toks) {
        if (in_range(t)) seen[static_cast<size_t>(t)] = 1;
      }
    };
    mark(seq.prompt);
    mark(seq.output);
    const float p = sp.repetition_penalty;
    for (int64_t t = 0; t < vocab; ++t) {
      if (!seen[static_cast<size_t>(t)]) continue;
      float& l = logits[static_cast<size_t>(t)];
      l = l > 0.0f ? l / p : l * p;
    }
  }

  if (sp.presence_penalty != 0.0f || sp.frequency_penalty != 0.0f) {
    std::vector<int32_t> count(static_cast<size_t>(vocab), 0);
    for (int32_t t : seq.output) {
      if (in_range(t)) count[static_cast<size_t>(t)]++;
    }
    for (int64_t t = 0; t < vocab; ++t) {
      const int32_t c = count[static_cast<size_t>(t)];
      if (c == 0) continue;
      logits[static_cast<size_t>(t)] -=
          sp.presence_penalty + sp.frequency_penalty * static_cast<float>(c);
    }
  }
}

std::vector<double> sampling_probs(const float* logits, int64_t vocab, const Sequence& seq) {
  const auto& sp = seq.params;
  std::vector<double> probs(static_cast<size_t>(std::max<int64_t>(vocab, 0)), 0.0);
  if (vocab <= 0) return probs;

  std::vector<float> l(logits, logits + vocab);
  apply_penalties(l, seq);
  for (float& x : l) x = clean(x);

  if (!(sp.temperature >= kGreedyEps)) {  // also catches NaN temperature
    probs[static_cast<size_t>(argmax(l))] = 1.0;
    return probs;
  }

  // top-k: keep logits >= the k-th largest.
  float kth = -std::numeric_limits<float>::infinity();
  if (sp.top_k > 0 && sp.top_k < vocab) {
    std::vector<float> tmp(l);
    std::nth_element(tmp.begin(), tmp.begin() + (sp.top_k - 1), tmp.end(), std::greater<float>());
    kth = tmp[static_cast<size_t>(sp.top_k - 1)];
  }

  // Temperature softmax over what top-k kept.
  const double t = sp.temperature;
  double mx = -std::numeric_limits<double>::infinity();
  for (float x : l) {
    if (x >= kth && x > -std::numeric_limits<float>::infinity()) mx = std::max(mx, static_cast<double>(x));
  }
  if (!std::isfinite(mx)) {  // every logit -inf/NaN (or +inf present): fall back to argmax
    probs[static_cast<size_t>(argmax(l))] = 1.0;
    return probs;
  }
  for (int64_t i = 0; i < vocab; ++i) {
    const float x = l[static_cast<size_t>(i)];
    if (x >= kth && x > -std::numeric_limits<float>::infinity()) {
      probs[static_cast<size_t>(i)] = std::exp((static_cast<double>(x) - mx) / t);
    }
  }
  normalize(probs);

  // top-p: the smallest most-probable set whose mass reaches top_p (at least one).
  if (sp.top_p < 1.0f) {
    std::vector<int32_t> ids;
    for (int64_t i = 0; i < vocab; ++i) {
      if (probs[static_cast<size_t>(i)] > 0.0) ids.push_back(static_cast<int32_t>(i));
    }
    std::sort(ids.begin(), ids.end(), [&](int32_t a, int32_t b) {
      const double pa = probs[static_cast<size_t>(a)], pb = probs[static_cast<size_t>(b)];
      return pa != pb ? pa > pb : a < b;
    });
    double cum = 0.0;
    size_t keep = 0;
    while (keep < ids.size()) {
      cum += probs[static_cast<size_t>(ids[keep])];
      ++keep;
      if (cum >= static_cast<double>(sp.top_p)) break;
    }
    for (size_t j = keep; j < ids.size(); ++j) probs[static_cast<size_t>(ids[j])] = 0.0;
    normalize(probs);
  }

  // min-p: drop tokens less likely than min_p × the most likely one.
  if (sp.min_p > 0.0f) {
    const double pmax = *std::max_element(probs.begin(), probs.end());
    const double cut = static_cast<double>(sp.min_p) * pmax;
    for (double& p : probs) {
      if (p < cut) p = 0.0;
    }
    normalize(probs);
  }
  return probs;
}

double uniform01(std::mt19937_64& rng) {
  return static_cast<double>(rng() >> 11) * 0x1.0p-53;
}

TokenLogprob compute_logprobs(const float* logits, int64_t vocab, int32_t token, int32_t top_n) {
  TokenLogprob out;
  out.token = token;
  if (vocab <= 0) return out;
  double mx = -std::numeric_limits<double>::infinity();
  for (int64_t i = 0; i < vocab; ++i) mx = std::max(mx, static_cast<double>(clean(logits[i])));
  double lse = mx;
  if (std::isfinite(mx)) {
    double sum = 0.0;
    for (int64_t i = 0; i < vocab; ++i) sum += std::exp(static_cast<double>(clean(logits[i])) - mx);
    lse = mx + std::log(sum);
  }
  auto lp = [&](int64_t i) { return static_cast<float>(static_cast<double>(clean(logits[i])) - lse); };
  if (token >= 0 && token < vocab) out.logprob = lp(token);

  const int64_t n = std::min<int64_t>(std::max<int32_t>(top_n, 0), vocab);
  if (n > 0) {
    std::vector<int32_t> ids(static_cast<size_t>(vocab));
    std::iota(ids.begin(), ids.end(), 0);
    std::partial_sort(ids.begin(), ids.begin() + n, ids.end(), [&](int32_t a, int32_t b) {
      const float la = clean(logits[a]), lb = clean(logits[b]);
      return la != lb ? la > lb : a < b;
    });
    out.top.reserve(static_cast<size_t>(n));
    for (int64_t j = 0; j < n; ++j) out.top.emplace_back(ids[static_cast<size_t>(j)], lp(ids[static_cast<size_t>(j)]));
  }
  return out;
}

SampleResult sample_token(const float* logits, int64_t vocab, Sequence& seq) {
  SampleResult r;
  const std::vector<double> probs = sampling_probs(logits, vocab, seq);
  int32_t token = 0;
  const bool greedy = !(seq.params.temperature >= kGreedyEps);
  if (greedy) {
    // One-hot: no draw, so the RNG is left untouched (as in vLLM).
    for (size_t i = 0; i < probs.size(); ++i) {
      if (probs[i] > 0.0) {
        token = static_cast<int32_t>(i);
        break;
      }
    }
  } else if (!probs.empty()) {
    double total = 0.0;
    int32_t last = 0;
    for (size_t i = 0; i < probs.size(); ++i) {
      total += probs[i];
      if (probs[i] > 0.0) last = static_cast<int32_t>(i);
    }
    const double target = uniform01(seq.rng) * total;
    double acc = 0.0;
    token = last;  // rounding fallback
    for (size_t i = 0; i < probs.size(); ++i) {
      acc += probs[i];
      if (acc > target) {
        token = static_cast<int32_t>(i);
        break;
      }
    }
  }
  r.token = token;
  if (seq.params.logprobs >= 0) r.logprob = compute_logprobs(logits, vocab, token, seq.params.logprobs);
  return r;
}

void seed_sequence(Sequence& seq, uint64_t fallback_seed) {
  seq.sample_seed = seq.params.has_seed ? seq.params.seed : fallback_seed;
  seq.rng.seed(seq.sample_seed);
}

bool counter_sampling_eligible(const SamplingParams& p) {
  return p.repetition_penalty == 1.0f && p.presence_penalty == 0.0f && p.frequency_penalty == 0.0f &&
         p.min_p <= 0.0f && p.logprobs < 0;
}

kernels::cpu::CounterSampling counter_sampling(const Sequence& seq) {
  kernels::cpu::CounterSampling c;
  c.temperature = !(seq.params.temperature >= kGreedyEps) ? 0.0f : seq.params.temperature;  // NaN too, as the host
  c.top_k = seq.params.top_k > 0 ? seq.params.top_k : 0;
  c.top_p = seq.params.top_p;
  c.seed = seq.sample_seed;
  c.offset = seq.output.size();
  return c;
}

}  // namespace shardlm
