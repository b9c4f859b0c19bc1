// config.json parsing: real-world configs of each supported architecture (as
// published on the HF hub), the transformers v5 rope_parameters form, and the
// refusals, each naming the key and the file.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "model/model_config.h"
#include "st_writer.h"
#include "test_util.h"

namespace shardlm {
namespace {

using test::error_mentions;

const char* kLlama31_8B = R"({
  "architectures": ["LlamaForCausalLM"],
  "attention_bias": false,
  "attention_dropout": 0.0,
  "bos_token_id": 128000,
  "eos_token_id": [128001, 128008, 128009],
  "hidden_act": "silu",
  "hidden_size": 4096,
  "initializer_range": 0.02,
  "intermediate_size": 14336,
  "max_position_embeddings": 131072,
  "mlp_bias": false,
  "model_type": "llama",
  "num_attention_heads": 32,
  "num_hidden_layers": 32,
  "num_key_value_heads": 8,
  "pretraining_tp": 1,
  "rms_norm_eps": 1e-05,
  "rope_scaling": {
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192,
    "rope_type": "llama3"
  },
  "rope_theta": 500000.0,
  "tie_word_embeddings": false,
  "torch_dtype": "bfloat16",
  "transformers_version": "4.43.0.dev0",
  "use_cache": true,
  "vocab_size": 128256
})";

const char* kMistral7B = R"({
  "architectures": ["MistralForCausalLM"],
  "bos_token_id": 1,
  "eos_token_id": 2,
  "hidden_act": "silu",
  "hidden_size": 4096,
  "initializer_range": 0.02,
  "intermediate_size": 14336,
  "max_position_embeddings": 32768,
  "model_type": "mistral",
  "num_attention_heads": 32,
  "num_hidden_layers": 32,
  "num_key_value_heads": 8,
  "rms_norm_eps": 1e-05,
  "rope_theta": 10000.0,
  "sliding_window": 4096,
  "tie_word_embeddings": false,
  "torch_dtype": "bfloat16",
  "transformers_version": "4.34.0.dev0",
  "use_cache": true,
  "vocab_size": 32000
})";

const char* kQwen25_05B = R"({
  "architectures": ["Qwen2ForCausalLM"],
  "attention_dropout": 0.0,
  "bos_token_id": 151643,
  "eos_token_id": 151643,
  "hidden_act": "silu",
  "hidden_size": 896,
  "initializer_range": 0.02,
  "intermediate_size": 4864,
  "max_position_embeddings": 32768,
  "max_window_layers": 24,
  "model_type": "qwen2",
  "num_attention_heads": 14,
  "num_hidden_layers": 24,
  "num_key_value_heads": 2,
  "rms_norm_eps": 1e-06,
  "rope_theta": 1000000.0,
  "sliding_window": 32768,
  "tie_word_embeddings": true,
  "torch_dtype": "bfloat16",
  "transformers_version": "4.40.1",
  "use_cache": true,
  "use_mrope": false,
  "use_sliding_window": false,
  "vocab_size": 151936
})";

const char* kQwen3_06B = R"({
  "architectures": ["Qwen3ForCausalLM"],
  "attention_bias": false,
  "attention_dropout": 0.0,
  "bos_token_id": 151643,
  "eos_token_id": 151645,
  "head_dim": 128,
  "hidden_act": "silu",
  "hidden_size": 1024,
  "initializer_range": 0.02,
  "intermediate_size": 3072,
  "max_position_embeddings": 40960,
  "max_window_layers": 28,
  "model_type": "qwen3",
  "num_attention_heads": 16,
  "num_hidden_layers": 28,
  "num_key_value_heads": 8,
  "rms_norm_eps": 1e-06,
  "rope_scaling": null,
  "rope_theta": 1000000,
  "sliding_window": null,
  "tie_word_embeddings": true,
  "torch_dtype": "bfloat16",
  "transformers_version": "4.51.0",
  "use_cache": true,
  "use_sliding_window": false,
  "vocab_size": 151936
})";

