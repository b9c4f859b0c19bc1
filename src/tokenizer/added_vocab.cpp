#include "tokenizer/added_vocab.h"

#include "tokenizer/utf8.h"

namespace shardlm {

void AddedVocabulary::Trie::insert(std::string_view pattern, int32_t token) {
  if (pattern.empty()) return;
  int32_t n = 0;
  for (char ch : pattern) {
    unsigned char c = static_cast<unsigned char>(ch);
    int32_t found = -1;
    for (auto& [k, v] : nodes[n].next)
      if (k == c) {
        found = v;
        break;
      }
    if (found < 0) {
      found = static_cast<int32_t>(nodes.size());
      nodes[n].next.emplace_back(c, found);
      nodes.emplace_back();
    }
    n = found;
  }
  if (nodes[n].token < 0) nodes[n].token = token;  // first pattern wins on duplicates
  first_byte[static_cast<unsigned char>(pattern[0])] = true;
}

std::pair<size_t, int32_t> AddedVocabulary::Trie::longest_at(std::string_view s, size_t i) const {
  std::pair<size_t, int32_t> best{0, -1};
  int32_t n = 0;
  for (size_t k = i; k < s.size(); ++k) {
    unsigned char c = static_cast<unsigned char>(s[k]);
    int32_t found = -1;
    for (auto& [key, v] : nodes[n].next)
      if (key == c) {
        found = v;
        break;
      }
    if (found < 0) break;
    n = found;
    if (nodes[n].token >= 0) best = {k + 1 - i, nodes[n].token};
  }
  return best;
}

Status AddedVocabulary::build(std::vector<AddedToken> tokens, const Normalizer* normalizer) {
  tokens_.clear();
  by_content_.clear();
  by_id_.clear();
  raw_trie_ = Trie();
  normalized_trie_ = Trie();
  for (auto& t : tokens) {
    if (t.content.empty()) continue;
    if (by_content_.count(t.content)) continue;
    by_content_[t.content] = t.id;
    by_id_[t.id] = tokens_.size();
    tokens_.push_back(std::move(t));
  }
  // Matching order as in HF: special tokens first, then the others.
  for (int pass = 0; pass < 2; ++pass) {
    for (size_t i = 0; i < tokens_.size(); ++i) {
      const AddedToken& t = tokens_[i];
      if (t.special != (pass == 0)) continue;
      if (!t.normalized) {
        raw_trie_.insert(t.content, static_cast<int32_t>(i));
      } else {
        std::string c = t.content;
        if (normalizer) SHARDLM_TRY(normalizer->normalize(c));
        normalized_trie_.insert(c, static_cast<int32_t>(i));
      }
    }
  }
  return Status::Ok();
}

std::optional<int32_t> AddedVocabulary::token_to_id(std::string_view content) const {
  auto it = by_content_.find(content);
  if (it == by_content_.end()) return std::nullopt;
  return it->second;
}

const AddedToken* AddedVocabulary::find_id(int32_t id) const {
  auto it = by_id_.find(id);
  return it == by_id_.end() ? nullptr : &tokens_[it->second];
}

bool AddedVocabulary::is_special_content(std::string_view content) const {
  auto it = by_content_.find(content);
  if (it == by_content_.end()) return false;
  const AddedToken* t = find_id(it->second);
  return t && t->special;
}

namespace {

// Last code point before `end` (s valid UTF-8).
char32_t last_char(std::string_view s, size_t end, size_t* start = nullptr) {
  size_t j = end - 1;
  while (j > 0 && (static_cast<unsigned char>(s[j]) & 0xC0) == 0x80) --j;
  if (start) *start = j;
  size_t k = j;
  return utf8::decode_at(s, k);
}

}  // namespace

void AddedVocabulary::find_matches(std::string_view s, const Trie& trie,
                                   std::vector<std::pair<int32_t, std::pair<size_t, size_t>>>& out) const {
  out.clear();
  if (s.empty()) return;
  size_t start_offset = 0;
  size_t i = 0;
  while (i < s.size()) {
    if (!trie.first_byte[static_cast<unsigned char>(s[i])]) {
      ++i;
      continue;
    }
    auto [len, tok] = trie.longest_at(s, i);
    if (tok < 0) {
      ++i;
      continue;
    }
    size_t start = i, stop = i + len;
    i = stop;  // the matcher resumes after this match whether or not it is kept
    const AddedToken& t = tokens_[tok];
    if (t.single_word) {
      bool start_space = start == 0 || !utf8::is_word_char(last_char(s, start));
      bool stop_space = true;
      if (stop < s.size()) {
        size_t k = stop;
        stop_space = !utf8::is_word_char(utf8::decode_at(s, k));
      }
      if (!start_space || !stop_space) continue;
    }
    if (t.lstrip) {
      size_t newstart = start;
      while (newstart > 0) {
        size_t cs;
        char32_t c = last_char(s, newstart, &cs);
        if (!utf8::is_white_space(c)) break;
        newstart = cs;
      }
      start = std::max(newstart, start_offset);
    }
    if (t.rstrip) {
      while (stop < s.size()) {
        size_t k = stop;
        char32_t c = utf8::decode_at(s, k);
        if (!utf8::is_white_space(c)) break;
        stop = k;
      }
    }
    if (start_offset < start) out.push_back({-1, {start_offset, start}});
    out.push_back({tok, {start, stop}});
    start_offset = stop;
  }
  if (start_offset < s.size()) out.push_back({-1, {start_offset, s.size()}});
}

void AddedVocabulary::split_with(Piece&& p, const Trie& trie, std::vector<Piece>& out) const {
  if (trie.empty() || p.text.empty()) {
    if (!p.text.empty()) out.push_back(std::move(p));
    return;
  }
  std::vector<std::pair<int32_t, std::pair<size_t, size_t>>> m;
  find_matches(p.text, trie, m);
  if (m.size() == 1 && m[0].first < 0) {
    out.push_back(std::move(p));
    return;
  }
  bool first = true;
  for (auto& [tok, r] : m) {
    // rstrip can run past the start of the next match (as in HF); clamp so
    // the slice stays inside the text.
    size_t b = std::min(r.first, p.text.size()), e = std::min(r.second, p.text.size());
    if (e <= b) continue;
    Piece q;
    q.text.assign(p.text, b, e - b);
    q.id = tok >= 0 ? tokens_[tok].id : -1;
    q.at_start = p.at_start && first && b == 0;
    first = false;
    out.push_back(std::move(q));
  }
}

Status AddedVocabulary::extract_and_normalize(const std::string& text, const Normalizer* normalizer,
                                              std::vector<Piece>& out) const {
  Piece whole;
  whole.text = text;
  whole.at_start = true;
  std::vector<Piece> stage;
  split_with(std::move(whole), raw_trie_, stage);
  for (auto& p : stage) {
    if (p.id >= 0) {
      out.push_back(std::move(p));
      continue;
    }
    if (normalizer) SHARDLM_TRY(normalizer->normalize(p.text));
    split_with(std::move(p), normalized_trie_, out);
  }
  return Status::Ok();
}

}  // namespace shardlm
