#include "tokenizer/tokenizer.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "tokenizer/added_vocab.h"
#include "tokenizer/bpe_model.h"
#include "tokenizer/bytes_char.h"
#include "tokenizer/decoder.h"
#include "tokenizer/jinja.h"
#include "tokenizer/json_util.h"
#include "tokenizer/normalizer.h"
#include "tokenizer/post_processor.h"
#include "tokenizer/pre_tokenizer.h"
#include "tokenizer/utf8.h"

namespace shardlm {

using nlohmann::json;
using nlohmann::ordered_json;
namespace fs = std::filesystem;

namespace {

Expected<std::string> read_file(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  if (!f) return make_error(ErrorCode::kIo, "cannot open {}", p.string());
  std::ostringstream ss;
  ss << f.rdbuf();
  if (f.bad()) return make_error(ErrorCode::kIo, "cannot read {}", p.string());
  return ss.str();
}

// A special token in tokenizer_config.json: "text" or {"content": "text", ...}.
std::optional<std::string> config_token(const json& cfg, const char* key) {
  auto it = cfg.find(key);
  if (it == cfg.end()) return std::nullopt;
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object() && it->contains("content") && (*it)["content"].is_string())
    return (*it)["content"].get<std::string>();
  return std::nullopt;
}

}  // namespace

Tokenizer::Tokenizer() = default;
Tokenizer::~Tokenizer() = default;

Expected<std::shared_ptr<Tokenizer>> Tokenizer::load(const std::string& file_or_dir) {
  fs::path p(file_or_dir);
  std::error_code ec;
  fs::path tok_path, dir;
  if (fs::is_directory(p, ec)) {
    dir = p;
    tok_path = p / "tokenizer.json";
  } else {
    tok_path = p;
    dir = p.parent_path();
  }
  if (!fs::exists(tok_path, ec))
    return make_error(ErrorCode::kNotFound, "tokenizer file {} not found", tok_path.string());
  SHARDLM_ASSIGN_OR_RETURN(std::string tok_text, read_file(tok_path));
  std::string cfg_text;
  fs::path cfg_path = (dir.empty() ? fs::path(".") : dir) / "tokenizer_config.json";
  if (fs::exists(cfg_path, ec)) {
    SHARDLM_ASSIGN_OR_RETURN(cfg_text, read_file(cfg_path));
  }
  auto tok = from_json_text(tok_text, cfg_text);
  if (!tok.ok()) return tok.status().with_context("loading " + tok_path.string());
  // A separate chat_template.jinja (newer HF layout) takes precedence.
  fs::path jinja_path = (dir.empty() ? fs::path(".") : dir) / "chat_template.jinja";
  if (fs::is_directory(p, ec) && fs::exists(jinja_path, ec)) {
    SHARDLM_ASSIGN_OR_RETURN(std::string tpl, read_file(jinja_path));
    (*tok)->set_chat_template(std::move(tpl));
  }
  return tok;
}

