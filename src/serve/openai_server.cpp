// Request path of a generation call:
//   parse + validate (400) → model name (404) → tokenize / chat template →
//   context check (400, both numbers) → submit to the GenerationService →
//   wait on this request's queue, fed by on_update on the engine thread →
//   write the JSON (or one SSE event per update) → record metrics.
// While waiting, every 50 ms slice checks the client socket (a hang-up aborts
// the request, which frees its KV blocks) and the request/queue timeouts.
// After an abort we still wait for the final update, so the service has
// forgotten the id before this thread returns.
#include "serve/openai_server.h"

#include <chrono>
#include <deque>
#include <random>

#include <fmt/format.h>

#include "base/clock.h"
#include "base/log.h"
#include "serve/openai_protocol.h"
#include "tokenizer/tokenizer.h"

namespace shardlm::serve {
namespace {

using json = nlohmann::json;

constexpr auto kWaitSlice = std::chrono::milliseconds(50);  // disconnect/timeout check period
constexpr double kAbortGraceS = 30;  // after abort(), how long to wait for the final update

int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// What the engine thread hands to the request's HTTP thread.
struct RequestQueue {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<std::pair<GenerationUpdate, double>> updates;  // with arrival time (now_seconds)
  void push(const GenerationUpdate& u) {
    {
      std::lock_guard<std::mutex> lk(mu);
      updates.emplace_back(u, now_seconds());
    }
    cv.notify_one();
  }
};

void send_json(HttpResponseWriter& w, int status, const json& body) {
  w.send(status, "application/json", dump_json(body));
}

}  // namespace

struct OpenAiServer::Impl {
  OpenAiServerConfig config;
  ServerMetrics metrics;
  std::string id_prefix;
  std::atomic<uint64_t> next_id{0};

  mutable std::mutex mu;
  std::condition_variable idle_cv;
  std::shared_ptr<GenerationService> service;  // null while loading
  std::shared_ptr<const Tokenizer> tokenizer;
  bool shutting_down = false;
  int64_t in_flight = 0;

  explicit Impl(OpenAiServerConfig c)
      : config(std::move(c)), metrics(config.served_model_names.empty() ? "" : config.served_model_names[0]) {
    std::random_device rd;
    id_prefix = fmt::format("{:08x}", rd());
  }

  const std::string& model_name() const { return config.served_model_names.at(0); }

  void error(HttpResponseWriter& w, const ApiError& e) {
    metrics.count_http_error(e.status);
    send_json(w, e.status, error_body(e));
  }

  ApiError unavailable(const std::string& why, const char* code) {
    ApiError e;
    e.status = 503;
    e.type = "service_unavailable_error";
    e.message = why;
    e.code = code;
    return e;
  }

  // ---- routes

  void health(HttpResponseWriter& w) {
    std::shared_ptr<GenerationService> svc;
    bool stopping;
    {
      std::lock_guard<std::mutex> lk(mu);
      svc = service;
      stopping = shutting_down;
    }
    if (!svc) return error(w, unavailable("the model is loading", "model_loading"));
    Status st = svc->health();
    if (!st.ok()) return error(w, unavailable("unhealthy: " + st.to_string(), "unhealthy"));
    if (stopping) return error(w, unavailable("the server is shutting down", "shutting_down"));
    w.send(200, "application/json", R"({"status":"ok"})");
  }

  void metrics_route(HttpResponseWriter& w) {
    std::shared_ptr<GenerationService> svc;
    {
      std::lock_guard<std::mutex> lk(mu);
      svc = service;
    }
    ServiceStats s;
    bool ready = false;
    if (svc) {
      s = svc->stats();
      ready = svc->health().ok();
    }
    w.send(200, "text/plain; version=0.0.4; charset=utf-8", metrics.render(s, ready));
  }

  json model_card(const std::string& name, int64_t max_len) {
    return {{"id", name},         {"object", "model"},         {"created", unix_now()},
            {"owned_by", "shardlm"}, {"root", config.model_root}, {"parent", nullptr},
            {"max_model_len", max_len}};
  }

  void models(const HttpRequest& req, HttpResponseWriter& w) {
    std::shared_ptr<GenerationService> svc;
    {
      std::lock_guard<std::mutex> lk(mu);
      svc = service;
    }
    if (!svc) return error(w, unavailable("the model is loading", "model_loading"));
    const int64_t max_len = svc->stats().max_model_len;
    const std::string prefix = "/v1/models/";
    if (req.path.rfind(prefix, 0) == 0) {
      const std::string name = req.path.substr(prefix.size());
      for (const auto& n : config.served_model_names)
        if (n == name) return send_json(w, 200, model_card(n, max_len));
      return error(w, model_not_found(name));
    }
    json data = json::array();
    for (const auto& n : config.served_model_names) data.push_back(model_card(n, max_len));
    send_json(w, 200, {{"object", "list"}, {"data", data}});
  }

