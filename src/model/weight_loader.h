// Reads this rank's weight shards (per the recipes of decoder_builder) from the
// checkpoint and hands them to the backend, with a progress bar on stderr.
#pragma once

#include "graph/backend.h"
#include "model/decoder_builder.h"
#include "model/safetensors.h"

namespace shardlm {

// Assembles one program weight on the host in the checkpoint's dtype.
Expected<Tensor> assemble_weight(const WeightRecipe& recipe, const WeightStore& store);

Status load_weights(const BuiltModel& model, const WeightStore& store, graph::Backend& backend,
                    bool progress);

}  // namespace shardlm
