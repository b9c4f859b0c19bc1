// shardlm's tokenizer: Hugging Face tokenizer.json (byte-level BPE and the
// pieces around it), tokenizer_config.json (special tokens, chat template),
// streaming detokenization and chat templates. Depends on base only.
//
// Input text that is not valid UTF-8 is first made valid by replacing every
// maximal invalid subpart with U+FFFD (what Rust's from_utf8_lossy, Python's
// errors="replace" and JavaScript's TextDecoder do), so encoding bytes gives
// the same ids as encoding the string any of those would produce.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/status.h"

namespace shardlm {

class AddedVocabulary;
class BpeModel;
class Decoder;
class Normalizer;
class PostProcessor;
class PreTokenizer;
namespace jinja {
class Template;
}

class Tokenizer {
 public:
  ~Tokenizer();

  // A directory (tokenizer.json, plus tokenizer_config.json and
  // chat_template.jinja when present) or a tokenizer.json file (a
  // tokenizer_config.json next to it is read too).
  static Expected<std::shared_ptr<Tokenizer>> load(const std::string& file_or_dir);
  // From JSON text; `config_json` may be empty.
  static Expected<std::shared_ptr<Tokenizer>> from_json_text(std::string_view tokenizer_json,
                                                             std::string_view config_json = {});

  Expected<std::vector<int32_t>> encode(std::string_view text, bool add_special_tokens = true) const;
  std::string decode(const std::vector<int32_t>& ids, bool skip_special_tokens = false) const;
  // transformers' clean_up_tokenization (" ." -> "." etc.), applied when asked.
  static std::string clean_up_tokenization(std::string text);
  bool clean_up_tokenization_spaces() const { return clean_up_tokenization_spaces_; }

  // Largest token id + 1 over the model vocab and the added tokens.
  int64_t vocab_size() const;
  std::optional<int32_t> bos_id() const;
  std::optional<int32_t> eos_id() const;
  const std::optional<std::string>& bos_token() const { return bos_token_; }
  const std::optional<std::string>& eos_token() const { return eos_token_; }
  bool is_special(int32_t id) const;
  std::optional<int32_t> token_to_id(std::string_view token) const;
  std::optional<std::string> id_to_token(int32_t id) const;

  // Chat: messages as an array of {role, content, ...}. ordered_json keeps
  // key order for tojson; nlohmann::json sorts keys.
  Expected<std::string> apply_chat_template(const nlohmann::json& messages, bool add_generation_prompt) const;
  Expected<std::string> apply_chat_template(const nlohmann::ordered_json& messages, bool add_generation_prompt,
                                            const nlohmann::ordered_json& extra_context = nullptr) const;
  bool has_chat_template() const { return !chat_template_.empty(); }
  const std::string& chat_template() const { return chat_template_; }
  void set_chat_template(std::string source);

  // For decoders that only map tokens to bytes (ByteLevel): the raw bytes of
  // one token, so streams can assemble UTF-8 themselves. False otherwise.
  bool byte_level_decoding() const { return byte_level_decoder_; }
  void append_token_bytes(int32_t id, bool skip_special_tokens, std::string& out) const;

  // Number of pre-tokens in the merge cache (tests, benchmark).
  size_t merge_cache_size() const;
  void clear_merge_cache() const;

 private:
  Tokenizer();
  Status load_config(const nlohmann::json& config);

  std::unique_ptr<BpeModel> model_;
  std::unique_ptr<AddedVocabulary> added_;
  std::unique_ptr<Normalizer> normalizer_;
  std::unique_ptr<PreTokenizer> pre_tokenizer_;
  std::unique_ptr<PostProcessor> post_processor_;
  std::unique_ptr<Decoder> decoder_;

  std::optional<std::string> bos_token_, eos_token_;
  nlohmann::ordered_json special_tokens_context_ = nlohmann::ordered_json::object();  // pad_token, unk_token, ...
  bool clean_up_tokenization_spaces_ = false;
  bool byte_level_decoder_ = false;
  std::string chat_template_;
  std::shared_ptr<const jinja::Template> compiled_template_;
  Status template_error_;
};

// Turns a stream of ids into text pieces; never emits a partial UTF-8 sequence
// (it holds text whose decode ends in U+FFFD until more ids complete it), and
// the concatenation of all push() results plus flush() equals decode(ids).
//
// With a ByteLevel decoder it assembles UTF-8 from the token bytes (constant
// work per id); otherwise it re-decodes a short window of recent ids, as HF's
// DecodeStream does.
class StreamDecoder {
 public:
  explicit StreamDecoder(std::shared_ptr<const Tokenizer> tokenizer, bool skip_special = true);
  // Newly completed text (possibly empty).
  std::string push(int32_t id);
  // Whatever is still held (an incomplete sequence decodes to U+FFFD here).
  std::string flush();

 private:
  std::string push_bytes(int32_t id);

  std::shared_ptr<const Tokenizer> tok_;
  bool skip_special_;
  std::string pending_;  // byte-level path: bytes not yet emitted
  std::vector<int32_t> ids_;
  size_t prefix_index_ = 0;  // ids_[prefix_index_..read_index_) decode to prefix_
  size_t read_index_ = 0;
  std::string prefix_;
};

}  // namespace shardlm
