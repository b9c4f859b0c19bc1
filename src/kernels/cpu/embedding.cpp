// Token embedding lookup, vocab-parallel aware: a shard holds rows
// [vocab_offset, vocab_offset + vocab) of the full table; other ids give zeros
// so that summing the shards' outputs (all-reduce) yields the full lookup.
#include <algorithm>
#include <cstring>

#include "base/thread_pool.h"
#include "kernels/cpu/cpu_kernels.h"

namespace shardlm::kernels::cpu {

void embedding(const float* table, int64_t vocab, int64_t hidden, const int32_t* ids, int64_t n,
               float* out, int64_t vocab_offset) {
  parallel_for(
      n,
      [&](int64_t i0, int64_t i1) {
        for (int64_t i = i0; i < i1; ++i) {
          const int64_t row = static_cast<int64_t>(ids[i]) - vocab_offset;
          float* o = out + i * hidden;
          if (row >= 0 && row < vocab)
            std::memcpy(o, table + row * hidden, static_cast<size_t>(hidden) * sizeof(float));
          else
            std::fill(o, o + hidden, 0.0f);
        }
      },
      std::max<int64_t>(1, (16 << 10) / std::max<int64_t>(hidden, 1)));
}

}  // namespace shardlm::kernels::cpu