// Llama-3.2-1B as transformers v5 writes it: rope_parameters and "dtype".
const char* kLlama32_1B_v5 = R"({
  "architectures": ["LlamaForCausalLM"],
  "attention_bias": false,
  "bos_token_id": 128000,
  "dtype": "bfloat16",
  "eos_token_id": [128001, 128008, 128009],
  "head_dim": 64,
  "hidden_act": "silu",
  "hidden_size": 2048,
  "intermediate_size": 8192,
  "max_position_embeddings": 131072,
  "mlp_bias": false,
  "model_type": "llama",
  "num_attention_heads": 32,
  "num_hidden_layers": 16,
  "num_key_value_heads": 8,
  "rms_norm_eps": 1e-05,
  "rope_parameters": {
    "factor": 32.0,
    "high_freq_factor": 4.0,
    "low_freq_factor": 1.0,
    "original_max_position_embeddings": 8192,
    "rope_theta": 500000.0,
    "rope_type": "llama3"
  },
  "tie_word_embeddings": true,
  "transformers_version": "5.0.0",
  "vocab_size": 128256
})";

const std::string kSrc = "/models/x/config.json";

ModelConfig parse_ok(const std::string& text) {
  auto c = parse_model_config(text, kSrc);
  EXPECT_TRUE(c.ok()) << c.status().to_string();
  return c.ok() ? *c : ModelConfig{};
}

// `base` with `patch` merged in (RFC 7386: null removes a key).
std::string patched(const char* base, const char* patch) {
  auto j = nlohmann::json::parse(base);
  j.merge_patch(nlohmann::json::parse(patch));
  return j.dump();
}

Status parse_err(const std::string& text) {
  auto c = parse_model_config(text, kSrc);
  return c.ok() ? Status::Ok() : c.status();
}

TEST(ModelConfig, Llama31) {
  ModelConfig c = parse_ok(kLlama31_8B);
  EXPECT_EQ(c.arch, Architecture::kLlama);
  EXPECT_STREQ(architecture_name(c.arch), "LlamaForCausalLM");
  EXPECT_EQ(c.vocab_size, 128256);
  EXPECT_EQ(c.hidden_size, 4096);
  EXPECT_EQ(c.intermediate_size, 14336);
  EXPECT_EQ(c.num_layers, 32);
  EXPECT_EQ(c.num_heads, 32);
  EXPECT_EQ(c.num_kv_heads, 8);
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.max_position_embeddings, 131072);
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-5);
  EXPECT_DOUBLE_EQ(c.rope_theta, 500000.0);
  EXPECT_TRUE(c.rope_llama3);
  EXPECT_DOUBLE_EQ(c.rope_factor, 8.0);
  EXPECT_DOUBLE_EQ(c.rope_low_freq_factor, 1.0);
  EXPECT_DOUBLE_EQ(c.rope_high_freq_factor, 4.0);
  EXPECT_EQ(c.rope_original_max_position, 8192);
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_FALSE(c.attention_bias);
  EXPECT_FALSE(c.qk_norm);
  EXPECT_EQ(c.sliding_window, 0);
  EXPECT_FALSE(c.layer_uses_sliding_window(0));
  EXPECT_EQ(c.torch_dtype, DType::kBF16);
  EXPECT_EQ(c.bos_token_id, 128000);
  EXPECT_EQ(c.eos_token_ids, (std::vector<int32_t>{128001, 128008, 128009}));
}

TEST(ModelConfig, Mistral7B) {
  ModelConfig c = parse_ok(kMistral7B);
  EXPECT_EQ(c.arch, Architecture::kMistral);
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.num_kv_heads, 8);
  EXPECT_DOUBLE_EQ(c.rope_theta, 10000.0);
  EXPECT_FALSE(c.rope_llama3);
  EXPECT_EQ(c.sliding_window, 4096);
  EXPECT_EQ(c.sliding_window_first_layer, 0);
  EXPECT_TRUE(c.layer_uses_sliding_window(0));
  EXPECT_TRUE(c.layer_uses_sliding_window(31));
  EXPECT_FALSE(c.attention_bias);
  EXPECT_EQ(c.bos_token_id, 1);
  EXPECT_EQ(c.eos_token_ids, std::vector<int32_t>{2});
  // Mistral v0.2+ writes null: no window.
  EXPECT_EQ(parse_ok(patched(kMistral7B, R"({"sliding_window": null})")).sliding_window, 0);
  auto c2 = parse_model_config(patched(kMistral7B, R"({"sliding_window": null})"), kSrc);
  ASSERT_TRUE(c2.ok());
  EXPECT_EQ(c2->sliding_window, 0);
}

