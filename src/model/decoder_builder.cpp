#include "model/decoder_builder.h"

#include <cmath>

#include "model/architecture.h"

namespace shardlm {
namespace {

using graph::Op;
using graph::OpKind;
using graph::RowSpace;

struct Builder {
  const ModelConfig& c;
  const Mapping& m;
  BuiltModel out;

  int weight(const std::string& name, WeightRecipe recipe) {
    out.recipes.push_back(std::move(recipe));
    return out.program.add_weight(name);
  }
  static WeightRecipe whole(const std::string& hf, Shape shape) {
    int64_t rows = shape[0];
    return WeightRecipe{{WeightPart{hf, shape, 0, 0, rows}}, 0};
  }
  void op(OpKind kind, int layer, int in, int in2, int outb, std::vector<int> w = {}, float eps = 0) {
    Op o;
    o.kind = kind;
    o.layer = layer;
    o.in = in;
    o.in2 = in2;
    o.out = outb;
    o.weights = std::move(w);
    o.eps = eps;
    out.program.ops.push_back(std::move(o));
  }
};

}  // namespace

Expected<BuiltModel> build_decoder(const ModelConfig& c, const Mapping& m,
                                   const graph::PassOptions& passes) {
  const ArchitectureDef arch = architecture_def(c);
  const int tp = m.tp, tr = m.tp_rank();
  if (c.num_heads % tp != 0)
    return make_error(ErrorCode::kInvalidArgument, "tp = {} does not divide the {} attention heads", tp,
                      c.num_heads);
  if (c.num_kv_heads % tp != 0 && tp % c.num_kv_heads != 0)
    return make_error(ErrorCode::kInvalidArgument,
                      "tp = {} and the {} KV heads: one must divide the other", tp, c.num_kv_heads);
  if (c.num_layers < m.pp)
    return make_error(ErrorCode::kInvalidArgument, "pp = {} exceeds the {} layers", m.pp, c.num_layers);
  if (c.intermediate_size < tp)
    return make_error(ErrorCode::kInvalidArgument, "tp = {} exceeds intermediate size {}", tp,
                      c.intermediate_size);

  Builder b{c, m, {}};
  graph::Program& p = b.out.program;
  p.mapping = m;
  p.hidden = c.hidden_size;
  p.vocab = c.vocab_size;

  const int64_t hd = c.head_dim, H = c.hidden_size;
  const int64_t nq = c.num_heads / tp;
  // KV heads: split when tp divides them, else each rank holds the one its q heads read.
  const int64_t nkv = c.num_kv_heads >= tp ? c.num_kv_heads / tp : 1;
  const int64_t kv_begin = c.num_kv_heads >= tp ? tr * nkv : (int64_t)tr * c.num_kv_heads / tp;
  const Range inter = split_range(c.intermediate_size, tp, tr);
  const int64_t vocab_shard = (c.vocab_size + tp - 1) / tp;  // padded: equal shards for all-gather
  const int64_t v_begin = std::min<int64_t>(c.vocab_size, tr * vocab_shard);
  const int64_t v_end = std::min<int64_t>(c.vocab_size, v_begin + vocab_shard);
  const Range layers = split_range(c.num_layers, m.pp, m.pp_rank());

  p.attn = graph::AttentionShape{nq, nkv, hd, static_cast<float>(1.0 / std::sqrt((double)hd))};
  p.rope = graph::RopeShape{hd, c.rope_theta, c.rope_llama3, c.rope_factor, c.rope_low_freq_factor,
                            c.rope_high_freq_factor, c.rope_original_max_position};
  p.first_layer = static_cast<int>(layers.begin);
  p.num_layers_local = layers.size();

  const int64_t q_width = nq * hd, kv_width = nkv * hd;
  const int h = p.add_buffer("hidden", H);
  const int n = p.add_buffer("normed", H);
  const int qkv = p.add_buffer("qkv", q_width + 2 * kv_width);
  const int attn = p.add_buffer("attn_out", q_width);
  const int o = p.add_buffer("o_proj", H);
  const int gu = p.add_buffer("gate_up", 2 * inter.size());
  const int act = p.add_buffer("act", inter.size());
  const int d = p.add_buffer("down", H);
  const float eps = static_cast<float>(c.rms_norm_eps);

  const Shape embed_shape{c.vocab_size, H};
  if (m.is_first_stage()) {
    WeightRecipe r{{WeightPart{"model.embed_tokens.weight", embed_shape, 0, v_begin, v_end}}, vocab_shard};
    b.op(OpKind::kEmbedding, -1, -1, -1, h, {b.weight("embed_tokens", r)});
  } else {
    p.stage_in = h;
  }

  for (int64_t l = layers.begin; l < layers.end; ++l) {
    const std::string pre = "model.layers." + std::to_string(l) + ".";
    const std::string tag = "layers." + std::to_string(l) + ".";
    const int L = static_cast<int>(l);
    b.op(OpKind::kRMSNorm, L, h, -1, n, {b.weight(tag + "input_layernorm", Builder::whole(pre + "input_layernorm.weight", {H}))}, eps);

    const Shape qs{c.num_heads * hd, H}, kvs{c.num_kv_heads * hd, H};
    WeightRecipe qkv_w{{WeightPart{pre + "self_attn.q_proj.weight", qs, 0, tr * q_width, (tr + 1) * q_width},
                        WeightPart{pre + "self_attn.k_proj.weight", kvs, 0, kv_begin * hd, (kv_begin + nkv) * hd},
                        WeightPart{pre + "self_attn.v_proj.weight", kvs, 0, kv_begin * hd, (kv_begin + nkv) * hd}},
                       0};
    std::vector<int> qkv_ids{b.weight(tag + "qkv_proj", qkv_w)};
    if (arch.qkv_bias) {
      WeightRecipe bias{{WeightPart{pre + "self_attn.q_proj.bias", {c.num_heads * hd}, 0, tr * q_width, (tr + 1) * q_width},
                         WeightPart{pre + "self_attn.k_proj.bias", {c.num_kv_heads * hd}, 0, kv_begin * hd, (kv_begin + nkv) * hd},
                         WeightPart{pre + "self_attn.v_proj.bias", {c.num_kv_heads * hd}, 0, kv_begin * hd, (kv_begin + nkv) * hd}},
                        0};
      qkv_ids.push_back(b.weight(tag + "qkv_proj.bias", bias));
    }
    b.op(OpKind::kLinear, L, n, -1, qkv, qkv_ids);
    if (arch.qk_norm) {
      b.op(OpKind::kHeadRMSNorm, L, qkv, -1, qkv,
           {b.weight(tag + "q_norm", Builder::whole(pre + "self_attn.q_norm.weight", {hd})),
            b.weight(tag + "k_norm", Builder::whole(pre + "self_attn.k_norm.weight", {hd}))},
           eps);
    }
    b.op(OpKind::kRoPE, L, qkv, -1, qkv);
    b.op(OpKind::kAttention, L, qkv, -1, attn);
    // Per layer: Qwen2/3 use the window only from max_window_layers on.
    if (arch.uses_sliding_window && c.layer_uses_sliding_window(l))
      p.ops.back().sliding_window = c.sliding_window;
    WeightRecipe o_w{{WeightPart{pre + "self_attn.o_proj.weight", {H, c.num_heads * hd}, 1, tr * q_width, (tr + 1) * q_width}}, 0};
    b.op(OpKind::kLinear, L, attn, -1, o, {b.weight(tag + "o_proj", o_w)});
    if (tp > 1) b.op(OpKind::kAllReduce, L, o, -1, o);
    b.op(OpKind::kAdd, L, o, -1, h);

    b.op(OpKind::kRMSNorm, L, h, -1, n, {b.weight(tag + "post_attention_layernorm", Builder::whole(pre + "post_attention_layernorm.weight", {H}))}, eps);
    const Shape gs{c.intermediate_size, H};
    WeightRecipe gu_w{{WeightPart{pre + "mlp.gate_proj.weight", gs, 0, inter.begin, inter.end},
                       WeightPart{pre + "mlp.up_proj.weight", gs, 0, inter.begin, inter.end}},
                      0};
    b.op(OpKind::kLinear, L, n, -1, gu, {b.weight(tag + "gate_up_proj", gu_w)});
    b.op(OpKind::kSiLUMul, L, gu, -1, act);
    WeightRecipe down_w{{WeightPart{pre + "mlp.down_proj.weight", {H, c.intermediate_size}, 1, inter.begin, inter.end}}, 0};
    b.op(OpKind::kLinear, L, act, -1, d, {b.weight(tag + "down_proj", down_w)});
    if (tp > 1) b.op(OpKind::kAllReduce, L, d, -1, d);
    b.op(OpKind::kAdd, L, d, -1, h);
  }

  if (m.is_last_stage()) {
    b.op(OpKind::kRMSNorm, -1, h, -1, n, {b.weight("norm", Builder::whole("model.norm.weight", {H}))}, eps);
    const int rows = p.add_buffer("last_normed", H, RowSpace::kLogitRows);
    b.op(OpKind::kGatherRows, -1, n, -1, rows);
    const std::string head = c.tie_word_embeddings ? "model.embed_tokens.weight" : "lm_head.weight";
    WeightRecipe head_w{{WeightPart{head, embed_shape, 0, v_begin, v_end}}, vocab_shard};
    const int head_id = b.weight("lm_head", head_w);
    p.logits_buffer = p.add_buffer("logits", c.vocab_size, RowSpace::kLogitRows);
    if (tp == 1) {
      b.op(OpKind::kLinear, -1, rows, -1, p.logits_buffer, {head_id});
    } else {
      const int local = p.add_buffer("logits_shard", vocab_shard, RowSpace::kLogitRows);
      b.op(OpKind::kLinear, -1, rows, -1, local, {head_id});
      b.op(OpKind::kAllGatherColumns, -1, local, -1, p.logits_buffer);
    }
  } else {
    p.stage_out = h;
  }

  graph::run_fusion_passes(p, passes);
  return std::move(b.out);
}

}  // namespace shardlm
