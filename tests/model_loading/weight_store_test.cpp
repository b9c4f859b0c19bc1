// WeightStore: a model directory with one file or with shards and an index;
// missing and misshapen tensors, and every inconsistency of the index.
#include <gtest/gtest.h>

#include <filesystem>

#include "model/safetensors.h"
#include "st_writer.h"
#include "test_util.h"

namespace shardlm {
namespace {

using test::error_mentions;
using test::TempDir;

void write_two_shards(const TempDir& d) {
  test::write_safetensors(d.file("model-00001-of-00002.safetensors"),
                          {{"model.embed_tokens.weight", "BF16", {4, 2}, test::bf16_bytes({1, 2, 3, 4, 5, 6, 7, 8})},
                           {"model.norm.weight", "F32", {2}, test::f32_bytes({0.5f, 0.25f})}});
  test::write_safetensors(d.file("model-00002-of-00002.safetensors"),
                          {{"lm_head.weight", "F16", {4, 2}, test::f16_bytes({-1, -2, -3, -4, -5, -6, -7, -8})}});
}

const char* kIndex = R"({
  "metadata": {"total_size": 56},
  "weight_map": {
    "lm_head.weight": "model-00002-of-00002.safetensors",
    "model.embed_tokens.weight": "model-00001-of-00002.safetensors",
    "model.norm.weight": "model-00001-of-00002.safetensors"
  }
})";

TEST(WeightStore, SingleFile) {
  TempDir d;
  test::write_safetensors(d.file("model.safetensors"),
                          {{"w", "F32", {2, 2}, test::f32_bytes({1, 2, 3, 4})},
                           {"pos", "I32", {2}, std::string(8, '\0')}});
  auto ws = WeightStore::open_dir(d.path());
  ASSERT_TRUE(ws.ok()) << ws.status().to_string();
  EXPECT_TRUE(ws->has("w"));
  EXPECT_EQ(ws->names(), (std::vector<std::string>{"pos", "w"}));
  EXPECT_EQ(ws->file_of("w"), d.file("model.safetensors"));
  EXPECT_EQ(ws->file_of("nope"), "");
  auto t = ws->get_checked("w", {2, 2});
  ASSERT_TRUE(t.ok()) << t.status().to_string();
  EXPECT_EQ(t->to_f32_vector(), (std::vector<float>{1, 2, 3, 4}));
  // I32 is readable with get() but is not a weight.
  EXPECT_TRUE(ws->get("pos").ok());
  auto p = ws->get_checked("pos", {2});
  EXPECT_EQ(p.status().code(), ErrorCode::kUnsupported);
  EXPECT_TRUE(error_mentions(p.status(), {"'pos'", "I32", d.file("model.safetensors")}));
}

TEST(WeightStore, Sharded) {
  TempDir d;
  write_two_shards(d);
  d.write("model.safetensors.index.json", kIndex);
  auto ws = WeightStore::open_dir(d.path());
  ASSERT_TRUE(ws.ok()) << ws.status().to_string();
  EXPECT_EQ(ws->names().size(), 3u);
  EXPECT_EQ(ws->file_of("lm_head.weight"), d.file("model-00002-of-00002.safetensors"));
  auto e = ws->get_checked("model.embed_tokens.weight", {4, 2});
  ASSERT_TRUE(e.ok()) << e.status().to_string();
  EXPECT_EQ(e->dtype(), DType::kBF16);
  EXPECT_EQ(e->to_f32_vector(), (std::vector<float>{1, 2, 3, 4, 5, 6, 7, 8}));
  auto h = ws->get("lm_head.weight");
  ASSERT_TRUE(h.ok());
  EXPECT_EQ(h->to_f32_vector(), (std::vector<float>{-1, -2, -3, -4, -5, -6, -7, -8}));
}

TEST(WeightStore, StoreOutlivedByTensors) {
  TempDir d;
  write_two_shards(d);
  d.write("model.safetensors.index.json", kIndex);
  Tensor t;
  {
    auto ws = WeightStore::open_dir(d.path());
    ASSERT_TRUE(ws.ok());
    t = *ws->get("model.norm.weight");
  }
  EXPECT_EQ(t.to_f32_vector(), (std::vector<float>{0.5f, 0.25f}));
}

TEST(WeightStore, MissingTensor) {
  TempDir d;
  test::write_safetensors(d.file("model.safetensors"), {{"w", "F32", {1}, test::f32_bytes({1})}});
  auto ws = WeightStore::open_dir(d.path());
  ASSERT_TRUE(ws.ok());
  for (auto st : {ws->get("model.layers.0.mlp.up_proj.weight").status(),
                  ws->get_checked("model.layers.0.mlp.up_proj.weight", {1}).status()}) {
    EXPECT_EQ(st.code(), ErrorCode::kNotFound);
    EXPECT_TRUE(error_mentions(st, {"missing tensor 'model.layers.0.mlp.up_proj.weight'", d.path()}));
  }
}

TEST(WeightStore, WrongShape) {
  TempDir d;
  test::write_safetensors(d.file("model.safetensors"), {{"w", "F32", {2, 3}, test::f32_bytes({1, 2, 3, 4, 5, 6})}});
  auto ws = WeightStore::open_dir(d.path());
  ASSERT_TRUE(ws.ok());
  auto t = ws->get_checked("w", {3, 2});
  EXPECT_TRUE(error_mentions(t.status(), {"tensor 'w' in " + d.file("model.safetensors") +
                                          " has shape [2, 3], expected [3, 2]"}));
  EXPECT_FALSE(ws->get_checked("w", {6}).ok());
}

