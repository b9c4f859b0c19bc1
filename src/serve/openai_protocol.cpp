// OpenAI request validation and response shapes. Ranges follow the OpenAI API
// reference where it states one (top_p in (0, 1], penalties in [-2, 2],
// logprobs up to 20 as vLLM allows) and vLLM's extensions otherwise (top_k,
// min_p, repetition_penalty, stop_token_ids, ignore_eos, skip_special_tokens).
#include "serve/openai_protocol.h"

#include <fmt/format.h>

#include <cmath>
#include <limits>

namespace shardlm::serve {
namespace {

using json = nlohmann::json;

constexpr int kMaxLogprobs = 20;  // vLLM's default max_logprobs

struct Reader {
  const json& body;
  ApiError* err;
  bool ok = true;

  const json* get(const char* key) const {
    auto it = body.find(key);
    if (it == body.end() || it->is_null()) return nullptr;
    return &*it;
  }
  bool fail(std::string message, const char* param) {
    if (ok) *err = bad_request(std::move(message), param);
    ok = false;
    return false;
  }
  bool number(const char* key, double lo, double hi, bool lo_open, float* out, const char* range_text) {
    const json* v = get(key);
    if (!v) return true;
    if (!v->is_number()) return fail(fmt::format("'{}' must be a number", key), key);
    double d = v->get<double>();
    if (!std::isfinite(d) || d < lo || d > hi || (lo_open && d == lo))
      return fail(fmt::format("'{}' must be {}; got {}", key, range_text, d), key);
    *out = static_cast<float>(d);
    return true;
  }
  bool integer(const char* key, int64_t lo, int64_t hi, int64_t* out, bool* given = nullptr) {
    const json* v = get(key);
    if (!v) return true;
    if (given) *given = true;
    int64_t x;
    if (v->is_number_integer()) {
      x = v->is_number_unsigned() ? static_cast<int64_t>(std::min<uint64_t>(v->get<uint64_t>(), INT64_MAX))
                                  : v->get<int64_t>();
    } else if (v->is_number_float() && std::isfinite(v->get<double>()) && v->get<double>() == std::floor(v->get<double>()) &&
               std::fabs(v->get<double>()) < 9e18) {
      x = static_cast<int64_t>(v->get<double>());
    } else {
      return fail(fmt::format("'{}' must be an integer", key), key);
    }
    if (x < lo || x > hi) {
      if (hi == std::numeric_limits<int64_t>::max())
        return fail(fmt::format("'{}' must be at least {}; got {}", key, lo, x), key);
      return fail(fmt::format("'{}' must be between {} and {}; got {}", key, lo, hi, x), key);
    }
    *out = x;
    return true;
  }
  bool boolean(const char* key, bool* out) {
    const json* v = get(key);
    if (!v) return true;
    if (!v->is_boolean()) return fail(fmt::format("'{}' must be a boolean", key), key);
    *out = v->get<bool>();
    return true;
  }
};

// A message's content as text: a string, or an array of {type: "text", text} parts.
bool content_text(const json& content, std::string* out, std::string* why) {
  if (content.is_null()) return true;
  if (content.is_string()) {
    *out = content.get<std::string>();
    return true;
  }
  if (!content.is_array()) {
    *why = "must be a string or an array of content parts";
    return false;
  }
  for (const auto& part : content) {
    if (!part.is_object() || !part.contains("type") || !part["type"].is_string()) {
      *why = "parts must be objects with a 'type'";
      return false;
    }
    if (part["type"] != "text") {
      *why = fmt::format("part type '{}' is not supported (text only)", part["type"].get<std::string>());
      return false;
    }
    if (!part.contains("text") || !part["text"].is_string()) {
      *why = "a text part needs a string 'text'";
      return false;
    }
    *out += part["text"].get<std::string>();
  }
  return true;
}

bool token_id_array(const json& a, std::vector<int32_t>* out) {
  for (const auto& v : a) {
    if (!v.is_number_integer()) return false;
    int64_t x = v.is_number_unsigned() ? static_cast<int64_t>(std::min<uint64_t>(v.get<uint64_t>(), INT64_MAX))
                                       : v.get<int64_t>();
    if (x < 0 || x > std::numeric_limits<int32_t>::max()) return false;
    out->push_back(static_cast<int32_t>(x));
  }
  return true;
}

}  // namespace

json error_body(const ApiError& e) {
  json err = {{"message", e.message}, {"type", e.type}, {"param", nullptr}, {"code", nullptr}};
  if (!e.param.empty()) err["param"] = e.param;
  if (!e.code.empty()) err["code"] = e.code;
  return json{{"error", err}};
}

ApiError bad_request(std::string message, std::string param) {
  ApiError e;
  e.status = 400;
  e.message = std::move(message);
  e.param = std::move(param);
  return e;
}

ApiError context_length_error(int64_t max_model_len, int64_t prompt_tokens, int64_t max_tokens) {
  ApiError e = bad_request(
      fmt::format("This model's maximum context length is {} tokens. However, you requested {} tokens "
                  "({} in the messages, {} in the completion). Please reduce the length of the messages or completion.",
                  max_model_len, prompt_tokens + max_tokens, prompt_tokens, max_tokens),
      "messages");
  e.code = "context_length_exceeded";
  return e;
}

bool parse_request(Endpoint endpoint, const std::string& body, ParsedRequest* out, ApiError* err) {
  json j = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    *err = bad_request("the request body is not valid JSON");
    return false;
  }
  if (!j.is_object()) {
    *err = bad_request("the request body must be a JSON object");
    return false;
  }
  ParsedRequest& r = *out;
  r = ParsedRequest{};
  r.endpoint = endpoint;
  Reader rd{j, err};

