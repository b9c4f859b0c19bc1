// Paged KV cache bookkeeping: a pool of fixed-size blocks (block_size tokens
// each) and one block table per sequence. It only hands out block ids; the
// backend owns the memory ([num_blocks, block_size, kv_heads, head_dim] per layer).
#pragma once

#include <cstdint>
#include <unordered_map>
#include <vector>

namespace shardlm {

class KvBlockManager {
 public:
  KvBlockManager(int64_t num_blocks, int64_t block_size);

  int64_t num_blocks() const { return num_blocks_; }
  int64_t block_size() const { return block_size_; }
  int64_t num_free_blocks() const { return static_cast<int64_t>(free_.size()); }
  double usage() const;  // fraction of blocks in use, 0..1

  // Blocks still to allocate so that `seq_id` can hold `num_tokens` tokens.
  int64_t blocks_needed(int64_t seq_id, int64_t num_tokens) const;
  // Grows the sequence's table to hold `num_tokens` tokens (allocate + append).
  // Returns false and changes nothing when the pool has too few free blocks.
  // Never shrinks; a sequence that needs no block gets no table (has() stays false).
  bool ensure_capacity(int64_t seq_id, int64_t num_tokens);
  // Returns every block of the sequence to the pool (no-op if it has none).
  void free(int64_t seq_id);

  bool has(int64_t seq_id) const { return tables_.count(seq_id) != 0; }
  const std::vector<int32_t>& block_table(int64_t seq_id) const;
  // Cache slot of token `pos`: block_table[pos / block_size] * block_size + pos % block_size.
  // -1 when `pos` lies beyond the sequence's blocks (a caller bug).
  int32_t slot(int64_t seq_id, int64_t pos) const;
  // Tokens the sequence's blocks can hold (blocks held × block_size).
  int64_t capacity(int64_t seq_id) const;
  // Sequences that hold at least one block.
  int64_t num_tables() const { return static_cast<int64_t>(tables_.size()); }

 private:
  int64_t num_blocks_;
  int64_t block_size_;
  std::vector<int32_t> free_;  // LIFO free list
  std::unordered_map<int64_t, std::vector<int32_t>> tables_;
};

}  // namespace shardlm