TEST(WeightStore, NonFloatDtype) {
  TempDir d;
  test::write_safetensors(d.file("model.safetensors"), {{"w", "U8", {4}, std::string(4, '\0')}});
  auto ws = WeightStore::open_dir(d.path());
  ASSERT_TRUE(ws.ok());
  auto t = ws->get_checked("w", {4});
  EXPECT_EQ(t.status().code(), ErrorCode::kUnsupported);
  EXPECT_TRUE(error_mentions(t.status(), {"'w'", "U8", d.file("model.safetensors")}));
}

TEST(WeightStore, NoWeights) {
  TempDir d;
  auto ws = WeightStore::open_dir(d.path());
  EXPECT_EQ(ws.status().code(), ErrorCode::kNotFound);
  EXPECT_TRUE(error_mentions(ws.status(), {d.path(), "model.safetensors", "model.safetensors.index.json"}));
  auto ws2 = WeightStore::open_dir(d.file("no_such_dir"));
  EXPECT_EQ(ws2.status().code(), ErrorCode::kNotFound);
  EXPECT_TRUE(error_mentions(ws2.status(), {d.file("no_such_dir")}));
}

TEST(WeightStore, BadSingleFileNamesIt) {
  TempDir d;
  d.write("model.safetensors", "12345");
  auto ws = WeightStore::open_dir(d.path());
  EXPECT_TRUE(error_mentions(ws.status(), {d.file("model.safetensors")}));
}

TEST(WeightStoreIndex, NamesMissingShard) {
  TempDir d;
  write_two_shards(d);
  std::filesystem::remove(d.file("model-00002-of-00002.safetensors"));
  d.write("model.safetensors.index.json", kIndex);
  auto ws = WeightStore::open_dir(d.path());
  EXPECT_EQ(ws.status().code(), ErrorCode::kNotFound);
  EXPECT_TRUE(error_mentions(ws.status(), {d.file("model-00002-of-00002.safetensors"), "'lm_head.weight'",
                                           "model.safetensors.index.json"}));
}

TEST(WeightStoreIndex, TensorNotInItsShard) {
  TempDir d;
  write_two_shards(d);
  d.write("model.safetensors.index.json", R"({"weight_map": {
    "lm_head.weight": "model-00001-of-00002.safetensors",
    "model.embed_tokens.weight": "model-00001-of-00002.safetensors"}})");
  auto ws = WeightStore::open_dir(d.path());
  EXPECT_EQ(ws.status().code(), ErrorCode::kFormat);
  EXPECT_TRUE(error_mentions(ws.status(), {"'lm_head.weight'", d.file("model-00001-of-00002.safetensors"),
                                           "model.safetensors.index.json"}));
}

TEST(WeightStoreIndex, TensorInTwoShards) {
  TempDir d;
  write_two_shards(d);
  test::write_safetensors(d.file("model-00002-of-00002.safetensors"),
                          {{"lm_head.weight", "F16", {1}, test::f16_bytes({1})},
                           {"model.norm.weight", "F32", {2}, test::f32_bytes({1, 1})}});
  d.write("model.safetensors.index.json", kIndex);
  auto ws = WeightStore::open_dir(d.path());
  EXPECT_EQ(ws.status().code(), ErrorCode::kFormat);
  EXPECT_TRUE(error_mentions(ws.status(), {"'model.norm.weight'", d.file("model-00001-of-00002.safetensors"),
                                           d.file("model-00002-of-00002.safetensors")}));
}

TEST(WeightStoreIndex, MalformedIndex) {
  TempDir d;
  write_two_shards(d);
  const std::string idx = d.file("model.safetensors.index.json");
  d.write("model.safetensors.index.json", "{\"weight_map\": ");
  EXPECT_TRUE(error_mentions(WeightStore::open_dir(d.path()).status(), {idx, "JSON"}));
  d.write("model.safetensors.index.json", R"({"metadata": {}})");
  EXPECT_TRUE(error_mentions(WeightStore::open_dir(d.path()).status(), {idx, "weight_map"}));
  d.write("model.safetensors.index.json", R"({"weight_map": {"w": 3}})");
  EXPECT_TRUE(error_mentions(WeightStore::open_dir(d.path()).status(), {idx, "'w'"}));
  d.write("model.safetensors.index.json", R"({"weight_map": {"w": "../../etc/x.safetensors"}})");
  EXPECT_TRUE(error_mentions(WeightStore::open_dir(d.path()).status(), {idx, "'w'"}));
  d.write("model.safetensors.index.json", R"({"weight_map": {}})");
  EXPECT_TRUE(error_mentions(WeightStore::open_dir(d.path()).status(), {idx, "no tensors"}));
}

TEST(WeightStoreIndex, BadShardNamesItsFile) {
  TempDir d;
  write_two_shards(d);
  test::write_raw_safetensors(d.file("model-00002-of-00002.safetensors"),
                              R"({"lm_head.weight": {"dtype": "F16", "shape": [4, 2], "data_offsets": [0, 16]}})",
                              std::string(6, '\0'));
  d.write("model.safetensors.index.json", kIndex);
  auto ws = WeightStore::open_dir(d.path());
  EXPECT_TRUE(error_mentions(ws.status(), {"'lm_head.weight'", d.file("model-00002-of-00002.safetensors")}));
}

}  // namespace
}  // namespace shardlm
