// `shardlm generate` on broken model directories: every case ends with a clear
// message naming the problem and a non-zero exit — never a crash (a signal) and
// never a hang. The suite also runs under ASan/UBSan (scripts/test.sh).
// Each case copies the llama_f32 golden model and breaks one thing.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <utility>
#include <vector>
#include <sstream>

#include <nlohmann/json.hpp>

#include "../shell_command.h"

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

struct Result {
  int exit_code = -1;
  bool signaled = false;
  std::string output;  // stdout + stderr
};

Result run_cli(const std::string& args) {
  const std::string cmd = "timeout 60 " + std::string(SHARDLM_BINARY_DIR) + "/shardlm " + args + " 2>&1";
  auto sh = shardlm::testing::run_shell(cmd);
  Result r;
  r.exit_code = sh.exit_code;
  r.output = std::move(sh.out);
  // timeout(1) reports a child killed by a signal as 128 + signal; -1: not exited normally.
  r.signaled = r.exit_code >= 124 || r.exit_code < 0;
  return r;
}

std::string slurp(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

void spit(const fs::path& p, const std::string& s) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f << s;
}

// A safetensors file split into its JSON header and data section.
struct St {
  json header;
  std::string data;
  static St read(const fs::path& p) {
    std::string s = slurp(p);
    uint64_t n;
    std::memcpy(&n, s.data(), 8);
    return St{json::parse(s.substr(8, n)), s.substr(8 + n)};
  }
  void write(const fs::path& p) const {
    std::string h = header.dump();
    uint64_t n = h.size();
    std::string out(reinterpret_cast<const char*>(&n), 8);
    spit(p, out + h + data);
  }
};

class CliBadInput : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("shardlm_cli_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    const fs::path src = fs::path(SHARDLM_SOURCE_DIR) / "tests/data/models/llama_f32";
    for (const char* f : {"config.json", "model.safetensors"}) fs::copy_file(src / f, dir_ / f);
  }
  void TearDown() override { fs::remove_all(dir_); }

  void edit_tensors(const std::function<void(St&)>& fn) {
    St st = St::read(dir_ / "model.safetensors");
    fn(st);
    st.write(dir_ / "model.safetensors");
  }
  void edit_config(const std::function<void(json&)>& fn) {
    json c = json::parse(slurp(dir_ / "config.json"));
    fn(c);
    spit(dir_ / "config.json", c.dump(2));
  }
  // Runs generate and expects a clean failure whose message holds every needle.
  void expect_failure(std::initializer_list<std::string> needles) {
    Result r = run_cli("generate --model " + dir_.string() + " --prompt-ids 1,2,3 --max-tokens 2");
    EXPECT_FALSE(r.signaled) << "crashed or hung:\n" << r.output;
    EXPECT_NE(r.exit_code, 0) << r.output;
    for (const auto& n : needles) EXPECT_NE(r.output.find(n), std::string::npos) << "missing '" << n << "' in:\n" << r.output;
  }
  fs::path dir_;
};

TEST_F(CliBadInput, WorkingModelSucceeds) {
  Result r = run_cli("generate --model " + dir_.string() + " --prompt-ids 1,2,3 --max-tokens 4 --temperature 0 --json");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto j = json::parse(r.output.substr(r.output.find('{')));
  EXPECT_EQ(j["token_ids"].size(), 4u);
}

TEST_F(CliBadInput, MissingDirectory) {
  Result r = run_cli("generate --model /nonexistent/model --prompt-ids 1");
  EXPECT_FALSE(r.signaled);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("/nonexistent/model"), std::string::npos) << r.output;
}

TEST_F(CliBadInput, TruncatedFile) {
  std::string s = slurp(dir_ / "model.safetensors");
  spit(dir_ / "model.safetensors", s.substr(0, s.size() / 2));
  expect_failure({"model.safetensors"});
}

TEST_F(CliBadInput, TinyFile) {
  spit(dir_ / "model.safetensors", "abc");
  expect_failure({"model.safetensors"});
}

TEST_F(CliBadInput, BadJsonHeader) {
  std::string s = slurp(dir_ / "model.safetensors");
  s[10] = '{';
  s[11] = '{';
  spit(dir_ / "model.safetensors", s);
  expect_failure({"model.safetensors"});
}

TEST_F(CliBadInput, HeaderLengthBeyondFile) {
  std::string s = slurp(dir_ / "model.safetensors");
  uint64_t n = 1ull << 40;
  std::memcpy(s.data(), &n, 8);
  spit(dir_ / "model.safetensors", s);
  expect_failure({"model.safetensors"});
}

TEST_F(CliBadInput, OffsetsOutOfRange) {
  edit_tensors([](St& st) {
    auto& e = st.header["model.norm.weight"];
    size_t len = e["data_offsets"][1].get<size_t>() - e["data_offsets"][0].get<size_t>();
    e["data_offsets"] = {st.data.size(), st.data.size() + len};
  });
  expect_failure({"model.norm.weight", "model.safetensors"});
}

