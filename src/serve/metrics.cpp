// Prometheus text exposition (version 0.0.4) for the server's counters, gauges
// and histograms. Histogram bucket bounds follow vLLM's, so panels built for
// vLLM show the same resolution.
#include "serve/metrics.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

namespace shardlm::serve {
namespace {

// vLLM's bucket bounds (seconds / tokens), kept so existing dashboards line up.
const std::vector<double> kTtftBuckets = {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75,
                                          1.0,   2.5,   5.0,  7.5,  10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0};
const std::vector<double> kItlBuckets = {0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2,  0.3,  0.4, 0.5,
                                         0.75, 1.0,   2.5,  5.0,   7.5, 10.0, 20.0, 40.0, 80.0};
const std::vector<double> kLatencyBuckets = {0.3,  0.5,  0.8,  1.0,  1.5,   2.0,   2.5,   5.0,   10.0,   15.0,  20.0,
                                             30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0};
const std::vector<double> kTokenBuckets = {1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000};

std::string num(double v) {
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  if (std::isnan(v)) return "NaN";
  return fmt::format("{}", v);
}

void help_type(std::string& out, const std::string& name, const char* help, const char* type) {
  out += "# HELP " + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
}

}  // namespace

std::string prometheus_label_value(const std::string& v) {
  std::string o;
  for (char c : v) {
    if (c == '\\') o += "\\\\";
    else if (c == '"') o += "\\\"";
    else if (c == '\n') o += "\\n";
    else o += c;
  }
  return o;
}

Histogram::Histogram(std::vector<double> upper_bounds)
    : bounds_(std::move(upper_bounds)), counts_(bounds_.size() + 1, 0) {}

void Histogram::observe(double v) {
  size_t i = std::lower_bound(bounds_.begin(), bounds_.end(), v) - bounds_.begin();  // first bound >= v
  ++counts_[i];
  sum_ += v;
  ++count_;
}

void Histogram::write(std::string& out, const std::string& name, const std::string& labels) const {
  const std::string sep = labels.empty() ? "" : ",";
  uint64_t cum = 0;
  for (size_t i = 0; i <= bounds_.size(); ++i) {
    cum += counts_[i];
    const std::string le = i < bounds_.size() ? num(bounds_[i]) : "+Inf";
    out += name + "_bucket{" + labels + sep + "le=\"" + le + "\"} " + std::to_string(cum) + "\n";
  }
  const std::string l = labels.empty() ? "" : "{" + labels + "}";
  out += name + "_sum" + l + " " + num(sum_) + "\n";
  out += name + "_count" + l + " " + std::to_string(count_) + "\n";
}

ServerMetrics::ServerMetrics(std::string model_name)
    : model_name_(std::move(model_name)),
      ttft_(kTtftBuckets),
      itl_(kItlBuckets),
      e2e_(kLatencyBuckets),
      queue_(kLatencyBuckets),
      prompt_len_(kTokenBuckets),
      gen_len_(kTokenBuckets) {}

void ServerMetrics::record(const RequestRecord& r) {
  std::lock_guard<std::mutex> lk(mu_);
  prompt_tokens_ += static_cast<uint64_t>(std::max<int64_t>(0, r.prompt_tokens));
  generation_tokens_ += static_cast<uint64_t>(std::max<int64_t>(0, r.generation_tokens));
  ++success_[r.finished_reason];
  if (r.ttft_s >= 0) ttft_.observe(r.ttft_s);
  if (r.queue_s >= 0) queue_.observe(r.queue_s);
  for (double d : r.inter_token_s) itl_.observe(d);
  e2e_.observe(r.e2e_s);
  prompt_len_.observe(static_cast<double>(r.prompt_tokens));
  gen_len_.observe(static_cast<double>(r.generation_tokens));
}

void ServerMetrics::count_http_error(int status) {
  std::lock_guard<std::mutex> lk(mu_);
  ++http_errors_[status];
}

std::string ServerMetrics::render(const ServiceStats& s, bool ready) const {
  std::lock_guard<std::mutex> lk(mu_);
  const std::string ml = "model_name=\"" + prometheus_label_value(model_name_) + "\"";
  std::string out;
  auto gauge = [&](const char* n, const char* help, double v) {
    const std::string name = std::string("shardlm:") + n;
    help_type(out, name, help, "gauge");
    out += name + "{" + ml + "} " + num(v) + "\n";
  };
  auto counter = [&](const char* n, const char* help, double v) {
    const std::string name = std::string("shardlm:") + n;
    help_type(out, name, help, "counter");
    out += name + "{" + ml + "} " + num(v) + "\n";
  };
  auto histogram = [&](const char* n, const char* help, const Histogram& h) {
    const std::string name = std::string("shardlm:") + n;
    help_type(out, name, help, "histogram");
    h.write(out, name, ml);
  };

  gauge("ready", "1 once the model is loaded and the engine is healthy.", ready ? 1 : 0);
  gauge("num_requests_running", "Number of requests in model execution batches.", static_cast<double>(s.running));
  gauge("num_requests_waiting", "Number of requests waiting to be processed.", static_cast<double>(s.waiting));
  gauge("gpu_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage (vLLM's name; CPU or GPU).", s.kv_usage);
  gauge("kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", s.kv_usage);
  gauge("kv_blocks_total", "KV-cache blocks in the pool.", static_cast<double>(s.kv_blocks_total));
  gauge("kv_blocks_free", "KV-cache blocks free in the pool.", static_cast<double>(s.kv_blocks_free));
  counter("num_preemptions_total", "Cumulative number of preemptions from the engine.", static_cast<double>(s.preemptions));
  counter("prompt_tokens_total", "Number of prefill tokens processed.", static_cast<double>(prompt_tokens_));
  counter("generation_tokens_total", "Number of generation tokens processed.", static_cast<double>(generation_tokens_));

  {
    const std::string name = "shardlm:request_success_total";
    help_type(out, name, "Count of finished requests by finish reason.", "counter");
    for (const char* reason : {"stop", "length", "abort"}) {  // always present, so rate() has a series
      auto it = success_.find(reason);
      out += name + "{" + ml + ",finished_reason=\"" + reason + "\"} " +
             std::to_string(it == success_.end() ? 0 : it->second) + "\n";
    }
    for (const auto& [reason, n] : success_) {
      if (reason == "stop" || reason == "length" || reason == "abort") continue;
      out += name + "{" + ml + ",finished_reason=\"" + prometheus_label_value(reason) + "\"} " + std::to_string(n) + "\n";
    }
  }
  {
    const std::string name = "shardlm:http_request_errors_total";
    help_type(out, name, "HTTP requests answered with an error status, by status.", "counter");
    for (const auto& [status, n] : http_errors_)
      out += name + "{" + ml + ",status=\"" + std::to_string(status) + "\"} " + std::to_string(n) + "\n";
  }

  histogram("time_to_first_token_seconds", "Histogram of time to first token in seconds.", ttft_);
  histogram("inter_token_latency_seconds", "Histogram of inter-token latency in seconds.", itl_);
  histogram("time_per_output_token_seconds", "Histogram of time per output token in seconds (same as inter_token_latency).", itl_);
  histogram("e2e_request_latency_seconds", "Histogram of end to end request latency in seconds.", e2e_);
  histogram("request_queue_time_seconds",
            "Histogram of time from arrival until the request's first scheduled output (queue wait; includes prefill).",
            queue_);
  histogram("request_prompt_tokens", "Number of prefill tokens processed per request.", prompt_len_);
  histogram("request_generation_tokens", "Number of generation tokens processed per request.", gen_len_);
  return out;
}

}  // namespace shardlm::serve