TEST(ModelConfig, Qwen25) {
  ModelConfig c = parse_ok(kQwen25_05B);
  EXPECT_EQ(c.arch, Architecture::kQwen2);
  EXPECT_EQ(c.hidden_size, 896);
  EXPECT_EQ(c.num_heads, 14);
  EXPECT_EQ(c.num_kv_heads, 2);
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_TRUE(c.attention_bias);  // Qwen2 always has q/k/v bias
  EXPECT_FALSE(c.qk_norm);
  EXPECT_EQ(c.sliding_window, 0);  // use_sliding_window is false
  EXPECT_DOUBLE_EQ(c.rope_theta, 1e6);
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-6);
  EXPECT_EQ(c.eos_token_ids, std::vector<int32_t>{151643});
  // With use_sliding_window, layers from max_window_layers on use the window.
  ModelConfig s = parse_ok(patched(kQwen25_05B, R"({"use_sliding_window": true, "sliding_window": 4096,
                                                   "max_window_layers": 20})"));
  EXPECT_EQ(s.sliding_window, 4096);
  EXPECT_EQ(s.sliding_window_first_layer, 20);
  EXPECT_FALSE(s.layer_uses_sliding_window(19));
  EXPECT_TRUE(s.layer_uses_sliding_window(20));
}

TEST(ModelConfig, Qwen3) {
  ModelConfig c = parse_ok(kQwen3_06B);
  EXPECT_EQ(c.arch, Architecture::kQwen3);
  EXPECT_EQ(c.hidden_size, 1024);
  EXPECT_EQ(c.num_heads, 16);
  EXPECT_EQ(c.head_dim, 128);  // != hidden / heads = 64
  EXPECT_TRUE(c.qk_norm);
  EXPECT_FALSE(c.attention_bias);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_DOUBLE_EQ(c.rope_theta, 1e6);  // written as an integer
  EXPECT_FALSE(c.rope_llama3);
  EXPECT_EQ(c.sliding_window, 0);
  EXPECT_EQ(c.max_position_embeddings, 40960);
  EXPECT_EQ(c.bos_token_id, 151643);
  EXPECT_EQ(c.eos_token_ids, std::vector<int32_t>{151645});
  EXPECT_TRUE(parse_ok(patched(kQwen3_06B, R"({"attention_bias": true})")).attention_bias);
  // head_dim: null means hidden / heads.
  EXPECT_EQ(parse_ok(patched(kQwen3_06B, R"({"head_dim": null})")).head_dim, 64);
}

TEST(ModelConfig, TransformersV5RopeParameters) {
  ModelConfig c = parse_ok(kLlama32_1B_v5);
  EXPECT_EQ(c.arch, Architecture::kLlama);
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_DOUBLE_EQ(c.rope_theta, 500000.0);
  EXPECT_TRUE(c.rope_llama3);
  EXPECT_DOUBLE_EQ(c.rope_factor, 32.0);
  EXPECT_EQ(c.rope_original_max_position, 8192);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_EQ(c.torch_dtype, DType::kBF16);
  // A Qwen3 saved by v5: default rope type, theta inside rope_parameters, layer_types.
  ModelConfig q = parse_ok(patched(kQwen3_06B, R"({"rope_theta": null, "rope_scaling": null,
      "rope_parameters": {"rope_theta": 1000000, "rope_type": "default"}, "torch_dtype": null,
      "dtype": "float16"})"));
  EXPECT_DOUBLE_EQ(q.rope_theta, 1e6);
  EXPECT_FALSE(q.rope_llama3);
  EXPECT_EQ(q.torch_dtype, DType::kF16);
}

