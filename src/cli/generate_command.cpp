// `shardlm generate`: one prompt through the engine, text streamed to stdout
// (or one JSON object with --json). Loads the embedded default model when no
// --model is given, so the first command a user types does the main job.
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <map>
#include <mutex>
#include <fstream>
#include <iostream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "base/log.h"
#include "cli/commands.h"
#include "cli/default_model.h"
#include "cli/launcher.h"
#include "runtime/engine.h"
#include "runtime/generation_service.h"
#include "tokenizer/tokenizer.h"

namespace shardlm::cli {
namespace {

struct GenerateArgs {
  std::string model;
  std::string prompt;
  std::string prompt_ids;
  std::string batch_file;
  bool chat = false;
  std::string chat_template;
  SamplingParams sampling;
  std::vector<int32_t> stop_ids;
  bool json = false;
  EngineConfig engine;
  DistArgs dist;
  std::string device = "cpu";
  CudaEngineOptions cuda;
  std::string log_level = "warn";
};

Expected<std::vector<int32_t>> parse_ids(const std::string& text) {
  std::vector<int32_t> ids;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    size_t a = item.find_first_not_of(" \t"), b = item.find_last_not_of(" \t");
    if (a == std::string::npos) return make_error(ErrorCode::kInvalidArgument, "empty token id in '{}'", text);
    item = item.substr(a, b - a + 1);
    char* end = nullptr;
    long v = std::strtol(item.c_str(), &end, 10);
    if (*end != '\0' || v < 0 || v > INT32_MAX)
      return make_error(ErrorCode::kInvalidArgument, "'{}' is not a token id", item);
    ids.push_back(static_cast<int32_t>(v));
  }
  if (ids.empty()) return make_error(ErrorCode::kInvalidArgument, "--prompt-ids is empty");
  return ids;
}

int fail(const Status& st) {
  std::fprintf(stderr, "shardlm generate: error: %s\n", st.to_string().c_str());
  return 1;
}

int run_generate(GenerateArgs a) {
  init_logging(0, a.log_level);
  if (a.model.empty()) {
    auto def = default_model_dir();
    if (!def.ok()) return fail(def.status());
    a.model = *def;
  }
  if ((!a.prompt.empty()) + (!a.prompt_ids.empty()) + (!a.batch_file.empty()) != 1)
    return fail(make_error(ErrorCode::kInvalidArgument, "give exactly one of --prompt, --prompt-ids or --batch-file"));

  // The tokenizer is optional with --prompt-ids (a model dir without tokenizer.json).
  std::shared_ptr<Tokenizer> tok;
  auto t = Tokenizer::load(a.model);
  if (t.ok()) {
    tok = *t;
    if (!a.chat_template.empty()) {
      std::ifstream f(a.chat_template);
      if (!f) return fail(make_error(ErrorCode::kNotFound, "cannot read --chat-template {}", a.chat_template));
      std::stringstream ss;
      ss << f.rdbuf();
      tok->set_chat_template(ss.str());
    }
  } else if (a.prompt_ids.empty()) {
    return fail(t.status().with_context("text prompts need the model's tokenizer"));
  }

  auto encode_text = [&](const std::string& text) -> Expected<std::vector<int32_t>> {
    if (!tok) return make_error(ErrorCode::kInvalidArgument, "text prompts need the model's tokenizer");
    if (!a.chat) return tok->encode(text, true);
    nlohmann::json msgs = nlohmann::json::array({{{"role", "user"}, {"content", text}}});
    SHARDLM_ASSIGN_OR_RETURN(std::string rendered, tok->apply_chat_template(msgs, true));
    return tok->encode(rendered, false);  // the template already holds BOS
  };
  std::vector<std::vector<int32_t>> prompts;
  if (!a.prompt_ids.empty()) {
    auto ids = parse_ids(a.prompt_ids);
    if (!ids.ok()) return fail(ids.status());
    prompts.push_back(*ids);
  } else if (!a.prompt.empty()) {
    auto ids = encode_text(a.prompt);
    if (!ids.ok()) return fail(ids.status());
    prompts.push_back(*ids);
  } else {
    // JSONL: one {"prompt": "..."} or {"prompt_ids": [...]} per line.
    std::ifstream f(a.batch_file);
    if (!f) return fail(make_error(ErrorCode::kNotFound, "cannot read --batch-file {}", a.batch_file));
    std::string line;
    for (int n = 1; std::getline(f, line); ++n) {
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      auto j = nlohmann::json::parse(line, nullptr, false);
      if (j.is_discarded() || !j.is_object())
        return fail(make_error(ErrorCode::kInvalidArgument, "{}:{}: not a JSON object", a.batch_file, n));
      if (j.contains("prompt_ids") && j["prompt_ids"].is_array()) {
        std::vector<int32_t> ids;
        for (auto& v : j["prompt_ids"]) {
          if (!v.is_number_integer())
            return fail(make_error(ErrorCode::kInvalidArgument, "{}:{}: prompt_ids must be integers", a.batch_file, n));
          ids.push_back(v.get<int32_t>());
        }
        prompts.push_back(std::move(ids));
      } else if (j.contains("prompt") && j["prompt"].is_string()) {
        auto ids = encode_text(j["prompt"].get<std::string>());
        if (!ids.ok()) return fail(ids.status());
        prompts.push_back(*ids);
      } else {
        return fail(make_error(ErrorCode::kInvalidArgument, "{}:{}: needs \"prompt\" or \"prompt_ids\"", a.batch_file, n));
      }
    }
    if (prompts.empty()) return fail(make_error(ErrorCode::kInvalidArgument, "{} holds no prompts", a.batch_file));
  }

  a.sampling.stop_token_ids = a.stop_ids;
  if (tok && tok->eos_id()) {
    // The tokenizer's EOS ends generation too (configs sometimes omit it).
    a.sampling.stop_token_ids.push_back(*tok->eos_id());
  }
  if (a.sampling.stop.size() && !tok)
    return fail(make_error(ErrorCode::kInvalidArgument, "--stop needs the model's tokenizer"));

  // Every prompt through whichever service runs the model, all at once
  // (continuous batching). One prompt streams its text as it comes; with
  // --json each request prints one JSON line, in input order.
  auto drive = [&](GenerationService& svc) -> int {
    struct Result {
      std::vector<int32_t> tokens;
      std::vector<TokenLogprob> logprobs;
      std::string text;
      FinishReason reason = FinishReason::kNone;
      bool done = false;
    };
    std::mutex mu;
    std::condition_variable cv;
    std::deque<GenerationUpdate> updates;
    std::map<int64_t, size_t> index;  // request id → prompt index
    std::vector<Result> results(prompts.size());
    const bool stream_text = prompts.size() == 1 && !a.json;
    for (size_t i = 0; i < prompts.size(); ++i) {
      GenerationRequest req;
      req.prompt = prompts[i];
      req.params = a.sampling;
      if (tok) {
        auto stream = std::make_shared<StreamDecoder>(tok, true);
        req.detokenize = [stream](int32_t id) { return stream->push(id); };
      }
      req.on_update = [&](const GenerationUpdate& u) {
        std::lock_guard<std::mutex> lk(mu);
        updates.push_back(u);
        cv.notify_all();
      };
      // Not under `mu`: the service may call on_update while we submit.
      auto id = svc.submit(std::move(req));
      if (!id.ok()) return fail(id.status().with_context("prompt " + std::to_string(i + 1)));
      index[*id] = i;
    }
    for (size_t done = 0; done < prompts.size();) {
      std::unique_lock<std::mutex> lk(mu);
      cv.wait(lk, [&] { return !updates.empty(); });
      GenerationUpdate u = std::move(updates.front());
      updates.pop_front();
      Result& r = results[index.at(u.id)];
      lk.unlock();
      if (!u.error.ok()) return fail(u.error);
      r.tokens.insert(r.tokens.end(), u.new_tokens.begin(), u.new_tokens.end());
      r.logprobs.insert(r.logprobs.end(), u.new_logprobs.begin(), u.new_logprobs.end());
      r.text += u.new_text;
      if (stream_text && !u.new_text.empty()) {
        std::fwrite(u.new_text.data(), 1, u.new_text.size(), stdout);
        std::fflush(stdout);
      }
      if (u.finished) {
        r.reason = u.reason;
        ++done;
      }
    }
    for (size_t i = 0; i < prompts.size(); ++i) {
      const Result& r = results[i];
      if (!a.json) {
        if (stream_text) {
          std::fputc('\n', stdout);
        } else if (tok) {
          std::printf("%s\n", r.text.c_str());
        } else {
          for (size_t k = 0; k < r.tokens.size(); ++k) std::printf("%s%d", k ? "," : "", r.tokens[k]);
          std::printf("\n");
        }
        continue;
      }
      nlohmann::json out;
      out["prompt_token_ids"] = prompts[i];
      out["token_ids"] = r.tokens;
      if (tok) out["text"] = r.text;
      out["finish_reason"] = finish_reason_name(r.reason);
      if (a.sampling.logprobs >= 0) {
        nlohmann::json lps = nlohmann::json::array();
        for (const auto& lp : r.logprobs) {
          nlohmann::json top = nlohmann::json::array();
          for (const auto& [tid, v] : lp.top) top.push_back({{"token_id", tid}, {"logprob", v}});
          lps.push_back({{"token_id", lp.token}, {"logprob", lp.logprob}, {"top_logprobs", top}});
        }
        out["logprobs"] = lps;
      }
      std::cout << out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << std::endl;
    }
    return 0;
  };

  return run_on_service("generate", a.model, a.dist, a.engine, a.device, a.cuda, drive);
}

}  // namespace

