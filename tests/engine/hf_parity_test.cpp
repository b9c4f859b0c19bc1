// Logits parity with HF transformers: for every committed golden model
// (tools/make_hf_goldens.py), shardlm's CPU logits after each prompt match HF's
// float32 eager forward, and the 16-token greedy continuation is identical.
//
// Tolerance: |ours − hf| ≤ 1e-4 + 1e-4·|hf| per logit. Both sides compute in
// f32 (bf16 checkpoints are widened to f32 on both sides), so the only
// difference is summation order: ~1e-6 relative per op, far inside the bound.
#include <gtest/gtest.h>

#include <cmath>

#include "engine_test_util.h"

namespace shardlm {
namespace {

using testing::golden_dir;
using testing::golden_models;
using testing::read_json;

class HfParity : public ::testing::TestWithParam<std::string> {};

TEST_P(HfParity, LastLogitsMatch) {
  auto g = read_json(golden_dir(GetParam()) + "/goldens.json");
  auto engine = Engine::create_cpu(testing::golden_model_dir(GetParam()), testing::quiet_config());
  ASSERT_TRUE(engine.ok()) << engine.status().to_string();
  for (const auto& p : g["prompts"]) {
    std::vector<int32_t> ids = p["ids"];
    std::vector<float> want = p["last_logits"];
    auto got = (*engine)->last_logits(ids);
    ASSERT_TRUE(got.ok()) << got.status().to_string();
    ASSERT_EQ(got->size(), want.size());
    double worst = 0;
    for (size_t v = 0; v < want.size(); ++v) {
      const double err = std::fabs((*got)[v] - want[v]);
      worst = std::max(worst, err / (1e-4 + 1e-4 * std::fabs(want[v])));
      ASSERT_LE(err, 1e-4 + 1e-4 * std::fabs(want[v]))
          << GetParam() << " prompt of " << ids.size() << " tokens, vocab id " << v;
    }
    RecordProperty("worst_error_over_tolerance_" + std::to_string(ids.size()), std::to_string(worst));
  }
}

TEST_P(HfParity, GreedyTokensMatch) {
  auto g = read_json(golden_dir(GetParam()) + "/goldens.json");
  auto engine = Engine::create_cpu(testing::golden_model_dir(GetParam()), testing::quiet_config());
  ASSERT_TRUE(engine.ok()) << engine.status().to_string();
  for (const auto& p : g["prompts"]) {
    std::vector<int32_t> ids = p["ids"];
    std::vector<int32_t> want = p["greedy"];
    SamplingParams sp;
    sp.temperature = 0;
    sp.max_tokens = static_cast<int32_t>(want.size());
    sp.ignore_eos = true;
    auto id = (*engine)->add_request(ids, sp);
    ASSERT_TRUE(id.ok()) << id.status().to_string();
    while ((*engine)->has_unfinished()) ASSERT_TRUE((*engine)->step().ok());
    EXPECT_EQ((*engine)->get(*id)->output, want) << GetParam() << " prompt of " << ids.size() << " tokens";
  }
}

INSTANTIATE_TEST_SUITE_P(Goldens, HfParity, ::testing::ValuesIn(golden_models()),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace shardlm