TEST(ModelConfig, Defaults) {
  // Minimal Llama: kv heads = heads, theta 10000, no tie, float32, no eos.
  ModelConfig c = parse_ok(R"({"architectures": ["LlamaForCausalLM"], "vocab_size": 10, "hidden_size": 8,
      "intermediate_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2})");
  EXPECT_EQ(c.num_kv_heads, 2);
  EXPECT_EQ(c.head_dim, 4);
  EXPECT_DOUBLE_EQ(c.rope_theta, 10000.0);
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_FALSE(c.rope_llama3);
  EXPECT_EQ(c.bos_token_id, -1);
  EXPECT_TRUE(c.eos_token_ids.empty());
  // rope type "default" (either key) is no scaling.
  EXPECT_FALSE(parse_ok(patched(kLlama31_8B, R"({"rope_scaling": {"rope_type": null, "type": "default"}})")).rope_llama3);
  EXPECT_TRUE(parse_ok(patched(kLlama31_8B, R"({"rope_scaling": {"rope_type": null, "type": "llama3"}})")).rope_llama3);
}

TEST(ModelConfig, LayerTypes) {
  std::string lt = "[";
  for (int i = 0; i < 28; ++i) lt += std::string(i ? "," : "") + (i < 10 ? "\"full_attention\"" : "\"sliding_attention\"");
  lt += "]";
  ModelConfig c = parse_ok(patched(kQwen3_06B, (R"({"use_sliding_window": true, "sliding_window": 2048, "layer_types": )" + lt + "}").c_str()));
  EXPECT_EQ(c.sliding_window, 2048);
  EXPECT_EQ(c.sliding_window_first_layer, 10);
  Status s = parse_err(patched(kQwen3_06B, R"({"layer_types": ["full_attention"]})"));
  EXPECT_TRUE(error_mentions(s, {"layer_types", kSrc}));
}

// ---- refusals ----

TEST(ModelConfigBad, UnknownArchitecture) {
  Status s = parse_err(patched(kLlama31_8B, R"({"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"})"));
  EXPECT_EQ(s.code(), ErrorCode::kUnsupported);
  EXPECT_TRUE(error_mentions(s, {"unsupported: architecture GPT2LMHeadModel", "LlamaForCausalLM",
                                 "Qwen3ForCausalLM", kSrc}));
  // A model_type that contradicts the class.
  s = parse_err(patched(kLlama31_8B, R"({"model_type": "qwen2"})"));
  EXPECT_TRUE(error_mentions(s, {"model_type", "qwen2", kSrc}));
}

TEST(ModelConfigBad, Gelu) {
  Status s = parse_err(patched(kMistral7B, R"({"hidden_act": "gelu"})"));
  EXPECT_EQ(s.code(), ErrorCode::kUnsupported);
  EXPECT_TRUE(error_mentions(s, {"unsupported: hidden_act=gelu", kSrc}));
}

TEST(ModelConfigBad, MlpBias) {
  Status s = parse_err(patched(kLlama31_8B, R"({"mlp_bias": true})"));
  EXPECT_EQ(s.code(), ErrorCode::kUnsupported);
  EXPECT_TRUE(error_mentions(s, {"unsupported: mlp_bias", kSrc}));
}

TEST(ModelConfigBad, OtherRopeScaling) {
  Status s = parse_err(patched(kQwen25_05B, R"({"rope_scaling": {"type": "yarn", "factor": 4.0,
      "original_max_position_embeddings": 32768}})"));
  EXPECT_EQ(s.code(), ErrorCode::kUnsupported);
  EXPECT_TRUE(error_mentions(s, {"unsupported: rope_type=yarn", kSrc}));
  s = parse_err(patched(kLlama32_1B_v5, R"({"rope_parameters": {"rope_type": "linear"}})"));
  EXPECT_TRUE(error_mentions(s, {"rope_type=linear", kSrc}));
  s = parse_err(patched(kLlama31_8B, R"({"rope_scaling": {"type": "default"}})"));
  EXPECT_TRUE(error_mentions(s, {"rope_scaling.rope_type", "rope_scaling.type", kSrc}));
  s = parse_err(patched(kLlama31_8B, R"({"rope_scaling": {"factor": null}})"));
  EXPECT_TRUE(error_mentions(s, {"'rope_scaling.factor'", kSrc}));
}

