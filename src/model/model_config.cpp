// config.json → ModelConfig. Every key is read with a type check; a key that
// would change the math but that shardlm does not implement is an "unsupported"
// error, never ignored. Messages name the key and the file.
#include "model/model_config.h"

#include <cmath>
#include <fstream>
#include <limits>
#include <optional>
#include <sstream>

#include <nlohmann/json.hpp>

namespace shardlm {

const char* architecture_name(Architecture a) {
  switch (a) {
    case Architecture::kLlama: return "LlamaForCausalLM";
    case Architecture::kMistral: return "MistralForCausalLM";
    case Architecture::kQwen2: return "Qwen2ForCausalLM";
    case Architecture::kQwen3: return "Qwen3ForCausalLM";
  }
  return "?";
}

namespace {

using json = nlohmann::json;

constexpr const char* kSupported =
    "LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM";

const char* model_type_of(Architecture a) {
  switch (a) {
    case Architecture::kLlama: return "llama";
    case Architecture::kMistral: return "mistral";
    case Architecture::kQwen2: return "qwen2";
    case Architecture::kQwen3: return "qwen3";
  }
  return "?";
}

std::optional<Architecture> arch_from_class(const std::string& s) {
  if (s == "LlamaForCausalLM") return Architecture::kLlama;
  if (s == "MistralForCausalLM") return Architecture::kMistral;
  if (s == "Qwen2ForCausalLM") return Architecture::kQwen2;
  if (s == "Qwen3ForCausalLM") return Architecture::kQwen3;
  return std::nullopt;
}

std::optional<Architecture> arch_from_model_type(const std::string& s) {
  if (s == "llama") return Architecture::kLlama;
  if (s == "mistral") return Architecture::kMistral;
  if (s == "qwen2") return Architecture::kQwen2;
  if (s == "qwen3") return Architecture::kQwen3;
  return std::nullopt;
}

// Reads typed keys of one JSON object; `prefix` ("rope_scaling.") qualifies
// the key names in messages, `src` is the file.
class Keys {
 public:
  Keys(const json& obj, std::string prefix, const std::string& src)
      : obj_(obj), prefix_(std::move(prefix)), src_(src) {}

  // Absent and null both mean "not given".
  const json* find(const char* key) const {
    auto it = obj_.find(key);
    if (it == obj_.end() || it->is_null()) return nullptr;
    return &*it;
  }

  Status missing(const char* key) const {
    return make_error(ErrorCode::kFormat, "missing required key '{}{}' in {}", prefix_, key, src_);
  }

  Status bad_type(const char* key, const char* want, const json& v) const {
    std::string shown = v.dump();
    if (shown.size() > 60) shown = shown.substr(0, 57) + "...";
    return make_error(ErrorCode::kFormat, "key '{}{}' must be {}, got {} in {}", prefix_, key, want,
                      shown, src_);
  }

  Expected<std::optional<int64_t>> opt_int(const char* key) const {
    const json* v = find(key);
    if (!v) return std::optional<int64_t>();
    if (v->is_number_integer()) {
      if (v->is_number_unsigned() &&
          v->get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
        return bad_type(key, "an integer in range", *v);
      return std::optional<int64_t>(v->get<int64_t>());
    }
    if (v->is_number_float()) {  // 4096.0 is accepted, 4096.5 is not
      double d = v->get<double>();
      if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9.0e15)
        return std::optional<int64_t>(static_cast<int64_t>(d));
    }
    return bad_type(key, "an integer", *v);
  }

  Expected<int64_t> req_int(const char* key) const {
    SHARDLM_ASSIGN_OR_RETURN(auto v, opt_int(key));
    if (!v) return missing(key);
    return *v;
  }

  // A size: required or defaulted, and within 1 .. INT32_MAX.
  Expected<int64_t> size(const char* key, std::optional<int64_t> dflt = std::nullopt) const {
    SHARDLM_ASSIGN_OR_RETURN(auto v, opt_int(key));
    if (!v) {
      if (!dflt) return missing(key);
      v = dflt;
    }
    if (*v < 1 || *v > std::numeric_limits<int32_t>::max())
      return make_error(ErrorCode::kFormat, "key '{}{}' = {} must be in 1 .. {} in {}", prefix_, key,
                        *v, std::numeric_limits<int32_t>::max(), src_);
    return *v;
  }

  Expected<std::optional<double>> opt_double(const char* key) const {
    const json* v = find(key);
    if (!v) return std::optional<double>();
    if (!v->is_number()) return bad_type(key, "a number", *v);
    double d = v->get<double>();
    if (!std::isfinite(d)) return bad_type(key, "a finite number", *v);
    return std::optional<double>(d);
  }

