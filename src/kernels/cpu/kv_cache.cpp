// Paged KV cache writes: token t's k/v rows go to slot slot_mapping[t] =
// block * block_size + offset, i.e. cache row `slot` of the flattened
// [num_blocks * block_size, nkv_heads, head_dim] cache.
#include <cstring>

#include "kernels/cpu/cpu_kernels.h"

namespace shardlm::kernels::cpu {

void kv_write(const float* k, const float* v, float* k_cache, float* v_cache,
              const int32_t* slot_mapping, int64_t ntok, int64_t nkv_heads, int64_t head_dim,
              int64_t block_size) {
  // block_size is implied by the slot numbering; the flat layout needs only the row size.
  const int64_t row = nkv_heads * head_dim;
  const size_t bytes = static_cast<size_t>(row) * sizeof(float);
  for (int64_t t = 0; t < ntok; ++t) {
    const int64_t slot = slot_mapping[t];
    if (slot < 0) continue;
    std::memcpy(k_cache + slot * row, k + t * row, bytes);
    std::memcpy(v_cache + slot * row, v + t * row, bytes);
  }
}

}  // namespace shardlm::kernels::cpu
