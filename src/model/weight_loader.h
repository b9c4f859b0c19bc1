// Reads this rank's weight shards (per the recipes of decoder_builder) from the
// checkpoint and hands them to the backend, with a progress bar on stderr.
#pragma once

#include <optional>

#include "graph/backend.h"
#include "model/decoder_builder.h"
#include "model/safetensors.h"

namespace shardlm {

// Assembles one program weight on the host in the checkpoint's dtype.
Expected<Tensor> assemble_weight(const WeightRecipe& recipe, const WeightStore& store);

Status load_weights(const BuiltModel& model, const WeightStore& store, graph::Backend& backend,
                    bool progress);

// `--load-format dummy` (as in vLLM): random weights from config.json alone, no
// checkpoint read. Each HF tensor is filled from a counter hash seeded by its
// name (dummy_weight_seed), so every backend and every tp × pp layout holds
// slices of the same model and their logits can be compared.
Status load_dummy_weights(const BuiltModel& model, graph::Backend& backend, bool progress);
uint64_t dummy_weight_seed(const std::string& hf_name);
std::vector<graph::RandomBlock> dummy_weight_blocks(const WeightRecipe& recipe);
Shape dummy_weight_shape(const WeightRecipe& recipe);  // parts stacked along dim 0, padded to pad_rows

// Where a model's weights come from, per `load_format`: "auto" /
// "safetensors" open the checkpoint in model_dir (headers checked now, so bad
// files fail before any collective), "dummy" needs nothing (nullopt); anything
// else is kInvalidArgument naming the choices.
Expected<std::optional<WeightStore>> open_weights(const std::string& model_dir, const std::string& load_format);
// The checkpoint's shards, or dummy weights when `store` is nullopt.
Status load_model_weights(const std::optional<WeightStore>& store, const BuiltModel& model, graph::Backend& backend,
                          bool progress);

}  // namespace shardlm