Expected<std::shared_ptr<Tokenizer>> Tokenizer::from_json_text(std::string_view tokenizer_json,
                                                               std::string_view config_json) {
  json j = json::parse(tokenizer_json.begin(), tokenizer_json.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return make_error(ErrorCode::kFormat, "tokenizer.json is not a JSON object");
  std::shared_ptr<Tokenizer> t(new Tokenizer());
  try {
    if (!j.contains("model")) return make_error(ErrorCode::kFormat, "tokenizer.json has no \"model\"");
    SHARDLM_ASSIGN_OR_RETURN(t->model_, BpeModel::from_json(j["model"]));
    SHARDLM_ASSIGN_OR_RETURN(t->normalizer_, make_normalizer(j.value("normalizer", json())));
    SHARDLM_ASSIGN_OR_RETURN(t->pre_tokenizer_, make_pre_tokenizer(j.value("pre_tokenizer", json())));
    SHARDLM_ASSIGN_OR_RETURN(t->post_processor_, make_post_processor(j.value("post_processor", json())));
    SHARDLM_ASSIGN_OR_RETURN(t->decoder_, make_decoder(j.value("decoder", json())));
    {
      const json d = j.value("decoder", json());
      t->byte_level_decoder_ = d.is_object() && d.value("type", "") == "ByteLevel";
    }

    std::vector<AddedToken> added;
    if (auto at = j.find("added_tokens"); at != j.end() && !at->is_null()) {
      if (!at->is_array()) return make_error(ErrorCode::kFormat, "\"added_tokens\" must be an array");
      for (const auto& e : *at) {
        if (!e.is_object() || !e.contains("content") || !e["content"].is_string())
          return make_error(ErrorCode::kFormat, "added_tokens: each entry needs a \"content\" string");
        AddedToken a;
        a.content = e["content"].get<std::string>();
        a.special = json_bool(e, "special", false);
        a.single_word = json_bool(e, "single_word", false);
        a.lstrip = json_bool(e, "lstrip", false);
        a.rstrip = json_bool(e, "rstrip", false);
        a.normalized = json_bool(e, "normalized", !a.special);
        // A token already in the model vocab keeps that id (as HF does).
        if (auto vid = t->model_->token_to_id(a.content)) {
          a.id = *vid;
        } else if (e.contains("id") && e["id"].is_number_integer() && e["id"].get<int64_t>() >= 0 &&
                   e["id"].get<int64_t>() < (int64_t{1} << 30)) {
          a.id = e["id"].get<int32_t>();
        } else {
          return make_error(ErrorCode::kFormat, "added token \"{}\" has no valid id", a.content);
        }
        added.push_back(std::move(a));
      }
    }
    t->added_.reset(new AddedVocabulary());
    SHARDLM_TRY(t->added_->build(std::move(added), t->normalizer_.get()));

    if (!config_json.empty()) {
      json cfg = json::parse(config_json.begin(), config_json.end(), nullptr, false);
      if (cfg.is_discarded() || !cfg.is_object())
        return make_error(ErrorCode::kFormat, "tokenizer_config.json is not a JSON object");
      SHARDLM_TRY(t->load_config(cfg));
    }
  } catch (const json::exception& e) {
    return make_error(ErrorCode::kFormat, "tokenizer.json: {}", e.what());
  }
  return t;
}

Status Tokenizer::load_config(const json& cfg) {
  bos_token_ = config_token(cfg, "bos_token");
  eos_token_ = config_token(cfg, "eos_token");
  for (const char* key : {"bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"}) {
    if (auto v = config_token(cfg, key)) special_tokens_context_[key] = *v;
  }
  if (auto it = cfg.find("additional_special_tokens"); it != cfg.end() && it->is_array()) {
    ordered_json list = ordered_json::array();
    for (const auto& e : *it) {
      if (e.is_string()) list.push_back(e.get<std::string>());
      else if (e.is_object() && e.contains("content") && e["content"].is_string()) list.push_back(e["content"].get<std::string>());
    }
    special_tokens_context_["additional_special_tokens"] = list;
  }
  clean_up_tokenization_spaces_ = json_bool(cfg, "clean_up_tokenization_spaces", false);
  // transformers' Llama/Gemma fast tokenizers rebuild the post-processor from
  // add_bos_token / add_eos_token (update_post_processor), whatever
  // tokenizer.json says; do the same so encode() adds what they add.
  static const char* kRebuilds[] = {"LlamaTokenizer", "LlamaTokenizerFast", "CodeLlamaTokenizer",
                                    "CodeLlamaTokenizerFast", "GemmaTokenizer", "GemmaTokenizerFast"};
  const std::string cls = json_string(cfg, "tokenizer_class");
  if (std::find(std::begin(kRebuilds), std::end(kRebuilds), cls) != std::end(kRebuilds)) {
    const bool add_bos = json_bool(cfg, "add_bos_token", true);
    const bool add_eos = json_bool(cfg, "add_eos_token", false);
    json single = json::array(), specials = json::object();
    auto special = [&](const std::optional<std::string>& tok) {
      if (!tok) return;
      auto id = token_to_id(*tok);
      if (!id) return;
      single.push_back({{"SpecialToken", {{"id", *tok}, {"type_id", 0}}}});
      specials[*tok] = {{"id", *tok}, {"ids", {*id}}, {"tokens", {*tok}}};
    };
    if (add_bos) special(bos_token_);
    single.push_back({{"Sequence", {{"id", "A"}, {"type_id", 0}}}});
    if (add_eos) special(eos_token_);
    SHARDLM_ASSIGN_OR_RETURN(post_processor_, make_post_processor(json{
        {"type", "TemplateProcessing"}, {"single", single}, {"special_tokens", specials}}));
  }
  if (auto it = cfg.find("chat_template"); it != cfg.end()) {
    if (it->is_string()) {
      set_chat_template(it->get<std::string>());
    } else if (it->is_array()) {
      // [{"name": "default", "template": "..."}, ...]
      for (const auto& e : *it) {
        if (e.is_object() && json_string(e, "name") == "default" && e.contains("template") && e["template"].is_string())
          set_chat_template(e["template"].get<std::string>());
      }
    }
  }
  return Status::Ok();
}

Expected<std::vector<int32_t>> Tokenizer::encode(std::string_view text, bool add_special_tokens) const {
  std::string clean = utf8::is_valid(text) ? std::string(text) : utf8::sanitize(text);
  std::vector<Piece> pieces;
  SHARDLM_TRY(added_->extract_and_normalize(clean, normalizer_.get(), pieces));
  if (pre_tokenizer_) SHARDLM_TRY(pre_tokenizer_->pre_tokenize(pieces));
  std::vector<int32_t> ids;
  ids.reserve(clean.size() / 3 + 8);
  for (const Piece& p : pieces) {
    if (p.id >= 0) {
      ids.push_back(p.id);
    } else {
      SHARDLM_TRY(model_->tokenize(p.text, ids));
    }
  }
  if (post_processor_) post_processor_->process(ids, add_special_tokens);
  return ids;
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids, bool skip_special_tokens) const {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int32_t id : ids) {
    const std::string* s = nullptr;
    if (const AddedToken* a = added_->find_id(id)) {
      s = &a->content;
    } else {
      s = model_->id_to_token(id);
    }
    if (!s) continue;  // unknown ids are skipped, as in HF
    if (skip_special_tokens && added_->is_special_content(*s)) continue;
    tokens.push_back(*s);
  }
  if (!decoder_) {
    std::string out;
    for (size_t i = 0; i < tokens.size(); ++i) {
      if (i) out.push_back(' ');
      out += tokens[i];
    }
    return out;
  }
  std::vector<std::string> chain = tokens;
  if (!decoder_->decode_chain(chain).ok()) chain = std::move(tokens);
  std::string out;
  for (const auto& t : chain) out += t;
  return out;
}

