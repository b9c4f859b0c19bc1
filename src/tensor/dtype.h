// Element types and the conversions between them. Compute on the CPU backend is
// f32; f16/bf16 are storage types converted with round-to-nearest-even.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "base/status.h"

namespace shardlm {

enum class DType : uint8_t { kF32, kF16, kBF16, kI32 };

inline size_t dtype_size(DType t) {
  switch (t) {
    case DType::kF32: return 4;
    case DType::kF16: return 2;
    case DType::kBF16: return 2;
    case DType::kI32: return 4;
  }
  return 0;
}

const char* dtype_name(DType t);  // "f32", "f16", "bf16", "i32"
// Parses safetensors names ("F32", "F16", "BF16", "I32") and ours ("f32", "bfloat16", …).
Expected<DType> parse_dtype(std::string_view s);

inline float bf16_to_f32(uint16_t h) {
  uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline uint16_t f32_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);  // quiet NaN
  uint32_t rounding = 0x7fffu + ((u >> 16) & 1u);  // round to nearest, ties to even
  return static_cast<uint16_t>((u + rounding) >> 16);
}

float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);

// Converts n elements of type `from` at src to f32 at dst.
void convert_to_f32(DType from, const void* src, float* dst, size_t n);
// Converts n f32 elements at src to type `to` at dst.
void convert_from_f32(DType to, const float* src, void* dst, size_t n);

}  // namespace shardlm
