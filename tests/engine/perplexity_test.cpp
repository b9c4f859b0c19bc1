// The trained default model's held-out perplexity, computed by `shardlm
// perplexity` on the CPU, equals the value the training script recorded with
// PyTorch (models/kjv/eval.json) on the same text and tokens. The recorded run
// is f32 on the same bf16 weights, so only summation order differs: 1e-5
// relative is tight enough that any broken kernel or layout shows.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <cstdio>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

#include "../shell_command.h"

namespace {

std::string run(const std::string& args, int* exit_code) {
  auto r = shardlm::testing::run_shell("SHARDLM_NUM_THREADS=1 timeout 300 " + std::string(SHARDLM_BINARY_DIR) +
                                       "/shardlm " + args + " 2>/dev/null");
  *exit_code = r.exit_code;
  return r.out;
}

class Perplexity : public ::testing::TestWithParam<std::pair<int, int>> {};

// Every (tp, pp) layout, on CPU ranks started by self-spawn, gives the value
// PyTorch recorded (and so the same value as tp = pp = 1).
TEST_P(Perplexity, HeldOutExcerptMatchesPyTorch) {
  const auto [tp, pp] = GetParam();
  const std::string kjv = std::string(SHARDLM_SOURCE_DIR) + "/models/kjv";
  std::ifstream f(kjv + "/eval.json");
  ASSERT_TRUE(f) << "models/kjv/eval.json missing";
  auto eval = nlohmann::json::parse(f);
  const double want = eval["excerpt_ppl_f32"];
  const int64_t want_scored = eval["excerpt_tokens_scored"];
  int code = 0;
  std::string out = run("perplexity --model " + kjv + " --file " + kjv +
                            "/heldout_excerpt.txt --window 512 --stride 256 --json --tp " + std::to_string(tp) +
                            " --pp " + std::to_string(pp),
                        &code);
  ASSERT_EQ(code, 0) << out;
  auto got = nlohmann::json::parse(out);
  EXPECT_EQ(got["scored_tokens"].get<int64_t>(), want_scored);
  EXPECT_NEAR(got["perplexity"].get<double>(), want, want * 1e-5) << "tp " << tp << " pp " << pp;
}

INSTANTIATE_TEST_SUITE_P(Layouts, Perplexity,
                         ::testing::Values(std::make_pair(1, 1), std::make_pair(2, 1), std::make_pair(1, 2),
                                           std::make_pair(2, 2)),
                         [](const auto& info) {
                           return "tp" + std::to_string(info.param.first) + "_pp" + std::to_string(info.param.second);
                         });

// `--load-format dummy`: random weights from config.json alone (a directory
// holding no checkpoint, only the config and the tokenizer), the same model in every layout, so tp 2 × pp 2 on
// CPU ranks gives tp 1's perplexity (f32; only the order of the TP sums
// differs), and the checkpoint is never needed.
TEST(DummyWeights, SameModelInEveryLayout) {
  const std::string kjv = std::string(SHARDLM_SOURCE_DIR) + "/models/kjv";
  const std::string dir = ::testing::TempDir() + "/shardlm_dummy_" + std::to_string(getpid());
  std::filesystem::create_directories(dir);
  for (const char* f : {"config.json", "tokenizer.json", "tokenizer_config.json"})
    std::filesystem::copy_file(kjv + "/" + f, dir + "/" + f, std::filesystem::copy_options::overwrite_existing);
  auto ppl = [&](const std::string& layout) {
    int code = 0;
    std::string out = run("perplexity --load-format dummy --model " + dir + " --file " + kjv +
                              "/heldout_excerpt.txt --window 128 --stride 64 --json " + layout,
                          &code);
    EXPECT_EQ(code, 0) << out;
    auto j = nlohmann::json::parse(out, nullptr, false);
    return j.is_object() && j.contains("perplexity") ? j["perplexity"].get<double>() : -1.0;
  };
  const double one = ppl("");
  ASSERT_GT(one, 1.0);
  // Random weights: near-uniform predictions over the 4096-token vocabulary, not the trained model's ~58.
  EXPECT_GT(one, 500.0);
  EXPECT_NEAR(ppl("--tp 2 --pp 2"), one, one * 1e-5);
  // Without the flag the directory has no checkpoint: a clear error, not a crash.
  int code = 0;
  std::string out = run("perplexity --model " + dir + " --file " + kjv + "/heldout_excerpt.txt",
                        &code);
  EXPECT_EQ(code, 1) << out;
}

}  // namespace
