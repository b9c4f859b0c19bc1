// f16/bf16 conversions: exhaustive round trips, round-to-nearest-even against a
// double-precision reference, subnormals, overflow, inf and NaN.
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "tensor/dtype.h"

namespace shardlm {
namespace {

float from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
uint32_t to_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

// IEEE binary16 decoded the textbook way.
double f16_value(uint16_t h) {
  const int sign = h >> 15, exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
  double v;
  if (exp == 0)
    v = std::ldexp(mant, -24);
  else if (exp == 31)
    v = mant ? std::numeric_limits<double>::quiet_NaN() : std::numeric_limits<double>::infinity();
  else
    v = std::ldexp(1024 + mant, exp - 25);
  return sign ? -v : v;
}

// Rounds |x| to `bits` significant bits, ties to even, with the subnormal
// spacing of min_exp; values rounding to 2^(max_exp+1) or above become inf.
double round_reference(double x, int bits, int min_exp, int max_exp) {
  if (std::isnan(x) || std::isinf(x) || x == 0) return x;
  const double a = std::fabs(x);
  const int e = std::max(std::ilogb(a), min_exp);
  const double ulp = std::ldexp(1.0, e - (bits - 1));
  double r = std::nearbyint(a / ulp) * ulp;  // default rounding mode: ties to even
  if (r >= std::ldexp(1.0, max_exp + 1)) r = std::numeric_limits<double>::infinity();
  return std::copysign(r, x);
}

double f16_reference(float x) { return round_reference(x, 11, -14, 15); }
double bf16_reference(float x) { return round_reference(x, 8, -126, 127); }

TEST(F16, DecodesEveryPattern) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const float f = f16_to_f32(static_cast<uint16_t>(h));
    const double want = f16_value(static_cast<uint16_t>(h));
    if (std::isnan(want)) {
      EXPECT_TRUE(std::isnan(f)) << std::hex << h;
    } else {
      ASSERT_EQ(static_cast<double>(f), want) << std::hex << h;
      ASSERT_EQ(std::signbit(f), bool(h & 0x8000)) << std::hex << h;
    }
  }
}

TEST(F16, RoundTripsEveryPattern) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const uint16_t back = f32_to_f16(f16_to_f32(static_cast<uint16_t>(h)));
    if (std::isnan(f16_value(static_cast<uint16_t>(h)))) {
      EXPECT_TRUE(std::isnan(f16_to_f32(back))) << std::hex << h;
      EXPECT_EQ(back & 0x8000, h & 0x8000) << "NaN keeps its sign";
    } else {
      ASSERT_EQ(back, h) << std::hex << h;
    }
  }
}

TEST(Bf16, RoundTripsEveryPattern) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const float f = bf16_to_f32(static_cast<uint16_t>(h));
    EXPECT_EQ(to_bits(f), h << 16);
    const uint16_t back = f32_to_bf16(f);
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(bf16_to_f32(back))) << std::hex << h;
      EXPECT_EQ(back & 0x8000, h & 0x8000) << "NaN keeps its sign";
    } else {
      ASSERT_EQ(back, h) << std::hex << h;
    }
  }
}

// The midpoint between two neighbouring values rounds to the even one; a hair
// either side rounds to the nearer one. Covers subnormals, the subnormal/normal
// boundary and the largest finite value (whose upper neighbour is inf).
TEST(F16, TiesToEvenAtEveryMidpoint) {
  for (uint16_t h = 0; h < 0x7c00; ++h) {
    const double lo = f16_value(h);
    const double hi = h + 1 == 0x7c00 ? 65536.0 : f16_value(h + 1);  // "next" past the max is 2^16
    const float mid = static_cast<float>((lo + hi) / 2);  // 12 significant bits: exact in f32
    ASSERT_EQ(static_cast<double>(mid), (lo + hi) / 2);
    const uint16_t even = (h & 1) ? h + 1 : h;
    EXPECT_EQ(f32_to_f16(mid), even) << "midpoint above " << std::hex << h;
    EXPECT_EQ(f32_to_f16(std::nextafter(mid, 0.0f)), h) << std::hex << h;
    EXPECT_EQ(f32_to_f16(std::nextafter(mid, INFINITY)), h + 1) << std::hex << h;
    EXPECT_EQ(f32_to_f16(-mid), even | 0x8000) << std::hex << h;
  }
}

