#include "runtime/warmup.h"

#include <algorithm>
#include <fstream>
#include <sstream>
#include <string>

#include "base/log.h"
#include "runtime/fault_injection.h"

namespace shardlm {
namespace {

std::string join(const std::vector<int64_t>& v) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) s += (i ? "," : "") + std::to_string(v[i]);
  return s;
}

std::vector<int64_t> split(const std::string& s) {
  std::vector<int64_t> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ','))
    if (!item.empty()) out.push_back(std::atoll(item.c_str()));
  return out;
}

// MemAvailable from /proc/meminfo in bytes (0 when unknown: treated as plenty).
int64_t available_host_memory() {
  std::ifstream f("/proc/meminfo");
  std::string key;
  int64_t kb;
  std::string unit;
  while (f >> key >> kb >> unit)
    if (key == "MemAvailable:") return kb * 1024;
  return 0;
}

}  // namespace

std::vector<int64_t> default_warmup_shapes(int64_t max_tokens) {
  std::vector<int64_t> s;
  for (int64_t n = 1; n < max_tokens; n *= 2) s.push_back(n);
  if (max_tokens >= 1) s.push_back(max_tokens);
  return s;
}

std::vector<int64_t> intersect_shapes(const std::vector<std::vector<int64_t>>& per_rank) {
  std::vector<int64_t> out;
  if (per_rank.empty()) return out;
  for (int64_t s : per_rank[0]) {
    bool everywhere = true;
    for (size_t r = 1; r < per_rank.size() && everywhere; ++r)
      everywhere = std::find(per_rank[r].begin(), per_rank[r].end(), s) != per_rank[r].end();
    if (everywhere && std::find(out.begin(), out.end(), s) == out.end()) out.push_back(s);
  }
  return out;
}

Expected<WarmupResult> run_agreed_warmup(DistContext& ctx, PipelineWorker& worker,
                                         const std::vector<int64_t>& my_shapes, int64_t num_kv_blocks,
                                         int64_t block_size, int64_t bytes_per_token) {
  Rendezvous& rv = ctx.rendezvous();
  const Mapping& m = ctx.mapping();
  const int gen = rv.next_sequence("warmup");
  const std::string prefix = "warmup#" + std::to_string(gen) + "/";
  SHARDLM_TRY(rv.set(prefix + std::to_string(m.rank), join(my_shapes)));
  std::vector<std::vector<int64_t>> lists;
  for (int r = 0; r < m.world; ++r) {
    SHARDLM_ASSIGN_OR_RETURN(std::string v, rv.get(prefix + std::to_string(r)));
    lists.push_back(split(v));
  }
  const std::vector<int64_t> shapes = intersect_shapes(lists);
  SLOG_INFO("warmup: {} shapes agreed ({})", shapes.size(), join(shapes));

  WarmupResult result;
  const auto& faults = FaultInjection::get();
  for (int64_t shape : shapes) {
    std::string reason;
    if ((shape + block_size - 1) / block_size > num_kv_blocks) {
      reason = "no batch: the KV cache cannot hold " + std::to_string(shape) + " tokens";
    } else if (faults.low_memory_for(m.rank, shape)) {
      reason = "too little free memory (injected by SHARDLM_FAULT_LOW_MEMORY)";
    } else if (int64_t avail = available_host_memory(); avail > 0 && avail < shape * bytes_per_token) {
      reason = "too little free memory: " + std::to_string(avail) + " bytes available, " +
               std::to_string(shape * bytes_per_token) + " needed";
    }
    float ready = reason.empty() ? 1.0f : 0.0f;
    SHARDLM_TRY(ctx.world().all_reduce(&ready, 1, DType::kF32, ReduceOp::kMin));
    if (ready < 0.5f) {
      if (!reason.empty())
        SLOG_WARN("warmup: skipping shape {} on every rank: this rank ({}) is not ready: {}", shape, m.rank, reason);
      else
        SLOG_WARN("warmup: skipping shape {} on every rank: another rank is not ready", shape);
      result.skipped.push_back(shape);
      continue;
    }
    SHARDLM_TRY(worker.warmup_forward(shape, num_kv_blocks, block_size)
                    .with_context("warmup forward of " + std::to_string(shape) + " tokens"));
    result.ran.push_back(shape);
  }
  SLOG_INFO("warmup done: ran [{}], skipped [{}]", join(result.ran), join(result.skipped));
  return result;
}

}  // namespace shardlm
