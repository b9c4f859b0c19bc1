// libFuzzer target: tokenizer.json loading (arbitrary bytes as the file), then
// a few encodes and decodes with whatever loaded. Must never crash.
#include <cstddef>
#include <cstdint>
#include <string>

#include "fuzz_common.h"
#include "tokenizer/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string text(reinterpret_cast<const char*>(data), size);
  // Optionally split off a tokenizer_config.json after a NUL byte.
  std::string config;
  if (size_t nul = text.find('\0'); nul != std::string::npos) {
    config = text.substr(nul + 1);
    text.resize(nul);
  }
  auto tok = shardlm::Tokenizer::from_json_text(text, config);
  if (!tok.ok()) return 0;
  const auto& t = *tok;
  for (const char* s : {"hello world", "  <s>x</s> 123 \xE6\x97\xA5\xFF", "", "\n\n a"}) {
    auto ids = t->encode(s, true);
    FUZZ_CHECK(ids.ok() || !ids.status().message().empty());
    if (!ids.ok()) continue;
    std::string full = t->decode(*ids, false);
    shardlm::StreamDecoder sd(t, false);
    std::string streamed;
    for (int32_t id : *ids) streamed += sd.push(id);
    streamed += sd.flush();
    (void)full;
  }
  std::vector<int32_t> some = {0, 1, 2, 3, -1, 1000000, static_cast<int32_t>(t->vocab_size()) - 1};
  (void)t->decode(some, true);
  (void)t->bos_id();
  (void)t->eos_id();
  if (t->has_chat_template()) {
    nlohmann::json msgs = nlohmann::json::array({{{"role", "user"}, {"content", "hi"}}});
    (void)t->apply_chat_template(msgs, true);
  }
  return 0;
}