TEST(Bf16, TiesToEvenAtEveryMidpoint) {
  for (uint32_t h = 0; h < 0x7f80; ++h) {
    const float lo = bf16_to_f32(static_cast<uint16_t>(h));
    const double hi = h + 1 == 0x7f80 ? std::ldexp(1.0, 128) : bf16_to_f32(h + 1);
    const float mid = static_cast<float>((static_cast<double>(lo) + hi) / 2);
    const uint16_t even = (h & 1) ? h + 1 : h;
    EXPECT_EQ(f32_to_bf16(mid), even) << std::hex << h;
    EXPECT_EQ(f32_to_bf16(std::nextafter(mid, 0.0f)), h) << std::hex << h;
    EXPECT_EQ(f32_to_bf16(std::nextafter(mid, INFINITY)), h + 1) << std::hex << h;
    EXPECT_EQ(f32_to_bf16(-mid), even | 0x8000) << std::hex << h;
  }
}

// Random f32 bit patterns (every exponent, f32 subnormals included) against
// the double-precision reference rounding.
TEST(Conversions, RandomPatternsMatchReference) {
  std::mt19937 gen(12345);
  for (int i = 0; i < 2000000; ++i) {
    const float x = from_bits(gen());
    if (std::isnan(x)) {
      EXPECT_TRUE(std::isnan(f16_to_f32(f32_to_f16(x))));
      EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(x))));
      continue;
    }
    ASSERT_EQ(static_cast<double>(f16_to_f32(f32_to_f16(x))), f16_reference(x))
        << "f16 of " << x << " (0x" << std::hex << to_bits(x) << ")";
    ASSERT_EQ(static_cast<double>(bf16_to_f32(f32_to_bf16(x))), bf16_reference(x))
        << "bf16 of " << x << " (0x" << std::hex << to_bits(x) << ")";
  }
}

TEST(Conversions, SpecialValues) {
  const float inf = std::numeric_limits<float>::infinity();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  EXPECT_EQ(f32_to_f16(inf), 0x7c00);
  EXPECT_EQ(f32_to_f16(-inf), 0xfc00);
  EXPECT_EQ(f32_to_bf16(inf), 0x7f80);
  EXPECT_EQ(f32_to_bf16(-inf), 0xff80);
  EXPECT_EQ(f32_to_f16(0.0f), 0x0000);
  EXPECT_EQ(f32_to_f16(-0.0f), 0x8000);
  EXPECT_EQ(f32_to_bf16(-0.0f), 0x8000);
  EXPECT_TRUE(std::isnan(f16_to_f32(f32_to_f16(nan))));
  EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(nan))));
  // A signalling NaN whose payload sits in the dropped low bits stays a NaN.
  EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(from_bits(0x7f800001)))));
  EXPECT_TRUE(std::isnan(f16_to_f32(f32_to_f16(from_bits(0x7f800001)))));
  // Overflow: 65504 is f16's max; from 65520 (the midpoint to 2^16) it is inf.
  EXPECT_EQ(f32_to_f16(65504.0f), 0x7bff);
  EXPECT_EQ(f32_to_f16(65519.996f), 0x7bff);
  EXPECT_EQ(f32_to_f16(65520.0f), 0x7c00);
  EXPECT_EQ(f32_to_f16(std::numeric_limits<float>::max()), 0x7c00);
  EXPECT_EQ(f32_to_bf16(std::numeric_limits<float>::max()), 0x7f80);
  // Subnormals: f16's smallest is 2^-24; half of it ties to even (0).
  EXPECT_EQ(f32_to_f16(std::ldexp(1.0f, -24)), 0x0001);
  EXPECT_EQ(f32_to_f16(std::ldexp(1.0f, -25)), 0x0000);
  EXPECT_EQ(f32_to_f16(std::ldexp(1.5f, -25)), 0x0001);
  EXPECT_EQ(f32_to_f16(std::ldexp(3.0f, -25)), 0x0002);  // 1.5 ulp: tie to even 2
  EXPECT_EQ(f16_to_f32(0x03ff), std::ldexp(1023.0f, -24));  // largest subnormal
  EXPECT_EQ(f16_to_f32(0x0400), std::ldexp(1.0f, -14));     // smallest normal
  EXPECT_EQ(f32_to_f16(std::ldexp(1.0f, -14) - std::ldexp(1.0f, -26)), 0x0400);  // rounds up into normal
  // bf16 keeps f32's exponent range: f32 subnormals survive.
  EXPECT_EQ(f32_to_bf16(from_bits(0x00010000)), 0x0001);
  EXPECT_EQ(bf16_to_f32(0x0001), from_bits(0x00010000));
  EXPECT_EQ(f32_to_bf16(from_bits(0x00008000)), 0x0000);  // tie, even
  EXPECT_EQ(f32_to_bf16(from_bits(0x00018000)), 0x0002);  // tie, even
  // Everyday values.
  EXPECT_EQ(f32_to_f16(1.0f), 0x3c00);
  EXPECT_EQ(f32_to_f16(-2.5f), 0xc100);
  EXPECT_EQ(f32_to_bf16(1.0f), 0x3f80);
  EXPECT_EQ(f32_to_bf16(3.140625f), 0x4049);
}

