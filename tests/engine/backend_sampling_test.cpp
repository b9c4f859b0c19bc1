// Sampling on the backend (Backend::forward_sample, EngineConfig::sampler):
// exercised here on the CPU backend, whose forward_sample runs the CPU
// reference of the CUDA sampler. Greedy gives the host sampler's tokens;
// seeded sampling gives the same tokens whether a request runs alone or in a
// batch with others (the draw is keyed by seed and position only); requests
// that need their logits on the host (logprobs, penalties) still get them.
#include <gtest/gtest.h>

#include "engine_test_util.h"

namespace shardlm {
namespace {

SamplingParams params(float temperature, uint64_t seed, int32_t max_tokens = 12) {
  SamplingParams sp;
  sp.temperature = temperature;
  sp.top_k = 50;
  sp.top_p = 0.9f;
  sp.seed = seed;
  sp.has_seed = true;
  sp.max_tokens = max_tokens;
  sp.ignore_eos = true;
  return sp;
}

std::vector<std::vector<int32_t>> run(const std::string& sampler, const std::vector<std::vector<int32_t>>& prompts,
                                      const std::vector<SamplingParams>& sps) {
  EngineConfig cfg = testing::quiet_config();
  cfg.sampler = sampler;
  auto engine = Engine::create_cpu(testing::golden_dir("llama_f32"), cfg);
  EXPECT_TRUE(engine.ok()) << engine.status().to_string();
  std::vector<int64_t> ids;
  for (size_t i = 0; i < prompts.size(); ++i) {
    auto id = (*engine)->add_request(prompts[i], sps[i]);
    EXPECT_TRUE(id.ok()) << id.status().to_string();
    ids.push_back(*id);
  }
  while ((*engine)->has_unfinished()) EXPECT_TRUE((*engine)->step().ok());
  std::vector<std::vector<int32_t>> out;
  for (int64_t id : ids) out.push_back((*engine)->get(id)->output);
  return out;
}

const std::vector<std::vector<int32_t>> kPrompts = {{1, 17, 33, 5}, {9, 9, 120, 4, 77, 2, 31}, {250}};

TEST(BackendSampling, GreedyMatchesTheHostSampler) {
  std::vector<SamplingParams> sps(kPrompts.size(), params(0.0f, 1));
  EXPECT_EQ(run("backend", kPrompts, sps), run("host", kPrompts, sps));
}

TEST(BackendSampling, SeededDrawsDoNotDependOnTheBatch) {
  std::vector<SamplingParams> sps = {params(0.8f, 7), params(1.0f, 8), params(1.3f, 9)};
  const auto batched = run("backend", kPrompts, sps);
  for (size_t i = 0; i < kPrompts.size(); ++i) {
    EXPECT_EQ(run("backend", {kPrompts[i]}, {sps[i]})[0], batched[i]) << "request " << i;
    EXPECT_EQ(batched[i].size(), 12u);
  }
  // The draws are the counter sampler's, not the host's mt19937 ones (so the
  // backend path really ran): the two differ for some request.
  const auto host = run("host", kPrompts, sps);
  EXPECT_TRUE(host[0] != batched[0] || host[1] != batched[1] || host[2] != batched[2]);
  // Another seed draws something else (12 tokens at temperature 1.3 over 256 ids).
  std::vector<SamplingParams> other = sps;
  other[2].seed = 10;
  EXPECT_NE(run("backend", kPrompts, other)[2], batched[2]);
}

TEST(BackendSampling, LogprobsAndPenaltiesStayOnTheHost) {
  // With logprobs the step falls back to the host sampler: identical to "host".
  SamplingParams lp = params(0.9f, 11);
  lp.logprobs = 2;
  SamplingParams pen = params(0.9f, 12);
  pen.repetition_penalty = 1.3f;
  std::vector<SamplingParams> sps = {lp, pen, params(0.9f, 13)};
  EXPECT_EQ(run("backend", kPrompts, sps), run("host", kPrompts, sps));
}

TEST(BackendSampling, UnknownSamplerIsAnError) {
  EngineConfig cfg = testing::quiet_config();
  cfg.sampler = "gpu-please";
  auto engine = Engine::create_cpu(testing::golden_dir("llama_f32"), cfg);
  ASSERT_FALSE(engine.ok());
  EXPECT_NE(engine.status().message().find("sampler"), std::string::npos);
}

}  // namespace
}  // namespace shardlm