void register_generate_command(CLI::App& app, CommandRunner* run) {
  auto a = std::make_shared<GenerateArgs>();
  auto* sub = app.add_subcommand(
      "generate",
      "Generate a continuation of one prompt (text streamed to stdout, or --json).\n"
      "Without --model, uses the embedded default model.");
  sub->add_option("--model,-m", a->model, "HF model directory (config.json, *.safetensors, tokenizer.json)");
  sub->add_option("--prompt,-p", a->prompt, "Prompt text (tokenized with the model's tokenizer)");
  sub->add_option("--prompt-ids", a->prompt_ids, "Prompt as comma-separated token ids, e.g. 1,2,3");
  sub->add_option("--batch-file", a->batch_file,
                  "JSONL file of prompts ({\"prompt\": ...} or {\"prompt_ids\": [...]} per line), run together");
  sub->add_flag("--chat", a->chat, "Wrap the prompt as a user message with the model's chat template");
  sub->add_option("--chat-template", a->chat_template, "Jinja chat template file overriding the tokenizer's");
  sub->add_option("--max-tokens,-n", a->sampling.max_tokens, "Tokens to generate at most")->capture_default_str();
  sub->add_option("--temperature,-t", a->sampling.temperature, "Sampling temperature; 0 = greedy")
      ->capture_default_str()->check(CLI::NonNegativeNumber);
  sub->add_option("--top-k", a->sampling.top_k, "Keep the k most likely tokens (0 = off)")->capture_default_str();
  sub->add_option("--top-p", a->sampling.top_p, "Nucleus sampling mass (1 = off)")
      ->capture_default_str()->check(CLI::Range(0.0f, 1.0f));
  sub->add_option("--min-p", a->sampling.min_p, "Drop tokens below min_p × the top probability (0 = off)")
      ->capture_default_str()->check(CLI::Range(0.0f, 1.0f));
  sub->add_option("--repetition-penalty", a->sampling.repetition_penalty, "HF repetition penalty (1 = off)")
      ->capture_default_str()->check(CLI::PositiveNumber);
  sub->add_option("--presence-penalty", a->sampling.presence_penalty, "OpenAI presence penalty")->capture_default_str();
  sub->add_option("--frequency-penalty", a->sampling.frequency_penalty, "OpenAI frequency penalty")->capture_default_str();
  sub->add_option_function<uint64_t>("--seed", [a](uint64_t s) { a->sampling.seed = s; a->sampling.has_seed = true; },
                                     "Seed of this request's sampler (same seed → same tokens)");
  sub->add_option("--stop", a->sampling.stop, "Stop string (repeatable); not included in the output");
  sub->add_option("--stop-token-ids", a->stop_ids, "Token ids that end generation")->delimiter(',');
  sub->add_flag("--ignore-eos", a->sampling.ignore_eos, "Keep generating past the end-of-sequence token");
  sub->add_option("--logprobs", a->sampling.logprobs, "With --json: logprob of each token and the top-N alternatives");
  sub->add_flag("--json", a->json, "Print one JSON object (token_ids, text, finish_reason, logprobs)");
  sub->add_option("--block-size", a->engine.block_size, "Tokens per KV-cache block")->capture_default_str();
  sub->add_option("--num-kv-blocks", a->engine.num_kv_blocks, "KV-cache blocks (0 = size automatically)")->capture_default_str();
  sub->add_option("--max-num-seqs", a->engine.scheduler.max_num_seqs, "Sequences per step at most")->capture_default_str();
  sub->add_option("--max-num-batched-tokens", a->engine.scheduler.max_num_batched_tokens,
                  "Tokens per step at most (prefill is chunked to fit)")->capture_default_str();
  sub->add_option("--max-model-len", a->engine.max_model_len, "Context length limit (0 = the model's)")->capture_default_str();
  add_dist_flags(sub, &a->dist);
  add_backend_flags(sub, &a->engine, &a->device, &a->cuda);
  sub->add_option("--log-level", a->log_level, "debug, info, warn, error or off")->capture_default_str();
  sub->callback([a, run] { *run = [a] { return run_generate(*a); }; });
}

}  // namespace shardlm::cli
