// `shardlm bench serve`: a load generator for any OpenAI-compatible endpoint
// (ours or vLLM / SGLang / TRT-LLM), measured the way vLLM's benchmark_serving
// measures it, so figures compare:
//   TTFT  arrival of the first non-empty text chunk − send time
//   ITL   gaps between consecutive content chunks
//   TPOT  (e2e − TTFT) / (output tokens − 1), per request
//   E2E   last byte − send time
// Requests are streamed. Load: at most --concurrency in flight (0 = no
// limit), started at --request-rate per second as a Poisson process (inf =
// all at once). Prompts: synthetic (random words, or random token ids for
// completions) of --input-len, or --prompts-file JSONL.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <mutex>
#include <random>
#include <thread>

#include <nlohmann/json.hpp>

#include "base/clock.h"
#include "cli/bench_command.h"
#include "serve/http_client.h"

namespace shardlm::cli {
namespace {

using json = nlohmann::json;

struct BenchArgs {
  std::string base_url = "http://127.0.0.1:8000";
  std::string model;
  std::string endpoint = "completions";
  int concurrency = 0;
  double request_rate = INFINITY;
  int num_prompts = 100;
  int input_len = 128;
  int output_len = 64;
  std::string synthetic = "words";
  std::string prompts_file;
  uint64_t seed = 0;
  bool ignore_eos = true;
  double temperature = 0;
  double timeout_s = 600;
  std::string api_key;
  bool json_stdout = false;
  std::string json_out;
};

struct Prompt {
  json prompt;  // completions: string or ids; chat: messages array
  int max_tokens = 0;
};

struct Outcome {
  bool ok = false;
  std::string error;
  double ttft = 0, e2e = 0;
  std::vector<double> itl;
  int64_t prompt_tokens = 0, output_tokens = 0;
};

// Common English words: synthetic prompts tokenize to about one token per word.
const char* const kWords[] = {
    "the", "of", "and", "to", "in", "is", "that", "for", "it", "as", "was", "with", "be", "by", "on", "not", "he",
    "this", "are", "or", "his", "from", "at", "which", "but", "have", "an", "had", "they", "you", "were", "their",
    "one", "all", "we", "can", "her", "has", "there", "been", "if", "more", "when", "will", "would", "who", "so",
    "no", "she", "other", "its", "may", "these", "what", "them", "than", "some", "him", "time", "into", "only", "do",
    "could", "new", "about", "two", "first", "then", "also", "any", "my", "now", "such", "like", "our", "over",
    "man", "me", "even", "most", "made", "after", "said", "did", "many", "before", "must", "through", "years",
    "where", "much", "your", "way", "well", "down", "should", "because", "each", "just", "those", "people", "how",
    "too", "little", "state", "good", "very", "make", "world", "still", "own", "see", "men", "work", "long", "get",
    "here", "between", "both", "life", "being", "under", "never", "day", "same", "another", "know", "while", "last",
    "might", "us", "great", "old", "year", "off", "come", "since", "against", "go", "came", "right", "used", "take",
    "three", "light", "land", "earth", "water", "house", "king", "word", "heart", "city", "hand", "name", "father"};

Expected<std::vector<Prompt>> make_prompts(const BenchArgs& a) {
  std::vector<Prompt> out;
  if (!a.prompts_file.empty()) {
    std::ifstream f(a.prompts_file);
    if (!f) return make_error(ErrorCode::kNotFound, "cannot read --prompts-file {}", a.prompts_file);
    std::string line;
    int n = 0;
    while (std::getline(f, line) && static_cast<int>(out.size()) < a.num_prompts) {
      ++n;
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      json j = json::parse(line, nullptr, false);
      if (j.is_discarded()) return make_error(ErrorCode::kFormat, "{}:{}: not JSON", a.prompts_file, n);
      Prompt p;
      p.max_tokens = a.output_len;
      json text;
      if (j.is_string()) {
        text = j;
      } else if (j.is_object()) {
        for (const char* k : {"max_tokens", "output_len"})
          if (j.contains(k) && j[k].is_number_integer()) p.max_tokens = j[k].get<int>();
        if (j.contains("messages")) {
          p.prompt = j["messages"];
        } else if (j.contains("prompt")) {
          text = j["prompt"];
        } else {
          return make_error(ErrorCode::kFormat, "{}:{}: needs \"prompt\" or \"messages\"", a.prompts_file, n);
        }
      } else {
        return make_error(ErrorCode::kFormat, "{}:{}: a string or an object per line", a.prompts_file, n);
      }
      if (p.prompt.is_null()) {
        p.prompt = a.endpoint == "chat" ? json::array({{{"role", "user"}, {"content", text}}}) : text;
      }
      out.push_back(std::move(p));
    }
    if (out.empty()) return make_error(ErrorCode::kInvalidArgument, "--prompts-file {} holds no prompts", a.prompts_file);
    return out;
  }
  std::mt19937_64 rng(a.seed);
  const size_t nwords = sizeof(kWords) / sizeof(kWords[0]);
  for (int i = 0; i < a.num_prompts; ++i) {
    Prompt p;
    p.max_tokens = a.output_len;
    if (a.synthetic == "ids") {
      json ids = json::array();
      // Ids 10..999: clear of the special tokens at the bottom of most vocabularies.
      for (int k = 0; k < a.input_len; ++k) ids.push_back(10 + static_cast<int>(rng() % 990));
      p.prompt = ids;
    } else {
      std::string text;
      for (int k = 0; k < a.input_len; ++k) {
        if (k) text += ' ';
        text += kWords[rng() % nwords];
      }
      p.prompt = a.endpoint == "chat" ? json::array({{{"role", "user"}, {"content", text}}}) : json(text);
    }
    out.push_back(std::move(p));
  }
  return out;
}

Outcome run_one(const BenchArgs& a, const serve::HttpUrl& url, const std::string& model, const Prompt& p) {
  Outcome o;
  json body = {{"model", model},
               {"max_tokens", p.max_tokens},
               {"temperature", a.temperature},
               {"stream", true},
               {"stream_options", {{"include_usage", true}}}};
  if (a.ignore_eos) body["ignore_eos"] = true;
  body[a.endpoint == "chat" ? "messages" : "prompt"] = p.prompt;
  serve::HttpCall call;
  call.method = "POST";
  call.path = url.base_path + (a.endpoint == "chat" ? "/chat/completions" : "/completions");
  call.body = body.dump();
  call.headers["Content-Type"] = "application/json";
  call.headers["Accept"] = "text/event-stream";
  if (!a.api_key.empty()) call.headers["Authorization"] = "Bearer " + a.api_key;
  call.timeout_s = a.timeout_s;

  const double t0 = now_seconds();
  double last = -1;
  int64_t chunks = 0;
  std::string pending, error_body;
  bool done = false;
  call.on_data = [&](std::string_view data) {
    pending.append(data);
    size_t e;
    while ((e = pending.find("\n\n")) != std::string::npos) {
      std::string event = pending.substr(0, e);
      pending.erase(0, e + 2);
      if (event.rfind("data:", 0) != 0) continue;
      std::string payload = event.substr(event[5] == ' ' ? 6 : 5);
      if (payload == "[DONE]") {
        done = true;
        continue;
      }
      json j = json::parse(payload, nullptr, false);
      if (j.is_discarded()) continue;
      if (j.contains("error")) {
        error_body = j["error"].dump();
        continue;
      }
      if (j.contains("usage") && j["usage"].is_object()) {
        o.prompt_tokens = j["usage"].value("prompt_tokens", int64_t{0});
        o.output_tokens = j["usage"].value("completion_tokens", int64_t{0});
      }
      if (!j.contains("choices") || j["choices"].empty()) continue;
      const json& c = j["choices"][0];
      std::string text;
      if (c.contains("text") && c["text"].is_string()) text = c["text"];
      if (c.contains("delta") && c["delta"].contains("content") && c["delta"]["content"].is_string())
        text = c["delta"]["content"];
      if (text.empty()) continue;
      const double t = now_seconds();
      if (last < 0) {
        o.ttft = t - t0;
      } else {
        o.itl.push_back(t - last);
      }
      last = t;
      ++chunks;
    }
    return true;
  };
  auto r = serve::http_call(url, call);
  o.e2e = now_seconds() - t0;
  if (!r.ok()) {
    o.error = r.status().to_string();
    return o;
  }
  if (r->status != 200) {
    o.error = "HTTP " + std::to_string(r->status) + ": " + pending;
    return o;
  }
  if (!error_body.empty()) {
    o.error = "stream error: " + error_body;
    return o;
  }
  if (!done || last < 0) {
    o.error = done ? "no tokens in the response" : "stream ended without [DONE]";
    return o;
  }
  if (o.output_tokens == 0) o.output_tokens = chunks;  // server without usage: one token per chunk
  o.ok = true;
  return o;
}

struct Summary {
  double mean = 0, median = 0, p90 = 0, p99 = 0, std = 0;
};

Summary summarize(std::vector<double> v) {
  Summary s;
  if (v.empty()) return s;
  std::sort(v.begin(), v.end());
  double sum = 0;
  for (double x : v) sum += x;
  s.mean = sum / static_cast<double>(v.size());
  double var = 0;
  for (double x : v) var += (x - s.mean) * (x - s.mean);
  s.std = std::sqrt(var / static_cast<double>(v.size()));
  // Linear interpolation between closest ranks (numpy's default percentile).
  auto pct = [&](double q) {
    const double pos = q / 100.0 * static_cast<double>(v.size() - 1);
    const size_t lo = static_cast<size_t>(std::floor(pos)), hi = std::min(lo + 1, v.size() - 1);
    return v[lo] + (v[hi] - v[lo]) * (pos - static_cast<double>(lo));
  };
  s.median = pct(50);
  s.p90 = pct(90);
  s.p99 = pct(99);
  return s;
}

int fail(const Status& st) {
  std::fprintf(stderr, "shardlm bench serve: error: %s\n", st.to_string().c_str());
  return 1;
}

int run_bench_serve(BenchArgs a) {
  if (a.endpoint != "completions" && a.endpoint != "chat")
    return fail(make_error(ErrorCode::kInvalidArgument, "--endpoint must be completions or chat"));
  if (a.synthetic != "words" && a.synthetic != "ids")
    return fail(make_error(ErrorCode::kInvalidArgument, "--synthetic must be words or ids"));
  if (a.synthetic == "ids" && a.endpoint == "chat")
    return fail(make_error(ErrorCode::kInvalidArgument, "--synthetic ids needs --endpoint completions"));
  if (!(a.request_rate > 0)) return fail(make_error(ErrorCode::kInvalidArgument, "--request-rate must be > 0"));
  std::string base = a.base_url;
  if (base.find("/v1") == std::string::npos) base += (base.back() == '/' ? "v1" : "/v1");
  auto url = serve::parse_http_url(base);
  if (!url.ok()) return fail(url.status());

  std::string model = a.model;
  if (model.empty()) {  // the server's first model
    serve::HttpCall c;
    c.path = url->base_path + "/models";
    c.timeout_s = 30;
    if (!a.api_key.empty()) c.headers["Authorization"] = "Bearer " + a.api_key;
    auto r = serve::http_call(*url, c);
    if (!r.ok()) return fail(r.status().with_context("asking " + base + "/models"));
    json j = json::parse(r->body, nullptr, false);
    if (r->status != 200 || j.is_discarded() || !j.contains("data") || j["data"].empty())
      return fail(make_error(ErrorCode::kFormat, "{}/models answered {}: {}; pass --model", base, r->status, r->body));
    model = j["data"][0].value("id", "");
  }
  auto prompts_or = make_prompts(a);
  if (!prompts_or.ok()) return fail(prompts_or.status());
  const std::vector<Prompt>& prompts = *prompts_or;
  const int n = static_cast<int>(prompts.size());

  // Start times: Poisson arrivals (exponential gaps) at request_rate, or all at 0.
  std::vector<double> start(n, 0.0);
  if (std::isfinite(a.request_rate)) {
    std::mt19937_64 rng(a.seed + 1);
    std::exponential_distribution<double> gap(a.request_rate);
    double t = 0;
    for (int i = 0; i < n; ++i) {
      start[i] = t;
      t += gap(rng);
    }
  }
  const int workers = a.concurrency > 0 ? std::min(a.concurrency, n) : n;
  std::vector<Outcome> outcomes(n);
  std::atomic<int> next{0};
  const double t_begin = now_seconds();
  std::vector<std::thread> threads;
  for (int w = 0; w < workers; ++w) {
    threads.emplace_back([&] {
      for (int i; (i = next.fetch_add(1)) < n;) {
        const double wait = t_begin + start[i] - now_seconds();
        if (wait > 0) std::this_thread::sleep_for(std::chrono::duration<double>(wait));
        outcomes[i] = run_one(a, *url, model, prompts[i]);
      }
    });
  }
  for (auto& t : threads) t.join();
  const double duration = now_seconds() - t_begin;

  std::vector<double> ttft, tpot, itl, e2e;
  int64_t in_tok = 0, out_tok = 0;
  int ok = 0;
  std::string first_error;
  for (const auto& o : outcomes) {
    if (!o.ok) {
      if (first_error.empty()) first_error = o.error;
      continue;
    }
    ++ok;
    in_tok += o.prompt_tokens;
    out_tok += o.output_tokens;
    ttft.push_back(o.ttft * 1e3);
    e2e.push_back(o.e2e * 1e3);
    if (o.output_tokens > 1) tpot.push_back((o.e2e - o.ttft) * 1e3 / static_cast<double>(o.output_tokens - 1));
    for (double x : o.itl) itl.push_back(x * 1e3);
  }
  json r = {{"base_url", base},
            {"model", model},
            {"endpoint", a.endpoint},
            {"num_prompts", n},
            {"max_concurrency", a.concurrency > 0 ? json(a.concurrency) : json(nullptr)},
            {"request_rate", std::isfinite(a.request_rate) ? json(a.request_rate) : json("inf")},
            {"completed", ok},
            {"failed", n - ok},
            {"duration", duration},
            {"total_input_tokens", in_tok},
            {"total_output_tokens", out_tok},
            {"request_throughput", ok / duration},
            {"output_throughput", static_cast<double>(out_tok) / duration},
            {"total_token_throughput", static_cast<double>(in_tok + out_tok) / duration}};
  if (!first_error.empty()) r["first_error"] = first_error;
  struct Metric {
    const char* key;
    const char* title;
    const std::vector<double>* v;
  };
  const Metric metrics[] = {{"ttft", "Time to First Token", &ttft},
                            {"tpot", "Time per Output Token (excl. 1st token)", &tpot},
                            {"itl", "Inter-token Latency", &itl},
                            {"e2el", "End-to-end Latency", &e2e}};
  for (const auto& m : metrics) {
    Summary s = summarize(*m.v);
    const std::string k = m.key;
    r["mean_" + k + "_ms"] = s.mean;
    r["median_" + k + "_ms"] = s.median;
    r["std_" + k + "_ms"] = s.std;
    r["p90_" + k + "_ms"] = s.p90;
    r["p99_" + k + "_ms"] = s.p99;
  }

  if (a.json_stdout) {
    std::printf("%s\n", r.dump(2).c_str());
  } else {
    auto row = [](const char* label, const std::string& v) { std::printf("%-40s %14s\n", label, v.c_str()); };
    auto f2 = [](double v) {
      char b[64];
      std::snprintf(b, sizeof b, "%.2f", v);
      return std::string(b);
    };
    std::printf("%s\n", std::string(18, '=').append(" Serving Benchmark Result ").append(18, '=').c_str());
    row("Model:", model);
    row("Endpoint:", a.endpoint);
    row("Successful requests:", std::to_string(ok));
    row("Failed requests:", std::to_string(n - ok));
    row("Maximum request concurrency:", a.concurrency > 0 ? std::to_string(a.concurrency) : "unlimited");
    row("Request rate (req/s):", std::isfinite(a.request_rate) ? f2(a.request_rate) : "inf");
    row("Benchmark duration (s):", f2(duration));
    row("Total input tokens:", std::to_string(in_tok));
    row("Total generated tokens:", std::to_string(out_tok));
    row("Request throughput (req/s):", f2(ok / duration));
    row("Output token throughput (tok/s):", f2(static_cast<double>(out_tok) / duration));
    row("Total token throughput (tok/s):", f2(static_cast<double>(in_tok + out_tok) / duration));
    for (const auto& m : metrics) {
      std::string title = " " + std::string(m.title) + " ";
      const size_t pad = title.size() < 56 ? 56 - title.size() : 0;
      std::printf("%s%s%s\n", std::string(pad / 2, '-').c_str(), title.c_str(), std::string(pad - pad / 2, '-').c_str());
      const std::string k = m.key;
      std::string K = k;
      for (char& c : K) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
      const std::pair<const char*, const char*> stats[] = {{"mean", "Mean"}, {"median", "Median"}, {"p90", "P90"}, {"p99", "P99"}};
      for (const auto& [stat, label] : stats) {
        const std::string text = std::string(label) + " " + K + " (ms):";
        row(text.c_str(), f2(r[std::string(stat) + "_" + k + "_ms"].get<double>()));
      }
    }
    std::printf("%s\n", std::string(62, '=').c_str());
    if (!first_error.empty()) std::printf("first error: %s\n", first_error.c_str());
  }
  if (!a.json_out.empty()) {
    std::ofstream f(a.json_out);
    if (!f) return fail(make_error(ErrorCode::kIo, "cannot write --json-out {}", a.json_out));
    f << r.dump(2) << "\n";
  }
  return ok == n ? 0 : 1;
}

}  // namespace

void register_bench_serve(CLI::App& bench, CommandRunner* run) {
  auto a = std::make_shared<BenchArgs>();
  auto* sub = bench.add_subcommand(
      "serve",
      "Load an OpenAI-compatible server with streamed requests; report TTFT, TPOT, ITL, end-to-end latency\n"
      "(mean / median / p90 / p99) and throughput, as a table or JSON.");
  sub->add_option("--base-url", a->base_url, "Server URL (http://HOST:PORT, /v1 appended when missing)")->capture_default_str();
  sub->add_option("--model", a->model, "Model name to send (default: the server's first /v1/models entry)");
  sub->add_option("--endpoint", a->endpoint, "completions or chat")->capture_default_str();
  sub->add_option("--concurrency,--max-concurrency", a->concurrency, "Requests in flight at most (0 = no limit)")
      ->capture_default_str()->check(CLI::NonNegativeNumber);
  sub->add_option("--request-rate", a->request_rate, "Requests started per second, Poisson (default inf: all at once)");
  sub->add_option("--num-prompts", a->num_prompts, "Requests to send")->capture_default_str()->check(CLI::PositiveNumber);
  sub->add_option("--input-len", a->input_len, "Synthetic prompt length (words or token ids)")->capture_default_str()
      ->check(CLI::PositiveNumber);
  sub->add_option("--output-len", a->output_len, "max_tokens per request")->capture_default_str()->check(CLI::PositiveNumber);
  sub->add_option("--synthetic", a->synthetic, "Synthetic prompts: words (random common words) or ids (random token ids)")
      ->capture_default_str();
  sub->add_option("--prompts-file", a->prompts_file,
                  "JSONL: per line a string, or {\"prompt\": ...} / {\"messages\": [...]} with optional \"max_tokens\"");
  sub->add_option("--seed", a->seed, "Seed for synthetic prompts and arrival times")->capture_default_str();
  sub->add_option("--temperature", a->temperature, "Sampling temperature sent")->capture_default_str();
  sub->add_flag("!--no-ignore-eos", a->ignore_eos,
                "Do not send ignore_eos (vLLM extension that makes every request produce --output-len tokens)");
  sub->add_option("--timeout", a->timeout_s, "Seconds per request before it counts as failed")->capture_default_str();
  sub->add_option("--api-key", a->api_key, "Sent as 'Authorization: Bearer KEY'");
  sub->add_flag("--json", a->json_stdout, "Print the results as JSON instead of the table");
  sub->add_option("--json-out", a->json_out, "Also write the results as JSON to this file");
  sub->callback([a, run] { *run = [a] { return run_bench_serve(*a); }; });
}

}  // namespace shardlm::cli