  if (const json* m = rd.get("model")) {
    if (!m->is_string()) return rd.fail("'model' must be a string", "model");
    r.model = m->get<std::string>();
  }
  // Sampling, with OpenAI's defaults (temperature 1, top_p 1).
  SamplingParams& p = r.params;
  p.temperature = 1.0f;
  rd.number("temperature", 0.0, 1e6, false, &p.temperature, "a number >= 0");
  rd.number("top_p", 0.0, 1.0, true, &p.top_p, "in (0, 1]");
  rd.number("min_p", 0.0, 1.0, false, &p.min_p, "in [0, 1]");
  rd.number("presence_penalty", -2.0, 2.0, false, &p.presence_penalty, "in [-2, 2]");
  rd.number("frequency_penalty", -2.0, 2.0, false, &p.frequency_penalty, "in [-2, 2]");
  rd.number("repetition_penalty", 0.0, 1e6, true, &p.repetition_penalty, "> 0");
  int64_t v = 0;
  if (rd.integer("top_k", -1, std::numeric_limits<int32_t>::max(), &v)) p.top_k = static_cast<int32_t>(v < 0 ? 0 : v);
  bool seed_given = false;
  if (rd.integer("seed", std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::max(), &v, &seed_given) &&
      seed_given) {
    p.seed = static_cast<uint64_t>(v);
    p.has_seed = true;
  }
  // max_completion_tokens is the newer name; either one sets the limit.
  for (const char* key : {"max_tokens", "max_completion_tokens"}) {
    bool given = false;
    if (rd.integer(key, 1, std::numeric_limits<int32_t>::max(), &v, &given) && given) {
      p.max_tokens = static_cast<int32_t>(v);
      r.max_tokens_given = true;
    }
  }
  int64_t n = 1;
  if (rd.integer("n", 1, std::numeric_limits<int32_t>::max(), &n) && n != 1)
    rd.fail(fmt::format("'n' must be 1 (only one choice per request is supported); got {}", n), "n");
  int64_t best_of = 1;
  if (rd.integer("best_of", 1, std::numeric_limits<int32_t>::max(), &best_of) && best_of != 1)
    rd.fail("'best_of' must be 1 (only one choice per request is supported)", "best_of");
  bool echo = false;
  if (rd.boolean("echo", &echo) && echo) rd.fail("'echo' is not supported", "echo");
  if (const json* s = rd.get("suffix"); s && !(s->is_string() && s->get<std::string>().empty()))
    rd.fail("'suffix' is not supported", "suffix");
  if (const json* lb = rd.get("logit_bias"); lb && !(lb->is_object() && lb->empty()))
    rd.fail("'logit_bias' is not supported", "logit_bias");

