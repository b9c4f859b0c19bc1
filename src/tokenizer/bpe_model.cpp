#include "tokenizer/bpe_model.h"

#include <array>
#include <queue>

#include <fmt/format.h>

#include "tokenizer/json_util.h"
#include "tokenizer/utf8.h"

namespace shardlm {

using nlohmann::json;

namespace {

constexpr int64_t kMaxId = 1 << 22;  // refuse vocabularies with absurdly sparse ids

inline uint64_t pair_key(int32_t a, int32_t b) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
}

struct Symbol {
  int32_t id;
  int32_t prev;
  int32_t next;
  uint32_t len;  // bytes of input it covers; 0 = merged away
};

struct MergeItem {
  uint32_t rank;
  int32_t pos;
  int32_t new_id;
  // Min-heap on (rank, pos) through std::priority_queue's max-heap.
  bool operator<(const MergeItem& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
};

}  // namespace

BpeModel::~BpeModel() = default;

Expected<std::unique_ptr<BpeModel>> BpeModel::from_json(const json& m) {
  if (!m.is_object()) return make_error(ErrorCode::kFormat, "model: expected an object");
  std::string type = json_string(m, "type", "BPE");
  if (type != "BPE") return make_error(ErrorCode::kUnsupported, "model type \"{}\" is not supported (only BPE)", type);
  std::unique_ptr<BpeModel> bpe(new BpeModel());
  bpe->cache_.reset(new CacheShard[kShards]);
  auto vit = m.find("vocab");
  if (vit == m.end() || !vit->is_object()) return make_error(ErrorCode::kFormat, "model: missing \"vocab\" object");
  int64_t max_id = -1;
  bpe->vocab_.reserve(vit->size());
  for (auto it = vit->begin(); it != vit->end(); ++it) {
    if (!it.value().is_number_integer()) return make_error(ErrorCode::kFormat, "vocab[\"{}\"]: id must be an integer", it.key());
    int64_t id = it.value().get<int64_t>();
    if (id < 0 || id >= kMaxId) return make_error(ErrorCode::kFormat, "vocab[\"{}\"]: id {} out of range", it.key(), id);
    bpe->vocab_[it.key()] = static_cast<int32_t>(id);
    max_id = std::max(max_id, id);
  }
  bpe->id_to_token_.assign(static_cast<size_t>(max_id + 1), nullptr);
  for (const auto& [tok, id] : bpe->vocab_) {
    // Duplicate ids: keep the first token seen in iteration order (any is valid).
    if (!bpe->id_to_token_[id]) bpe->id_to_token_[id] = &tok;
  }

  bpe->fuse_unk_ = json_bool(m, "fuse_unk", false);
  bpe->byte_fallback_ = json_bool(m, "byte_fallback", false);
  bpe->ignore_merges_ = json_bool(m, "ignore_merges", false);
  bpe->prefix_ = json_string(m, "continuing_subword_prefix");
  bpe->suffix_ = json_string(m, "end_of_word_suffix");
  if (auto u = m.find("unk_token"); u != m.end() && u->is_string()) {
    auto id = bpe->token_to_id(u->get<std::string>());
    // HF only fails when the unk token is actually needed; remember absence.
    if (id) bpe->unk_id_ = *id;
  }
  for (int b = 0; b < 256; ++b) {
    auto id = bpe->token_to_id(fmt::format("<0x{:02X}>", b));
    bpe->byte_ids_[b] = id ? *id : -1;
  }

  auto mit = m.find("merges");
  if (mit != m.end() && !mit->is_null()) {
    if (!mit->is_array()) return make_error(ErrorCode::kFormat, "model: \"merges\" must be an array");
    bpe->merges_.reserve(mit->size());
    uint32_t rank = 0;
    for (const auto& e : *mit) {
      std::string a, b;
      if (e.is_string()) {
        const std::string& s = e.get_ref<const std::string&>();
        size_t sp = s.find(' ');
        if (sp == std::string::npos)
          return make_error(ErrorCode::kFormat, "merges[{}]: \"{}\" is not of the form \"a b\"", rank, s);
        a = s.substr(0, sp);
        b = s.substr(sp + 1);
      } else if (e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_string()) {
        a = e[0].get<std::string>();
        b = e[1].get<std::string>();
      } else {
        return make_error(ErrorCode::kFormat, "merges[{}]: expected \"a b\" or [\"a\", \"b\"]", rank);
      }
      auto ia = bpe->token_to_id(a);
      auto ib = bpe->token_to_id(b);
      if (!ia) return make_error(ErrorCode::kFormat, "merges[{}]: token \"{}\" is not in the vocab", rank, a);
      if (!ib) return make_error(ErrorCode::kFormat, "merges[{}]: token \"{}\" is not in the vocab", rank, b);
      std::string_view b_rest = b;
      if (!bpe->prefix_.empty()) {
        if (b_rest.size() < bpe->prefix_.size())
          return make_error(ErrorCode::kFormat, "merges[{}]: \"{}\" is shorter than the subword prefix", rank, b);
        b_rest.remove_prefix(bpe->prefix_.size());
      }
      std::string merged = a + std::string(b_rest);
      auto in = bpe->token_to_id(merged);
      if (!in) return make_error(ErrorCode::kFormat, "merges[{}]: merged token \"{}\" is not in the vocab", rank, merged);
      bpe->merges_[pair_key(*ia, *ib)] = {rank, *in};  // a later duplicate wins, as in HF
      ++rank;
    }
  }
  return bpe;
}

std::optional<int32_t> BpeModel::token_to_id(std::string_view token) const {
  auto it = vocab_.find(token);
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

const std::string* BpeModel::id_to_token(int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= id_to_token_.size()) return nullptr;
  return id_to_token_[id];
}

size_t BpeModel::cache_size() const {
  size_t n = 0;
  for (size_t i = 0; i < kShards; ++i) {
    std::lock_guard<std::mutex> lk(cache_[i].mu);
    n += cache_[i].map.size();
  }
  return n;
}

void BpeModel::clear_cache() const {
  for (size_t i = 0; i < kShards; ++i) {
    std::lock_guard<std::mutex> lk(cache_[i].mu);
    cache_[i].map.clear();
  }
}

Status BpeModel::tokenize(std::string_view piece, std::vector<int32_t>& out) const {
  if (piece.empty()) return Status::Ok();
  if (ignore_merges_) {
    if (auto it = vocab_.find(piece); it != vocab_.end()) {
      out.push_back(it->second);
      return Status::Ok();
    }
  }
  const bool cacheable = piece.size() <= kMaxCachedPiece;
  size_t h = 0;
  if (cacheable) {
    h = StringHash{}(piece);
    CacheShard& sh = cache_[h % kShards];
    std::lock_guard<std::mutex> lk(sh.mu);
    auto it = sh.map.find(piece);
    if (it != sh.map.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return Status::Ok();
    }
  }
  size_t before = out.size();
  merge_word(piece, out);
  if (cacheable) {
    CacheShard& sh = cache_[h % kShards];
    std::lock_guard<std::mutex> lk(sh.mu);
    if (sh.map.size() >= kShardCapacity) sh.map.clear();
    sh.map.emplace(std::string(piece), std::vector<int32_t>(out.begin() + static_cast<ptrdiff_t>(before), out.end()));
  }
  return Status::Ok();
}

void BpeModel::merge_word(std::string_view w, std::vector<int32_t>& out) const {
  std::vector<Symbol> symbols;
  symbols.reserve(w.size());
  auto add = [&](int32_t id, uint32_t len) {
    int32_t idx = static_cast<int32_t>(symbols.size());
    symbols.push_back({id, idx - 1, -1, len});
    if (idx > 0) symbols[idx - 1].next = idx;
  };
  int32_t unk_id = -1;  // pending unk token and the bytes it covers
  uint32_t unk_len = 0;
  std::string tmp;
  size_t i = 0;
  while (i < w.size()) {
    size_t start = i;
    size_t len = utf8::valid_sequence_length(w, i);
    if (len == 0) len = 1;  // defensive: pieces are valid UTF-8
    i += len;
    const bool is_first = start == 0;
    const bool is_last = i >= w.size();
    std::string_view s = w.substr(start, len);
    if ((!is_first && !prefix_.empty()) || (is_last && !suffix_.empty())) {
      tmp.clear();
      if (!is_first) tmp.append(prefix_);
      tmp.append(s);
      if (is_last) tmp.append(suffix_);
      s = tmp;
    }
    auto it = vocab_.find(s);
    if (it != vocab_.end()) {
      if (unk_id >= 0) {
        add(unk_id, unk_len);
        unk_id = -1;
      }
      add(it->second, static_cast<uint32_t>(len));
      continue;
    }
    if (byte_fallback_) {
      bool all = true;
      for (char c : s) all = all && byte_ids_[static_cast<unsigned char>(c)] >= 0;
      if (all) {
        for (char c : s) add(byte_ids_[static_cast<unsigned char>(c)], 1);
        continue;
      }
    }
    if (unk_id_) {
      if (unk_id >= 0 && fuse_unk_) {
        unk_len += static_cast<uint32_t>(len);
      } else {
        if (unk_id >= 0) add(unk_id, unk_len);
        unk_id = *unk_id_;
        unk_len = static_cast<uint32_t>(len);
      }
    }
    // No unk token: the character is dropped, as HF does.
  }
  if (unk_id >= 0) add(unk_id, unk_len);

  if (symbols.size() > 1 && !merges_.empty()) {
    std::vector<MergeItem> heap_storage;
    heap_storage.reserve(symbols.size());
    std::priority_queue<MergeItem> queue(std::less<MergeItem>(), std::move(heap_storage));
    for (size_t k = 0; k + 1 < symbols.size(); ++k) {
      auto m = merges_.find(pair_key(symbols[k].id, symbols[k + 1].id));
      if (m != merges_.end()) queue.push({m->second.first, static_cast<int32_t>(k), m->second.second});
    }
    while (!queue.empty()) {
      MergeItem top = queue.top();
      queue.pop();
      Symbol& cur = symbols[top.pos];
      if (cur.len == 0 || cur.next == -1) continue;
      int32_t next_pos = cur.next;
      Symbol right = symbols[next_pos];
      auto m = merges_.find(pair_key(cur.id, right.id));
      if (m == merges_.end() || m->second.second != top.new_id) continue;  // stale entry
      cur.id = top.new_id;
      cur.len += right.len;
      cur.next = right.next;
      symbols[next_pos].len = 0;
      if (right.next >= 0 && static_cast<size_t>(right.next) < symbols.size()) symbols[right.next].prev = top.pos;
      if (cur.prev >= 0) {
        auto pm = merges_.find(pair_key(symbols[cur.prev].id, cur.id));
        if (pm != merges_.end()) queue.push({pm->second.first, cur.prev, pm->second.second});
      }
      if (cur.next >= 0) {
        auto nm = merges_.find(pair_key(cur.id, symbols[cur.next].id));
        if (nm != merges_.end()) queue.push({nm->second.first, top.pos, nm->second.second});
      }
    }
  }
  for (const Symbol& s : symbols)
    if (s.len != 0) out.push_back(s.id);
}

}  // namespace shardlm
