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

#include "runtime/sequence.h"

namespace shardlm {

struct SampleResult {
  int32_t token = 0;
  TokenLogprob logprob;  // filled when params.logprobs >= 0
};

// `logits` holds `vocab` floats; `seq` supplies params, prompt/output history and
// the RNG (advanced by this call). The logits buffer is not modified.
SampleResult sample_token(const float* logits, int64_t vocab, Sequence& seq);

// Seeds seq.rng from params.seed (has_seed) or from `fallback_seed`.
void seed_sequence(Sequence& seq, uint64_t fallback_seed);

}  // namespace shardlm