  Expected<double> req_double(const char* key) const {
    SHARDLM_ASSIGN_OR_RETURN(auto v, opt_double(key));
    if (!v) return missing(key);
    return *v;
  }

  Expected<bool> boolean(const char* key, bool dflt) const {
    const json* v = find(key);
    if (!v) return dflt;
    if (!v->is_boolean()) return bad_type(key, "true or false", *v);
    return v->get<bool>();
  }

  Expected<std::optional<std::string>> opt_string(const char* key) const {
    const json* v = find(key);
    if (!v) return std::optional<std::string>();
    if (!v->is_string()) return bad_type(key, "a string", *v);
    return std::optional<std::string>(v->get<std::string>());
  }

 private:
  const json& obj_;
  std::string prefix_;
  const std::string& src_;
};

Status unsupported(const std::string& what, const std::string& src) {
  return make_error(ErrorCode::kUnsupported, "unsupported: {} in {}", what, src);
}

Expected<Architecture> parse_architecture(const json& j, const Keys& k, const std::string& src) {
  SHARDLM_ASSIGN_OR_RETURN(auto model_type, k.opt_string("model_type"));
  const json* archs = k.find("architectures");
  std::optional<Architecture> arch;
  if (archs) {
    if (!archs->is_array() || archs->empty() || !(*archs)[0].is_string())
      return k.bad_type("architectures", "a non-empty list of class names", *archs);
    std::string cls = (*archs)[0].get<std::string>();
    arch = arch_from_class(cls);
    if (!arch)
      return unsupported(fmt::format("architecture {} (supported: {})", cls, kSupported), src);
  } else if (model_type) {
    arch = arch_from_model_type(*model_type);
    if (!arch)
      return unsupported(fmt::format("architecture for model_type '{}' (supported: {})", *model_type,
                                     kSupported),
                         src);
  } else {
    return k.missing("architectures");
  }
  if (model_type && *model_type != model_type_of(*arch))
    return unsupported(fmt::format("architectures[0] is {} but model_type is '{}' (expected '{}')",
                                   architecture_name(*arch), *model_type, model_type_of(*arch)),
                       src);
  return *arch;
}

// rope_theta and the scaling: v4 keeps rope_theta at the top and the scaling in
// rope_scaling; transformers v5 puts both in rope_parameters.
Status parse_rope(const json& j, const Keys& k, const std::string& src, ModelConfig& c) {
  const json* params = k.find("rope_parameters");
  const json* scaling = k.find("rope_scaling");
  if (params && !params->is_object()) return k.bad_type("rope_parameters", "an object", *params);
  if (scaling && !scaling->is_object()) return k.bad_type("rope_scaling", "an object or null", *scaling);

  SHARDLM_ASSIGN_OR_RETURN(auto theta, k.opt_double("rope_theta"));
  if (params) {
    Keys pk(*params, "rope_parameters.", src);
    SHARDLM_ASSIGN_OR_RETURN(auto t, pk.opt_double("rope_theta"));
    if (t) theta = t;
  }
  c.rope_theta = theta.value_or(10000.0);
  if (!(c.rope_theta > 0)) return make_error(ErrorCode::kFormat, "rope_theta = {} must be positive in {}", c.rope_theta, src);

  // The scaling: rope_parameters wins when it names a type; else rope_scaling.
  const json* sc = nullptr;
  std::string prefix;
  if (params && (params->contains("rope_type") || params->contains("type"))) {
    sc = params;
    prefix = "rope_parameters.";
  } else if (scaling) {
    sc = scaling;
    prefix = "rope_scaling.";
  }
  if (!sc) return Status::Ok();
  Keys sk(*sc, prefix, src);
  // transformers v4 lets "type" override "rope_type", v5 the other way round:
  // both present and different is ambiguous.
  SHARDLM_ASSIGN_OR_RETURN(auto type, sk.opt_string("rope_type"));
  SHARDLM_ASSIGN_OR_RETURN(auto old_type, sk.opt_string("type"));
  if (type && old_type && *type != *old_type)
    return make_error(ErrorCode::kFormat, "{}rope_type = '{}' and {}type = '{}' disagree in {}", prefix, *type,
                      prefix, *old_type, src);
  if (!type) type = old_type;
  if (!type || *type == "default") return Status::Ok();
  if (*type != "llama3") return unsupported(fmt::format("rope_type={} (only llama3 scaling)", *type), src);
  c.rope_llama3 = true;
  SHARDLM_ASSIGN_OR_RETURN(c.rope_factor, sk.req_double("factor"));
  SHARDLM_ASSIGN_OR_RETURN(c.rope_low_freq_factor, sk.req_double("low_freq_factor"));
  SHARDLM_ASSIGN_OR_RETURN(c.rope_high_freq_factor, sk.req_double("high_freq_factor"));
  SHARDLM_ASSIGN_OR_RETURN(c.rope_original_max_position, sk.size("original_max_position_embeddings"));
  if (!(c.rope_factor >= 1.0))
    return make_error(ErrorCode::kFormat, "{}factor = {} must be >= 1 in {}", prefix, c.rope_factor, src);
  if (!(c.rope_low_freq_factor > 0) || !(c.rope_high_freq_factor > c.rope_low_freq_factor))
    return make_error(ErrorCode::kFormat,
                      "{}low_freq_factor = {} and high_freq_factor = {} need 0 < low < high in {}", prefix,
                      c.rope_low_freq_factor, c.rope_high_freq_factor, src);
  return Status::Ok();
}

Status parse_sliding_window(const json& j, const Keys& k, const std::string& src, ModelConfig& c) {
  SHARDLM_ASSIGN_OR_RETURN(auto given, k.opt_int("sliding_window"));
  const int64_t window = given.value_or(0) > 0 ? *given : 0;  // some configs write 0 for "none"
  c.sliding_window = window;
  if (c.arch == Architecture::kQwen2 || c.arch == Architecture::kQwen3) {
    SHARDLM_ASSIGN_OR_RETURN(bool use, k.boolean("use_sliding_window", false));
    if (!use) {
      c.sliding_window = 0;
    } else {
      if (window == 0)
        return make_error(ErrorCode::kFormat,
                          "use_sliding_window is true but key 'sliding_window' is missing in {}", src);
      SHARDLM_ASSIGN_OR_RETURN(auto mwl, k.opt_int("max_window_layers"));
      c.sliding_window_first_layer = mwl.value_or(28);  // the HF class default
      if (c.sliding_window_first_layer < 0)
        return make_error(ErrorCode::kFormat, "key 'max_window_layers' must be >= 0 in {}", src);
    }
  }

  // An explicit layer_types (transformers >= 4.53 writes it) overrides the rule
  // above; shardlm supports full layers followed by sliding ones.
  const json* lt = k.find("layer_types");
  if (!lt) return Status::Ok();
  if (!lt->is_array() || static_cast<int64_t>(lt->size()) != c.num_layers)
    return k.bad_type("layer_types", "a list with one entry per layer", *lt);
  int64_t first = -1;
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const json& e = (*lt)[static_cast<size_t>(i)];
    if (!e.is_string()) return k.bad_type("layer_types", "a list of strings", *lt);
    const std::string s = e.get<std::string>();
    if (s == "sliding_attention") {
      if (first < 0) first = i;
    } else if (s == "full_attention") {
      if (first >= 0) return unsupported("layer_types with full attention after sliding layers", src);
    } else {
      return unsupported(fmt::format("layer_types entry '{}'", s), src);
    }
  }
  if (first < 0) {
    c.sliding_window = 0;
    c.sliding_window_first_layer = 0;
  } else {
    if (c.sliding_window == 0)
      return make_error(ErrorCode::kFormat,
                        "layer_types names sliding_attention but no sliding_window is set in {}", src);
    c.sliding_window_first_layer = first;
  }
  return Status::Ok();
}

Expected<int32_t> token_id(const json& v, const Keys& k, const char* key) {
  if (!v.is_number_integer()) return k.bad_type(key, "a token id or a list of token ids", v);
  if (v.is_number_unsigned() ? v.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int32_t>::max())
                             : (v.get<int64_t>() < 0 || v.get<int64_t>() > std::numeric_limits<int32_t>::max()))
    return k.bad_type(key, "a token id in 0 .. 2^31-1", v);
  return static_cast<int32_t>(v.get<int64_t>());
}

}  // namespace

