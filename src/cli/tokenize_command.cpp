// `shardlm tokenize`: encode text from stdin to ids, decode ids to text, or
// render a conversation with the tokenizer's chat template.
//
//   echo -n "Hello" | shardlm tokenize --tokenizer DIR            -> {"ids": [...]}
//   echo "[9906]"   | shardlm tokenize --tokenizer DIR --decode   -> Hello
//   shardlm tokenize --tokenizer DIR --chat conv.json [--add-generation-prompt]
//   shardlm tokenize --tokenizer DIR --bench < big.txt            -> tokens/s
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <iterator>
#include <sstream>
#include <string>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "tokenizer/tokenizer.h"

namespace shardlm::cli {

namespace {

struct TokenizeOptions {
  std::string tokenizer;
  bool decode = false;
  std::string chat;
  std::string chat_template;
  bool add_generation_prompt = false;
  bool no_special_tokens = false;
  bool skip_special_tokens = false;
  bool bench = false;
};

int fail(const std::string& msg) {
  std::fprintf(stderr, "shardlm tokenize: error: %s\n", msg.c_str());
  return 1;
}

bool read_file(const std::string& path, std::string& out) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return false;
  std::ostringstream ss;
  ss << f.rdbuf();
  out = ss.str();
  return true;
}

std::string read_stdin() {
  std::ios::sync_with_stdio(false);
  return std::string(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
}

void write_stdout(const std::string& s) {
  std::fwrite(s.data(), 1, s.size(), stdout);
  std::fflush(stdout);
}

int run_tokenize(const TokenizeOptions& o) {
  auto loaded = Tokenizer::load(o.tokenizer);
  if (!loaded.ok()) return fail(loaded.status().to_string());
  std::shared_ptr<Tokenizer> tok = *loaded;
  if (!o.chat_template.empty()) {
    std::string tpl;
    if (!read_file(o.chat_template, tpl)) return fail("cannot read chat template " + o.chat_template);
    tok->set_chat_template(std::move(tpl));
  }

  if (!o.chat.empty()) {
    std::string text;
    if (!read_file(o.chat, text)) return fail("cannot read " + o.chat);
    auto j = nlohmann::ordered_json::parse(text, nullptr, false);
    if (j.is_discarded()) return fail(o.chat + " is not valid JSON");
    // Either [messages...] or {"messages": [...], "add_generation_prompt": bool, other template kwargs}.
    nlohmann::ordered_json messages, extra = nlohmann::ordered_json::object();
    bool gen = o.add_generation_prompt;
    if (j.is_array()) {
      messages = j;
    } else if (j.is_object() && j.contains("messages")) {
      for (auto it = j.begin(); it != j.end(); ++it) {
        if (it.key() == "messages") messages = it.value();
        else if (it.key() == "add_generation_prompt" && it.value().is_boolean()) gen = gen || it.value().get<bool>();
        else extra[it.key()] = it.value();
      }
    } else {
      return fail(o.chat + ": expected a JSON array of messages or an object with \"messages\"");
    }
    auto r = tok->apply_chat_template(messages, gen, extra);
    if (!r.ok()) return fail(r.status().to_string());
    write_stdout(*r);
    return 0;
  }

  std::string input = read_stdin();
  if (o.decode) {
    auto j = nlohmann::json::parse(input, nullptr, false);
    if (!j.is_discarded() && j.is_object() && j.contains("ids")) j = j["ids"];
    if (j.is_discarded() || !j.is_array()) return fail("--decode expects a JSON array of ids on stdin");
    std::vector<int32_t> ids;
    for (const auto& v : j) {
      if (!v.is_number_integer()) return fail("--decode: every id must be an integer");
      ids.push_back(v.get<int32_t>());
    }
    write_stdout(tok->decode(ids, o.skip_special_tokens));
    return 0;
  }

  if (o.bench) {
    if (input.empty()) return fail("--bench encodes the text on stdin; it was empty");
    tok->clear_merge_cache();
    auto t0 = std::chrono::steady_clock::now();
    auto ids = tok->encode(input, !o.no_special_tokens);
    auto t1 = std::chrono::steady_clock::now();
    if (!ids.ok()) return fail(ids.status().to_string());
    auto again = tok->encode(input, !o.no_special_tokens);
    auto t2 = std::chrono::steady_clock::now();
    double cold = std::chrono::duration<double>(t1 - t0).count();
    double warm = std::chrono::duration<double>(t2 - t1).count();
    nlohmann::json out = {{"bytes", input.size()},
                          {"tokens", ids->size()},
                          {"cold_seconds", cold},
                          {"cold_tokens_per_s", ids->size() / cold},
                          {"warm_seconds", warm},
                          {"warm_tokens_per_s", ids->size() / warm}};
    write_stdout(out.dump() + "\n");
    return 0;
  }

  auto ids = tok->encode(input, !o.no_special_tokens);
  if (!ids.ok()) return fail(ids.status().to_string());
  nlohmann::json out = {{"ids", *ids}};
  write_stdout(out.dump() + "\n");
  return 0;
}

}  // namespace

void register_tokenize_command(CLI::App& app, CommandRunner* run) {
  auto opts = std::make_shared<TokenizeOptions>();
  auto* sub = app.add_subcommand("tokenize",
                                 "Encode stdin text to {\"ids\": [...]}, decode ids (--decode), or render a chat "
                                 "(--chat) with a Hugging Face tokenizer");
  sub->add_option("--tokenizer", opts->tokenizer,
                  "tokenizer.json, or a directory with tokenizer.json (+ tokenizer_config.json)")
      ->required();
  sub->add_flag("--decode", opts->decode, "read a JSON array of ids on stdin and print the text");
  sub->add_option("--chat", opts->chat,
                  "render this conversation (JSON array of {role, content}, or {\"messages\": [...], ...})");
  sub->add_option("--chat-template", opts->chat_template, "use this Jinja file instead of the tokenizer's template");
  sub->add_flag("--add-generation-prompt", opts->add_generation_prompt,
                "with --chat: end with the assistant prompt");
  sub->add_flag("--no-special-tokens", opts->no_special_tokens,
                "encode without the post-processor's special tokens (BOS/EOS)");
  sub->add_flag("--skip-special-tokens", opts->skip_special_tokens, "with --decode: leave special tokens out");
  sub->add_flag("--bench", opts->bench, "encode stdin twice (cold and warm merge cache) and print tokens/s");
  sub->callback([run, opts] { *run = [opts] { return run_tokenize(*opts); }; });
}

}  // namespace shardlm::cli