TEST_F(CliBadInput, OverlappingTensors) {
  edit_tensors([](St& st) {
    // Point model.norm.weight at the same bytes as another 64-element tensor.
    st.header["model.norm.weight"]["data_offsets"] = st.header["model.layers.0.input_layernorm.weight"]["data_offsets"];
  });
  expect_failure({"model.safetensors", "overlap"});
}

TEST_F(CliBadInput, ByteSizeMismatch) {
  edit_tensors([](St& st) { st.header["model.norm.weight"]["shape"] = {65}; });
  expect_failure({"model.norm.weight"});
}

TEST_F(CliBadInput, UnknownDtype) {
  edit_tensors([](St& st) { st.header["model.norm.weight"]["dtype"] = "Q7"; });
  expect_failure({"model.norm.weight", "Q7"});
}

TEST_F(CliBadInput, NonFloatDtype) {
  edit_tensors([](St& st) {
    auto& e = st.header["model.norm.weight"];
    e["dtype"] = "I32";  // same byte size, wrong kind
  });
  expect_failure({"model.norm.weight"});
}

TEST_F(CliBadInput, WrongShape) {
  edit_tensors([](St& st) {
    // Same bytes, transposed-looking shape: size checks pass, the shape check must not.
    st.header["model.layers.0.mlp.down_proj.weight"]["shape"] = {176, 64};
  });
  expect_failure({"model.layers.0.mlp.down_proj.weight", "[64, 176]"});
}

TEST_F(CliBadInput, MissingTensor) {
  edit_tensors([](St& st) { st.header.erase("model.layers.1.self_attn.k_proj.weight"); });
  expect_failure({"model.layers.1.self_attn.k_proj.weight"});
}

TEST_F(CliBadInput, UnknownArchitecture) {
  edit_config([](json& c) {
    c["architectures"] = {"GPT2LMHeadModel"};
    c["model_type"] = "gpt2";
  });
  expect_failure({"unsupported", "GPT2LMHeadModel"});
}

TEST_F(CliBadInput, MalformedConfig) {
  spit(dir_ / "config.json", "{\"architectures\": [\"LlamaForCausalLM\"], ");
  expect_failure({"config.json"});
}

TEST_F(CliBadInput, MissingConfigKey) {
  edit_config([](json& c) { c.erase("hidden_size"); });
  expect_failure({"hidden_size"});
}

TEST_F(CliBadInput, PromptIdsOutsideVocab) {
  Result r = run_cli("generate --model " + dir_.string() + " --prompt-ids 1,999999");
  EXPECT_FALSE(r.signaled);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("999999"), std::string::npos) << r.output;
}

TEST_F(CliBadInput, PromptIdsNotNumbers) {
  Result r = run_cli("generate --model " + dir_.string() + " --prompt-ids 1,x");
  EXPECT_FALSE(r.signaled);
  EXPECT_NE(r.exit_code, 0);
}

// `bench gemv` rejects what it cannot run with a message naming it (exit 2),
// before touching a GPU.
TEST(CliBadBenchArgs, BenchGemvNamesTheBadValue) {
  for (const auto& [args, needle] : std::vector<std::pair<std::string, std::string>>{
           {"bench gemv --rows 257", "'257'"},
           {"bench gemv --rows 1,x", "'x'"},
           {"bench gemv --rows ,", "at least one"},
           {"bench gemv --variants gemv,bulk", "'bulk'"}}) {
    Result r = run_cli(args);
    EXPECT_FALSE(r.signaled) << args;
    EXPECT_EQ(r.exit_code, 2) << args << "\n" << r.output;
    EXPECT_NE(r.output.find(needle), std::string::npos) << args << "\n" << r.output;
  }
}

TEST(CliBadBenchArgs, BenchDecodeNamesTheBadValue) {
  // Checked before any device is touched: exit 2 and the value named, never a throw.
  for (const auto& [args, needle] : std::vector<std::pair<std::string, std::string>>{
           {"bench decode --batches 1,x", "'1,x'"},
           {"bench decode --batches 0", "'0'"},
           {"bench decode --workload 64:12x", "'64:12x'"},
           {"bench decode --workload 64:128", "B:PP+TG"},
           {"bench decode --workload 0:128+128", "positive"},
           {"bench decode --workload 64:128+0", "positive"},
           {"bench decode --workload x:1+1", "'x:1+1'"},
           {"bench decode --skip-ops linear,attn", "'attn' is not an op kind"}}) {
    Result r = run_cli(args);
    EXPECT_FALSE(r.signaled) << args;
    EXPECT_EQ(r.exit_code, 2) << args << "\n" << r.output;
    EXPECT_NE(r.output.find(needle), std::string::npos) << args << "\n" << r.output;
  }
}

}  // namespace
