// Dispatch from the parsed config to its architecture definition.
#include "model/architecture.h"

namespace shardlm {

ArchitectureDef architecture_def(const ModelConfig& c) {
  switch (c.arch) {
    case Architecture::kLlama: return llama_architecture(c);
    case Architecture::kMistral: return mistral_architecture(c);
    case Architecture::kQwen2: return qwen2_architecture(c);
    case Architecture::kQwen3: return qwen3_architecture(c);
  }
  return llama_architecture(c);
}

}  // namespace shardlm
