// Every tp × pp layout on GPUs (one rank per GPU, NCCL + Lamport all-reduce
// inside the TP groups) gives the held-out perplexity of the trained default
// model that one GPU gives, and the one PyTorch recorded (models/kjv/eval.json).
// Label gpu: skips with the reason when this machine has fewer GPUs than the
// layout needs. bf16 on the GPU rounds every activation; the TP sums run in
// another order than tp = 1, so the layouts agree to 0.2 % (measured: see the
// note in bench/NOTES.md), not bit for bit; PyTorch's f32 value is within 0.5 %.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <ostream>
#include <string>

#include <nlohmann/json.hpp>

#include "../shell_command.h"
#include "graph/cuda_backend.h"

namespace {

// Where the binary and the repository are: the build's paths, unless
// SHARDLM_BIN / SHARDLM_REPO say otherwise (a test binary carried to another
// machine, bench/run_gpu_tp.sh).
std::string binary() {
  const char* b = std::getenv("SHARDLM_BIN");
  return b && *b ? b : std::string(SHARDLM_BINARY_DIR) + "/shardlm";
}
std::string repo() {
  const char* r = std::getenv("SHARDLM_REPO");
  return r && *r ? r : SHARDLM_SOURCE_DIR;
}

// stdout of `shardlm ARGS`; stderr (every rank's log) goes to `log`.
std::string run(const std::string& args, int* exit_code, std::string* log) {
  const std::string err = ::testing::TempDir() + "/cuda_layouts_" + std::to_string(getpid()) + ".log";
  auto r = shardlm::testing::run_shell("timeout 300 " + binary() + " " + args + " 2>" + err);
  *exit_code = r.exit_code;
  const std::string out = r.out;
  std::ifstream e(err);
  log->assign(std::istreambuf_iterator<char>(e), std::istreambuf_iterator<char>());
  return out;
}

double perplexity(int tp, int pp, const std::string& transport, std::string* log) {
  const std::string kjv = repo() + "/models/kjv";
  int code = 0;
  const std::string out = run("perplexity --device cuda --kv-cache-fraction 0.05 --model " + kjv + " --file " + kjv +
                                  "/heldout_excerpt.txt --window 512 --stride 256 --json --tp " + std::to_string(tp) +
                                  " --pp " + std::to_string(pp) + " --pp-transport " + transport,
                              &code, log);
  *log = out + *log;
  if (code != 0) return -1;
  auto j = nlohmann::json::parse(out, nullptr, false);
  return j.is_object() && j.contains("perplexity") ? j["perplexity"].get<double>() : -1;
}

struct Layout {
  int tp, pp;
  const char* transport;  // --pp-transport
};

void PrintTo(const Layout& l, std::ostream* os) { *os << "tp " << l.tp << " pp " << l.pp << " " << l.transport; }

class CudaLayouts : public ::testing::TestWithParam<Layout> {};

TEST_P(CudaLayouts, PerplexityMatchesOneGpu) {
  const auto [tp, pp, transport] = GetParam();
  const std::string why = shardlm::graph::cuda_unavailable_reason();
  if (!why.empty()) GTEST_SKIP() << why;
  const int n = shardlm::graph::cuda_device_count();
  if (n < tp * pp) GTEST_SKIP() << "tp " << tp << " × pp " << pp << " needs " << tp * pp << " GPUs; " << n << " visible";
  std::ifstream f(repo() + "/models/kjv/eval.json");
  ASSERT_TRUE(f);
  const double torch_f32 = nlohmann::json::parse(f)["excerpt_ppl_f32"];
  static std::string log1;
  static const double one = perplexity(1, 1, "host", &log1);  // once for every layout
  ASSERT_GT(one, 0) << log1;
  std::string log;
  const double got = perplexity(tp, pp, transport, &log);
  ASSERT_GT(got, 0) << log;
  std::printf("tp %d pp %d (%s): perplexity %.4f; one GPU %.4f; PyTorch f32 %.4f\n", tp, pp, transport, got, one,
              torch_f32);
  EXPECT_NEAR(got, one, one * 2e-3) << log;
  EXPECT_NEAR(got, torch_f32, torch_f32 * 5e-3) << log;
}

// More ranks than GPUs on a host: every rank learns which GPU each rank took
// before any NCCL communicator exists, and the job ends with a message naming
// the two ranks and the device (NCCL alone said "invalid usage"), on the
// engine's path (perplexity) and bench decode's; `timeout` turns a hang into
// exit 124, which fails too.
TEST(CudaLayoutErrors, MoreRanksThanGpusEndsWithAClearError) {
  const std::string why = shardlm::graph::cuda_unavailable_reason();
  if (!why.empty()) GTEST_SKIP() << why;
  const int n = shardlm::graph::cuda_device_count();
  const int tp = 2 * n;  // a power of two: divides the heads of both models while ≤ 4
  if (tp > 4) GTEST_SKIP() << n << " GPUs: tp " << tp << " would exceed models/kjv's 4 kv heads";
  const std::string kjv = repo() + "/models/kjv";
  for (const std::string& args :
       {"perplexity --device cuda --kv-cache-fraction 0.05 --model " + kjv + " --file " + kjv +
            "/heldout_excerpt.txt --window 64 --tp " + std::to_string(tp),
        "bench decode --layers 2 --batches 1 --steps 2 --prefill-tokens 0 --kv-cache-fraction 0.05 --tp " +
            std::to_string(tp)}) {
    int code = 0;
    std::string log;
    run(args, &code, &log);
    EXPECT_NE(code, 0) << args << "\n" << log;
    EXPECT_NE(code, 124) << "timed out: " << args << "\n" << log;
    EXPECT_NE(log.find("both use device"), std::string::npos) << args << "\n" << log;
  }
}

INSTANTIATE_TEST_SUITE_P(Layouts, CudaLayouts,
                         ::testing::Values(Layout{2, 1, "host"}, Layout{1, 2, "host"}, Layout{2, 2, "host"},
                                           Layout{4, 1, "host"}, Layout{1, 2, "nccl"}, Layout{2, 2, "nccl"}),
                         [](const auto& info) {
                           return "tp" + std::to_string(info.param.tp) + "_pp" + std::to_string(info.param.pp) + "_" +
                                  info.param.transport;
                         });

}  // namespace
