#include "runtime/sampler.h"

#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <set>

namespace shardlm {
namespace {

Sequence make_seq(SamplingParams p, uint64_t seed = 1234) {
  Sequence s;
  s.params = p;
  s.params.seed = seed;
  s.params.has_seed = true;
  seed_sequence(s, 0);
  return s;
}

SamplingParams greedy() {
  SamplingParams p;
  p.temperature = 0.0f;
  return p;
}

// Logits whose softmax at temperature 1 is exactly `probs`.
std::vector<float> logits_of(const std::vector<double>& probs) {
  std::vector<float> l;
  for (double p : probs) l.push_back(static_cast<float>(std::log(p)));
  return l;
}

std::vector<double> softmax(const std::vector<float>& l, double t) {
  double mx = -INFINITY;
  for (float x : l) mx = std::max(mx, static_cast<double>(x));
  std::vector<double> p;
  double sum = 0;
  for (float x : l) {
    p.push_back(std::exp((x - mx) / t));
    sum += p.back();
  }
  for (double& x : p) x /= sum;
  return p;
}

// Draws n tokens and returns their frequencies.
std::map<int32_t, double> draw(const std::vector<float>& l, Sequence& s, int n = 2000) {
  std::map<int32_t, double> f;
  for (int i = 0; i < n; ++i) f[sample_token(l.data(), static_cast<int64_t>(l.size()), s).token] += 1.0 / n;
  return f;
}

// Only `allowed` appear, and each within `tol` of its expected probability.
void expect_distribution(const std::map<int32_t, double>& freq, const std::map<int32_t, double>& expected,
                         double tol = 0.05) {
  for (const auto& [tok, f] : freq) {
    EXPECT_TRUE(expected.count(tok)) << "token " << tok << " should have been filtered out (freq " << f << ")";
  }
  for (const auto& [tok, p] : expected) {
    const double f = freq.count(tok) ? freq.at(tok) : 0.0;
    EXPECT_NEAR(f, p, tol) << "token " << tok;
  }
}

TEST(Sampler, GreedyIsArgmax) {
  Sequence s = make_seq(greedy());
  const std::vector<float> l = {0.1f, 3.0f, 2.0f, -1.0f, 2.9f};
  EXPECT_EQ(sample_token(l.data(), 5, s).token, 1);
}

TEST(Sampler, GreedyTiesGoToLowestId) {
  Sequence s = make_seq(greedy());
  const std::vector<float> l = {1.0f, 5.0f, 2.0f, 5.0f, 5.0f};
  EXPECT_EQ(sample_token(l.data(), 5, s).token, 1);
}

TEST(Sampler, GreedyIgnoresTopKTopPMinPAndLeavesRngAlone) {
  SamplingParams p = greedy();
  p.top_k = 1;
  p.top_p = 0.01f;
  p.min_p = 0.9f;
  Sequence s = make_seq(p);
  const std::mt19937_64 before = s.rng;
  const std::vector<float> l = {0.0f, 1.0f, 4.0f, 3.0f};
  for (int i = 0; i < 10; ++i) EXPECT_EQ(sample_token(l.data(), 4, s).token, 2);
  EXPECT_TRUE(s.rng == before);
}

TEST(Sampler, LogitsBufferIsNotModified) {
  SamplingParams p;
  p.temperature = 0.7f;
  p.repetition_penalty = 1.3f;
  p.frequency_penalty = 0.5f;
  p.top_k = 2;
  Sequence s = make_seq(p);
  s.prompt = {0, 1};
  s.output = {2};
  const std::vector<float> orig = {1.0f, -2.0f, 0.5f, 3.0f};
  std::vector<float> l = orig;
  sample_token(l.data(), 4, s);
  EXPECT_EQ(l, orig);
}

TEST(Sampler, TemperatureOneMatchesSoftmax) {
  SamplingParams p;
  p.temperature = 1.0f;
  Sequence s = make_seq(p);
  const std::vector<double> probs = {0.5, 0.25, 0.15, 0.1};
  expect_distribution(draw(logits_of(probs), s), {{0, 0.5}, {1, 0.25}, {2, 0.15}, {3, 0.1}});
}

TEST(Sampler, TemperatureSharpensAndFlattens) {
  const std::vector<float> l = {1.0f, 0.5f, 0.0f, -0.5f};
  for (float t : {0.25f, 2.0f}) {
    SamplingParams p;
    p.temperature = t;
    Sequence s = make_seq(p);
    const auto expected = softmax(l, t);
    const auto probs = sampling_probs(l.data(), 4, s);
    for (int i = 0; i < 4; ++i) EXPECT_NEAR(probs[i], expected[i], 1e-9);
    std::map<int32_t, double> e;
    for (int i = 0; i < 4; ++i) e[i] = expected[i];
    expect_distribution(draw(l, s), e);
  }
}

TEST(Sampler, TopKRestrictsSupport) {
  SamplingParams p;
  p.top_k = 2;
  Sequence s = make_seq(p);
  const std::vector<double> probs = {0.1, 0.4, 0.2, 0.3};
  // Keeps ids 1 and 3: 0.4/0.7 and 0.3/0.7.
  expect_distribution(draw(logits_of(probs), s), {{1, 4.0 / 7}, {3, 3.0 / 7}});
}

TEST(Sampler, TopKKeepsTies) {
  SamplingParams p;
  p.top_k = 1;
  Sequence s = make_seq(p);
  const std::vector<float> l = {1.0f, 2.0f, 2.0f, 0.0f};
  expect_distribution(draw(l, s), {{1, 0.5}, {2, 0.5}});
}

TEST(Sampler, TopPKeepsSmallestSetReachingP) {
  const std::vector<double> probs = {0.15, 0.5, 0.05, 0.3};
  {
    SamplingParams p;
    p.top_p = 0.75f;  // 0.5 < 0.75 ≤ 0.5 + 0.3: keeps ids 1, 3
    Sequence s = make_seq(p);
    expect_distribution(draw(logits_of(probs), s), {{1, 0.5 / 0.8}, {3, 0.3 / 0.8}});
  }
  {
    SamplingParams p;
    p.top_p = 0.9f;  // 0.8 < 0.9 ≤ 0.95: keeps ids 1, 3, 0
    Sequence s = make_seq(p);
    expect_distribution(draw(logits_of(probs), s), {{1, 0.5 / 0.95}, {3, 0.3 / 0.95}, {0, 0.15 / 0.95}});
  }
  {
    SamplingParams p;
    p.top_p = 0.2f;  // the first token alone already reaches it
    Sequence s = make_seq(p);
    expect_distribution(draw(logits_of(probs), s), {{1, 1.0}});
  }
  {
    SamplingParams p;
    p.top_p = 0.0f;  // degenerate: still at least one token
    Sequence s = make_seq(p);
    expect_distribution(draw(logits_of(probs), s), {{1, 1.0}});
  }
}

TEST(Sampler, MinPDropsUnlikelyTokens) {
  SamplingParams p;
  p.min_p = 0.25f;  // cut at 0.125
  Sequence s = make_seq(p);
  const std::vector<double> probs = {0.05, 0.5, 0.15, 0.3};
  expect_distribution(draw(logits_of(probs), s), {{1, 0.5 / 0.95}, {2, 0.15 / 0.95}, {3, 0.3 / 0.95}});
}

TEST(Sampler, FiltersCompose) {
  // top-k 3 → {1, 3, 2}; top-p 0.8 of the renormalised (0.526, 0.316, 0.158) → {1, 3};
  // min-p 0.7 of max → drops 3 (0.375 < 0.7 × 0.625).
  SamplingParams p;
  p.top_k = 3;
  p.top_p = 0.8f;
  p.min_p = 0.7f;
  Sequence s = make_seq(p);
  const std::vector<double> probs = {0.05, 0.5, 0.15, 0.3};
  const auto l = logits_of(probs);
  const auto dist = sampling_probs(l.data(), 4, s);
  EXPECT_DOUBLE_EQ(dist[0], 0.0);
  EXPECT_NEAR(dist[1], 1.0, 1e-12);
  EXPECT_DOUBLE_EQ(dist[2], 0.0);
  EXPECT_DOUBLE_EQ(dist[3], 0.0);
  expect_distribution(draw(l, s, 200), {{1, 1.0}});
}

TEST(Sampler, SamplingProbsSumToOne) {
  SamplingParams p;
  p.temperature = 0.8f;
  p.top_k = 50;
  p.top_p = 0.9f;
  Sequence s = make_seq(p);
  std::vector<float> l(1000);
  std::mt19937_64 g(5);
  for (float& x : l) x = static_cast<float>((g() % 10000) / 1000.0 - 5.0);
  const auto dist = sampling_probs(l.data(), 1000, s);
  double sum = 0;
  int nonzero = 0;
  for (double x : dist) {
    sum += x;
    nonzero += x > 0;
  }
  EXPECT_NEAR(sum, 1.0, 1e-12);
  EXPECT_LE(nonzero, 50);
  EXPECT_GE(nonzero, 1);
}

TEST(Sampler, SameSeedSameSamplesDifferentSeedDifferent) {
  SamplingParams p;
  std::vector<float> l(64);
  for (size_t i = 0; i < l.size(); ++i) l[i] = static_cast<float>(std::sin(i * 0.7));
  auto run = [&](uint64_t seed) {
    Sequence s = make_seq(p, seed);
    std::vector<int32_t> out;
    for (int i = 0; i < 50; ++i) out.push_back(sample_token(l.data(), 64, s).token);
    return out;
  };
  EXPECT_EQ(run(7), run(7));
  EXPECT_NE(run(7), run(8));
}

TEST(Sampler, SeedSequenceUsesFallbackWithoutSeed) {
  Sequence a, b, c;
  a.params.has_seed = false;
  a.params.seed = 99;
  seed_sequence(a, 5);
  b.params.has_seed = true;
  b.params.seed = 5;
  seed_sequence(b, 1000);
  c.params.has_seed = true;
  c.params.seed = 99;
  seed_sequence(c, 5);
  EXPECT_TRUE(a.rng == b.rng);  // fallback 5 == seed 5
  EXPECT_FALSE(a.rng == c.rng);
}

TEST(Sampler, Uniform01IsTop53Bits) {
  std::mt19937_64 r1(3), r2(3);
  for (int i = 0; i < 100; ++i) {
    const double u = uniform01(r1);
    EXPECT_EQ(u, static_cast<double>(r2() >> 11) / 9007199254740992.0);
    EXPECT_GE(u, 0.0);
    EXPECT_LT(u, 1.0);
  }
}

// ---- Penalties

TEST(Penalties, RepetitionFollowsHfSemantics) {
  SamplingParams p;
  p.repetition_penalty = 2.0f;
  Sequence s = make_seq(p);
  s.prompt = {0, 0, 3};  // repeated id counts once
  s.output = {4, 99, -1};  // ids outside the vocab are ignored
  std::vector<float> l = {3.0f, 1.0f, -1.0f, -0.5f, 0.0f};
  apply_penalties(l, s);
  EXPECT_FLOAT_EQ(l[0], 1.5f);   // positive: divided
  EXPECT_FLOAT_EQ(l[1], 1.0f);   // not seen
  EXPECT_FLOAT_EQ(l[2], -1.0f);  // not seen
  EXPECT_FLOAT_EQ(l[3], -1.0f);  // negative: multiplied
  EXPECT_FLOAT_EQ(l[4], 0.0f);
}

TEST(Penalties, PresenceAndFrequencyCountOutputOnly) {
  SamplingParams p;
  p.presence_penalty = 0.5f;
  p.frequency_penalty = 0.25f;
  Sequence s = make_seq(p);
  s.prompt = {1, 1, 1};  // prompt tokens are not penalised
  s.output = {0, 2, 2, 2};
  std::vector<float> l = {1.0f, 1.0f, 1.0f, 1.0f};
  apply_penalties(l, s);
  EXPECT_FLOAT_EQ(l[0], 1.0f - 0.5f - 0.25f);
  EXPECT_FLOAT_EQ(l[1], 1.0f);
  EXPECT_FLOAT_EQ(l[2], 1.0f - 0.5f - 0.75f);
  EXPECT_FLOAT_EQ(l[3], 1.0f);
}

TEST(Penalties, RepetitionThenPresenceOrder) {
  SamplingParams p;
  p.repetition_penalty = 2.0f;
  p.presence_penalty = 1.0f;
  Sequence s = make_seq(p);
  s.output = {0};
  std::vector<float> l = {4.0f, 0.0f};
  apply_penalties(l, s);
  EXPECT_FLOAT_EQ(l[0], 4.0f / 2.0f - 1.0f);  // (4 - 1) / 2 would be 1.5
}

TEST(Penalties, FlipGreedyOutcome) {
  const std::vector<float> l = {2.0f, 1.9f, 0.0f};
  {
    SamplingParams p = greedy();
    Sequence s = make_seq(p);
    s.prompt = {0};
    EXPECT_EQ(sample_token(l.data(), 3, s).token, 0);  // no penalty
  }
  {
    SamplingParams p = greedy();
    p.repetition_penalty = 1.2f;  // 2.0 / 1.2 = 1.67 < 1.9
    Sequence s = make_seq(p);
    s.prompt = {0};
    EXPECT_EQ(sample_token(l.data(), 3, s).token, 1);
  }
  {
    SamplingParams p = greedy();
    p.presence_penalty = 0.2f;
    Sequence s = make_seq(p);
    s.prompt = {0};  // presence looks at output only: no flip
    EXPECT_EQ(sample_token(l.data(), 3, s).token, 0);
    s.output = {0};
    EXPECT_EQ(sample_token(l.data(), 3, s).token, 1);
  }
  {
    SamplingParams p = greedy();
    p.frequency_penalty = 0.06f;
    Sequence s = make_seq(p);
    s.output = {0};  // 2.0 - 0.06 > 1.9
    EXPECT_EQ(sample_token(l.data(), 3, s).token, 0);
    s.output = {0, 0};  // 2.0 - 0.12 < 1.9
    EXPECT_EQ(sample_token(l.data(), 3, s).token, 1);
  }
}

// ---- Logprobs

std::vector<double> log_softmax_ref(const std::vector<float>& l) {
  long double mx = -INFINITY, sum = 0;
  for (float x : l) mx = std::max<long double>(mx, x);
  for (float x : l) sum += std::exp(static_cast<long double>(x) - mx);
  std::vector<double> out;
  for (float x : l) out.push_back(static_cast<double>(x - mx - std::log(sum)));
  return out;
}

TEST(Logprobs, MatchHandComputedLogSoftmax) {
  const std::vector<float> l = {1.5f, -0.25f, 3.0f, 3.0f, 0.0f, 2.75f, -7.0f};
  const auto ref = log_softmax_ref(l);
  for (int32_t tok = 0; tok < 7; ++tok) {
    const TokenLogprob lp = compute_logprobs(l.data(), 7, tok, 3);
    EXPECT_EQ(lp.token, tok);
    EXPECT_NEAR(lp.logprob, ref[tok], 1e-5);
    ASSERT_EQ(lp.top.size(), 3u);
    EXPECT_EQ(lp.top[0].first, 2);  // tie 2/3: lower id first
    EXPECT_EQ(lp.top[1].first, 3);
    EXPECT_EQ(lp.top[2].first, 5);
    for (const auto& [id, v] : lp.top) EXPECT_NEAR(v, ref[id], 1e-5);
  }
  EXPECT_EQ(compute_logprobs(l.data(), 7, 0, 100).top.size(), 7u);  // capped at vocab
  EXPECT_TRUE(compute_logprobs(l.data(), 7, 0, 0).top.empty());
}

TEST(Logprobs, LargeLogitsStayAccurate) {
  std::vector<float> l(5000);
  for (size_t i = 0; i < l.size(); ++i) l[i] = static_cast<float>(80.0 + std::cos(i * 0.37) * 20.0);
  const auto ref = log_softmax_ref(l);
  const TokenLogprob lp = compute_logprobs(l.data(), 5000, 1234, 5);
  EXPECT_NEAR(lp.logprob, ref[1234], 1e-5);
  for (size_t j = 1; j < lp.top.size(); ++j) EXPECT_GE(lp.top[j - 1].second, lp.top[j].second);
}

TEST(Logprobs, SampleTokenReportsRawLogprobsOfTheChosenToken) {
  SamplingParams p;
  p.temperature = 0.5f;  // processing must not change the reported logprobs
  p.repetition_penalty = 1.5f;
  p.logprobs = 2;
  Sequence s = make_seq(p);
  s.prompt = {0};
  const std::vector<float> l = {2.0f, 1.0f, 0.5f, -1.0f};
  const auto ref = log_softmax_ref(l);
  for (int i = 0; i < 20; ++i) {
    const SampleResult r = sample_token(l.data(), 4, s);
    EXPECT_EQ(r.logprob.token, r.token);
    EXPECT_NEAR(r.logprob.logprob, ref[r.token], 1e-5);
    ASSERT_EQ(r.logprob.top.size(), 2u);
    EXPECT_EQ(r.logprob.top[0].first, 0);
    EXPECT_EQ(r.logprob.top[1].first, 1);
  }
  s.params.logprobs = 0;
  const SampleResult r0 = sample_token(l.data(), 4, s);
  EXPECT_EQ(r0.logprob.token, r0.token);
  EXPECT_NEAR(r0.logprob.logprob, ref[r0.token], 1e-5);
  EXPECT_TRUE(r0.logprob.top.empty());
  s.params.logprobs = -1;
  const SampleResult rn = sample_token(l.data(), 4, s);
  EXPECT_TRUE(rn.logprob.top.empty());
  EXPECT_EQ(rn.logprob.logprob, 0.0f);
}

}  // namespace
}  // namespace shardlm