TEST(Conversions, ArraysForEveryDtype) {
  const std::vector<float> src = {0.0f, -1.5f, 3.0e-5f, 65504.0f, 1e10f, -0.3f, 2.5f, -2.5f};
  for (DType t : {DType::kF32, DType::kF16, DType::kBF16, DType::kI32}) {
    std::vector<unsigned char> buf(src.size() * dtype_size(t));
    convert_from_f32(t, src.data(), buf.data(), src.size());
    std::vector<float> back(src.size());
    convert_to_f32(t, buf.data(), back.data(), src.size());
    for (size_t i = 0; i < src.size(); ++i) {
      float want = src[i];
      if (t == DType::kF16) want = f16_to_f32(f32_to_f16(src[i]));
      if (t == DType::kBF16) want = bf16_to_f32(f32_to_bf16(src[i]));
      if (t == DType::kI32) {
        if (std::fabs(src[i]) > 2e9f) continue;  // out of i32 range: unspecified
        want = std::nearbyint(src[i]);           // ties to even: 2.5 → 2, -2.5 → -2
      }
      EXPECT_EQ(back[i], want) << dtype_name(t) << " element " << i;
    }
  }
  EXPECT_EQ(f32_to_f16(65504.0f), 0x7bff);
  EXPECT_EQ(f32_to_f16(1e10f), 0x7c00);
}

TEST(DTypeNames, ParseAndPrint) {
  for (DType t : {DType::kF32, DType::kF16, DType::kBF16, DType::kI32}) {
    auto parsed = parse_dtype(dtype_name(t));
    ASSERT_TRUE(parsed.ok());
    EXPECT_EQ(*parsed, t);
  }
  EXPECT_EQ(*parse_dtype("BF16"), DType::kBF16);
  EXPECT_EQ(*parse_dtype("F16"), DType::kF16);
  EXPECT_EQ(*parse_dtype("bfloat16"), DType::kBF16);
  EXPECT_EQ(*parse_dtype("float32"), DType::kF32);
  EXPECT_FALSE(parse_dtype("F64").ok());
  EXPECT_FALSE(parse_dtype("").ok());
  EXPECT_EQ(dtype_size(DType::kBF16), 2u);
  EXPECT_EQ(dtype_size(DType::kI32), 4u);
}

}  // namespace
}  // namespace shardlm
