// SafetensorsFile: good files read back (zero-copy where aligned), and every
// malformed header is refused with the tensor and the file in the message.
#include <gtest/gtest.h>

#include <cstdint>
#include <filesystem>

#include "model/safetensors.h"
#include "st_writer.h"
#include "test_util.h"

namespace shardlm {
namespace {

using test::error_mentions;
using test::StTensor;
using test::TempDir;

TEST(Safetensors, ReadsF32Bf16F16) {
  TempDir d;
  const std::string p = d.file("model.safetensors");
  std::vector<float> a = {1.5f, -2.0f, 3.25f, 0.0f, 1e-3f, 65504.0f};
  std::vector<float> b = {1.0f, -0.5f, 2.0f, 384.0f};
  std::vector<float> c = {0.25f, -7.0f, 1024.0f};
  test::write_safetensors(p, {{"a", "F32", {2, 3}, test::f32_bytes(a)},
                              {"b", "BF16", {4}, test::bf16_bytes(b)},
                              {"c", "F16", {3, 1}, test::f16_bytes(c)}},
                          8, R"({"format":"pt"})");
  auto f = SafetensorsFile::open(p);
  ASSERT_TRUE(f.ok()) << f.status().to_string();
  EXPECT_EQ((*f)->entries().size(), 3u);
  EXPECT_TRUE((*f)->has("a"));
  EXPECT_FALSE((*f)->has("__metadata__"));
  EXPECT_EQ((*f)->entries().at("b").st_dtype, "BF16");

  auto ta = (*f)->get("a");
  ASSERT_TRUE(ta.ok()) << ta.status().to_string();
  EXPECT_EQ(ta->dtype(), DType::kF32);
  EXPECT_EQ(ta->shape(), (Shape{2, 3}));
  EXPECT_TRUE(ta->is_contiguous());
  EXPECT_EQ(ta->to_f32_vector(), a);

  auto tb = (*f)->get("b");
  ASSERT_TRUE(tb.ok());
  EXPECT_EQ(tb->dtype(), DType::kBF16);
  EXPECT_EQ(tb->to_f32_vector(), b);  // all exactly representable in bf16

  auto tc = (*f)->get("c");
  ASSERT_TRUE(tc.ok());
  EXPECT_EQ(tc->dtype(), DType::kF16);
  EXPECT_EQ(tc->shape(), (Shape{3, 1}));
  EXPECT_EQ(tc->to_f32_vector(), c);
}

TEST(Safetensors, ViewIsZeroCopyAndKeepsMappingAlive) {
  TempDir d;
  const std::string p = d.file("m.safetensors");
  std::vector<float> a = {1, 2, 3, 4};
  test::write_safetensors(p, {{"a", "F32", {4}, test::f32_bytes(a)}});
  Tensor t;
  {
    auto f = SafetensorsFile::open(p);
    ASSERT_TRUE(f.ok());
    auto t1 = (*f)->get("a");
    auto t2 = (*f)->get("a");
    ASSERT_TRUE(t1.ok() && t2.ok());
    EXPECT_EQ(t1->raw(), t2->raw());  // both views of the same mapped bytes
    t = *t1;
  }  // the SafetensorsFile handle is gone; the tensor still holds the mapping
  std::filesystem::remove(p);
  EXPECT_EQ(t.to_f32_vector(), a);
}

TEST(Safetensors, MisalignedDataIsCopiedAligned) {
  TempDir d;
  const std::string p = d.file("m.safetensors");
  std::vector<float> a = {1.5f, 2.5f, -3.5f};
  std::vector<float> b = {7, 8};
  std::vector<StTensor> ts = {{"b16", "BF16", {1}, test::bf16_bytes({9.0f})},  // shifts "a" by 2 bytes
                              {"a", "F32", {3}, test::f32_bytes(a)},
                              {"h", "F16", {2}, test::f16_bytes(b)}};
  std::string h = test::safetensors_header(ts);
  while ((8 + h.size()) % 4 != 1) h += ' ';  // data section starts at an odd address
  std::string data;
  for (const auto& t : ts) data += t.bytes;
  test::write_raw_safetensors(p, h, data);
  auto f = SafetensorsFile::open(p);
  ASSERT_TRUE(f.ok()) << f.status().to_string();
  for (const char* name : {"a", "h", "b16"}) {
    auto t = (*f)->get(name);
    ASSERT_TRUE(t.ok()) << t.status().to_string();
    EXPECT_EQ(reinterpret_cast<uintptr_t>(t->raw()) % dtype_size(t->dtype()), 0u) << name;
  }
  EXPECT_EQ((*f)->get("a")->to_f32_vector(), a);
  EXPECT_EQ((*f)->get("h")->to_f32_vector(), b);
  EXPECT_EQ((*f)->get("b16")->to_f32_vector(), std::vector<float>{9.0f});
}

TEST(Safetensors, EmptyTensorAndEmptyHeader) {
  TempDir d;
  const std::string p = d.file("m.safetensors");
  test::write_safetensors(p, {{"e", "F32", {0, 4}, ""}, {"s", "F32", {}, test::f32_bytes({3.0f})}});
  auto f = SafetensorsFile::open(p);
  ASSERT_TRUE(f.ok()) << f.status().to_string();
  auto e = (*f)->get("e");
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->numel(), 0);
  auto s = (*f)->get("s");
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->rank(), 0);
  EXPECT_EQ(s->to_f32_vector(), std::vector<float>{3.0f});

