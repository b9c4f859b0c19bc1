// Continuous batching is exact: 32 greedy requests of varied prompt lengths,
// joining at different steps, produce exactly the tokens each produces alone —
// with a roomy KV pool, and with a pool so small that preemption (recompute)
// must happen. At the end every block is back in the pool.
#include <gtest/gtest.h>

#include <map>
#include <random>

#include "engine_test_util.h"

namespace shardlm {
namespace {

struct Req {
  std::vector<int32_t> prompt;
  int32_t max_tokens;
  int join_step;
};

std::vector<Req> make_requests(int n, int64_t vocab) {
  std::mt19937 rng(1234);
  std::vector<Req> out;
  for (int i = 0; i < n; ++i) {
    Req r;
    const int len = 1 + static_cast<int>(rng() % 70);
    for (int t = 0; t < len; ++t) r.prompt.push_back(static_cast<int32_t>(rng() % vocab));
    r.max_tokens = 4 + static_cast<int32_t>(rng() % 20);
    r.join_step = static_cast<int>(rng() % 40);
    out.push_back(std::move(r));
  }
  return out;
}

SamplingParams greedy(int32_t max_tokens) {
  SamplingParams sp;
  sp.temperature = 0;
  sp.max_tokens = max_tokens;
  sp.ignore_eos = true;
  return sp;
}

std::vector<int32_t> run_alone(const std::string& dir, const Req& r) {
  auto engine = Engine::create_cpu(dir, testing::quiet_config());
  EXPECT_TRUE(engine.ok());
  auto id = (*engine)->add_request(r.prompt, greedy(r.max_tokens));
  EXPECT_TRUE(id.ok());
  while ((*engine)->has_unfinished()) EXPECT_TRUE((*engine)->step().ok());
  return (*engine)->get(*id)->output;
}

void run_batched(const std::string& dir, const std::vector<Req>& reqs,
                 const std::vector<std::vector<int32_t>>& alone, EngineConfig cfg, bool expect_preemption) {
  auto engine_or = Engine::create_cpu(dir, cfg);
  ASSERT_TRUE(engine_or.ok()) << engine_or.status().to_string();
  Engine& engine = **engine_or;
  std::map<int64_t, size_t> which;  // engine id → request index
  size_t joined = 0;
  for (int step = 0; joined < reqs.size() || engine.has_unfinished(); ++step) {
    for (size_t i = 0; i < reqs.size(); ++i) {
      if (reqs[i].join_step != step) continue;
      auto id = engine.add_request(reqs[i].prompt, greedy(reqs[i].max_tokens));
      ASSERT_TRUE(id.ok()) << id.status().to_string();
      which[*id] = i;
      ++joined;
    }
    auto ev = engine.step();
    ASSERT_TRUE(ev.ok()) << ev.status().to_string();
    ASSERT_LT(step, 10000) << "no progress";
  }
  for (auto [id, i] : which) EXPECT_EQ(engine.get(id)->output, alone[i]) << "request " << i;
  EXPECT_EQ(engine.blocks().num_free_blocks(), engine.blocks().num_blocks());
  if (expect_preemption) {
    EXPECT_GT(engine.total_preemptions(), 0);
  }
}

class ContinuousBatching : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = testing::golden_dir("llama_f32");
    reqs_ = make_requests(32, 256);
    for (const auto& r : reqs_) alone_.push_back(run_alone(dir_, r));
  }
  static std::string dir_;
  static std::vector<Req> reqs_;
  static std::vector<std::vector<int32_t>> alone_;
};
std::string ContinuousBatching::dir_;
std::vector<Req> ContinuousBatching::reqs_;
std::vector<std::vector<int32_t>> ContinuousBatching::alone_;

TEST_F(ContinuousBatching, SameTokensAsAlone) {
  EngineConfig cfg = testing::quiet_config();
  cfg.scheduler.max_num_batched_tokens = 64;  // forces chunked prefill of long prompts
  run_batched(dir_, reqs_, alone_, cfg, false);
}

TEST_F(ContinuousBatching, SameTokensUnderPreemption) {
  EngineConfig cfg = testing::quiet_config();
  cfg.block_size = 4;
  cfg.num_kv_blocks = 40;  // 160 tokens for 32 requests of up to ~90: preemption is certain
  cfg.scheduler.max_num_batched_tokens = 48;
  run_batched(dir_, reqs_, alone_, cfg, true);
}

TEST_F(ContinuousBatching, AbortFreesBlocks) {
  auto engine = Engine::create_cpu(dir_, testing::quiet_config());
  ASSERT_TRUE(engine.ok());
  auto a = (*engine)->add_request(reqs_[0].prompt, greedy(50));
  auto b = (*engine)->add_request(reqs_[1].prompt, greedy(50));
  ASSERT_TRUE(a.ok() && b.ok());
  ASSERT_TRUE((*engine)->step().ok());
  EXPECT_TRUE((*engine)->abort_request(*a));
  while ((*engine)->has_unfinished()) ASSERT_TRUE((*engine)->step().ok());
  EXPECT_EQ((*engine)->get(*a)->finish_reason, FinishReason::kAborted);
  EXPECT_EQ((*engine)->blocks().num_free_blocks(), (*engine)->blocks().num_blocks());
}

TEST(EngineRequests, BadRequestsAreErrors) {
  auto engine = Engine::create_cpu(testing::golden_dir("llama_f32"), testing::quiet_config());
  ASSERT_TRUE(engine.ok());
  EXPECT_FALSE((*engine)->add_request({}, greedy(4)).ok());
  EXPECT_FALSE((*engine)->add_request({1, 99999}, greedy(4)).ok());
  auto too_long = (*engine)->add_request(std::vector<int32_t>(250, 3), greedy(10));
  ASSERT_FALSE(too_long.ok());
  EXPECT_NE(too_long.status().message().find("250"), std::string::npos);
  EXPECT_NE(too_long.status().message().find("256"), std::string::npos);
}

}  // namespace
}  // namespace shardlm
