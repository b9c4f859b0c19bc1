#include "runtime/kv_block_manager.h"

#include <cstddef>

namespace shardlm {

KvBlockManager::KvBlockManager(int64_t num_blocks, int64_t block_size)
    : num_blocks_(num_blocks < 0 ? 0 : num_blocks), block_size_(block_size < 1 ? 1 : block_size) {
  // LIFO: the back is handed out first, so block 0 goes first on a fresh pool.
  free_.reserve(static_cast<std::size_t>(num_blocks_));
  for (int64_t b = num_blocks_ - 1; b >= 0; --b) free_.push_back(static_cast<int32_t>(b));
}

double KvBlockManager::usage() const {
  if (num_blocks_ == 0) return 0.0;
  return static_cast<double>(num_blocks_ - num_free_blocks()) / static_cast<double>(num_blocks_);
}

int64_t KvBlockManager::blocks_needed(int64_t seq_id, int64_t num_tokens) const {
  if (num_tokens <= 0) return 0;
  const int64_t want = (num_tokens + block_size_ - 1) / block_size_;
  auto it = tables_.find(seq_id);
  const int64_t held = it == tables_.end() ? 0 : static_cast<int64_t>(it->second.size());
  return want > held ? want - held : 0;
}

bool KvBlockManager::ensure_capacity(int64_t seq_id, int64_t num_tokens) {
  const int64_t need = blocks_needed(seq_id, num_tokens);
  if (need > num_free_blocks()) return false;
  if (need == 0) return true;
  auto& table = tables_[seq_id];
  table.reserve(table.size() + static_cast<std::size_t>(need));
  for (int64_t i = 0; i < need; ++i) {
    table.push_back(free_.back());
    free_.pop_back();
  }
  return true;
}

void KvBlockManager::free(int64_t seq_id) {
  auto it = tables_.find(seq_id);
  if (it == tables_.end()) return;
  // Reverse order, so that the sequence's first block is the next one handed out.
  for (auto b = it->second.rbegin(); b != it->second.rend(); ++b) free_.push_back(*b);
  tables_.erase(it);
}

const std::vector<int32_t>& KvBlockManager::block_table(int64_t seq_id) const {
  static const std::vector<int32_t> kEmpty;
  auto it = tables_.find(seq_id);
  return it == tables_.end() ? kEmpty : it->second;
}

int64_t KvBlockManager::capacity(int64_t seq_id) const {
  return static_cast<int64_t>(block_table(seq_id).size()) * block_size_;
}

int32_t KvBlockManager::slot(int64_t seq_id, int64_t pos) const {
  const auto& table = block_table(seq_id);
  if (pos < 0 || pos >= static_cast<int64_t>(table.size()) * block_size_) return -1;
  return static_cast<int32_t>(table[static_cast<std::size_t>(pos / block_size_)] * block_size_ +
                              pos % block_size_);
}

}  // namespace shardlm
