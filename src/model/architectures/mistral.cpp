// MistralForCausalLM: the Llama layout plus sliding-window attention when the
// config sets `sliding_window`.
#include "model/architecture.h"

namespace shardlm {

ArchitectureDef mistral_architecture(const ModelConfig& c) {
  return ArchitectureDef{"MistralForCausalLM", c.attention_bias, false, true};
}

}  // namespace shardlm
