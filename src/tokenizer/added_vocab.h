// Added tokens of tokenizer.json ("added_tokens": [...]): matched in the input
// before normalization (normalized=false) or after it (normalized=true), with
// HF's leftmost-longest rule and the lstrip / rstrip / single_word options.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "base/status.h"
#include "tokenizer/bpe_model.h"
#include "tokenizer/normalizer.h"
#include "tokenizer/pre_tokenizer.h"

namespace shardlm {

struct AddedToken {
  std::string content;
  int32_t id = -1;
  bool single_word = false;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = true;
  bool special = false;
};

class AddedVocabulary {
 public:
  // `tokens` in tokenizer.json order; ids already resolved. The normalizer (may
  // be null) normalizes the content of normalized tokens for matching.
  Status build(std::vector<AddedToken> tokens, const Normalizer* normalizer);

  // Splits `text` (valid UTF-8) on the non-normalized tokens, normalizes the
  // rest, and splits that on the normalized tokens. Appends pieces to `out`.
  Status extract_and_normalize(const std::string& text, const Normalizer* normalizer, std::vector<Piece>& out) const;

  std::optional<int32_t> token_to_id(std::string_view content) const;
  const AddedToken* find_id(int32_t id) const;
  bool is_special_content(std::string_view content) const;
  const std::vector<AddedToken>& tokens() const { return tokens_; }
  bool empty() const { return tokens_.empty(); }

 private:
  struct Trie {
    struct Node {
      std::vector<std::pair<unsigned char, int32_t>> next;
      int32_t token = -1;  // index into tokens_
    };
    std::vector<Node> nodes{Node{}};
    bool first_byte[256] = {};
    void insert(std::string_view pattern, int32_t token);
    // Longest pattern starting at s[i]: (length, token index) or token -1.
    std::pair<size_t, int32_t> longest_at(std::string_view s, size_t i) const;
    bool empty() const { return nodes.size() == 1; }
  };
  // HF's find_matches: splits covering `s`, each (token index or -1, range).
  void find_matches(std::string_view s, const Trie& trie,
                    std::vector<std::pair<int32_t, std::pair<size_t, size_t>>>& out) const;
  void split_with(Piece&& p, const Trie& trie, std::vector<Piece>& out) const;

  std::vector<AddedToken> tokens_;
  StringIdMap by_content_;
  std::unordered_map<int32_t, size_t> by_id_;
  Trie raw_trie_;
  Trie normalized_trie_;
};

}  // namespace shardlm
