// Tokenizer benchmark: encodes ~1 MB of mixed text (prose, code, numbers, CJK,
// emoji, whitespace runs) with a real tokenizer and prints tokens/s, cold
// (empty merge cache) and warm, plus decode throughput.
//
//   tokenizer_bench [TOKENIZER_DIR ...]
// Default: $SHARDLM_HF_TOKENIZERS_DIR/{llama3,qwen3} (fetch_tokenizers.sh).
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace {

std::string make_text(size_t bytes) {
  const char* parts[] = {
      "The quick brown fox jumps over the lazy dog; it's 12:30 and we've got 1,234,567 tokens to go. ",
      "def encode(self, text: str) -> list[int]:\n    return [self.vocab[t] for t in self.split(text)]\n\n",
      "深度学习模型在多个GPU上运行，张量并行和流水线并行是两种常见的方法。",
      "東京は日本の首都です。ひらがなとカタカナ。 ",
      "Emoji 🚀✨👍🏽 and flags 🇺🇸 in text. ",
      "    indented   with   runs   of   spaces\t\tand tabs\n\n\n",
      "{\"id\": 42, \"values\": [3.14159, 2.71828, 1.41421], \"ok\": true}\n",
      "Привет, мир! Это тест токенизатора. ",
  };
  std::string out;
  size_t i = 0;
  unsigned seed = 12345;
  while (out.size() < bytes) {
    out += parts[i++ % (sizeof(parts) / sizeof(parts[0]))];
    seed = seed * 1103515245u + 12345u;
    out += std::to_string(seed % 100000) + " ";  // varying words defeat a trivial cache
  }
  return out;
}

// Pseudo-random "words" from syllables: few repeated pre-tokens, so the merge
// cache helps little and BPE merging dominates (a worst case for the cache).
std::string make_diverse_text(size_t bytes) {
  const char* syl[] = {"ka",  "zu",  "mir", "tho", "ven", "qua", "lis", "dro",
                       "pex", "gun", "shi", "bal", "or",  "te",  "nym"};
  std::string out;
  unsigned seed = 987654321u;
  while (out.size() < bytes) {
    seed = seed * 1103515245u + 12345u;
    int n = 1 + (seed >> 16) % 5;
    for (int k = 0; k < n; ++k) {
      seed = seed * 1103515245u + 12345u;
      out += syl[(seed >> 16) % 15];
    }
    seed = seed * 1103515245u + 12345u;
    out += (seed >> 16) % 11 == 0 ? ".\n" : " ";
  }
  return out;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> dirs;
  for (int i = 1; i < argc; ++i) dirs.push_back(argv[i]);
  if (dirs.empty()) {
    const char* env = std::getenv("SHARDLM_HF_TOKENIZERS_DIR");
    std::string base = env && *env ? env : std::string(SHARDLM_SOURCE_DIR) + "/tests/data/hf_tokenizers";
    for (const char* n : {"llama3", "qwen3"}) dirs.push_back(base + "/" + n);
    if (!std::filesystem::exists(dirs[0] + "/tokenizer.json")) {
      const char* skip = std::getenv("SHARDLM_SKIP_NETWORK_TESTS");
      std::fprintf(stderr, "tokenizer_bench: %s is missing; run bash tests/tokenizer/fetch_tokenizers.sh %s\n",
                   dirs[0].c_str(), base.c_str());
      return skip && std::string(skip) == "1" ? 0 : 1;
    }
  }
  const std::pair<const char*, std::string> texts[] = {{"mixed", make_text(1 << 20)},
                                                       {"diverse", make_diverse_text(1 << 20)}};
  for (const auto& dir : dirs) {
    auto t0 = std::chrono::steady_clock::now();
    auto tok = shardlm::Tokenizer::load(dir);
    if (!tok.ok()) {
      std::fprintf(stderr, "tokenizer_bench: %s\n", tok.status().to_string().c_str());
      return 1;
    }
    double load_s = seconds_since(t0);
    for (const auto& [label, text] : texts) {
      (*tok)->clear_merge_cache();
      t0 = std::chrono::steady_clock::now();
      auto ids = (*tok)->encode(text);
      double cold = seconds_since(t0);
      if (!ids.ok()) return 1;
      double warm = 1e30;
      for (int rep = 0; rep < 3; ++rep) {
        t0 = std::chrono::steady_clock::now();
        auto again = (*tok)->encode(text);
        warm = std::min(warm, seconds_since(t0));
      }
      t0 = std::chrono::steady_clock::now();
      std::string back = (*tok)->decode(*ids);
      double dec = seconds_since(t0);
      std::printf(
          "tokenizer_bench %s %s: load %.2f s; encode %.2f MB -> %zu tokens: cold %.3f s (%.0f tokens/s, %.1f MB/s), "
          "warm %.3f s (%.0f tokens/s, %.1f MB/s); decode %.0f tokens/s; round trip %s\n",
          std::filesystem::path(dir).filename().c_str(), label, load_s, text.size() / 1048576.0, ids->size(), cold,
          ids->size() / cold, text.size() / 1048576.0 / cold, warm, ids->size() / warm, text.size() / 1048576.0 / warm,
          ids->size() / dec, back == text ? "ok" : "differs (normalizer)");
    }
  }
  return 0;
}
