// The BPE model of tokenizer.json ("model": {"type": "BPE", ...}): vocab, merges
// (both the "a b" and ["a", "b"] forms), unk/fuse_unk, byte_fallback,
// continuing_subword_prefix, end_of_word_suffix, ignore_merges, and a merge
// cache keyed by pre-token so long prompts tokenize fast.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/status.h"

namespace shardlm {

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
};
using StringIdMap = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;

class BpeModel {
 public:
  static Expected<std::unique_ptr<BpeModel>> from_json(const nlohmann::json& model);
  ~BpeModel();

  // Appends the ids of one pre-token (a piece after pre-tokenization).
  Status tokenize(std::string_view piece, std::vector<int32_t>& out) const;

  std::optional<int32_t> token_to_id(std::string_view token) const;
  // nullptr when the id is not in the vocab.
  const std::string* id_to_token(int32_t id) const;
  // Largest id + 1 (0 for an empty vocab).
  int64_t id_bound() const { return static_cast<int64_t>(id_to_token_.size()); }
  bool byte_fallback() const { return byte_fallback_; }

  // Cache statistics (tests and the benchmark).
  size_t cache_size() const;
  void clear_cache() const;

 private:
  BpeModel() = default;
  void merge_word(std::string_view piece, std::vector<int32_t>& out) const;

  StringIdMap vocab_;
  std::vector<const std::string*> id_to_token_;
  std::unordered_map<uint64_t, std::pair<uint32_t, int32_t>> merges_;  // (a,b) -> (rank, new id)
  std::optional<int32_t> unk_id_;
  bool fuse_unk_ = false;
  bool byte_fallback_ = false;
  bool ignore_merges_ = false;
  std::string prefix_;  // continuing_subword_prefix
  std::string suffix_;  // end_of_word_suffix
  std::array<int32_t, 256> byte_ids_{};  // <0xXX> ids for byte_fallback, -1 if absent

  struct CacheShard {
    std::mutex mu;
    std::unordered_map<std::string, std::vector<int32_t>, StringHash, std::equal_to<>> map;
  };
  static constexpr size_t kShards = 16;
  static constexpr size_t kShardCapacity = 8192;
  static constexpr size_t kMaxCachedPiece = 256;
  mutable std::unique_ptr<CacheShard[]> cache_;
};

}  // namespace shardlm
