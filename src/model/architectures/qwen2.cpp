// Qwen2ForCausalLM: the Llama layout with a bias on q/k/v (never on o), and a
// sliding window only when `use_sliding_window` is set (parsed into sliding_window).
#include "model/architecture.h"

namespace shardlm {

ArchitectureDef qwen2_architecture(const ModelConfig& c) {
  return ArchitectureDef{"Qwen2ForCausalLM", true, false, true};
}

}  // namespace shardlm
