// Fusion passes on the op lists the decoder builder emits (DESIGN §3.5):
// the expected fused ops appear for each layout and nothing fusable is left.
#include <gtest/gtest.h>

#include <algorithm>

#include "graph/passes.h"
#include "model/decoder_builder.h"

namespace shardlm {
namespace {

using graph::OpKind;

ModelConfig small_config() {
  ModelConfig c;
  c.vocab_size = 100;
  c.hidden_size = 32;
  c.intermediate_size = 64;
  c.num_layers = 4;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.head_dim = 8;
  c.max_position_embeddings = 128;
  return c;
}

int count(const graph::Program& p, OpKind k) {
  return static_cast<int>(std::count_if(p.ops.begin(), p.ops.end(), [&](const auto& op) { return op.kind == k; }));
}

// No add directly followed by an rmsnorm of its output may survive the passes.
void expect_nothing_left_unfused(const graph::Program& p) {
  for (size_t i = 0; i + 1 < p.ops.size(); ++i)
    EXPECT_FALSE(p.ops[i].kind == OpKind::kAdd && p.ops[i + 1].kind == OpKind::kRMSNorm &&
                 p.ops[i + 1].in == p.ops[i].out)
        << "unfused add+rmsnorm at op " << i << "\n" << p.to_string();
}

graph::Program build(int rank, int tp, int pp, graph::PassOptions opt = {}) {
  auto m = Mapping::make(rank, tp * pp, tp, pp);
  EXPECT_TRUE(m.ok());
  auto b = build_decoder(small_config(), *m, opt);
  EXPECT_TRUE(b.ok()) << b.status().to_string();
  return b->program;
}

TEST(FusionPasses, SingleRankFusesAddRmsNorm) {
  auto p = build(0, 1, 1);
  // 4 layers: attn add→post norm (4) + mlp add→next input norm (3) + last add→final norm (1).
  EXPECT_EQ(count(p, OpKind::kAddRMSNorm), 8);
  EXPECT_EQ(count(p, OpKind::kAllReduceAddRMSNorm), 0);
  EXPECT_EQ(count(p, OpKind::kAdd), 0);
  EXPECT_EQ(count(p, OpKind::kRMSNorm), 1);  // the first layer's input norm has no add before it
  expect_nothing_left_unfused(p);
}

TEST(FusionPasses, TensorParallelFusesAllReduce) {
  auto p = build(1, 2, 1);
  EXPECT_EQ(count(p, OpKind::kAllReduceAddRMSNorm), 8);
  EXPECT_EQ(count(p, OpKind::kAllReduce), 0);
  EXPECT_EQ(count(p, OpKind::kAddRMSNorm), 0);
  EXPECT_EQ(count(p, OpKind::kAllGatherColumns), 1);
  expect_nothing_left_unfused(p);
}

TEST(FusionPasses, PipelineOnlyUsesFallback) {
  // Stage 0 of 2: layers 0-1, ends with an add whose norm is on the next stage.
  auto s0 = build(0, 1, 2);
  EXPECT_EQ(count(s0, OpKind::kAddRMSNorm), 3);
  EXPECT_EQ(count(s0, OpKind::kAdd), 1);
  EXPECT_EQ(s0.ops.back().kind, OpKind::kAdd);
  EXPECT_GE(s0.stage_out, 0);
  auto s1 = build(1, 1, 2);
  EXPECT_EQ(s1.ops.front().kind, OpKind::kRMSNorm);
  EXPECT_EQ(count(s1, OpKind::kAddRMSNorm), 4);
  EXPECT_EQ(count(s1, OpKind::kAllReduceAddRMSNorm), 0);
  expect_nothing_left_unfused(s0);
  expect_nothing_left_unfused(s1);
}

TEST(FusionPasses, AllReduceFusionSwitchedOff) {
  graph::PassOptions opt;
  opt.fuse_allreduce = false;
  auto p = build(0, 2, 1, opt);
  // All-reduces stay; the fallback still fuses each add with its norm.
  EXPECT_EQ(count(p, OpKind::kAllReduce), 8);
  EXPECT_EQ(count(p, OpKind::kAddRMSNorm), 8);
  EXPECT_EQ(count(p, OpKind::kAllReduceAddRMSNorm), 0);
  expect_nothing_left_unfused(p);
}

TEST(FusionPasses, OneLayerOptedOutKeepsItsAllReduce) {
  // An attention-data-parallel-like layer: its all-reduce must not fuse, the
  // fallback must still fuse its add+norm, and other layers fuse fully.
  auto m = Mapping::make(0, 2, 2, 1);
  auto b = build_decoder(small_config(), *m, graph::PassOptions{false, false});
  ASSERT_TRUE(b.ok());
  graph::Program p = b->program;
  for (auto& op : p.ops)
    if (op.kind == OpKind::kAllReduce && op.layer == 2) op.fused_allreduce_disabled = true;
  auto stats = graph::run_fusion_passes(p);
  EXPECT_EQ(stats.allreduce_add_rmsnorm, 6);
  EXPECT_EQ(stats.add_rmsnorm, 2);
  EXPECT_EQ(count(p, OpKind::kAllReduce), 2);
  expect_nothing_left_unfused(p);
}

TEST(FusionPasses, IdempotentAtFixedPoint) {
  auto p = build(0, 2, 2);
  auto before = p.to_string();
  auto stats = graph::run_fusion_passes(p);
  EXPECT_EQ(stats.allreduce_add_rmsnorm + stats.add_rmsnorm + stats.rope_attention + stats.linear_silu_mul, 0);
  EXPECT_EQ(p.to_string(), before);
}

// rope → attention and linear → silu_mul (passes 2 and 3): one fused op per
// layer in every layout, none of the plain pairs left; switched off, the
// plain ops stay.
void expect_rope_and_mlp_fused(const graph::Program& p, int layers) {
  EXPECT_EQ(count(p, OpKind::kRoPEAttention), layers) << p.to_string();
  EXPECT_EQ(count(p, OpKind::kLinearSiLUMul), layers) << p.to_string();
  EXPECT_EQ(count(p, OpKind::kRoPE) + count(p, OpKind::kAttention) + count(p, OpKind::kSiLUMul), 0) << p.to_string();
  for (const auto& op : p.ops) {
    if (op.kind != OpKind::kLinearSiLUMul) continue;
    EXPECT_EQ(p.buffers[op.in2].width, 2 * p.buffers[op.out].width) << "scratch is the [rows, 2·inter] gate|up buffer";
  }
}

TEST(FusionPasses, RopeAttentionAndLinearSiluMulInEveryLayout) {
  expect_rope_and_mlp_fused(build(0, 1, 1), 4);
  expect_rope_and_mlp_fused(build(1, 2, 1), 4);
  expect_rope_and_mlp_fused(build(0, 1, 2), 2);
  expect_rope_and_mlp_fused(build(3, 2, 2), 2);
  graph::PassOptions off;
  off.fuse_rope_attention = false;
  off.fuse_linear_silu_mul = false;
  auto p = build(0, 1, 1, off);
  EXPECT_EQ(count(p, OpKind::kRoPE), 4);
  EXPECT_EQ(count(p, OpKind::kAttention), 4);
  EXPECT_EQ(count(p, OpKind::kSiLUMul), 4);
  EXPECT_EQ(count(p, OpKind::kRoPEAttention) + count(p, OpKind::kLinearSiLUMul), 0);
  // Run later, the passes fuse exactly those pairs.
  auto stats = graph::run_fusion_passes(p);
  EXPECT_EQ(stats.rope_attention, 4);
  EXPECT_EQ(stats.linear_silu_mul, 4);
  expect_rope_and_mlp_fused(p, 4);
}

TEST(FusionPasses, LinearWhoseOutputIsReadAgainIsNotFused) {
  auto p = build(0, 1, 1, graph::PassOptions{true, true, true, false});
  // Make the last layer's gate|up output feed one more op after its silu_mul:
  // fusing would leave that op reading a buffer nobody wrote.
  size_t lin = 0;
  for (size_t i = 0; i + 1 < p.ops.size(); ++i)
    if (p.ops[i].kind == OpKind::kLinear && p.ops[i + 1].kind == OpKind::kSiLUMul) lin = i;
  graph::Op reader = p.ops[lin + 1];
  reader.out = p.ops[lin + 1].out;
  p.ops.insert(p.ops.end(), reader);
  auto stats = graph::run_fusion_passes(p);
  EXPECT_EQ(stats.linear_silu_mul, 3);
  EXPECT_EQ(count(p, OpKind::kSiLUMul), 2);  // the last layer's pair and the extra reader
}

TEST(DecoderBuilder, RejectsLayoutsThatDoNotDivide) {
  auto m = Mapping::make(0, 3, 3, 1);
  ASSERT_TRUE(m.ok());
  EXPECT_FALSE(build_decoder(small_config(), *m).ok());  // 4 heads over 3 ranks
  auto m2 = Mapping::make(0, 5, 1, 5);
  EXPECT_FALSE(build_decoder(small_config(), *m2).ok());  // 5 stages, 4 layers
  EXPECT_FALSE(Mapping::make(0, 3, 2, 2).ok());          // world ≠ tp × pp
}

}  // namespace
}  // namespace shardlm
