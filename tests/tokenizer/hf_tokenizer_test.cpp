// The real Llama-3 and Qwen3 tokenizers (fetched by fetch_tokenizers.sh) against
// goldens made with HF tokenizers / transformers.js (tools/tokenizer/make_goldens.mjs):
// ids, decode, streaming decode, and chat templates.
#include <map>

#include <gtest/gtest.h>

#include "test_util.h"
#include "tokenizer/normalizer.h"
#include "tokenizer/tokenizer.h"

namespace shardlm {
namespace {

using Ids = std::vector<int32_t>;
using testing::hf_tokenizers_dir;
using testing::read_json;
using testing::tokenizer_test_dir;

std::string from_hex(const std::string& h) {
  std::string out;
  for (size_t i = 0; i + 1 < h.size(); i += 2) out.push_back(static_cast<char>(std::stoi(h.substr(i, 2), nullptr, 16)));
  return out;
}

// Tokenizers are large; load each once per process.
std::shared_ptr<Tokenizer> get(const std::string& name) {
  static std::map<std::string, std::shared_ptr<Tokenizer>> cache;
  auto it = cache.find(name);
  if (it != cache.end()) return it->second;
  auto t = Tokenizer::load(hf_tokenizers_dir() + "/" + name);
  EXPECT_TRUE(t.ok()) << t.status().to_string();
  auto p = t.ok() ? *t : nullptr;
  cache[name] = p;
  return p;
}

class HfTokenizer : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    SHARDLM_REQUIRE_HF_TOKENIZER(GetParam());
    tok_ = get(GetParam());
    ASSERT_TRUE(tok_);
    golden_ = read_json(tokenizer_test_dir() + "/goldens/" + GetParam() + ".json");
  }
  static std::string input_of(const nlohmann::ordered_json& row) {
    return row.contains("input_hex") ? from_hex(row["input_hex"]) : row["input"].get<std::string>();
  }
  std::shared_ptr<Tokenizer> tok_;
  nlohmann::ordered_json golden_;
};

TEST_P(HfTokenizer, EncodeMatchesGoldens) {
  size_t n = 0;
  for (const auto& row : golden_["encode"]) {
    std::string name = row["name"];
    SCOPED_TRACE(GetParam() + "/" + name);
    auto with = tok_->encode(input_of(row), true);
    auto without = tok_->encode(input_of(row), false);
    ASSERT_TRUE(with.ok() && without.ok());
    EXPECT_EQ(*with, row["ids"].get<Ids>());
    EXPECT_EQ(*without, row["ids_no_special"].get<Ids>());
    ++n;
  }
  EXPECT_GE(n, 30u);
}

TEST_P(HfTokenizer, DecodeMatchesGoldensAndRoundTrips) {
  const bool cleanup = golden_["config"]["clean_up_tokenization_spaces"].get<bool>();
  EXPECT_EQ(tok_->clean_up_tokenization_spaces(), cleanup);
  for (const auto& row : golden_["encode"]) {
    SCOPED_TRACE(GetParam() + "/" + row["name"].get<std::string>());
    Ids ids = row["ids"].get<Ids>();
    std::string decoded = tok_->decode(ids, false);
    EXPECT_EQ(decoded, row["decoded"].get<std::string>());
    EXPECT_EQ(tok_->decode(ids, true), row["decoded_skip_special"].get<std::string>());
    // transformers' decode also applies clean_up_tokenization_spaces when the config says so.
    std::string t = cleanup ? Tokenizer::clean_up_tokenization(decoded) : decoded;
    EXPECT_EQ(t, row["decoded_transformers"].get<std::string>());
    // Round trip: valid text comes back (after the tokenizer's normalizer, NFC for Qwen3).
    if (row.contains("input")) {
      std::string text = row["input"];
      if (GetParam() == "qwen3") text = *unicode_normalize(text, UnicodeForm::kNFC);
      EXPECT_EQ(decoded, text);
    }
  }
}

TEST_P(HfTokenizer, StreamingDecodeEqualsFullDecode) {
  for (const auto& row : golden_["encode"]) {
    SCOPED_TRACE(GetParam() + "/" + row["name"].get<std::string>());
    Ids ids = row["ids"].get<Ids>();
    for (bool skip : {false, true}) {
      StreamDecoder sd(tok_, skip);
      std::string streamed;
      bool valid_text = row.contains("input");
      for (int32_t id : ids) {
        std::string piece = sd.push(id);
        if (valid_text) {
          EXPECT_EQ(piece.find("\xEF\xBF\xBD"), std::string::npos) << "U+FFFD after id " << id;
        }
        streamed += piece;
      }
      streamed += sd.flush();
      EXPECT_EQ(streamed, tok_->decode(ids, skip));
    }
  }
}

TEST_P(HfTokenizer, ChatTemplatesMatchGoldens) {
  ASSERT_TRUE(tok_->has_chat_template());
  size_t n = 0;
  for (const auto& row : golden_["chat"]) {
    SCOPED_TRACE(GetParam() + "/" + row["name"].get<std::string>() +
                 (row["add_generation_prompt"].get<bool>() ? " +gen" : ""));
    nlohmann::ordered_json extra = row.contains("extra_context") ? row["extra_context"] : nlohmann::ordered_json(nullptr);
    auto r = tok_->apply_chat_template(row["messages"], row["add_generation_prompt"].get<bool>(), extra);
    ASSERT_TRUE(r.ok()) << r.status().to_string();
    EXPECT_EQ(*r, row["rendered"].get<std::string>());
    ++n;
  }
  EXPECT_GE(n, 10u);
}

TEST_P(HfTokenizer, SpecialTokensFromConfig) {
  auto cfg = golden_["config"];
  if (cfg["eos_token"].is_string()) {
    ASSERT_TRUE(tok_->eos_id().has_value());
    EXPECT_EQ(tok_->id_to_token(*tok_->eos_id()), cfg["eos_token"].get<std::string>());
    EXPECT_TRUE(tok_->is_special(*tok_->eos_id()));
  }
  if (cfg["bos_token"].is_null()) {
    EXPECT_FALSE(tok_->bos_id().has_value());
  }
  EXPECT_GT(tok_->vocab_size(), 128000);
}

TEST_P(HfTokenizer, LongInputUsesTheMergeCache) {
  std::string text;
  for (const auto& row : golden_["encode"])
    if (row.contains("input")) text += row["input"].get<std::string>() + "\n";
  while (text.size() < (200u << 10)) text += text;
  tok_->clear_merge_cache();
  auto a = tok_->encode(text);  // fills the cache
  auto b = tok_->encode(text);  // served from it
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(*a, *b);
  // Llama-3 sets ignore_merges (whole words in the vocab skip BPE and the cache).
  EXPECT_GT(tok_->merge_cache_size(), 10u);
  EXPECT_EQ(tok_->decode(*a, false), GetParam() == "qwen3" ? *unicode_normalize(text, UnicodeForm::kNFC) : text);
}

INSTANTIATE_TEST_SUITE_P(Real, HfTokenizer, ::testing::Values("llama3", "qwen3"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace shardlm