  if (const json* s = rd.get("stop")) {
    if (s->is_string()) {
      if (!s->get<std::string>().empty()) p.stop.push_back(s->get<std::string>());
    } else if (s->is_array()) {
      for (const auto& e : *s) {
        if (!e.is_string()) return rd.fail("'stop' must be a string or an array of strings", "stop");
        if (!e.get<std::string>().empty()) p.stop.push_back(e.get<std::string>());
      }
    } else {
      rd.fail("'stop' must be a string or an array of strings", "stop");
    }
  }
  if (const json* s = rd.get("stop_token_ids")) {
    if (!s->is_array() || !token_id_array(*s, &p.stop_token_ids))
      rd.fail("'stop_token_ids' must be an array of token ids", "stop_token_ids");
  }
  rd.boolean("ignore_eos", &p.ignore_eos);
  rd.boolean("skip_special_tokens", &r.skip_special_tokens);
  rd.boolean("stream", &r.stream);
  if (const json* so = rd.get("stream_options")) {
    if (!so->is_object()) {
      rd.fail("'stream_options' must be an object", "stream_options");
    } else if (!r.stream) {
      rd.fail("'stream_options' is only allowed when 'stream' is true", "stream_options");
    } else if (so->contains("include_usage") && !(*so)["include_usage"].is_null()) {
      if (!(*so)["include_usage"].is_boolean())
        rd.fail("'stream_options.include_usage' must be a boolean", "stream_options");
      else
        r.include_usage = (*so)["include_usage"].get<bool>();
    }
  }
  if (!rd.ok) return false;

  if (endpoint == Endpoint::kCompletions) {
    if (rd.get("logprobs")) {
      if (rd.integer("logprobs", 0, kMaxLogprobs, &v)) r.top_logprobs = static_cast<int32_t>(v);
    }
    const json* prompt = rd.get("prompt");
    if (!prompt) return rd.fail("'prompt' is required", "prompt");
    const json* one = prompt;
    if (prompt->is_array() && !prompt->empty() && (prompt->front().is_string() || prompt->front().is_array())) {
      if (prompt->size() != 1)
        return rd.fail("batched prompts are not supported: give one prompt per request", "prompt");
      one = &prompt->front();
    }
    if (one->is_string()) {
      r.prompt_text = one->get<std::string>();
    } else if (one->is_array()) {
      if (one->empty()) return rd.fail("'prompt' must not be empty", "prompt");
      if (!token_id_array(*one, &r.prompt_ids))
        return rd.fail("'prompt' must be a string, an array of token ids, or an array with one of those", "prompt");
    } else {
      return rd.fail("'prompt' must be a string, an array of token ids, or an array with one of those", "prompt");
    }
  } else {
    bool want_logprobs = false;
    rd.boolean("logprobs", &want_logprobs);
    int64_t top = 0;
    bool top_given = false;
    rd.integer("top_logprobs", 0, kMaxLogprobs, &top, &top_given);
    if (!rd.ok) return false;
    if (top_given && !want_logprobs) return rd.fail("'top_logprobs' requires 'logprobs' to be true", "top_logprobs");
    if (want_logprobs) r.top_logprobs = static_cast<int32_t>(top);
    rd.boolean("add_generation_prompt", &r.add_generation_prompt);
    const json* msgs = rd.get("messages");
    if (!msgs) return rd.fail("'messages' is required", "messages");
    if (!msgs->is_array() || msgs->empty()) return rd.fail("'messages' must be a non-empty array", "messages");
    r.messages = nlohmann::ordered_json::array();
    for (size_t i = 0; i < msgs->size(); ++i) {
      const json& m = (*msgs)[i];
      const std::string where = fmt::format("messages[{}]", i);
      if (!m.is_object()) return rd.fail(where + " must be an object", "messages");
      if (!m.contains("role") || !m["role"].is_string())
        return rd.fail(where + ".role must be a string", "messages");
      std::string text, why;
      if (!content_text(m.contains("content") ? m["content"] : json(), &text, &why))
        return rd.fail(where + ".content " + why, "messages");
      r.messages.push_back({{"role", m["role"].get<std::string>()}, {"content", text}});
    }
  }
  if (!rd.ok) return false;
  if (r.top_logprobs >= 0) p.logprobs = r.top_logprobs;
  return true;
}

