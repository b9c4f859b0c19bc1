// Paged KV cache writes: token t's k/v heads go to slot slot_mapping[t] =
// block * block_size + offset of the head-major cache
// [num_blocks, nkv_heads, block_size, head_dim]: head g of that token is the
// head_dim run at ((block * nkv_heads + g) * block_size + offset) * head_dim.
#include <cstring>

#include "kernels/cpu/cpu_kernels.h"

namespace shardlm::kernels::cpu {

void kv_write(const float* k, const float* v, float* k_cache, float* v_cache,
              const int32_t* slot_mapping, int64_t ntok, int64_t nkv_heads, int64_t head_dim,
              int64_t block_size) {
  const int64_t row = nkv_heads * head_dim;
  const size_t bytes = static_cast<size_t>(head_dim) * sizeof(float);
  for (int64_t t = 0; t < ntok; ++t) {
    const int64_t slot = slot_mapping[t];
    if (slot < 0) continue;
    const int64_t block = slot / block_size, offset = slot % block_size;
    for (int64_t g = 0; g < nkv_heads; ++g) {
      const int64_t dst = ((block * nkv_heads + g) * block_size + offset) * head_dim;
      std::memcpy(k_cache + dst, k + t * row + g * head_dim, bytes);
      std::memcpy(v_cache + dst, v + t * row + g * head_dim, bytes);
    }
  }
}

}  // namespace shardlm::kernels::cpu