  const std::string p2 = d.file("empty.safetensors");
  test::write_raw_safetensors(p2, "{}", "");
  auto f2 = SafetensorsFile::open(p2);
  ASSERT_TRUE(f2.ok()) << f2.status().to_string();
  EXPECT_TRUE((*f2)->entries().empty());
}

TEST(Safetensors, NonFloatDtypeOpensButGetRefuses) {
  TempDir d;
  const std::string p = d.file("m.safetensors");
  test::write_safetensors(p, {{"ids", "I64", {2}, std::string(16, '\0')},
                              {"mask", "BOOL", {3}, std::string(3, '\1')},
                              {"scale", "F8_E4M3", {4}, std::string(4, '\0')},
                              {"w", "F32", {1}, test::f32_bytes({1})}});
  auto f = SafetensorsFile::open(p);
  ASSERT_TRUE(f.ok()) << f.status().to_string();
  EXPECT_FALSE((*f)->entries().at("ids").loadable);
  EXPECT_EQ((*f)->entries().at("ids").st_dtype, "I64");
  auto t = (*f)->get("ids");
  EXPECT_EQ(t.status().code(), ErrorCode::kUnsupported);
  EXPECT_TRUE(error_mentions(t.status(), {"'ids'", "I64", p}));
  EXPECT_TRUE(error_mentions((*f)->get("scale").status(), {"'scale'", "F8_E4M3", p}));
  EXPECT_TRUE((*f)->get("w").ok());
}

TEST(Safetensors, MissingTensorInFile) {
  TempDir d;
  const std::string p = d.file("m.safetensors");
  test::write_safetensors(p, {{"w", "F32", {1}, test::f32_bytes({1})}});
  auto f = SafetensorsFile::open(p);
  ASSERT_TRUE(f.ok());
  auto t = (*f)->get("nope");
  EXPECT_EQ(t.status().code(), ErrorCode::kNotFound);
  EXPECT_TRUE(error_mentions(t.status(), {"'nope'", p}));
}

TEST(Safetensors, NonexistentFile) {
  TempDir d;
  auto f = SafetensorsFile::open(d.file("absent.safetensors"));
  EXPECT_EQ(f.status().code(), ErrorCode::kNotFound);
  EXPECT_TRUE(error_mentions(f.status(), {d.file("absent.safetensors")}));
}

// ---- malformed files ----

// Opens a file with this header and data; returns the error.
Status open_raw(const TempDir& d, const std::string& header, const std::string& data,
                std::optional<uint64_t> hlen = std::nullopt) {
  const std::string p = d.file("bad.safetensors");
  test::write_raw_safetensors(p, header, data, hlen);
  auto f = SafetensorsFile::open(p);
  return f.ok() ? Status::Ok() : f.status();
}

