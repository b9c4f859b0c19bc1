#include "tokenizer/post_processor.h"

#include <string>
#include <unordered_map>

#include "tokenizer/json_util.h"

namespace shardlm {

using nlohmann::json;

namespace {

// A template is a list of items: either the input sequence or fixed ids.
class TemplateProcessor final : public PostProcessor {
 public:
  struct Item {
    bool is_sequence = false;
    std::vector<int32_t> ids;
  };
  explicit TemplateProcessor(std::vector<Item> items) : items_(std::move(items)) {}
  void process(std::vector<int32_t>& ids, bool add_special) const override {
    if (!add_special) return;  // only the Sequence items remain, i.e. ids as they are
    std::vector<int32_t> out;
    out.reserve(ids.size() + 4);
    bool used = false;
    for (const auto& it : items_) {
      if (it.is_sequence) {
        if (!used) out.insert(out.end(), ids.begin(), ids.end());
        used = true;
      } else {
        out.insert(out.end(), it.ids.begin(), it.ids.end());
      }
    }
    ids = std::move(out);
  }

 private:
  std::vector<Item> items_;
};

class SequenceProcessor final : public PostProcessor {
 public:
  explicit SequenceProcessor(std::vector<std::unique_ptr<PostProcessor>> v) : steps_(std::move(v)) {}
  void process(std::vector<int32_t>& ids, bool add_special) const override {
    for (const auto& s : steps_) s->process(ids, add_special);
  }

 private:
  std::vector<std::unique_ptr<PostProcessor>> steps_;
};

class NoopProcessor final : public PostProcessor {
 public:
  void process(std::vector<int32_t>&, bool) const override {}
};

Expected<std::unique_ptr<PostProcessor>> make_template(const json& j) {
  auto single = j.find("single");
  if (single == j.end() || !single->is_array())
    return make_error(ErrorCode::kFormat, "TemplateProcessing: missing \"single\" array");
  std::unordered_map<std::string, std::vector<int32_t>> specials;
  if (auto st = j.find("special_tokens"); st != j.end() && st->is_object()) {
    for (auto it = st->begin(); it != st->end(); ++it) {
      std::vector<int32_t> ids;
      if (it.value().is_object() && it.value().contains("ids") && it.value()["ids"].is_array()) {
        for (const auto& v : it.value()["ids"]) {
          if (!v.is_number_integer()) return make_error(ErrorCode::kFormat, "TemplateProcessing: ids must be integers");
          ids.push_back(v.get<int32_t>());
        }
      }
      specials[it.key()] = std::move(ids);
    }
  }
  std::vector<TemplateProcessor::Item> items;
  for (const auto& piece : *single) {
    TemplateProcessor::Item item;
    if (piece.is_object() && piece.contains("Sequence")) {
      item.is_sequence = true;
    } else if (piece.is_object() && piece.contains("SpecialToken") && piece["SpecialToken"].is_object()) {
      std::string id = json_string(piece["SpecialToken"], "id");
      auto it = specials.find(id);
      if (it == specials.end())
        return make_error(ErrorCode::kFormat, "TemplateProcessing: special token \"{}\" is not in special_tokens", id);
      item.ids = it->second;
    } else {
      return make_error(ErrorCode::kFormat, "TemplateProcessing: unknown template piece {}", piece.dump());
    }
    items.push_back(std::move(item));
  }
  return std::unique_ptr<PostProcessor>(new TemplateProcessor(std::move(items)));
}

Expected<std::unique_ptr<PostProcessor>> make_cls_sep(const json& j) {
  auto get = [&](const char* key) -> Expected<int32_t> {
    auto it = j.find(key);
    if (it == j.end() || !it->is_array() || it->size() != 2 || !(*it)[1].is_number_integer())
      return make_error(ErrorCode::kFormat, "{}: \"{}\" must be [token, id]", json_string(j, "type"), key);
    return (*it)[1].get<int32_t>();
  };
  SHARDLM_ASSIGN_OR_RETURN(int32_t cls, get("cls"));
  SHARDLM_ASSIGN_OR_RETURN(int32_t sep, get("sep"));
  std::vector<TemplateProcessor::Item> items(3);
  items[0].ids = {cls};
  items[1].is_sequence = true;
  items[2].ids = {sep};
  return std::unique_ptr<PostProcessor>(new TemplateProcessor(std::move(items)));
}

}  // namespace

Expected<std::unique_ptr<PostProcessor>> make_post_processor(const json& j) {
  if (j.is_null()) return std::unique_ptr<PostProcessor>();
  if (!j.is_object() || !j.contains("type") || !j["type"].is_string())
    return make_error(ErrorCode::kFormat, "post_processor: expected an object with a \"type\"");
  const std::string type = j["type"].get<std::string>();
  if (type == "TemplateProcessing") return make_template(j);
  if (type == "ByteLevel") return std::unique_ptr<PostProcessor>(new NoopProcessor());
  if (type == "BertProcessing" || type == "RobertaProcessing") return make_cls_sep(j);
  if (type == "Sequence") {
    if (!j.contains("processors") || !j["processors"].is_array())
      return make_error(ErrorCode::kFormat, "post_processor Sequence: missing \"processors\" array");
    std::vector<std::unique_ptr<PostProcessor>> v;
    for (const auto& p : j["processors"]) {
      SHARDLM_ASSIGN_OR_RETURN(auto step, make_post_processor(p));
      if (step) v.push_back(std::move(step));
    }
    return std::unique_ptr<PostProcessor>(new SequenceProcessor(std::move(v)));
  }
  return make_error(ErrorCode::kUnsupported, "post_processor type \"{}\" is not supported", type);
}

}  // namespace shardlm
