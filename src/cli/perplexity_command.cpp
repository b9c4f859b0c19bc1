// `shardlm perplexity`: token-level perplexity of a text file with a sliding
// window, the end-to-end check that every backend and layout must agree on.
// Windows of `window` tokens advance by `stride`; each window scores only the
// tokens no earlier window scored, with the rest as context (the HF
// "perplexity of fixed-length models" recipe), so every token after the first
// is predicted exactly once: ppl = exp(−Σ log p / (N − 1)).
#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "base/log.h"
#include "cli/commands.h"
#include "cli/default_model.h"
#include "runtime/engine.h"
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
  std::string log_level = "warn";
};

int fail(const Status& st) {
  std::fprintf(stderr, "shardlm perplexity: error: %s\n", st.to_string().c_str());
  return 1;
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

  a.engine.scheduler.max_num_seqs = 1;
  auto engine_or = Engine::create_cpu(a.model, a.engine);
  if (!engine_or.ok()) return fail(engine_or.status());
  Engine& engine = **engine_or;
  const int64_t window = a.window > 0 ? std::min(a.window, engine.max_model_len()) : std::min<int64_t>(engine.max_model_len(), 1024);
  const int64_t stride = a.stride > 0 ? std::min(a.stride, window) : std::max<int64_t>(1, window / 2);
  if (window < 2) return fail(make_error(ErrorCode::kInvalidArgument, "--window must be ≥ 2"));

  const int64_t n = static_cast<int64_t>(ids.size());
  double nll = 0;
  int64_t scored = 0, prev_end = 0;
  for (int64_t begin = 0; begin < n; begin += stride) {
    const int64_t end = std::min(begin + window, n);
    std::vector<int32_t> win(ids.begin() + begin, ids.begin() + end);
    auto lp = engine.score(win);  // lp[i] = log p(win[i+1] | win[..i])
    if (!lp.ok()) return fail(lp.status());
    // Score targets at absolute positions [max(prev_end, begin + 1), end).
    for (int64_t t = std::max(prev_end, begin + 1); t < end; ++t) {
      nll -= (*lp)[t - begin - 1];
      ++scored;
    }
    prev_end = end;
    if (end == n) break;
    if (isatty(fileno(stderr)))
      std::fprintf(stderr, "\rscoring %lld/%lld tokens", (long long)end, (long long)n);
  }
  if (isatty(fileno(stderr))) std::fprintf(stderr, "\n");
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
  sub->add_option("--log-level", a->log_level, "debug, info, warn, error or off")->capture_default_str();
  sub->callback([a, run] { *run = [a] { return run_perplexity(*a); }; });
}

}  // namespace shardlm::cli
