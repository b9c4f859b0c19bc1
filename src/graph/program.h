// The op list of one pipeline stage of one rank: what the model builder emits
// (model/), what the fusion passes rewrite (passes.h), and what a backend runs
// once per engine step. Ops read and write named activation buffers in order;
// buffers hold `rows` × width elements where rows is the step's token count
// (or the number of rows that need logits, for the LM head). The residual
// stream is one buffer updated in place, which is what lets the passes fuse
// "add into the residual, then normalise" into one op.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "comm/mapping.h"

namespace shardlm::graph {

enum class OpKind : uint8_t {
  kEmbedding,            // in: token ids → out[ntok, hidden]          w: table (vocab shard)
  kRMSNorm,              // in → out                                     w: weight[width]
  kAdd,                  // out += in (residual add, in place)
  kAddRMSNorm,           // in2 += in; out = rmsnorm(in2)                w: weight (fused)
  kLinear,               // in[rows, k] → out[rows, n]                   w: weight[n, k], bias[n]?
  kHeadRMSNorm,          // per-head RMSNorm of q and k inside a qkv buffer (Qwen3) w: q_norm, k_norm
  kRoPE,                 // rotary on the q and k parts of a qkv buffer, in place
  kAttention,            // in: qkv → writes k,v into layer's cache; out = attention(q)
  kSiLUMul,              // in[rows, 2·inter] = [gate | up] → out[rows, inter]
  kAllReduce,            // in place sum over the tp group
  kAllReduceAddRMSNorm,  // allreduce(in); in2 += in; out = rmsnorm(in2) (fused)
  kRoPEAttention,        // kRoPE then kAttention on the same qkv (fused: rotated k goes straight to the cache)
  kLinearSiLUMul,        // out = silu_mul(linear(in)); in2 = the [rows, 2·inter] scratch of the unfused form
  kGatherRows,           // out[r] = in[logit_rows[r]]: keep rows that need logits
  kAllGatherColumns,     // vocab-parallel logits: out[rows, tp·n] from each rank's in[rows, n]
};
const char* op_kind_name(OpKind k);

enum class RowSpace : uint8_t { kTokens, kLogitRows };

struct Buffer {
  std::string name;
  int64_t width = 0;  // elements per row
  RowSpace rows = RowSpace::kTokens;
};

struct Op {
  OpKind kind = OpKind::kLinear;
  int layer = -1;           // -1: not inside a decoder layer
  int in = -1, in2 = -1;    // buffer ids (in2: the residual for add/fused ops)
  int out = -1;
  std::vector<int> weights; // weight ids in Program::weights order of the op's kind
  float eps = 0.0f;         // norms
  bool fused_allreduce_disabled = false;  // for the passes: keep this all-reduce unfused
  int64_t sliding_window = 0;  // attention: 0 = full, else keys within the last N positions
};

struct AttentionShape {
  int64_t nq_heads = 0;   // local (this tp rank)
  int64_t nkv_heads = 0;  // local
  int64_t head_dim = 0;
  float scale = 1.0f;
};

struct RopeShape {
  int64_t head_dim = 0;
  double theta = 10000.0;
  bool llama3 = false;
  double factor = 1.0, low_freq_factor = 1.0, high_freq_factor = 4.0;
  int64_t original_max_position = 0;
};

struct Program {
  Mapping mapping;
  std::vector<Buffer> buffers;
  std::vector<Op> ops;
  std::vector<std::string> weights;  // weight id → name (loaded by the model layer)
  AttentionShape attn;
  RopeShape rope;
  int64_t num_layers_local = 0;  // layers held by this stage (KV cache layers)
  int first_layer = 0;           // global index of this stage's first layer
  int64_t hidden = 0;
  int64_t vocab = 0;             // full vocabulary (logits width after gather)
  int tokens_buffer = -1;        // first stage: token ids (i32 stored as width-1 rows)
  int stage_in = -1;             // later stages: residual stream received from the previous stage
  int stage_out = -1;            // non-last stages: residual stream sent to the next stage
  int logits_buffer = -1;        // last stage: [logit rows, vocab]

  int add_buffer(const std::string& name, int64_t width, RowSpace rows = RowSpace::kTokens);
  int add_weight(const std::string& name);
  int find_buffer(const std::string& name) const;
  // One line per op, for `shardlm inspect` and test failure messages.
  std::string to_string() const;
};

// Everything a backend needs for one forward step, built by the runtime from
// the scheduler's output. Host vectors; a GPU backend copies them up once.
struct StepInput {
  std::vector<int32_t> token_ids;     // [ntok] (first stage)
  std::vector<int32_t> positions;     // [ntok]
  std::vector<int32_t> slot_mapping;  // [ntok] cache slot of each token
  std::vector<int32_t> q_start;       // [nseq + 1] prefix sums of tokens per sequence
  std::vector<int32_t> ctx_len;       // [nseq] tokens in the cache after this step
  std::vector<int32_t> block_tables;  // [nseq × max_blocks_per_seq], -1 padded
  int64_t max_blocks_per_seq = 0;
  std::vector<int32_t> logit_rows;    // token rows whose logits are wanted
  int64_t num_tokens() const { return static_cast<int64_t>(positions.size()); }
  int64_t num_seqs() const { return static_cast<int64_t>(ctx_len.size()); }
};

}  // namespace shardlm::graph
