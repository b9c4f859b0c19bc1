// Tensor views (slice, select, reshape) share the buffer; to() copies and
// converts; to_f32_vector walks any strides.
#include <numeric>
#include <vector>

#include <gtest/gtest.h>

#include "tensor/tensor.h"

namespace shardlm {
namespace {

// [2, 3, 4] holding 0..23.
Tensor iota_tensor() {
  std::vector<float> v(24);
  std::iota(v.begin(), v.end(), 0.0f);
  return Tensor::from_f32(v, {2, 3, 4});
}

TEST(Tensor, EmptyIsZeroedAndContiguous) {
  Tensor t = Tensor::empty(DType::kBF16, {3, 5});
  EXPECT_TRUE(t.defined());
  EXPECT_EQ(t.numel(), 15);
  EXPECT_EQ(t.nbytes(), 30u);
  EXPECT_EQ(t.strides(), (std::vector<int64_t>{5, 1}));
  EXPECT_TRUE(t.is_contiguous());
  for (float v : t.to_f32_vector()) EXPECT_EQ(v, 0.0f);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t.raw()) % 64, 0u);
  EXPECT_FALSE(Tensor().defined());
  EXPECT_EQ(shape_str({2, 3, 4}), "[2, 3, 4]");
  EXPECT_EQ(t.dim(-1), 5);
}

TEST(Tensor, SliceSharesTheBuffer) {
  Tensor t = iota_tensor();
  auto s = t.slice(1, 1, 3);  // [2, 2, 4]
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->shape(), (Shape{2, 2, 4}));
  EXPECT_EQ(s->strides(), (std::vector<int64_t>{12, 4, 1}));
  EXPECT_FALSE(s->is_contiguous());
  EXPECT_EQ(s->to_f32_vector(), (std::vector<float>{4, 5, 6, 7, 8, 9, 10, 11,  //
                                                    16, 17, 18, 19, 20, 21, 22, 23}));
  // Writing through the view is visible in the parent.
  s->data<float>()[0] = -1.0f;
  EXPECT_EQ(t.to_f32_vector()[4], -1.0f);
  EXPECT_EQ(s->buffer(), t.buffer());

  auto last = t.slice(-1, 3, 4);  // negative dim
  ASSERT_TRUE(last.ok());
  EXPECT_EQ(last->to_f32_vector(), (std::vector<float>{3, 7, 11, 15, 19, 23}));
  auto none = t.slice(0, 1, 1);  // empty is fine
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(none->numel(), 0);
  EXPECT_TRUE(none->to_f32_vector().empty());

  EXPECT_FALSE(t.slice(3, 0, 1).ok());
  EXPECT_FALSE(t.slice(-4, 0, 1).ok());
  EXPECT_FALSE(t.slice(0, 0, 3).ok());
  EXPECT_FALSE(t.slice(1, 2, 1).ok());
  EXPECT_FALSE(t.slice(1, -1, 1).ok());
}

TEST(Tensor, SelectDropsTheDim) {
  Tensor t = iota_tensor();
  auto row = t.select(1, 2);  // [2, 4]
  ASSERT_TRUE(row.ok());
  EXPECT_EQ(row->shape(), (Shape{2, 4}));
  EXPECT_EQ(row->to_f32_vector(), (std::vector<float>{8, 9, 10, 11, 20, 21, 22, 23}));
  auto elem = row->select(0, 1);
  ASSERT_TRUE(elem.ok());
  auto scalar = elem->select(-1, 2);
  ASSERT_TRUE(scalar.ok());
  EXPECT_EQ(scalar->rank(), 0);
  EXPECT_EQ(scalar->numel(), 1);
  EXPECT_EQ(scalar->to_f32_vector(), (std::vector<float>{22}));
  auto batch = t.select(0, 1);  // contiguous [3, 4]
  ASSERT_TRUE(batch.ok());
  EXPECT_TRUE(batch->is_contiguous());
  EXPECT_EQ(batch->data<float>()[0], 12.0f);
  EXPECT_FALSE(t.select(0, 2).ok());
  EXPECT_FALSE(t.select(5, 0).ok());
}

