// One ArchitectureDef per supported HF architecture (architectures/*.cpp).
// The four supported families share the pre-norm decoder layout and HF tensor
// names; what differs is declared here and consumed by decoder_builder.
#pragma once

#include <string>

#include "model/model_config.h"

namespace shardlm {

struct ArchitectureDef {
  const char* hf_name;   // e.g. "LlamaForCausalLM"
  bool qkv_bias;         // q/k/v projections carry a bias
  bool qk_norm;          // per-head RMSNorm on q and k before RoPE (Qwen3)
  bool uses_sliding_window;  // sliding_window from config applies to attention
};

// The definition for config.arch, with the config's own switches applied
// (e.g. Llama's attention_bias flag).
ArchitectureDef llama_architecture(const ModelConfig& c);
ArchitectureDef mistral_architecture(const ModelConfig& c);
ArchitectureDef qwen2_architecture(const ModelConfig& c);
ArchitectureDef qwen3_architecture(const ModelConfig& c);
ArchitectureDef architecture_def(const ModelConfig& c);

}  // namespace shardlm