void LogprobsAccumulator::append(json& into, const std::vector<TokenLogprobText>& entries) {
  if (into.is_null()) into = empty(endpoint);
  for (const auto& e : entries) {
    if (endpoint == Endpoint::kCompletions) {
      into["tokens"].push_back(e.token);
      into["token_logprobs"].push_back(e.logprob);
      json top = json::object();
      for (const auto& [t, lp] : e.top) top[t] = lp;
      if (!e.top.empty() && !top.contains(e.token)) top[e.token] = e.logprob;  // vLLM includes the chosen one
      into["top_logprobs"].push_back(e.top.empty() ? json(nullptr) : top);
      into["text_offset"].push_back(text_offset);
      text_offset += e.token.size();
    } else {
      auto bytes = [](const std::string& s) {
        json b = json::array();
        for (unsigned char c : s) b.push_back(static_cast<int>(c));
        return b;
      };
      json top = json::array();
      for (const auto& [t, lp] : e.top) top.push_back({{"token", t}, {"logprob", lp}, {"bytes", bytes(t)}});
      into["content"].push_back({{"token", e.token}, {"logprob", e.logprob}, {"bytes", bytes(e.token)}, {"top_logprobs", top}});
    }
  }
}

json LogprobsAccumulator::empty(Endpoint endpoint) {
  if (endpoint == Endpoint::kCompletions)
    return {{"tokens", json::array()}, {"token_logprobs", json::array()}, {"top_logprobs", json::array()},
            {"text_offset", json::array()}};
  return {{"content", json::array()}};
}

json usage_json(int64_t prompt_tokens, int64_t completion_tokens) {
  return {{"prompt_tokens", prompt_tokens},
          {"completion_tokens", completion_tokens},
          {"total_tokens", prompt_tokens + completion_tokens}};
}

json completion_response(const std::string& id, int64_t created, const std::string& model, const std::string& text,
                         const char* finish_reason, const json& logprobs, int64_t prompt_tokens,
                         int64_t completion_tokens) {
  return {{"id", id},
          {"object", "text_completion"},
          {"created", created},
          {"model", model},
          {"choices", json::array({{{"index", 0}, {"text", text}, {"logprobs", logprobs}, {"finish_reason", finish_reason}}})},
          {"usage", usage_json(prompt_tokens, completion_tokens)}};
}

json chat_response(const std::string& id, int64_t created, const std::string& model, const std::string& text,
                   const char* finish_reason, const json& logprobs, int64_t prompt_tokens, int64_t completion_tokens) {
  json msg = {{"role", "assistant"}, {"content", text}};
  return {{"id", id},
          {"object", "chat.completion"},
          {"created", created},
          {"model", model},
          {"choices",
           json::array({{{"index", 0}, {"message", msg}, {"logprobs", logprobs}, {"finish_reason", finish_reason}}})},
          {"usage", usage_json(prompt_tokens, completion_tokens)}};
}

json stream_chunk(Endpoint endpoint, const std::string& id, int64_t created, const std::string& model,
                  const std::string& text, const char* finish_reason, const json& logprobs, bool role_delta,
                  bool include_usage_null) {
  json choice = {{"index", 0}};
  if (endpoint == Endpoint::kCompletions) {
    choice["text"] = text;
  } else {
    json delta = json::object();
    if (role_delta) delta["role"] = "assistant";
    if (role_delta || !text.empty() || !finish_reason) delta["content"] = text;
    choice["delta"] = delta;
  }
  choice["logprobs"] = logprobs;
  choice["finish_reason"] = finish_reason ? json(finish_reason) : json(nullptr);
  json c = {{"id", id},
            {"object", endpoint == Endpoint::kCompletions ? "text_completion" : "chat.completion.chunk"},
            {"created", created},
            {"model", model},
            {"choices", json::array({choice})}};
  if (include_usage_null) c["usage"] = nullptr;
  return c;
}

json usage_chunk(Endpoint endpoint, const std::string& id, int64_t created, const std::string& model,
                 int64_t prompt_tokens, int64_t completion_tokens) {
  return {{"id", id},
          {"object", endpoint == Endpoint::kCompletions ? "text_completion" : "chat.completion.chunk"},
          {"created", created},
          {"model", model},
          {"choices", json::array()},
          {"usage", usage_json(prompt_tokens, completion_tokens)}};
}

const char* openai_finish_reason(FinishReason r) {
  const char* name = finish_reason_name(r);  // OpenAI's names; a request still running reports "stop"
  return *name ? name : "stop";
}

std::string dump_json(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

}  // namespace shardlm::serve