TEST(Tensor, Reshape) {
  Tensor t = iota_tensor();
  auto r = t.reshape({4, 6});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->strides(), (std::vector<int64_t>{6, 1}));
  EXPECT_EQ(r->to_f32_vector(), t.to_f32_vector());
  EXPECT_FALSE(t.reshape({5, 5}).ok());
  // A contiguous view (one batch) reshapes and keeps its offset.
  auto b = t.select(0, 1);
  ASSERT_TRUE(b.ok());
  auto flat = b->reshape({12});
  ASSERT_TRUE(flat.ok());
  EXPECT_EQ(flat->to_f32_vector()[0], 12.0f);
  // A strided view does not.
  auto s = t.slice(2, 0, 2);
  ASSERT_TRUE(s.ok());
  EXPECT_FALSE(s->reshape({12}).ok());
  // A single row of a narrowed last dim is contiguous in memory: size-1 dims'
  // strides do not matter.
  auto one = t.slice(0, 0, 1);
  ASSERT_TRUE(one.ok());
  auto cell = one->slice(1, 2, 3);  // [1, 1, 4]: elements 8..11, contiguous
  ASSERT_TRUE(cell.ok());
  EXPECT_TRUE(cell->is_contiguous());
  auto flat_cell = cell->reshape({4});
  ASSERT_TRUE(flat_cell.ok());
  EXPECT_EQ(flat_cell->to_f32_vector(), (std::vector<float>{8, 9, 10, 11}));
}

TEST(Tensor, ToConvertsAndCopies) {
  Tensor t = Tensor::from_f32({1.0f, -2.5f, 3.140625f, 65504.0f, 1e-8f, 0.1f}, {2, 3});
  Tensor h = t.to(DType::kF16);
  Tensor b = t.to(DType::kBF16);
  EXPECT_EQ(h.dtype(), DType::kF16);
  EXPECT_EQ(h.shape(), t.shape());
  const uint16_t* hp = h.data<uint16_t>();
  const uint16_t* bp = b.data<uint16_t>();
  const float* tp = t.data<float>();
  for (int i = 0; i < 6; ++i) {
    EXPECT_EQ(hp[i], f32_to_f16(tp[i]));
    EXPECT_EQ(bp[i], f32_to_bf16(tp[i]));
  }
  // Through f32 and back: bf16 → f32 → bf16 is exact.
  Tensor b2 = b.to(DType::kF32).to(DType::kBF16);
  EXPECT_EQ(std::memcmp(b2.raw(), b.raw(), b.nbytes()), 0);
  // A copy, not a view.
  Tensor c = t.contiguous();
  EXPECT_NE(c.buffer(), t.buffer());
  c.data<float>()[0] = 7.0f;
  EXPECT_EQ(t.data<float>()[0], 1.0f);
}

TEST(Tensor, ToOfStridedViews) {
  Tensor t = iota_tensor().to(DType::kBF16);
  auto s = t.slice(2, 1, 3);  // [2, 3, 2], offset 1 element (2 bytes)
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(static_cast<char*>(s->raw()) - static_cast<char*>(t.raw()), 2);
  Tensor c = s->to(DType::kF32);
  EXPECT_TRUE(c.is_contiguous());
  EXPECT_EQ(c.to_f32_vector(),
            (std::vector<float>{1, 2, 5, 6, 9, 10, 13, 14, 17, 18, 21, 22}));
  Tensor same = s->contiguous();
  EXPECT_EQ(same.dtype(), DType::kBF16);
  EXPECT_EQ(same.to_f32_vector(), c.to_f32_vector());
}

// Integer tensors copy exactly, even past f32's 24-bit integer range.
TEST(Tensor, I32CopiesAreExact) {
  Tensor t = Tensor::empty(DType::kI32, {2, 3});
  int32_t* p = t.data<int32_t>();
  const int32_t vals[] = {16777217, -16777219, 2147483647, -2147483647, 5, 123456789};
  std::copy(std::begin(vals), std::end(vals), p);
  auto col = t.slice(1, 1, 3);
  ASSERT_TRUE(col.ok());
  Tensor c = col->contiguous();
  ASSERT_EQ(c.dtype(), DType::kI32);
  const int32_t* cp = c.data<int32_t>();
  EXPECT_EQ(cp[0], -16777219);
  EXPECT_EQ(cp[1], 2147483647);
  EXPECT_EQ(cp[2], 5);
  EXPECT_EQ(cp[3], 123456789);
}

TEST(Tensor, BorrowedBuffer) {
  std::vector<float> backing = {1, 2, 3, 4, 5, 6};
  auto keep = std::make_shared<int>(0);
  auto buf = Buffer::borrow(backing.data(), backing.size() * 4, Device::kCpu, keep);
  Tensor t(buf, DType::kF32, {3, 2}, contiguous_strides({3, 2}));
  EXPECT_EQ(keep.use_count(), 2);
  auto r = t.select(0, 2);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->to_f32_vector(), (std::vector<float>{5, 6}));
  t = Tensor();
  r = Expected<Tensor>(Tensor());
  buf.reset();
  EXPECT_EQ(keep.use_count(), 1);  // the keepalive is released with the last view
}

}  // namespace
}  // namespace shardlm
