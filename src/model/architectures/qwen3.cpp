// Qwen3ForCausalLM: the Llama layout with per-head RMSNorm of q and k (over
// head_dim, before RoPE), an explicit head_dim that need not equal
// hidden/heads, and q/k/v bias only when `attention_bias` is set.
#include "model/architecture.h"

namespace shardlm {

ArchitectureDef qwen3_architecture(const ModelConfig& c) {
  return ArchitectureDef{"Qwen3ForCausalLM", c.attention_bias, true, true};
}

}  // namespace shardlm
