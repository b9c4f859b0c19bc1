// Unit tests of the tokenizer pipeline on small hand-made tokenizer.json
// fixtures (tests/tokenizer/fixtures/, written by tools/tokenizer/make_fixtures.py),
// checked against what HF tokenizers produces for them (goldens/fixtures.json).
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "test_util.h"
#include "tokenizer/tokenizer.h"

namespace shardlm {
namespace {

using testing::read_json;
using testing::read_text;
using testing::tokenizer_test_dir;

std::shared_ptr<Tokenizer> load_fixture(const std::string& name, const std::string& config = "") {
  std::string dir = tokenizer_test_dir() + "/fixtures/";
  auto t = Tokenizer::from_json_text(read_text(dir + name), config.empty() ? "" : read_text(dir + config));
  EXPECT_TRUE(t.ok()) << t.status().to_string();
  return t.ok() ? *t : nullptr;
}

std::vector<int32_t> enc(const Tokenizer& t, const std::string& s, bool special = true) {
  auto r = t.encode(s, special);
  EXPECT_TRUE(r.ok()) << r.status().to_string();
  return r.ok() ? *r : std::vector<int32_t>{};
}

using Ids = std::vector<int32_t>;

TEST(TokenizerFixtures, MatchHfTokenizersGoldens) {
  auto golden = read_json(tokenizer_test_dir() + "/goldens/fixtures.json");
  size_t checked = 0;
  for (auto it = golden["fixtures"].begin(); it != golden["fixtures"].end(); ++it) {
    auto tok = load_fixture(it.key());
    ASSERT_TRUE(tok);
    for (const auto& row : it.value()) {
      std::string input = row["input"];
      SCOPED_TRACE(it.key() + ": " + input);
      EXPECT_EQ(enc(*tok, input, true), row["ids"].get<Ids>());
      EXPECT_EQ(enc(*tok, input, false), row["ids_no_special"].get<Ids>());
      Ids ids = row["ids"].get<Ids>();
      EXPECT_EQ(tok->decode(ids, false), row["decoded"].get<std::string>());
      EXPECT_EQ(tok->decode(ids, true), row["decoded_skip_special"].get<std::string>());
      ++checked;
    }
  }
  EXPECT_GT(checked, 40u);
}

TEST(TokenizerFixtures, MergesInBothForms) {
  auto a = load_fixture("bytelevel.json");
  auto b = load_fixture("bytelevel_array_merges.json");
  for (std::string s : {"hello world", "hello  world 123123", "hellohello", "  worlds"}) {
    EXPECT_EQ(enc(*a, s), enc(*b, s)) << s;
  }
  // "hello" merges all the way to one token; " world" too.
  EXPECT_EQ(enc(*a, "hello world", false), (Ids{259, 264}));
}

TEST(TokenizerFixtures, TemplateProcessingAddsBosEos) {
  auto t = load_fixture("bytelevel.json");
  Ids with = enc(*t, "hello", true), without = enc(*t, "hello", false);
  ASSERT_EQ(without, (Ids{259}));
  EXPECT_EQ(with, (Ids{268, 259, 269}));
  EXPECT_EQ(enc(*t, "", true), (Ids{268, 269}));
  EXPECT_EQ(enc(*t, "", false), Ids{});
}

TEST(TokenizerFixtures, AddedTokensLstripRstripSingleWord) {
  auto t = load_fixture("bytelevel.json");
  // <mask> (270) has lstrip + rstrip: the spaces around it vanish.
  EXPECT_EQ(enc(*t, "x   <mask>   y", false), (Ids{120, 270, 121}));
  // cat (271) is single_word: only matched when not inside a word.
  EXPECT_EQ(enc(*t, "cat", false), (Ids{271}));
  EXPECT_EQ(enc(*t, "(cat)", false), (Ids{40, 271, 41}));
  EXPECT_EQ(enc(*t, "concat", false), (Ids{99, 111, 110, 99, 97, 116}));
  EXPECT_EQ(enc(*t, "cat_", false), (Ids{99, 97, 116, 95}));
  // Special tokens are matched anywhere, and skipped when decoding if asked.
  Ids ids = enc(*t, "hello<s>world", false);
  EXPECT_EQ(ids, (Ids{259, 268, 119, 261, 108, 100}));
  EXPECT_EQ(t->decode(ids, true), "helloworld");
  EXPECT_TRUE(t->is_special(268));
  EXPECT_FALSE(t->is_special(271));
  EXPECT_FALSE(t->is_special(259));
}

TEST(TokenizerFixtures, DigitsAndNfc) {
  auto t = load_fixture("digits_nfc.json");
  // Individual digits; "abc" merged; NFC turns e + U+0301 into é (id 38).
  EXPECT_EQ(enc(*t, "abc 2024"), (Ids{42, 30, 28, 30, 32}));
  EXPECT_EQ(enc(*t, "e\xCC\x81"), (Ids{38}));
  EXPECT_EQ(enc(*t, "\xC3\xA9"), (Ids{38}));
  // No decoder: tokens joined with spaces, as HF does.
  EXPECT_EQ(t->decode(Ids{42, 30}), "abc 2");
  // Unknown character -> <unk>.
  EXPECT_EQ(enc(*t, "z?"), (Ids{27, 0}));
  auto k = load_fixture("nfkc_digits_contiguous.json");
  // NFKC folds fullwidth letters and digits; contiguous digits stay together.
  EXPECT_EQ(enc(*k, "\xEF\xBD\x86 \xEF\xBC\x92\xEF\xBC\x90"), (Ids{7, 30, 28}));
  EXPECT_EQ(enc(*k, "ab12cd345"), (Ids{41, 43, 4, 5, 31, 32, 33}));
}

TEST(TokenizerFixtures, ByteFallback) {
  auto t = load_fixture("byte_fallback.json");
  Ids ids = enc(*t, "hello \xE6\x97\xA5\xE6\x9C\xAC");  // 日本 is not in the vocab: six byte tokens
  EXPECT_EQ(ids, (Ids{1, 268, 262, 270, 264, 259, 233, 154, 168, 233, 159, 175}));
  EXPECT_EQ(t->decode(ids, true), "hello \xE6\x97\xA5\xE6\x9C\xAC");
  // An invalid byte sequence decodes to one U+FFFD per byte token.
  EXPECT_EQ(t->decode(Ids{233, 154, 262}, true), "\xEF\xBF\xBD\xEF\xBF\xBD" "e");
}

TEST(TokenizerFixtures, LlamaConfigRebuildsBosEos) {
  // transformers' LlamaTokenizerFast rebuilds the post-processor from
  // add_bos_token / add_eos_token (defaults: true / false).
  std::string tj = read_text(tokenizer_test_dir() + "/fixtures/byte_fallback.json");
  auto make = [&](const std::string& extra) {
    auto t = Tokenizer::from_json_text(
        tj, R"({"tokenizer_class": "LlamaTokenizerFast", "bos_token": "<s>", "eos_token": "</s>")" + extra + "}");
    EXPECT_TRUE(t.ok()) << t.status().to_string();
    return *t;
  };
  EXPECT_EQ(enc(*make(""), "hi"), (Ids{1, 269}));
  EXPECT_EQ(enc(*make(R"(, "add_bos_token": false, "add_eos_token": true)"), "hi"), (Ids{269, 2}));
  EXPECT_EQ(enc(*make(R"(, "add_eos_token": true)"), "hi"), (Ids{1, 269, 2}));
  EXPECT_EQ(enc(*make(R"(, "add_eos_token": true)"), "hi", false), (Ids{269}));
}

TEST(TokenizerFixtures, StreamingByteFallbackNeverSplitsUtf8) {
  auto t = load_fixture("byte_fallback.json");
  std::string text = "hi \xF0\x9F\x98\x80 w\xE6\x97\xA5";
  Ids ids = enc(*t, text);
  StreamDecoder sd(t, /*skip_special=*/true);
  std::string got;
  for (int32_t id : ids) {
    std::string piece = sd.push(id);
    EXPECT_TRUE(piece.find("\xEF\xBF\xBD") == std::string::npos) << "U+FFFD after id " << id;
    got += piece;
  }
  got += sd.flush();
  EXPECT_EQ(got, t->decode(ids, true));
  EXPECT_EQ(got, text);
}

TEST(TokenizerFixtures, StreamingHoldsIncompleteTailUntilFlush) {
  auto t = load_fixture("bytelevel.json");
  // Byte-level ids 230,151 are the first two bytes of 日 (E6 97 A5).
  StreamDecoder sd(t, true);
  EXPECT_EQ(sd.push(104), "h");
  EXPECT_EQ(sd.push(230), "");
  EXPECT_EQ(sd.push(151), "");
  EXPECT_EQ(sd.push(165), "\xE6\x97\xA5");
  EXPECT_EQ(sd.push(230), "");
  // The stream ends inside a character: flush gives what decode gives.
  EXPECT_EQ(sd.flush(), "\xEF\xBF\xBD");
}

TEST(TokenizerFixtures, ConfigTokensAndChatTemplate) {
  auto t = load_fixture("bytelevel.json", "bytelevel_config.json");
  EXPECT_EQ(t->bos_id(), 268);
  EXPECT_EQ(t->eos_id(), 269);
  EXPECT_EQ(t->vocab_size(), 273);
  ASSERT_TRUE(t->has_chat_template());
  nlohmann::json msgs = nlohmann::json::array({{{"role", "user"}, {"content", "  hi "}}});
  auto r = t->apply_chat_template(msgs, true);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(*r, "<user>hi</s><assistant>");
  t->set_chat_template("{% for m in messages %}{{ m.content }}{% endfor %}");
  EXPECT_EQ(*t->apply_chat_template(msgs, false), "  hi ");
  t->set_chat_template("{% for m in messages %}{{ m.content }");
  auto bad = t->apply_chat_template(msgs, false);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("line 1"), std::string::npos) << bad.status().message();
}

TEST(TokenizerFixtures, InvalidUtf8InputIsReplacedLikeFromUtf8Lossy) {
  auto t = load_fixture("bytelevel.json");
  // 0xFF is replaced by U+FFFD (EF BF BD) before tokenization.
  EXPECT_EQ(enc(*t, "a\xFF" "b", false), enc(*t, "a\xEF\xBF\xBD" "b", false));
  // A truncated sequence at the end is one U+FFFD.
  EXPECT_EQ(enc(*t, "a\xE6\x97", false), enc(*t, "a\xEF\xBF\xBD", false));
}

TEST(TokenizerFixtures, MalformedFilesAreErrorsNotCrashes) {
  const char* bad[] = {
      "",
      "[]",
      "{}",
      R"({"model": {"type": "WordPiece", "vocab": {}}})",
      R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["a b"]}})",
      R"({"model": {"type": "BPE", "vocab": {"a": -1}, "merges": []}})",
      R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": [["a"]]}})",
      R"({"model": {"type": "BPE", "vocab": {"a": 0}}, "pre_tokenizer": {"type": "Split", "pattern": {"Regex": "("}}})",
      R"({"model": {"type": "BPE", "vocab": {"a": 0}}, "normalizer": {"type": "Precompiled"}})",
      R"({"model": {"type": "BPE", "vocab": {"a": 0}}, "added_tokens": [{"content": 3}]})",
  };
  for (const char* s : bad) {
    auto t = Tokenizer::from_json_text(s);
    EXPECT_FALSE(t.ok()) << s;
  }
  // Unsupported component: the message names it.
  auto t = Tokenizer::from_json_text(R"({"model": {"type": "BPE", "vocab": {}}, "normalizer": {"type": "Precompiled"}})");
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("Precompiled"), std::string::npos);
}

TEST(TokenizerFixtures, LoadFromDirectoryAndFile) {
  std::string dir = ::testing::TempDir() + "/shardlm_tok_dir";
  std::filesystem::create_directories(dir);
  std::filesystem::copy_file(tokenizer_test_dir() + "/fixtures/bytelevel.json", dir + "/tokenizer.json",
                             std::filesystem::copy_options::overwrite_existing);
  std::filesystem::copy_file(tokenizer_test_dir() + "/fixtures/bytelevel_config.json", dir + "/tokenizer_config.json",
                             std::filesystem::copy_options::overwrite_existing);
  auto a = Tokenizer::load(dir);
  ASSERT_TRUE(a.ok()) << a.status().to_string();
  EXPECT_EQ((*a)->bos_id(), 268);
  auto b = Tokenizer::load(dir + "/tokenizer.json");
  ASSERT_TRUE(b.ok());
  EXPECT_TRUE((*b)->has_chat_template());
  auto missing = Tokenizer::load(dir + "/nope");
  EXPECT_FALSE(missing.ok());
}

}  // namespace
}  // namespace shardlm
