// The HF config.json of a supported architecture, parsed and validated.
// Supported: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM,
// Qwen3ForCausalLM. Anything else (architecture, activation, rope type, …) is
// rejected with "unsupported: <what>" rather than silently misread.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "base/status.h"
#include "tensor/dtype.h"

namespace shardlm {

enum class Architecture : uint8_t { kLlama, kMistral, kQwen2, kQwen3 };
const char* architecture_name(Architecture a);  // the HF class name

struct ModelConfig {
  Architecture arch = Architecture::kLlama;
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_layers = 0;          // num_hidden_layers
  int64_t num_heads = 0;           // num_attention_heads
  int64_t num_kv_heads = 0;        // num_key_value_heads (default: num_heads)
  int64_t head_dim = 0;            // explicit head_dim, else hidden_size / num_heads
  int64_t max_position_embeddings = 0;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  // rope_scaling {"rope_type"/"type": "llama3", factor, low_freq_factor,
  // high_freq_factor, original_max_position_embeddings}; other types unsupported.
  bool rope_llama3 = false;
  double rope_factor = 1.0;
  double rope_low_freq_factor = 1.0;
  double rope_high_freq_factor = 4.0;
  int64_t rope_original_max_position = 0;
  bool tie_word_embeddings = false;
  bool attention_bias = false;     // q/k/v (Qwen2 always; Llama/Mistral if attention_bias)
  bool qk_norm = false;            // Qwen3: per-head RMSNorm of q and k before RoPE
  int64_t sliding_window = 0;      // 0 = none (Mistral may set it; Qwen2 only if use_sliding_window)
  // Layers >= this use sliding_window (Qwen2/3: max_window_layers, or the first
  // "sliding_attention" entry of layer_types; Mistral: 0 = every layer).
  int64_t sliding_window_first_layer = 0;
  DType torch_dtype = DType::kF32; // checkpoint dtype (informational)
  int32_t bos_token_id = -1;
  std::vector<int32_t> eos_token_ids;  // eos_token_id may be an int or a list

  // True when layer `layer` attends through the sliding window.
  bool layer_uses_sliding_window(int64_t layer) const {
    return sliding_window > 0 && layer >= sliding_window_first_layer;
  }
};

// Parses config.json text; `source` names the file in error messages.
Expected<ModelConfig> parse_model_config(const std::string& json_text, const std::string& source);
// Reads <dir>/config.json.
Expected<ModelConfig> load_model_config(const std::string& model_dir);

}  // namespace shardlm
