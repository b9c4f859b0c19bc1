// `shardlm inspect`: the model's config and, for each rank of a tp × pp layout,
// the op list after the fusion passes (DESIGN §3.5). Reads only config.json.
#include <cstdio>

#include "cli/commands.h"
#include "cli/default_model.h"
#include "model/decoder_builder.h"
#include "model/model_config.h"

namespace shardlm::cli {
namespace {

struct InspectArgs {
  std::string model;
  int tp = 1, pp = 1;
  int rank = -1;
  bool no_allreduce_fusion = false;
  bool no_fusion = false;
};

int run_inspect(InspectArgs a) {
  auto fail = [](const Status& st) {
    std::fprintf(stderr, "shardlm inspect: error: %s\n", st.to_string().c_str());
    return 1;
  };
  if (a.model.empty()) {
    auto def = default_model_dir();
    if (!def.ok()) return fail(def.status());
    a.model = *def;
  }
  auto cfg = load_model_config(a.model);
  if (!cfg.ok()) return fail(cfg.status());
  const ModelConfig& c = *cfg;
  std::printf("%s: %lld layers, hidden %lld, heads %lld (kv %lld, head_dim %lld), ffn %lld, vocab %lld\n",
              architecture_name(c.arch), (long long)c.num_layers, (long long)c.hidden_size,
              (long long)c.num_heads, (long long)c.num_kv_heads, (long long)c.head_dim,
              (long long)c.intermediate_size, (long long)c.vocab_size);
  graph::PassOptions passes;
  passes.fuse_allreduce = !a.no_allreduce_fusion && !a.no_fusion;
  passes.fuse_add_rmsnorm = !a.no_fusion;
  passes.fuse_rope_attention = !a.no_fusion;
  passes.fuse_linear_silu_mul = !a.no_fusion;
  const int world = a.tp * a.pp;
  for (int r = 0; r < world; ++r) {
    if (a.rank >= 0 && r != a.rank) continue;
    auto m = Mapping::make(r, world, a.tp, a.pp);
    if (!m.ok()) return fail(m.status());
    auto built = build_decoder(c, *m, passes);
    if (!built.ok()) return fail(built.status());
    std::printf("\n%s", built->program.to_string().c_str());
  }
  return 0;
}

}  // namespace

void register_inspect_command(CLI::App& app, CommandRunner* run) {
  auto a = std::make_shared<InspectArgs>();
  auto* sub = app.add_subcommand("inspect", "Print a model's config and each rank's op list after fusion passes");
  sub->add_option("--model,-m", a->model, "HF model directory (default: the embedded default model)");
  sub->add_option("--tp", a->tp, "Tensor-parallel size")->capture_default_str()->check(CLI::PositiveNumber);
  sub->add_option("--pp", a->pp, "Pipeline-parallel size")->capture_default_str()->check(CLI::PositiveNumber);
  sub->add_option("--rank", a->rank, "Print only this rank (default: all)");
  sub->add_flag("--no-allreduce-fusion", a->no_allreduce_fusion, "Keep all-reduces unfused (pass 1 off)");
  sub->add_flag("--no-fusion", a->no_fusion, "Run no fusion pass");
  sub->callback([a, run] { *run = [a] { return run_inspect(*a); }; });
}

}  // namespace shardlm::cli