TEST(ModelConfigBad, MissingKey) {
  for (const char* key : {"hidden_size", "vocab_size", "num_hidden_layers", "num_attention_heads",
                          "intermediate_size"}) {
    Status s = parse_err(patched(kQwen3_06B, (std::string("{\"") + key + "\": null}").c_str()));
    EXPECT_EQ(s.code(), ErrorCode::kFormat) << key;
    EXPECT_TRUE(error_mentions(s, {std::string("'") + key + "'", kSrc})) << key;
  }
  Status s = parse_err(patched(kQwen3_06B, R"({"architectures": null, "model_type": null})"));
  EXPECT_TRUE(error_mentions(s, {"'architectures'", kSrc}));
}

TEST(ModelConfigBad, WrongTypesAndValues) {
  struct Case { const char* patch; const char* key; };
  for (const Case& k : {Case{R"({"hidden_size": "4096"})", "hidden_size"},
                        Case{R"({"hidden_size": 0})", "hidden_size"},
                        Case{R"({"num_hidden_layers": -3})", "num_hidden_layers"},
                        Case{R"({"num_key_value_heads": 5})", "num_key_value_heads"},
                        Case{R"({"head_dim": 12.5})", "head_dim"},
                        Case{R"({"rms_norm_eps": "small"})", "rms_norm_eps"},
                        Case{R"({"tie_word_embeddings": 1})", "tie_word_embeddings"},
                        Case{R"({"eos_token_id": [1, "x"]})", "eos_token_id"},
                        Case{R"({"bos_token_id": -5})", "bos_token_id"},
                        Case{R"({"torch_dtype": "int8"})", "torch_dtype"},
                        Case{R"({"architectures": "LlamaForCausalLM"})", "architectures"},
                        Case{R"({"quantization_config": {"quant_method": "awq"}})", "quantization_config"}}) {
    Status s = parse_err(patched(kLlama31_8B, k.patch));
    EXPECT_TRUE(error_mentions(s, {k.key, kSrc})) << k.patch;
  }
  // hidden_size not divisible by heads, without head_dim.
  Status s = parse_err(patched(kMistral7B, R"({"hidden_size": 4100})"));
  EXPECT_TRUE(error_mentions(s, {"hidden_size", "num_attention_heads", kSrc}));
  // ...but fine with an explicit head_dim (hidden != heads * head_dim is allowed).
  EXPECT_EQ(parse_ok(patched(kMistral7B, R"({"hidden_size": 4100, "head_dim": 128})")).head_dim, 128);
}

TEST(ModelConfigBad, MalformedJson) {
  Status s = parse_err("{\"architectures\": [\"LlamaForCausalLM\"],");
  EXPECT_EQ(s.code(), ErrorCode::kFormat);
  EXPECT_TRUE(error_mentions(s, {kSrc, "JSON"}));
  s = parse_err("[1, 2]");
  EXPECT_TRUE(error_mentions(s, {kSrc, "object"}));
  s = parse_err("");
  EXPECT_TRUE(error_mentions(s, {kSrc}));
}

TEST(ModelConfigFile, LoadFromDir) {
  test::TempDir d;
  auto missing = load_model_config(d.path());
  EXPECT_EQ(missing.status().code(), ErrorCode::kNotFound);
  EXPECT_TRUE(error_mentions(missing.status(), {d.file("config.json")}));
  d.write("config.json", kQwen25_05B);
  auto c = load_model_config(d.path());
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  EXPECT_EQ(c->arch, Architecture::kQwen2);
  d.write("config.json", patched(kQwen25_05B, R"({"hidden_act": "gelu_pytorch_tanh"})"));
  EXPECT_TRUE(error_mentions(load_model_config(d.path()).status(), {"hidden_act", d.file("config.json")}));
}

}  // namespace
}  // namespace shardlm
