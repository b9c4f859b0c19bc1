// Post-processors of tokenizer.json ("post_processor": {...}) for single
// sequences: TemplateProcessing (BOS/EOS insertion), BertProcessing,
// RobertaProcessing, ByteLevel (no change to ids) and Sequence.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/status.h"

namespace shardlm {

class PostProcessor {
 public:
  virtual ~PostProcessor() = default;
  virtual void process(std::vector<int32_t>& ids, bool add_special_tokens) const = 0;
};

Expected<std::unique_ptr<PostProcessor>> make_post_processor(const nlohmann::json& j);

}  // namespace shardlm