TEST(SafetensorsBad, ShorterThanLengthPrefix) {
  TempDir d;
  d.write("bad.safetensors", "abc");
  auto f = SafetensorsFile::open(d.file("bad.safetensors"));
  EXPECT_EQ(f.status().code(), ErrorCode::kFormat);
  EXPECT_TRUE(error_mentions(f.status(), {d.file("bad.safetensors"), "3 bytes"}));
}

TEST(SafetensorsBad, TruncatedData) {
  TempDir d;
  std::vector<StTensor> ts = {{"x", "F32", {2}, test::f32_bytes({1, 2})},
                              {"big", "F32", {4, 4}, test::f32_bytes(std::vector<float>(16, 1.0f))}};
  std::string data = ts[0].bytes + ts[1].bytes;
  data.resize(data.size() - 10);  // the file lost its tail
  Status s = open_raw(d, test::safetensors_header(ts), data);
  EXPECT_EQ(s.code(), ErrorCode::kFormat);
  EXPECT_TRUE(error_mentions(s, {"'big'", d.file("bad.safetensors"), "truncated"}));
}

TEST(SafetensorsBad, HeaderLengthLargerThanFile) {
  TempDir d;
  Status s = open_raw(d, "{}", "", 1000);
  EXPECT_EQ(s.code(), ErrorCode::kFormat);
  EXPECT_TRUE(error_mentions(s, {d.file("bad.safetensors"), "1000"}));
  // A length near 2^64 must not wrap around.
  s = open_raw(d, "{}", "", ~0ull - 3);
  EXPECT_TRUE(error_mentions(s, {d.file("bad.safetensors"), "header length"}));
}

TEST(SafetensorsBad, HeaderLengthOverLimit) {
  TempDir d;
  const std::string p = d.file("bad.safetensors");
  const uint64_t hlen = 100ull * 1000 * 1000 + 1;
  test::write_raw_safetensors(p, "{}", "", hlen);
  std::filesystem::resize_file(p, 8 + hlen + 16);  // sparse: the length fits the file
  auto f = SafetensorsFile::open(p);
  EXPECT_EQ(f.status().code(), ErrorCode::kFormat);
  EXPECT_TRUE(error_mentions(f.status(), {p, "limit"}));
}

TEST(SafetensorsBad, HeaderNotJson) {
  TempDir d;
  Status s = open_raw(d, R"({"w": {"dtype": "F32", )", "");
  EXPECT_EQ(s.code(), ErrorCode::kFormat);
  EXPECT_TRUE(error_mentions(s, {d.file("bad.safetensors"), "JSON"}));
  s = open_raw(d, std::string("\xff\xfe{}", 4), "");
  EXPECT_TRUE(error_mentions(s, {d.file("bad.safetensors"), "JSON"}));
}

TEST(SafetensorsBad, HeaderNotObject) {
  TempDir d;
  Status s = open_raw(d, "[1, 2, 3]", "");
  EXPECT_EQ(s.code(), ErrorCode::kFormat);
  EXPECT_TRUE(error_mentions(s, {d.file("bad.safetensors"), "object"}));
  s = open_raw(d, R"({"w": 5})", "");
  EXPECT_TRUE(error_mentions(s, {"'w'", d.file("bad.safetensors"), "object"}));
  s = open_raw(d, R"({"__metadata__": 3})", "");
  EXPECT_TRUE(error_mentions(s, {"__metadata__", d.file("bad.safetensors")}));
}

