// libFuzzer target: parse and render arbitrary chat templates against a fixed
// conversation. Errors are fine; crashes, hangs and runaway memory are not.
#include <cstddef>
#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "fuzz_common.h"
#include "tokenizer/jinja.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const nlohmann::ordered_json ctx = nlohmann::ordered_json::parse(R"({
    "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi <think>x</think>"},
                 {"role": "assistant", "content": "Hello", "tool_calls": [{"function": {"name": "f", "arguments": {"a": 1}}}]}],
    "tools": null, "add_generation_prompt": true, "bos_token": "<s>", "eos_token": "</s>"})");
  std::string src(reinterpret_cast<const char*>(data), size);
  auto t = shardlm::jinja::Template::parse(src);
  if (!t.ok()) {
    FUZZ_CHECK(!t.status().message().empty());
    return 0;
  }
  auto r = (*t)->render(ctx);
  (void)r;
  return 0;
}
