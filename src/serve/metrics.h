// Prometheus metrics for the server, named as vLLM names them (so existing
// dashboards work) under a `shardlm:` prefix, written in the text exposition
// format (# HELP / # TYPE, counters ending in _total, histograms as cumulative
// _bucket{le=...} + _sum + _count). A small writer of our own: nothing here
// needs a client library.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "runtime/generation_service.h"

namespace shardlm::serve {

class Histogram {
 public:
  explicit Histogram(std::vector<double> upper_bounds);
  void observe(double v);
  // Appends `name`_bucket / _sum / _count lines with `labels` ("k=\"v\"" list, may be empty).
  void write(std::string& out, const std::string& name, const std::string& labels) const;
  uint64_t count() const { return count_; }

 private:
  std::vector<double> bounds_;
  std::vector<uint64_t> counts_;  // per bucket, not cumulative; last = +Inf
  double sum_ = 0;
  uint64_t count_ = 0;
};

// Per-request figures, recorded once when a request ends.
struct RequestRecord {
  int64_t prompt_tokens = 0;
  int64_t generation_tokens = 0;
  double queue_s = -1;               // < 0: unknown
  double ttft_s = -1;                // < 0: no token came
  std::vector<double> inter_token_s; // one per token after the first
  double e2e_s = 0;
  std::string finished_reason;       // "stop", "length", "abort", "error"
};

class ServerMetrics {
 public:
  explicit ServerMetrics(std::string model_name);
  void record(const RequestRecord& r);
  void count_http_error(int status);
  // The whole exposition; `stats` gives the gauges (running, waiting, KV).
  std::string render(const ServiceStats& stats, bool ready) const;

 private:
  std::string model_name_;
  mutable std::mutex mu_;
  uint64_t prompt_tokens_ = 0, generation_tokens_ = 0;
  std::map<std::string, uint64_t> success_;  // by finished_reason
  std::map<int, uint64_t> http_errors_;      // by status
  Histogram ttft_, itl_, e2e_, queue_, prompt_len_, gen_len_;
};

// Escapes a label value (backslash, quote, newline) for the text format.
std::string prometheus_label_value(const std::string& v);

}  // namespace shardlm::serve
