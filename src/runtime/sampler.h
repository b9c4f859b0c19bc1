// Token sampling from one row of logits, on the CPU (the reference; the CUDA
// backend samples on the device later). Order, as in vLLM/HF:
//   penalties (repetition over prompt+output; presence/frequency over output)
//   → temperature → top-k → top-p → min-p → draw with the sequence's RNG.
// temperature == 0 is greedy (argmax, lowest id on ties). Logprobs are the
// model's raw log-softmax (before any processing), as OpenAI and vLLM report them.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

#include "kernels/cpu/cpu_kernels.h"
#include "runtime/sequence.h"

namespace shardlm {

struct SampleResult {
  int32_t token = 0;
  TokenLogprob logprob;  // filled when params.logprobs >= 0
};

// `logits` holds `vocab` floats; `seq` supplies params, prompt/output history and
// the RNG (advanced by this call). The logits buffer is not modified.
SampleResult sample_token(const float* logits, int64_t vocab, Sequence& seq);

// Seeds seq.rng (and sets seq.sample_seed) from params.seed (has_seed) or from `fallback_seed`.
void seed_sequence(Sequence& seq, uint64_t fallback_seed);

// Sampling on the backend (graph::Backend::forward_sample): counter-based,
// keyed by (seq.sample_seed, output length), so the same seed gives the same
// tokens in any batch. Used only for requests it can serve exactly as asked:
// no penalties, no min-p, no logprobs (those need the logits on the host).
// Its draws differ from the host sampler's mt19937 draws; greedy is the same.
bool counter_sampling_eligible(const SamplingParams& params);
kernels::cpu::CounterSampling counter_sampling(const Sequence& seq);

// ---- Pieces of sample_token, exposed for tests and for other backends to match.

// Penalties in place on a full row (`logits.size()` is the vocab); ids outside
// the row are ignored. repetition (each distinct prompt+output token):
// logit > 0 ? logit / p : logit * p; then presence/frequency over output tokens:
// logit -= presence * (count > 0) + frequency * count.
void apply_penalties(std::vector<float>& logits, const Sequence& seq);

// The distribution sample_token draws from, one entry per vocab id, summing to 1:
// penalties → temperature → top-k → top-p → min-p. Greedy (temperature < 1e-5)
// gives a one-hot at the argmax (lowest id on ties). NaN logits count as -inf.
// top-k keeps every token tied with the k-th largest logit (as HF and vLLM do).
std::vector<double> sampling_probs(const float* logits, int64_t vocab, const Sequence& seq);

// A uniform double in [0, 1) from the top 53 bits of one rng() call: identical
// on every platform and standard library (std::uniform_real_distribution is not
// guaranteed to be).
double uniform01(std::mt19937_64& rng);

// Log-softmax of the raw logits (double accumulation): `token`'s logprob and the
// top `top_n` (logprob descending, lower id first on ties; none when top_n <= 0).
TokenLogprob compute_logprobs(const float* logits, int64_t vocab, int32_t token, int32_t top_n);

}  // namespace shardlm
