// `shardlm perplexity`: token-level perplexity of a text file with a sliding
// window, the end-to-end check that every backend and layout must agree on.
// Windows of `window` tokens advance by `stride`; each window scores only the
// tokens no earlier window scored, with the rest as context (the HF
// "perplexity of fixed-length models" recipe), so every token after the first
// is predicted exactly once: ppl = exp(−Σ log p / (N − 1)).
#include <cmath>
#include <condition_variable>
#include <map>
#include <mutex>
#include <cstdio>
#include <fstream>
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

struct PerplexityArgs {
  std::string model;
  std::string file;
  int64_t window = 0;
  int64_t stride = 0;
  bool add_bos = true;
  bool json = false;
  EngineConfig engine;
  DistArgs dist;
  std::string device = "cpu";
  CudaEngineOptions cuda;
  std::string log_level = "warn";
};

int fail(const Status& st) {
  std::fprintf(stderr, "shardlm perplexity: error: %s\n", st.to_string().c_str());
  return 1;
}

// The model's context length from config.json (4096 when it does not say).
int64_t model_max_len(const std::string& dir) {
  auto c = load_model_config(dir);
  return c.ok() && c->max_position_embeddings > 0 ? c->max_position_embeddings : 4096;
}

int run_perplexity(PerplexityArgs a) {
  init_logging(0, a.log_level);
  if (a.model.empty()) {
    auto def = default_model_dir();
    if (!def.ok()) return fail(def.status());
    a.model = *def;
  }
  std::ifstream f(a.file, std::ios::binary);
  if (!f) return fail(make_error(ErrorCode::kNotFound, "cannot read --file {}", a.file));
  std::stringstream ss;
  ss << f.rdbuf();
  auto tok = Tokenizer::load(a.model);
  if (!tok.ok()) return fail(tok.status());
  auto ids_or = (*tok)->encode(ss.str(), a.add_bos);
  if (!ids_or.ok()) return fail(ids_or.status());
  const std::vector<int32_t>& ids = *ids_or;
  if (ids.size() < 2) return fail(make_error(ErrorCode::kInvalidArgument, "{} has fewer than 2 tokens", a.file));

  const int64_t max_len = a.engine.max_model_len > 0 ? a.engine.max_model_len : model_max_len(a.model);
  const int64_t window = a.window > 0 ? std::min(a.window, max_len) : std::min<int64_t>(max_len, 1024);
  const int64_t stride = a.stride > 0 ? std::min(a.stride, window) : std::max<int64_t>(1, window / 2);
  if (window < 2) return fail(make_error(ErrorCode::kInvalidArgument, "--window must be ≥ 2"));

  // The windows: [begin, end) for begin = 0, stride, …, until one reaches n;
  // window w scores the targets at [max(prev_end, begin + 1), end).
  const int64_t n = static_cast<int64_t>(ids.size());
  struct Window {
    int64_t begin, end, first_target;
  };
  std::vector<Window> windows;
  for (int64_t begin = 0, prev_end = 0; begin < n; begin += stride) {
    const int64_t end = std::min(begin + window, n);
    windows.push_back(Window{begin, end, std::max(prev_end, begin + 1)});
    prev_end = end;
    if (end == n) break;
  }

  // Every window is one scoring request (prompt logprobs, one sampled token we
  // ignore); all are submitted at once and batched by the engine.
  auto drive = [&](GenerationService& svc) -> int {
    std::mutex mu;
    std::condition_variable cv;
    std::map<int64_t, std::vector<double>> done;
    std::map<int64_t, size_t> index;
    Status error;
    for (size_t w = 0; w < windows.size(); ++w) {
      GenerationRequest req;
      req.prompt.assign(ids.begin() + windows[w].begin, ids.begin() + windows[w].end);
      req.params.temperature = 0;
      req.params.max_tokens = 1;
      req.params.ignore_eos = true;
      req.want_prompt_logprobs = true;
      req.on_update = [&](const GenerationUpdate& u) {
        if (!u.finished) return;
        std::lock_guard<std::mutex> lk(mu);
        if (!u.error.ok()) error = u.error;
        done[u.id] = u.prompt_logprobs;
        cv.notify_all();
      };
      auto id = svc.submit(std::move(req));
      if (!id.ok()) return fail(id.status());
      std::lock_guard<std::mutex> lk(mu);
      index[*id] = w;
    }
    std::unique_lock<std::mutex> lk(mu);
    cv.wait(lk, [&] { return done.size() == windows.size() || !error.ok(); });
    if (!error.ok()) return fail(error);
    double nll = 0;
    int64_t scored = 0;
    for (auto& [id, lps] : done) {
      const Window& win = windows[index.at(id)];
      // lps[i] = log p(token begin+i+1 | tokens ..begin+i)
      if (static_cast<int64_t>(lps.size()) != win.end - win.begin - 1)
        return fail(make_error(ErrorCode::kInternal, "window at {} returned {} logprobs, expected {}", win.begin,
                               lps.size(), win.end - win.begin - 1));
      for (int64_t t = win.first_target; t < win.end; ++t) {
        nll -= lps[t - win.begin - 1];
        ++scored;
      }
    }
    const double ppl = std::exp(nll / static_cast<double>(scored));
    if (a.json) {
      nlohmann::json j{{"perplexity", ppl}, {"tokens", n}, {"scored_tokens", scored},
                       {"mean_nll", nll / scored}, {"window", window}, {"stride", stride}};
      std::printf("%s\n", j.dump().c_str());
    } else {
      std::printf("perplexity %.4f over %lld tokens (%lld scored; window %lld, stride %lld)\n", ppl,
                  (long long)n, (long long)scored, (long long)window, (long long)stride);
    }
    return 0;
  };

  return run_on_service("perplexity", a.model, a.dist, a.engine, a.device, a.cuda, drive);
}

}  // namespace

void register_perplexity_command(CLI::App& app, CommandRunner* run) {
  auto a = std::make_shared<PerplexityArgs>();
  auto* sub = app.add_subcommand("perplexity", "Token-level perplexity of a text file (sliding window)");
  sub->add_option("--model,-m", a->model, "HF model directory (default: the embedded default model)");
  sub->add_option("--file,-f", a->file, "Text file to score")->required();
  sub->add_option("--window", a->window, "Tokens per window (0 = min(max model len, 1024))")->capture_default_str();
  sub->add_option("--stride", a->stride, "Tokens the window advances by (0 = window / 2)")->capture_default_str();
  sub->add_flag("!--no-bos", a->add_bos, "Do not add the tokenizer's BOS token");
  sub->add_flag("--json", a->json, "Print one JSON object");
  sub->add_option("--max-num-batched-tokens", a->engine.scheduler.max_num_batched_tokens,
                  "Tokens per forward at most (longer windows run in chunks)")->capture_default_str();
  add_dist_flags(sub, &a->dist);
  add_backend_flags(sub, &a->engine, &a->device, &a->cuda);
  sub->add_option("--log-level", a->log_level, "debug, info, warn, error or off")->capture_default_str();
  sub->callback([a, run] { *run = [a] { return run_perplexity(*a); }; });
}

}  // namespace shardlm::cli