Expected<ModelConfig> parse_model_config(const std::string& json_text, const std::string& source) {
  json j;
  try {
    j = json::parse(json_text);
  } catch (const json::exception& e) {
    return make_error(ErrorCode::kFormat, "{} is not valid JSON: {}", source, e.what());
  }
  if (!j.is_object()) return make_error(ErrorCode::kFormat, "{} must hold a JSON object, got {}", source, j.type_name());
  const Keys k(j, "", source);
  ModelConfig c;

  SHARDLM_ASSIGN_OR_RETURN(c.arch, parse_architecture(j, k, source));
  if (k.find("quantization_config"))
    return unsupported("quantization_config (quantized checkpoints)", source);

  SHARDLM_ASSIGN_OR_RETURN(c.vocab_size, k.size("vocab_size"));
  SHARDLM_ASSIGN_OR_RETURN(c.hidden_size, k.size("hidden_size"));
  SHARDLM_ASSIGN_OR_RETURN(c.intermediate_size, k.size("intermediate_size"));
  SHARDLM_ASSIGN_OR_RETURN(c.num_layers, k.size("num_hidden_layers"));
  SHARDLM_ASSIGN_OR_RETURN(c.num_heads, k.size("num_attention_heads"));
  SHARDLM_ASSIGN_OR_RETURN(c.num_kv_heads, k.size("num_key_value_heads", c.num_heads));
  if (c.num_heads % c.num_kv_heads != 0)
    return make_error(ErrorCode::kFormat,
                      "num_attention_heads = {} is not a multiple of num_key_value_heads = {} in {}",
                      c.num_heads, c.num_kv_heads, source);
  if (k.find("head_dim")) {
    SHARDLM_ASSIGN_OR_RETURN(c.head_dim, k.size("head_dim"));
  } else {
    if (c.hidden_size % c.num_heads != 0)
      return make_error(ErrorCode::kFormat,
                        "no head_dim and hidden_size = {} is not a multiple of num_attention_heads = {} in {}",
                        c.hidden_size, c.num_heads, source);
    c.head_dim = c.hidden_size / c.num_heads;
  }
  // HF class defaults when the file leaves it out.
  int64_t max_pos_default = 2048;
  if (c.arch == Architecture::kMistral) max_pos_default = 4096 * 32;
  if (c.arch == Architecture::kQwen2 || c.arch == Architecture::kQwen3) max_pos_default = 32768;
  SHARDLM_ASSIGN_OR_RETURN(c.max_position_embeddings, k.size("max_position_embeddings", max_pos_default));

  SHARDLM_ASSIGN_OR_RETURN(auto eps, k.opt_double("rms_norm_eps"));
  c.rms_norm_eps = eps.value_or(1e-6);
  if (!(c.rms_norm_eps > 0)) return make_error(ErrorCode::kFormat, "rms_norm_eps = {} must be positive in {}", c.rms_norm_eps, source);

  SHARDLM_TRY(parse_rope(j, k, source, c));

  SHARDLM_ASSIGN_OR_RETURN(c.tie_word_embeddings, k.boolean("tie_word_embeddings", false));
  SHARDLM_ASSIGN_OR_RETURN(bool attn_bias, k.boolean("attention_bias", false));
  c.attention_bias = c.arch == Architecture::kQwen2 ? true : attn_bias;
  c.qk_norm = c.arch == Architecture::kQwen3;
  SHARDLM_ASSIGN_OR_RETURN(bool mlp_bias, k.boolean("mlp_bias", false));
  if (mlp_bias) return unsupported("mlp_bias", source);
  SHARDLM_ASSIGN_OR_RETURN(auto act, k.opt_string("hidden_act"));
  if (act && *act != "silu") return unsupported(fmt::format("hidden_act={} (only silu)", *act), source);

  SHARDLM_TRY(parse_sliding_window(j, k, source, c));

  // v5 writes "dtype", v4 "torch_dtype".
  SHARDLM_ASSIGN_OR_RETURN(auto dt, k.opt_string("dtype"));
  const char* dt_key = "dtype";
  if (!dt) {
    SHARDLM_ASSIGN_OR_RETURN(dt, k.opt_string("torch_dtype"));
    dt_key = "torch_dtype";
  }
  if (dt) {
    auto parsed = parse_dtype(*dt);
    if (!parsed.ok() || *parsed == DType::kI32)
      return unsupported(fmt::format("{}={} (float32, float16 or bfloat16)", dt_key, *dt), source);
    c.torch_dtype = *parsed;
  }

  if (const json* b = k.find("bos_token_id")) {
    SHARDLM_ASSIGN_OR_RETURN(c.bos_token_id, token_id(*b, k, "bos_token_id"));
  }
  if (const json* e = k.find("eos_token_id")) {
    if (e->is_array()) {
      for (const auto& x : *e) {
        SHARDLM_ASSIGN_OR_RETURN(int32_t id, token_id(x, k, "eos_token_id"));
        c.eos_token_ids.push_back(id);
      }
    } else {
      SHARDLM_ASSIGN_OR_RETURN(int32_t id, token_id(*e, k, "eos_token_id"));
      c.eos_token_ids.push_back(id);
    }
  }
  return c;
}

Expected<ModelConfig> load_model_config(const std::string& model_dir) {
  const std::string path = model_dir + "/config.json";
  std::ifstream in(path, std::ios::binary);
  if (!in) return make_error(ErrorCode::kNotFound, "no config.json in model directory {} (looked for {})", model_dir, path);
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return make_error(ErrorCode::kIo, "reading {} failed", path);
  return parse_model_config(ss.str(), path);
}

}  // namespace shardlm
