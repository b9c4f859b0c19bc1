// Counter-hash random weights, the CPU twin of kernels/cuda's
// fill_random_bf16 / fill_random_bf16_block: element i of a tensor made with
// `seed` is bf16((2·u − 1) · scale) with u = the top 24 bits of
// splitmix64(seed ^ splitmix64(i)) / 2^24, so the CPU and GPU backends, and
// every tp × pp shard of a tensor, hold the same numbers (dummy weights).
#include <cstdint>

#include "kernels/cpu/cpu_kernels.h"
#include "tensor/dtype.h"

namespace shardlm::kernels::cpu {

uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

float random_weight_value(uint64_t seed, uint64_t index, float scale) {
  const float u = static_cast<float>(splitmix64(seed ^ splitmix64(index)) >> 40) * (1.0f / 16777216.0f);
  const float v = (2.0f * u - 1.0f) * scale;
  return bf16_to_f32(f32_to_bf16(v));
}

void fill_random_block(float* dst, int64_t dst_row, int64_t rows, int64_t cols, int64_t full_cols, int64_t row0,
                       int64_t col0, uint64_t seed, float scale) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c)
      dst[(dst_row + r) * cols + c] =
          random_weight_value(seed, static_cast<uint64_t>((row0 + r) * full_cols + col0 + c), scale);
}

}  // namespace shardlm::kernels::cpu
