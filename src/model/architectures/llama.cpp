// LlamaForCausalLM: pre-norm decoder, GQA, SwiGLU MLP, RoPE (optionally llama3
// frequency scaling), optional q/k/v/o bias via `attention_bias`.
#include "model/architecture.h"

namespace shardlm {

ArchitectureDef llama_architecture(const ModelConfig& c) {
  return ArchitectureDef{"LlamaForCausalLM", c.attention_bias, false, false};
}

}  // namespace shardlm