  ApiError model_not_found(const std::string& name) {
    ApiError e;
    e.status = 404;
    e.message = fmt::format("The model `{}` does not exist.", name);
    e.param = "model";
    e.code = "model_not_found";
    return e;
  }

  // ---- generation

  void generate(Endpoint endpoint, const HttpRequest& req, HttpResponseWriter& w);
};

void OpenAiServer::Impl::generate(Endpoint endpoint, const HttpRequest& req, HttpResponseWriter& w) {
  const double t_arrival = now_seconds();
  std::shared_ptr<GenerationService> svc;
  std::shared_ptr<const Tokenizer> tok;
  {
    std::lock_guard<std::mutex> lk(mu);
    if (shutting_down) return error(w, unavailable("the server is shutting down", "shutting_down"));
    svc = service;
    tok = tokenizer;
  }
  if (!svc) return error(w, unavailable("the model is loading", "model_loading"));

  ParsedRequest pr;
  ApiError perr;
  if (!parse_request(endpoint, req.body, &pr, &perr)) return error(w, perr);
  if (!pr.model.empty()) {
    bool known = false;
    for (const auto& n : config.served_model_names) known |= n == pr.model;
    if (!known) return error(w, model_not_found(pr.model));
  }

  // Prompt tokens.
  const ServiceStats st = svc->stats();
  std::vector<int32_t> prompt;
  if (endpoint == Endpoint::kChat) {
    if (!tok->has_chat_template())
      return error(w, bad_request("this model has no chat template; use /v1/completions", "messages"));
    auto text = tok->apply_chat_template(pr.messages, pr.add_generation_prompt);
    if (!text.ok()) return error(w, bad_request("chat template failed: " + text.status().message(), "messages"));
    auto ids = tok->encode(*text, /*add_special_tokens=*/false);  // the template writes BOS itself
    if (!ids.ok()) return error(w, bad_request(ids.status().message(), "messages"));
    prompt = std::move(*ids);
  } else if (pr.prompt_text) {
    auto ids = tok->encode(*pr.prompt_text, true);
    if (!ids.ok()) return error(w, bad_request(ids.status().message(), "prompt"));
    prompt = std::move(*ids);
  } else {
    prompt = std::move(pr.prompt_ids);
    for (int32_t id : prompt)
      if (st.vocab_size > 0 && id >= st.vocab_size)
        return error(w, bad_request(fmt::format("token id {} is outside the vocabulary (size {})", id, st.vocab_size),
                                    "prompt"));
  }
  if (prompt.empty()) return error(w, bad_request("the prompt is empty", "prompt"));

  // Context: prompt + completion must fit max_model_len. Defaults: 16 tokens
  // for completions (OpenAI's), the rest of the context for chat (vLLM's).
  const int64_t P = static_cast<int64_t>(prompt.size());
  const int64_t max_len = st.max_model_len;
  if (!pr.max_tokens_given) {
    pr.params.max_tokens = endpoint == Endpoint::kCompletions
                               ? 16
                               : static_cast<int32_t>(std::max<int64_t>(1, max_len - P));
  }
  if (max_len > 0 && (P >= max_len || P + pr.params.max_tokens > max_len))
    return error(w, context_length_error(max_len, P, pr.params.max_tokens));
  if (!pr.params.ignore_eos)
    if (auto eos = tok->eos_id()) pr.params.stop_token_ids.push_back(*eos);

  auto queue = std::make_shared<RequestQueue>();
  auto decoder = std::make_shared<StreamDecoder>(tok, pr.skip_special_tokens);
  GenerationRequest greq;
  greq.prompt = prompt;
  greq.params = pr.params;
  greq.detokenize = [decoder](int32_t id) { return decoder->push(id); };
  greq.on_update = [queue](const GenerationUpdate& u) { queue->push(u); };

  {
    std::lock_guard<std::mutex> lk(mu);
    if (shutting_down) return error(w, unavailable("the server is shutting down", "shutting_down"));
    ++in_flight;
  }
  struct InFlight {  // decrements on every return path
    Impl* self;
    ~InFlight() {
      std::lock_guard<std::mutex> lk(self->mu);
      --self->in_flight;
      self->idle_cv.notify_all();
    }
  } in_flight_guard{this};

  const double t_submit = now_seconds();
  auto sub = svc->submit(std::move(greq));
  if (!sub.ok()) {
    const Status& s = sub.status();
    if (s.code() == ErrorCode::kAborted) return error(w, unavailable(s.message(), "shutting_down"));
    if (s.code() == ErrorCode::kInvalidArgument || s.code() == ErrorCode::kOutOfMemory) {
      ApiError e = bad_request(s.message(), "");
      return error(w, e);
    }
    ApiError e;
    e.status = 500;
    e.type = "server_error";
    e.message = s.to_string();
    return error(w, e);
  }
  const int64_t id = *sub;

  const std::string resp_id =
      fmt::format("{}-{}{}", endpoint == Endpoint::kChat ? "chatcmpl" : "cmpl", id_prefix, next_id.fetch_add(1));
  const int64_t created = unix_now();
  const std::string& model = model_name();
  LogprobsAccumulator lp_acc{endpoint};
  json all_logprobs = pr.top_logprobs >= 0 ? LogprobsAccumulator::empty(endpoint) : json(nullptr);

  auto token_text = [&](int32_t t) { return tok->decode({t}, false); };
  auto logprob_entries = [&](const GenerationUpdate& u) {
    std::vector<TokenLogprobText> v;
    for (const auto& lp : u.new_logprobs) {
      TokenLogprobText e{token_text(lp.token), lp.logprob, {}};
      for (const auto& [t, x] : lp.top) e.top.emplace_back(token_text(t), x);
      if (static_cast<int32_t>(e.top.size()) > pr.top_logprobs) e.top.resize(static_cast<size_t>(std::max(0, pr.top_logprobs)));
      v.push_back(std::move(e));
    }
    return v;
  };

  bool streaming = pr.stream;
  bool client_gone = false;
  if (streaming) {
    if (!w.begin_chunked(200, "text/event-stream", {{"Cache-Control", "no-cache"}})) client_gone = true;
    if (!client_gone && endpoint == Endpoint::kChat) {
      json c = stream_chunk(endpoint, resp_id, created, model, "", nullptr, nullptr, true, pr.include_usage);
      if (!w.write_chunk("data: " + dump_json(c) + "\n\n")) client_gone = true;
    }
  }
  auto sse = [&](const json& j) {
    if (client_gone) return;
    if (!w.write_chunk("data: " + dump_json(j) + "\n\n")) client_gone = true;
  };

  // Wait for updates.
  RequestRecord rec;
  rec.prompt_tokens = P;
  std::string text;
  double last_token_t = -1;
  bool aborted_by_us = false;
  std::optional<ApiError> late_error;  // timeout or engine failure after submit
  GenerationUpdate final_update;
  double abort_deadline = 0;
  for (bool done = false; !done;) {
    std::deque<std::pair<GenerationUpdate, double>> batch;
    {
      std::unique_lock<std::mutex> lk(queue->mu);
      queue->cv.wait_for(lk, kWaitSlice, [&] { return !queue->updates.empty(); });
      batch.swap(queue->updates);
    }
    for (auto& [u, t] : batch) {
      if (!u.new_tokens.empty()) {
        if (rec.ttft_s < 0) {
          rec.ttft_s = t - t_arrival;
          rec.queue_s = t - t_submit;
        } else {
          const double per = (t - last_token_t) / static_cast<double>(u.new_tokens.size());
          for (size_t i = 0; i < u.new_tokens.size(); ++i) rec.inter_token_s.push_back(per);
        }
        last_token_t = t;
      }
      std::string piece = u.new_text;
      if (u.finished && u.reason != FinishReason::kStopString && u.reason != FinishReason::kAborted)
        piece += decoder->flush();  // bytes held for an incomplete UTF-8 sequence
      text += piece;
      std::vector<TokenLogprobText> lps;
      if (pr.top_logprobs >= 0) lps = logprob_entries(u);
      if (!u.error.ok() && !late_error) {
        ApiError e;
        e.status = 500;
        e.type = "server_error";
        e.message = "generation failed: " + u.error.to_string();
        late_error = e;
      }
      if (streaming && !late_error) {
        const bool has_content = !piece.empty() || !lps.empty();
        const char* fr = u.finished ? openai_finish_reason(u.reason) : nullptr;
        if (has_content || fr) {
          json lpj = nullptr;
          if (pr.top_logprobs >= 0) lp_acc.append(lpj, lps);
          sse(stream_chunk(endpoint, resp_id, created, model, piece, fr, lpj, false, pr.include_usage));
        }
      } else if (pr.top_logprobs >= 0) {
        lp_acc.append(all_logprobs, lps);
      }
      if (u.finished) {
        final_update = u;
        done = true;
      }
    }
    if (done) break;
    const double now = now_seconds();
    if (aborted_by_us) {
      if (now > abort_deadline) {  // the service never confirmed: give up on it
        SLOG_ERROR("request {}: no final update {} s after abort", id, kAbortGraceS);
        final_update.reason = FinishReason::kAborted;
        break;
      }
      continue;
    }
    const char* why = nullptr;
    if (streaming ? client_gone || w.peer_closed() : w.peer_closed()) {
      client_gone = true;
      why = "client disconnected";
    } else if (config.request_timeout_s > 0 && now - t_submit > config.request_timeout_s) {
      ApiError e;
      e.status = 408;
      e.type = "timeout_error";
      e.code = "request_timeout";
      e.message = fmt::format("the request did not finish within --request-timeout {} s", config.request_timeout_s);
      late_error = e;
      why = "request timeout";
    } else if (config.queue_timeout_s > 0 && rec.ttft_s < 0 && now - t_submit > config.queue_timeout_s) {
      ApiError e = unavailable(
          fmt::format("the request waited more than --queue-timeout {} s for its first token", config.queue_timeout_s),
          "queue_timeout");
      late_error = e;
      why = "queue timeout";
    }
    if (why) {
      SLOG_DEBUG("request {}: aborting ({})", id, why);
      svc->abort(id);
      aborted_by_us = true;
      abort_deadline = now + kAbortGraceS;
    }
  }

  rec.generation_tokens = final_update.completion_tokens;
  rec.e2e_s = now_seconds() - t_arrival;
  rec.finished_reason = late_error && !client_gone ? "error" : openai_finish_reason(final_update.reason);
  if (final_update.reason == FinishReason::kAborted && !late_error) rec.finished_reason = "abort";
  metrics.record(rec);

  const int64_t prompt_tokens = final_update.prompt_tokens ? final_update.prompt_tokens : P;
  if (streaming) {
    if (late_error) {
      metrics.count_http_error(late_error->status);
      sse(error_body(*late_error));
    } else if (pr.include_usage) {
      sse(usage_chunk(endpoint, resp_id, created, model, prompt_tokens, final_update.completion_tokens));
    }
    if (!client_gone && w.write_chunk("data: [DONE]\n\n")) w.end_chunked();
    return;
  }
  if (client_gone) return w.drop();  // nobody to answer; close the connection
  if (late_error) return error(w, *late_error);
  const char* fr = openai_finish_reason(final_update.reason);
  json body = endpoint == Endpoint::kChat
                  ? chat_response(resp_id, created, model, text, fr, all_logprobs, prompt_tokens,
                                  final_update.completion_tokens)
                  : completion_response(resp_id, created, model, text, fr, all_logprobs, prompt_tokens,
                                        final_update.completion_tokens);
  send_json(w, 200, body);
}

OpenAiServer::OpenAiServer(OpenAiServerConfig config) : impl_(std::make_unique<Impl>(std::move(config))) {}
OpenAiServer::~OpenAiServer() = default;

void OpenAiServer::set_ready(std::shared_ptr<GenerationService> service, std::shared_ptr<const Tokenizer> tokenizer) {
  std::lock_guard<std::mutex> lk(impl_->mu);
  impl_->service = std::move(service);
  impl_->tokenizer = std::move(tokenizer);
}

void OpenAiServer::begin_shutdown() {
  std::lock_guard<std::mutex> lk(impl_->mu);
  impl_->shutting_down = true;
}

bool OpenAiServer::wait_idle(double seconds) {
  std::unique_lock<std::mutex> lk(impl_->mu);
  return impl_->idle_cv.wait_for(lk, std::chrono::duration<double>(seconds), [this] { return impl_->in_flight == 0; });
}

int64_t OpenAiServer::in_flight() const {
  std::lock_guard<std::mutex> lk(impl_->mu);
  return impl_->in_flight;
}

void OpenAiServer::handle(const HttpRequest& req, HttpResponseWriter& w) {
  Impl& s = *impl_;
  const std::string& p = req.path;
  auto method_not_allowed = [&](const char* allowed) {
    ApiError e;
    e.status = 405;
    e.message = fmt::format("method {} is not allowed on {} (use {})", req.method, p, allowed);
    s.error(w, e);
  };
  if (p == "/health" || p == "/healthz") {
    if (req.method != "GET" && req.method != "HEAD") return method_not_allowed("GET");
    return s.health(w);
  }
  if (p == "/metrics") return req.method == "GET" ? s.metrics_route(w) : method_not_allowed("GET");
  if (p == "/version") return req.method == "GET" ? send_json(w, 200, {{"version", "0.1.0"}}) : method_not_allowed("GET");
  if (p == "/v1/models" || p.rfind("/v1/models/", 0) == 0)
    return req.method == "GET" ? s.models(req, w) : method_not_allowed("GET");
  if (p == "/v1/completions")
    return req.method == "POST" ? s.generate(Endpoint::kCompletions, req, w) : method_not_allowed("POST");
  if (p == "/v1/chat/completions")
    return req.method == "POST" ? s.generate(Endpoint::kChat, req, w) : method_not_allowed("POST");
  ApiError e;
  e.status = 404;
  e.type = "not_found_error";
  e.message = fmt::format("no route for {} {}", req.method, p);
  s.error(w, e);
}

}  // namespace shardlm::serve
