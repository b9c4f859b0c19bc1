// Serve layer pieces on their own: request validation, response shapes,
// config files, the Prometheus writer, and the HTTP server + client over
// loopback in front of a scripted GenerationService (so disconnect → abort
// is checked without a model).
#include <gtest/gtest.h>

#include <atomic>
#include <map>
#include <mutex>
#include <thread>

#include <nlohmann/json.hpp>

#include "serve/config_file.h"
#include "serve/http_client.h"
#include "serve/http_server.h"
#include "serve/metrics.h"
#include "serve/openai_protocol.h"
#include "serve/openai_server.h"
#include "tokenizer/tokenizer.h"

namespace shardlm::serve {
namespace {

using json = nlohmann::json;

ParsedRequest parse_ok(Endpoint e, const json& body) {
  ParsedRequest r;
  ApiError err;
  EXPECT_TRUE(parse_request(e, body.dump(), &r, &err)) << err.message;
  return r;
}

ApiError parse_err(Endpoint e, const std::string& body) {
  ParsedRequest r;
  ApiError err;
  EXPECT_FALSE(parse_request(e, body, &r, &err)) << body;
  return err;
}

TEST(OpenAiProtocol, CompletionFieldsMapToSamplingParams) {
  auto r = parse_ok(Endpoint::kCompletions,
                    {{"model", "m"}, {"prompt", "hi"}, {"max_tokens", 7}, {"temperature", 0}, {"top_p", 0.5},
                     {"top_k", -1}, {"min_p", 0.1}, {"seed", 42}, {"stop", "END"}, {"logprobs", 2},
                     {"presence_penalty", 0.5}, {"frequency_penalty", -0.5}, {"repetition_penalty", 1.2},
                     {"stream", true}, {"stream_options", {{"include_usage", true}}}});
  EXPECT_EQ(r.model, "m");
  EXPECT_EQ(*r.prompt_text, "hi");
  EXPECT_TRUE(r.max_tokens_given);
  EXPECT_EQ(r.params.max_tokens, 7);
  EXPECT_EQ(r.params.temperature, 0.0f);
  EXPECT_FLOAT_EQ(r.params.top_p, 0.5f);
  EXPECT_EQ(r.params.top_k, 0);
  EXPECT_TRUE(r.params.has_seed);
  EXPECT_EQ(r.params.seed, 42u);
  EXPECT_EQ(r.params.stop, std::vector<std::string>{"END"});
  EXPECT_EQ(r.params.logprobs, 2);
  EXPECT_FLOAT_EQ(r.params.repetition_penalty, 1.2f);
  EXPECT_TRUE(r.stream);
  EXPECT_TRUE(r.include_usage);

  auto ids = parse_ok(Endpoint::kCompletions, {{"prompt", json::array({json::array({1, 2, 3})})}, {"max_completion_tokens", 3}});
  EXPECT_EQ(ids.prompt_ids, (std::vector<int32_t>{1, 2, 3}));
  EXPECT_EQ(ids.params.max_tokens, 3);
  auto dflt = parse_ok(Endpoint::kCompletions, {{"prompt", "x"}});
  EXPECT_FALSE(dflt.max_tokens_given);
  EXPECT_EQ(dflt.params.temperature, 1.0f);
  EXPECT_EQ(dflt.params.logprobs, -1);
}

TEST(OpenAiProtocol, ChatMessagesAndLogprobs) {
  auto r = parse_ok(Endpoint::kChat, {{"messages", json::array({{{"role", "system"}, {"content", "be brief"}},
                                                                 {{"role", "user"},
                                                                  {"content", json::array({{{"type", "text"}, {"text", "a"}},
                                                                                           {{"type", "text"}, {"text", "b"}}})}}})},
                                      {"logprobs", true},
                                      {"top_logprobs", 3},
                                      {"stop", json::array({"x", "y"})}});
  ASSERT_EQ(r.messages.size(), 2u);
  EXPECT_EQ(r.messages[1]["content"], "ab");
  EXPECT_EQ(r.params.logprobs, 3);
  EXPECT_EQ(r.params.stop.size(), 2u);
  EXPECT_EQ(parse_ok(Endpoint::kChat, {{"messages", json::array({{{"role", "user"}, {"content", "x"}}})}, {"logprobs", true}})
                .params.logprobs,
            0);
}

TEST(OpenAiProtocol, InvalidInputsNameTheParam) {
  EXPECT_EQ(parse_err(Endpoint::kCompletions, "{bad json").param, "");
  EXPECT_EQ(parse_err(Endpoint::kCompletions, "[]").status, 400);
  const std::pair<const char*, const char*> cases[] = {
      {R"({"prompt":"x","temperature":-1})", "temperature"},
      {R"({"prompt":"x","temperature":"1"})", "temperature"},
      {R"({"prompt":"x","top_p":0})", "top_p"},
      {R"({"prompt":"x","top_p":1.01})", "top_p"},
      {R"({"prompt":"x","max_tokens":0})", "max_tokens"},
      {R"({"prompt":"x","max_tokens":1.5})", "max_tokens"},
      {R"({"prompt":"x","max_completion_tokens":-3})", "max_completion_tokens"},
      {R"({"prompt":"x","n":2})", "n"},
      {R"({"prompt":"x","best_of":2})", "best_of"},
      {R"({"prompt":"x","echo":true})", "echo"},
      {R"({"prompt":"x","top_k":-2})", "top_k"},
      {R"({"prompt":"x","logprobs":21})", "logprobs"},
      {R"({"prompt":"x","logprobs":true})", "logprobs"},
      {R"({"prompt":"x","stop":[1]})", "stop"},
      {R"({"prompt":"x","stream_options":{"include_usage":true}})", "stream_options"},
      {R"({"prompt":["a","b"]})", "prompt"},
      {R"({"prompt":[1,-2]})", "prompt"},
      {R"({"prompt":{}})", "prompt"},
      {R"({"model":3,"prompt":"x"})", "model"},
      {R"({"max_tokens":3})", "prompt"},
  };
  for (const auto& [body, param] : cases) {
    ApiError e = parse_err(Endpoint::kCompletions, body);
    EXPECT_EQ(e.status, 400) << body;
    EXPECT_EQ(e.param, param) << body << " → " << e.message;
    EXPECT_EQ(e.type, "invalid_request_error");
    EXPECT_FALSE(e.message.empty());
  }
  EXPECT_EQ(parse_err(Endpoint::kChat, R"({"messages":[]})").param, "messages");
  EXPECT_EQ(parse_err(Endpoint::kChat, R"({"messages":[{"role":"user","content":[{"type":"image_url"}]}]})").param, "messages");
  EXPECT_EQ(parse_err(Endpoint::kChat, R"({"messages":[{"role":"user","content":"x"}],"top_logprobs":1})").param,
            "top_logprobs");
}

TEST(OpenAiProtocol, ContextErrorGivesBothNumbersAndErrorShape) {
  ApiError e = context_length_error(512, 600, 16);
  EXPECT_NE(e.message.find("maximum context length is 512 tokens"), std::string::npos);
  EXPECT_NE(e.message.find("you requested 616 tokens (600 in the messages, 16 in the completion)"), std::string::npos);
  json body = error_body(e);
  EXPECT_EQ(body["error"]["code"], "context_length_exceeded");
  EXPECT_TRUE(body["error"].contains("param"));
  json plain = error_body(bad_request("m"));
  EXPECT_TRUE(plain["error"]["param"].is_null());
  EXPECT_TRUE(plain["error"]["code"].is_null());
}

TEST(OpenAiProtocol, StreamChunksAndLogprobShapes) {
  json c = stream_chunk(Endpoint::kChat, "id", 1, "m", "", nullptr, nullptr, true, true);
  EXPECT_EQ(c["choices"][0]["delta"]["role"], "assistant");
  EXPECT_TRUE(c["usage"].is_null());
  json fin = stream_chunk(Endpoint::kChat, "id", 1, "m", "", "stop", nullptr, false, false);
  EXPECT_EQ(fin["choices"][0]["finish_reason"], "stop");
  EXPECT_FALSE(fin.contains("usage"));
  json u = usage_chunk(Endpoint::kCompletions, "id", 1, "m", 3, 4);
  EXPECT_TRUE(u["choices"].empty());
  EXPECT_EQ(u["usage"]["total_tokens"], 7);

  LogprobsAccumulator acc{Endpoint::kCompletions};
  json lp;
  acc.append(lp, {{"ab", -0.5f, {{"ab", -0.5f}, {"x", -1.0f}}}, {"c", -0.1f, {}}});
  EXPECT_EQ(lp["tokens"], json::array({"ab", "c"}));
  EXPECT_EQ(lp["text_offset"], json::array({0, 2}));
  EXPECT_EQ(lp["top_logprobs"][0].size(), 2u);
  EXPECT_TRUE(lp["top_logprobs"][1].is_null());
  LogprobsAccumulator chat{Endpoint::kChat};
  json clp;
  chat.append(clp, {{"é", -0.5f, {{"é", -0.5f}}}});
  EXPECT_EQ(clp["content"][0]["bytes"], json::array({0xc3, 0xa9}));
}

TEST(ConfigFile, JsonAndYamlishKeysNormalise) {
  auto j = parse_config_text(R"({"tp_size": 2, "--max-num-seqs": 8, "served_model_name": ["a", "b"], "x": true})");
  ASSERT_TRUE(j.ok());
  ASSERT_EQ(j->size(), 4u);
  std::map<std::string, std::vector<std::string>> m;
  for (auto& e : *j) m[e.key] = e.values;
  EXPECT_EQ(m["tp-size"], std::vector<std::string>{"2"});
  EXPECT_EQ(m["max-num-seqs"], std::vector<std::string>{"8"});
  EXPECT_EQ(m["served-model-name"], (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(m["x"], std::vector<std::string>{"true"});

  auto y = parse_config_text("# comment\n---\ntensor_parallel_size: 2   # trailing\nhost = \"127.0.0.1\"\nnames: [a, 'b c']\n\n");
  ASSERT_TRUE(y.ok());
  ASSERT_EQ(y->size(), 3u);
  EXPECT_EQ((*y)[0].key, "tensor-parallel-size");
  EXPECT_EQ((*y)[0].values, std::vector<std::string>{"2"});
  EXPECT_EQ((*y)[1].values, std::vector<std::string>{"127.0.0.1"});
  EXPECT_EQ((*y)[2].values, (std::vector<std::string>{"a", "b c"}));
  EXPECT_FALSE(parse_config_text("just words\n").ok());
  EXPECT_FALSE(parse_config_text("{not json").ok());
}

TEST(Metrics, PrometheusTextFormat) {
  ServerMetrics m("kjv");
  RequestRecord r;
  r.prompt_tokens = 5;
  r.generation_tokens = 3;
  r.ttft_s = 0.03;
  r.queue_s = 0.01;
  r.inter_token_s = {0.02, 0.02};
  r.e2e_s = 0.07;
  r.finished_reason = "length";
  m.record(r);
  ServiceStats s;
  s.kv_blocks_total = 10;
  s.kv_blocks_free = 7;
  s.kv_usage = 0.3;
  std::string text = m.render(s, true);
  for (const char* line : {"# TYPE shardlm:num_requests_running gauge", "# TYPE shardlm:prompt_tokens_total counter",
                           "shardlm:prompt_tokens_total{model_name=\"kjv\"} 5",
                           "shardlm:generation_tokens_total{model_name=\"kjv\"} 3",
                           "shardlm:kv_blocks_free{model_name=\"kjv\"} 7", "shardlm:gpu_cache_usage_perc{model_name=\"kjv\"} 0.3",
                           "# TYPE shardlm:time_to_first_token_seconds histogram",
                           "shardlm:time_to_first_token_seconds_bucket{model_name=\"kjv\",le=\"0.02\"} 0",
                           "shardlm:time_to_first_token_seconds_bucket{model_name=\"kjv\",le=\"0.04\"} 1",
                           "shardlm:time_to_first_token_seconds_bucket{model_name=\"kjv\",le=\"+Inf\"} 1",
                           "shardlm:time_to_first_token_seconds_count{model_name=\"kjv\"} 1",
                           "shardlm:inter_token_latency_seconds_count{model_name=\"kjv\"} 2",
                           "shardlm:request_success_total{model_name=\"kjv\",finished_reason=\"length\"} 1",
                           "shardlm:request_success_total{model_name=\"kjv\",finished_reason=\"abort\"} 0"}) {
    EXPECT_NE(text.find(std::string(line) + "\n"), std::string::npos) << line << "\n" << text;
  }
  EXPECT_EQ(prometheus_label_value("a\"b\\c\n"), "a\\\"b\\\\c\\n");
}

// A GenerationService that emits one token (id 5) every 5 ms per request
// until max_tokens or abort — enough to drive the HTTP path.
class ScriptedService : public GenerationService {
 public:
  ~ScriptedService() override { shutdown(false); }
  Expected<int64_t> submit(GenerationRequest r) override {
    std::lock_guard<std::mutex> lk(mu_);
    const int64_t id = next_++;
    auto flag = std::make_shared<std::atomic<bool>>(false);
    aborted_[id] = flag;
    ++live_;
    threads_.emplace_back([this, id, r = std::move(r), flag] {
      GenerationUpdate u;
      u.id = id;
      u.prompt_tokens = static_cast<int64_t>(r.prompt.size());
      for (int i = 0; i < r.params.max_tokens && !flag->load(); ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
        GenerationUpdate t = u;
        t.new_tokens = {5};
        t.new_text = r.detokenize ? r.detokenize(5) : "";
        t.completion_tokens = i + 1;
        u.completion_tokens = i + 1;
        r.on_update(t);
      }
      u.finished = true;
      u.reason = flag->load() ? FinishReason::kAborted : FinishReason::kLength;
      r.on_update(u);
      std::lock_guard<std::mutex> lk(mu_);
      --live_;
    });
    return id;
  }
  void abort(int64_t id) override {
    std::lock_guard<std::mutex> lk(mu_);
    if (auto it = aborted_.find(id); it != aborted_.end()) {
      it->second->store(true);
      ++aborts_;
    }
  }
  ServiceStats stats() const override {
    std::lock_guard<std::mutex> lk(mu_);
    ServiceStats s;
    s.running = live_;
    s.max_model_len = 512;
    s.vocab_size = 4096;
    return s;
  }
  Status health() const override { return Status::Ok(); }
  void shutdown(bool) override {
    std::vector<std::thread> ts;
    {
      std::lock_guard<std::mutex> lk(mu_);
      for (auto& [_, f] : aborted_) f->store(true);
      ts.swap(threads_);
    }
    for (auto& t : ts) t.join();
  }
  int aborts() const {
    std::lock_guard<std::mutex> lk(mu_);
    return aborts_;
  }
  int live() const {
    std::lock_guard<std::mutex> lk(mu_);
    return live_;
  }

 private:
  mutable std::mutex mu_;
  int64_t next_ = 0;
  int live_ = 0, aborts_ = 0;
  std::map<int64_t, std::shared_ptr<std::atomic<bool>>> aborted_;
  std::vector<std::thread> threads_;
};

class LoopbackServer : public ::testing::Test {
 protected:
  void SetUp() override {
    auto tok = Tokenizer::load(std::string(SHARDLM_SOURCE_DIR) + "/models/kjv");
    ASSERT_TRUE(tok.ok()) << tok.status().to_string();
    OpenAiServerConfig cfg;
    cfg.served_model_names = {"kjv"};
    api_ = std::make_unique<OpenAiServer>(cfg);
    svc_ = std::make_shared<ScriptedService>();
    HttpServerOptions ho;
    ho.host = "127.0.0.1";
    ho.port = 0;
    http_ = std::make_unique<HttpServer>(ho, [this](const HttpRequest& r, HttpResponseWriter& w) { api_->handle(r, w); });
    ASSERT_TRUE(http_->bind().ok());
    thread_ = std::thread([this] { http_->serve(); });
    url_.host = "127.0.0.1";
    url_.port = http_->port();
    api_->set_ready(svc_, *tok);
  }
  void TearDown() override {
    http_->stop_accepting();
    if (thread_.joinable()) thread_.join();
    svc_->shutdown(false);
    http_->wait_no_connections(5);
  }
  Expected<HttpResult> post(const std::string& path, const json& body, std::function<bool(std::string_view)> on_data = {}) {
    HttpCall c;
    c.method = "POST";
    c.path = path;
    c.body = body.dump();
    c.timeout_s = 30;
    c.on_data = std::move(on_data);
    return http_call(url_, c);
  }

  std::unique_ptr<OpenAiServer> api_;
  std::shared_ptr<ScriptedService> svc_;
  std::unique_ptr<HttpServer> http_;
  std::thread thread_;
  HttpUrl url_;
};

TEST_F(LoopbackServer, NonStreamingAndStreamingResponses) {
  auto r = post("/v1/completions", {{"prompt", "hi"}, {"max_tokens", 4}});
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r->status, 200);
  json j = json::parse(r->body);
  EXPECT_EQ(j["usage"]["completion_tokens"], 4);
  EXPECT_EQ(j["choices"][0]["finish_reason"], "length");

  std::string sse;
  auto s = post("/v1/chat/completions",
                {{"messages", json::array({{{"role", "user"}, {"content", "x"}}})}, {"max_tokens", 3}, {"stream", true}},
                [&](std::string_view d) {
                  sse.append(d);
                  return true;
                });
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->headers["content-type"], "text/event-stream");
  EXPECT_NE(sse.find("\"role\":\"assistant\""), std::string::npos);
  EXPECT_EQ(sse.substr(sse.size() - 14), "data: [DONE]\n\n");

  auto bad = post("/v1/completions", {{"prompt", "hi"}, {"model", "nope"}});
  ASSERT_TRUE(bad.ok());
  EXPECT_EQ(bad->status, 404);
  HttpCall g;
  g.path = "/health";
  auto h = http_call(url_, g);
  ASSERT_TRUE(h.ok());
  EXPECT_EQ(h->status, 200);
}

TEST_F(LoopbackServer, ClientHangUpAbortsTheRequest) {
  int events = 0;
  auto r = post("/v1/completions", {{"prompt", "hi"}, {"max_tokens", 400}, {"stream", true}}, [&](std::string_view d) {
    events += static_cast<int>(std::count(d.begin(), d.end(), '\n')) / 2;
    return events < 3;  // hang up after a few events
  });
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(events, 3);
  for (int i = 0; i < 200 && (svc_->aborts() < 1 || svc_->live() > 0); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_EQ(svc_->aborts(), 1);
  EXPECT_EQ(svc_->live(), 0);
  EXPECT_TRUE(api_->wait_idle(5));
}

TEST(HttpClient, ParsesUrls) {
  auto u = parse_http_url("http://localhost:8000/v1/");
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->host, "localhost");
  EXPECT_EQ(u->port, 8000);
  EXPECT_EQ(u->base_path, "/v1");
  auto v6 = parse_http_url("http://[::1]:9");
  ASSERT_TRUE(v6.ok());
  EXPECT_EQ(v6->host, "::1");
  EXPECT_EQ(v6->port, 9);
  EXPECT_FALSE(parse_http_url("https://x").ok());
  EXPECT_FALSE(parse_http_url("localhost:80").ok());
}

}  // namespace
}  // namespace shardlm::serve