TEST(SafetensorsBad, OffsetsOutOfRange) {
  TempDir d;
  Status s = open_raw(d, R"({"w": {"dtype": "F32", "shape": [100], "data_offsets": [0, 400]}})",
                      std::string(16, '\0'));
  EXPECT_EQ(s.code(), ErrorCode::kFormat);
  EXPECT_TRUE(error_mentions(s, {"'w'", d.file("bad.safetensors"), "[0, 400]"}));
  s = open_raw(d, R"({"w": {"dtype": "F32", "shape": [0], "data_offsets": [8, 4]}})", std::string(16, '\0'));
  EXPECT_TRUE(error_mentions(s, {"'w'", d.file("bad.safetensors"), "begin > end"}));
  s = open_raw(d, R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [-4, 0]}})", std::string(16, '\0'));
  EXPECT_TRUE(error_mentions(s, {"'w'", d.file("bad.safetensors"), "data_offsets"}));
  s = open_raw(d, R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0]}})", std::string(16, '\0'));
  EXPECT_TRUE(error_mentions(s, {"'w'", d.file("bad.safetensors"), "data_offsets"}));
}

TEST(SafetensorsBad, OverlappingTensors) {
  TempDir d;
  Status s = open_raw(d,
                      R"({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},)"
                      R"( "b": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]}})",
                      std::string(24, '\0'));
  EXPECT_EQ(s.code(), ErrorCode::kFormat);
  EXPECT_TRUE(error_mentions(s, {"'a'", "'b'", d.file("bad.safetensors"), "overlap"}));
  // Identical ranges overlap too.
  s = open_raw(d,
               R"({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},)"
               R"( "b": {"dtype": "BF16", "shape": [8], "data_offsets": [0, 16]}})",
               std::string(16, '\0'));
  EXPECT_TRUE(error_mentions(s, {"'a'", "'b'", "overlap"}));
}

TEST(SafetensorsBad, ByteCountDiffersFromShape) {
  TempDir d;
  Status s = open_raw(d, R"({"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 12]}})",
                      std::string(16, '\0'));
  EXPECT_EQ(s.code(), ErrorCode::kFormat);
  EXPECT_TRUE(error_mentions(s, {"'w'", d.file("bad.safetensors"), "12 bytes", "needs 16"}));
}

TEST(SafetensorsBad, UnknownDtype) {
  TempDir d;
  Status s = open_raw(d, R"({"w": {"dtype": "Q7", "shape": [2], "data_offsets": [0, 2]}})", std::string(2, '\0'));
  EXPECT_EQ(s.code(), ErrorCode::kUnsupported);
  EXPECT_TRUE(error_mentions(s, {"'w'", "Q7", d.file("bad.safetensors")}));
  s = open_raw(d, R"({"w": {"dtype": 7, "shape": [2], "data_offsets": [0, 2]}})", std::string(2, '\0'));
  EXPECT_TRUE(error_mentions(s, {"'w'", "dtype", d.file("bad.safetensors")}));
  s = open_raw(d, R"({"w": {"shape": [2], "data_offsets": [0, 2]}})", std::string(2, '\0'));
  EXPECT_TRUE(error_mentions(s, {"'w'", "missing 'dtype'", d.file("bad.safetensors")}));
}

TEST(SafetensorsBad, BadShape) {
  TempDir d;
  for (const char* shape : {"[-1, 2]", "[2.5]", "[\"2\"]", "7", "[true]"}) {
    std::string h = std::string(R"({"w": {"dtype": "F32", "shape": )") + shape + R"(, "data_offsets": [0, 8]}})";
    Status s = open_raw(d, h, std::string(8, '\0'));
    EXPECT_EQ(s.code(), ErrorCode::kFormat) << shape;
    EXPECT_TRUE(error_mentions(s, {"'w'", "shape", d.file("bad.safetensors")})) << shape;
  }
  // numel × element size overflowing 64 bits.
  Status s = open_raw(d,
                      R"({"w": {"dtype": "F32", "shape": [4294967296, 4294967296], "data_offsets": [0, 8]}})",
                      std::string(8, '\0'));
  EXPECT_TRUE(error_mentions(s, {"'w'", "overflow"}));
}

TEST(SafetensorsBad, DuplicateTensorName) {
  TempDir d;
  Status s = open_raw(d,
                      R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},)"
                      R"( "w": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})",
                      std::string(8, '\0'));
  EXPECT_TRUE(error_mentions(s, {"'w'", d.file("bad.safetensors"), "twice"}));
}

}  // namespace
}  // namespace shardlm