std::string Tokenizer::clean_up_tokenization(std::string s) {
  static const std::pair<const char*, const char*> kRules[] = {
      {" .", "."}, {" ?", "?"}, {" !", "!"}, {" ,", ","}, {" ' ", "'"},
      {" n't", "n't"}, {" 'm", "'m"}, {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"}};
  for (const auto& [from, to] : kRules) {
    std::string out;
    std::string_view f(from);
    size_t pos = 0, prev = 0;
    while ((pos = s.find(f, prev)) != std::string::npos) {
      out.append(s, prev, pos - prev);
      out.append(to);
      prev = pos + f.size();
    }
    out.append(s, prev, std::string::npos);
    s = std::move(out);
  }
  return s;
}

int64_t Tokenizer::vocab_size() const {
  int64_t n = model_->id_bound();
  for (const auto& t : added_->tokens()) n = std::max<int64_t>(n, int64_t{t.id} + 1);
  return n;
}

std::optional<int32_t> Tokenizer::token_to_id(std::string_view token) const {
  if (auto id = added_->token_to_id(token)) return id;
  return model_->token_to_id(token);
}

std::optional<std::string> Tokenizer::id_to_token(int32_t id) const {
  if (const AddedToken* a = added_->find_id(id)) return a->content;
  if (const std::string* s = model_->id_to_token(id)) return *s;
  return std::nullopt;
}

std::optional<int32_t> Tokenizer::bos_id() const {
  return bos_token_ ? token_to_id(*bos_token_) : std::nullopt;
}

std::optional<int32_t> Tokenizer::eos_id() const {
  return eos_token_ ? token_to_id(*eos_token_) : std::nullopt;
}

bool Tokenizer::is_special(int32_t id) const {
  const AddedToken* a = added_->find_id(id);
  return a && a->special;
}

void Tokenizer::append_token_bytes(int32_t id, bool skip_special_tokens, std::string& out) const {
  const std::string* s = nullptr;
  if (const AddedToken* a = added_->find_id(id)) {
    s = &a->content;
  } else {
    s = model_->id_to_token(id);
  }
  if (!s) return;
  if (skip_special_tokens && added_->is_special_content(*s)) return;
  // As the ByteLevel decoder: characters of the byte table become their byte;
  // a token with any other character contributes its own UTF-8.
  size_t start = out.size();
  size_t i = 0;
  while (i < s->size()) {
    if (utf8::valid_sequence_length(*s, i) == 0) break;
    int b = byte_level_byte(utf8::decode_at(*s, i));
    if (b < 0) {
      out.resize(start);
      out.append(*s);
      return;
    }
    out.push_back(static_cast<char>(b));
  }
  if (i < s->size()) {
    out.resize(start);
    out.append(*s);
  }
}

size_t Tokenizer::merge_cache_size() const { return model_->cache_size(); }
void Tokenizer::clear_merge_cache() const { model_->clear_cache(); }

void Tokenizer::set_chat_template(std::string source) {
  chat_template_ = std::move(source);
  compiled_template_.reset();
  template_error_ = Status::Ok();
  if (chat_template_.empty()) return;
  auto t = jinja::Template::parse(chat_template_);
  if (t.ok()) {
    compiled_template_ = *t;
  } else {
    template_error_ = t.status().with_context("chat template");
  }
}

Expected<std::string> Tokenizer::apply_chat_template(const json& messages, bool add_generation_prompt) const {
  return apply_chat_template(ordered_json::parse(messages.dump()), add_generation_prompt, nullptr);
}

Expected<std::string> Tokenizer::apply_chat_template(const ordered_json& messages, bool add_generation_prompt,
                                                     const ordered_json& extra_context) const {
  if (chat_template_.empty())
    return make_error(ErrorCode::kNotFound, "the tokenizer has no chat template (pass --chat-template FILE)");
  if (!template_error_.ok()) return template_error_;
  if (!messages.is_array()) return make_error(ErrorCode::kInvalidArgument, "messages must be a JSON array");
  // What transformers passes: messages, tools/documents (None unless given),
  // add_generation_prompt, the special tokens map, then caller kwargs.
  ordered_json ctx = ordered_json::object();
  ctx["messages"] = messages;
  ctx["tools"] = nullptr;
  ctx["documents"] = nullptr;
  ctx["add_generation_prompt"] = add_generation_prompt;
  for (auto it = special_tokens_context_.begin(); it != special_tokens_context_.end(); ++it) ctx[it.key()] = it.value();
  if (extra_context.is_object()) {
    for (auto it = extra_context.begin(); it != extra_context.end(); ++it) ctx[it.key()] = it.value();
  }
  auto r = compiled_template_->render(ctx);
  if (!r.ok()) return r.status().with_context("rendering the chat template");
  return r;
}

// ---- StreamDecoder ---------------------------------------------------------

StreamDecoder::StreamDecoder(std::shared_ptr<const Tokenizer> tokenizer, bool skip_special)
    : tok_(std::move(tokenizer)), skip_special_(skip_special) {}

namespace {
bool ends_with_replacement(const std::string& s) {
  return s.size() >= 3 && s.compare(s.size() - 3, 3, utf8::kReplacementUtf8) == 0;
}
}  // namespace

std::string StreamDecoder::push_bytes(int32_t id) {
  tok_->append_token_bytes(id, skip_special_, pending_);
  // Emit every settled character: complete sequences, and U+FFFD for invalid
  // subparts that are followed by more bytes. Hold an incomplete tail.
  std::string out;
  size_t i = 0;
  const size_t n = pending_.size();
  while (i < n) {
    size_t len = utf8::valid_sequence_length(pending_, i);
    if (len) {
      out.append(pending_, i, len);
      i += len;
      continue;
    }
    size_t bad = utf8::invalid_subpart_length(pending_, i);
    if (i + bad >= n && utf8::incomplete_tail_length(std::string_view(pending_).substr(i)) == n - i) break;
    out.append(utf8::kReplacementUtf8);
    i += bad;
  }
  pending_.erase(0, i);
  return out;
}

std::string StreamDecoder::push(int32_t id) {
  if (tok_->byte_level_decoding()) return push_bytes(id);
  ids_.push_back(id);
  std::vector<int32_t> window(ids_.begin() + static_cast<ptrdiff_t>(prefix_index_), ids_.end());
  std::string text = tok_->decode(window, skip_special_);
  if (text.size() <= prefix_.size() || ends_with_replacement(text)) return {};
  std::string out;
  if (text.compare(0, prefix_.size(), prefix_) == 0) {
    out = text.substr(prefix_.size());
  } else {
    // A decoder rewrote earlier text (not seen with HF decoders): emit the part
    // past the longest common prefix.
    size_t k = 0;
    while (k < prefix_.size() && k < text.size() && prefix_[k] == text[k]) ++k;
    out = text.substr(std::max(k, prefix_.size()));
  }
  // Keep one window of context: the ids since the previous emission.
  prefix_index_ = read_index_;
  read_index_ = ids_.size();
  ids_.erase(ids_.begin(), ids_.begin() + static_cast<ptrdiff_t>(prefix_index_));
  read_index_ -= prefix_index_;
  prefix_index_ = 0;
  prefix_ = tok_->decode(ids_, skip_special_);
  return out;
}

std::string StreamDecoder::flush() {
  if (tok_->byte_level_decoding()) {
    std::string out = utf8::sanitize(pending_);
    pending_.clear();
    return out;
  }
  std::vector<int32_t> window(ids_.begin() + static_cast<ptrdiff_t>(prefix_index_), ids_.end());
  std::string text = tok_->decode(window, skip_special_);
  std::string out;
  if (text.size() > prefix_.size() && text.compare(0, prefix_.size(), prefix_) == 0) out = text.substr(prefix_.size());
  ids_.clear();
  prefix_index_ = read_index_ = 0;
  prefix_.clear();
  return out;
}

}  // namespace shardlm
