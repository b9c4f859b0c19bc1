// `shardlm tokenize` end to end, on the hand-made byte-level fixture.
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "../shell_command.h"
#include "test_util.h"

namespace {

namespace fs = std::filesystem;
using shardlm::testing::tokenizer_test_dir;

struct Result {
  int code;
  std::string out;
};

Result run(const std::string& args, const std::string& stdin_text = "") {
  // ctest runs the tests of this file in parallel processes: every call gets its own stdin file
  // (a shared name let one test read another's input).
  static int calls = 0;
  std::string in = ::testing::TempDir() + "/shardlm_tok_stdin_" + std::to_string(getpid()) + "_" +
                   std::to_string(calls++) + ".txt";
  std::ofstream(in, std::ios::binary) << stdin_text;
  std::string cmd = std::string(SHARDLM_BINARY_DIR) + "/shardlm tokenize " + args + " < " + in + " 2>&1";
  auto sh = shardlm::testing::run_shell(cmd);
  Result r{sh.exit_code, sh.out};
  return r;
}

std::string fixture_dir() {
  std::string dir = ::testing::TempDir() + "/shardlm_tok_cli_" + std::to_string(getpid());
  fs::create_directories(dir);
  fs::copy_file(tokenizer_test_dir() + "/fixtures/bytelevel.json", dir + "/tokenizer.json",
                fs::copy_options::overwrite_existing);
  fs::copy_file(tokenizer_test_dir() + "/fixtures/bytelevel_config.json", dir + "/tokenizer_config.json",
                fs::copy_options::overwrite_existing);
  return dir;
}

TEST(TokenizeCli, EncodeDecode) {
  std::string dir = fixture_dir();
  Result e = run("--tokenizer " + dir, "hello world");
  ASSERT_EQ(e.code, 0) << e.out;
  EXPECT_EQ(nlohmann::json::parse(e.out), nlohmann::json::parse(R"({"ids": [268, 259, 264, 269]})"));
  Result n = run("--tokenizer " + dir + "/tokenizer.json --no-special-tokens", "hello world");
  EXPECT_EQ(nlohmann::json::parse(n.out)["ids"], nlohmann::json::parse("[259, 264]"));
  Result d = run("--tokenizer " + dir + " --decode", "[268, 259, 264, 269]");
  ASSERT_EQ(d.code, 0) << d.out;
  EXPECT_EQ(d.out, "<s>hello world</s>");
  Result s = run("--tokenizer " + dir + " --decode --skip-special-tokens", R"({"ids": [268, 259, 264, 269]})");
  EXPECT_EQ(s.out, "hello world");
}

TEST(TokenizeCli, Chat) {
  std::string dir = fixture_dir();
  std::string conv = dir + "/conv.json";
  std::ofstream(conv) << R"([{"role": "system", "content": "be brief"}, {"role": "user", "content": " hi "}])";
  Result c = run("--tokenizer " + dir + " --chat " + conv);
  ASSERT_EQ(c.code, 0) << c.out;
  EXPECT_EQ(c.out, "<system>be brief</s><user>hi</s>");
  Result g = run("--tokenizer " + dir + " --chat " + conv + " --add-generation-prompt");
  EXPECT_EQ(g.out, "<system>be brief</s><user>hi</s><assistant>");
  std::string tpl = dir + "/t.jinja";
  std::ofstream(tpl) << "{% for m in messages %}[{{ m.role }}]{% endfor %}\n";
  Result o = run("--tokenizer " + dir + " --chat " + conv + " --chat-template " + tpl);
  EXPECT_EQ(o.out, "[system][user]");
  std::ofstream(tpl) << "line one\n{% for m in messages %}\n{{ m.role }\n";
  Result bad = run("--tokenizer " + dir + " --chat " + conv + " --chat-template " + tpl);
  EXPECT_EQ(bad.code, 1);
  EXPECT_NE(bad.out.find("line 3"), std::string::npos) << bad.out;
}

TEST(TokenizeCli, Errors) {
  Result r = run("--tokenizer /nonexistent/dir", "x");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("not found"), std::string::npos) << r.out;
  Result d = run("--tokenizer " + fixture_dir() + " --decode", "not json");
  EXPECT_EQ(d.code, 1);
  EXPECT_NE(d.out.find("JSON array"), std::string::npos) << d.out;
}

}  // namespace
