// libFuzzer target: encode arbitrary bytes (invalid UTF-8 included) with the
// hand-made fixtures and a Llama-3-style pre-tokenizer; checks invariants:
//  - encode never fails on any input;
//  - byte-level round trip: decode(encode(x)) == x with invalid bytes replaced;
//  - streaming decode equals the full decode.
// Inputs may be up to 8 KiB (run_fuzz.sh -max_len).
#include <cstddef>
#include <cstdint>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "fuzz_common.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/utf8.h"

namespace {

std::string read(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

struct Tokenizers {
  std::vector<std::shared_ptr<shardlm::Tokenizer>> all;
  std::shared_ptr<shardlm::Tokenizer> roundtrip;  // lossless byte-level tokenizer
  Tokenizers() {
    std::string dir = fuzz_source_dir() + "/tests/tokenizer/fixtures/";
    for (const char* f : {"bytelevel.json", "bytelevel_array_merges.json", "digits_nfc.json", "nfkc_digits_contiguous.json",
                          "byte_fallback.json"}) {
      auto t = shardlm::Tokenizer::from_json_text(read(dir + f));
      FUZZ_CHECK(t.ok());
      all.push_back(*t);
    }
    // The byte-level fixture with Llama-3's Split regex and no added tokens.
    auto j = nlohmann::json::parse(read(dir + "bytelevel.json"));
    j["added_tokens"] = nlohmann::json::array();
    j["post_processor"] = nullptr;
    j["pre_tokenizer"] = nlohmann::json::parse(R"({"type": "Sequence", "pretokenizers": [
      {"type": "Split", "pattern": {"Regex": "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
       "behavior": "Isolated", "invert": false},
      {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}]})");
    auto t = shardlm::Tokenizer::from_json_text(j.dump());
    FUZZ_CHECK(t.ok());
    roundtrip = *t;
    all.push_back(roundtrip);
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static Tokenizers toks;
  std::string input(reinterpret_cast<const char*>(data), size);
  for (const auto& t : toks.all) {
    for (bool special : {true, false}) {
      auto ids = t->encode(input, special);
      FUZZ_CHECK(ids.ok());
      for (bool skip : {false, true}) {
        std::string full = t->decode(*ids, skip);
        // The windowed stream (non-ByteLevel decoders) re-decodes while the text
        // ends in U+FFFD: quadratic on long runs of it, so bound the length here.
        if (!t->byte_level_decoding() && ids->size() > 1500) continue;
        shardlm::StreamDecoder sd(t, skip);
        std::string streamed;
        for (int32_t id : *ids) streamed += sd.push(id);
        streamed += sd.flush();
        FUZZ_CHECK(streamed == full);
      }
      if (t == toks.roundtrip) FUZZ_CHECK(t->decode(*ids, false) == shardlm::utf8::sanitize(input));
    }
  }
  return 0;
}
