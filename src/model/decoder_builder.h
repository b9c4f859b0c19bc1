// Builds, for one rank, the Program of its pipeline stage and the recipe for
// every weight the program names: which HF tensors to read and which slice of
// them this rank owns (DESIGN §3.1):
//   column-parallel  q/k/v (by heads) and gate/up (by intermediate rows)
//   row-parallel     o and down (by input columns; all-reduce after)
//   vocab-parallel   embedding and LM head (rows padded to equal shards)
//   KV heads split across tp ranks, replicated when kv_heads < tp.
#pragma once

#include <string>
#include <vector>

#include "comm/mapping.h"
#include "graph/passes.h"
#include "graph/program.h"
#include "model/model_config.h"
#include "tensor/tensor.h"

namespace shardlm {

// One slice of one checkpoint tensor: rows (dim 0) or columns (dim 1)
// [begin, end) of `hf_name`, whose full shape must be `full_shape`.
struct WeightPart {
  std::string hf_name;
  Shape full_shape;
  int dim = 0;
  int64_t begin = 0, end = 0;
};

// A program weight = its parts concatenated along dim 0, then zero rows
// appended up to `pad_rows` (vocab shards).
struct WeightRecipe {
  std::vector<WeightPart> parts;
  int64_t pad_rows = 0;
};

struct BuiltModel {
  graph::Program program;
  std::vector<WeightRecipe> recipes;  // by weight id
};

// Errors when the layout cannot divide the model (heads vs tp, layers vs pp).
Expected<BuiltModel> build_decoder(const ModelConfig& config, const Mapping& mapping,
                                   const graph::PassOptions& passes = {});

}  // namespace shardlm
