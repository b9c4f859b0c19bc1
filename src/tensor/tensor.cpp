#include "tensor/tensor.h"

#include <cstdlib>
#include <cstring>

namespace shardlm {

std::shared_ptr<Buffer> Buffer::allocate_host(size_t bytes) {
  auto b = std::shared_ptr<Buffer>(new Buffer());
  size_t rounded = (bytes + 63) / 64 * 64;  // aligned_alloc needs a multiple of the alignment
  if (rounded == 0) rounded = 64;
  b->data_ = std::aligned_alloc(64, rounded);
  if (!b->data_) throw std::bad_alloc();
  std::memset(b->data_, 0, rounded);
  b->bytes_ = bytes;
  b->owned_ = true;
  return b;
}

std::shared_ptr<Buffer> Buffer::borrow(void* data, size_t bytes, Device device,
                                       std::shared_ptr<void> keepalive) {
  auto b = std::shared_ptr<Buffer>(new Buffer());
  b->data_ = data;
  b->bytes_ = bytes;
  b->device_ = device;
  b->keepalive_ = std::move(keepalive);
  return b;
}

Buffer::~Buffer() {
  if (owned_) std::free(data_);
}

int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (auto d : s) n *= d;
  return n;
}

std::string shape_str(const Shape& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) {
    if (i) out += ", ";
    out += std::to_string(s[i]);
  }
  return out + "]";
}

std::vector<int64_t> contiguous_strides(const Shape& s) {
  std::vector<int64_t> st(s.size(), 1);
  for (int i = static_cast<int>(s.size()) - 2; i >= 0; --i) st[i] = st[i + 1] * s[i + 1];
  return st;
}

Tensor::Tensor(std::shared_ptr<Buffer> buf, DType dtype, Shape shape, std::vector<int64_t> strides,
               int64_t offset_elems)
    : buf_(std::move(buf)), dtype_(dtype), shape_(std::move(shape)), strides_(std::move(strides)),
      offset_(offset_elems) {}

Tensor Tensor::empty(DType dtype, Shape shape) {
  auto buf = Buffer::allocate_host(static_cast<size_t>(shape_numel(shape)) * dtype_size(dtype));
  auto st = contiguous_strides(shape);
  return Tensor(std::move(buf), dtype, std::move(shape), std::move(st));
}

Tensor Tensor::from_f32(const std::vector<float>& values, Shape shape) {
  Tensor t = empty(DType::kF32, std::move(shape));
  std::memcpy(t.raw(), values.data(), std::min(values.size(), static_cast<size_t>(t.numel())) * 4);
  return t;
}

void* Tensor::raw() const {
  return static_cast<char*>(buf_->data()) + offset_ * static_cast<int64_t>(dtype_size(dtype_));
}

// Row-major dense: the stride of a dim of size 1 never matters (a [1, n] view of
// one row of a wider tensor is still contiguous), nor does anything in an empty one.
bool Tensor::is_contiguous() const {
  if (numel() == 0) return true;
  int64_t expected = 1;
  for (int d = rank() - 1; d >= 0; --d) {
    if (shape_[d] != 1 && strides_[d] != expected) return false;
    expected *= shape_[d];
  }
  return true;
}

namespace {

// Calls fn(i, element_offset) for every element in row-major order.
template <typename Fn>
void for_each_element(const Shape& shape, const std::vector<int64_t>& strides, int64_t offset,
                      Fn fn) {
  const int64_t n = shape_numel(shape);
  std::vector<int64_t> idx(shape.size(), 0);
  for (int64_t i = 0; i < n; ++i) {
    int64_t off = offset;
    for (size_t d = 0; d < idx.size(); ++d) off += idx[d] * strides[d];
    fn(i, off);
    for (int d = static_cast<int>(idx.size()) - 1; d >= 0; --d) {
      if (++idx[d] < shape[d]) break;
      idx[d] = 0;
    }
  }
}

}  // namespace

Expected<Tensor> Tensor::reshape(Shape shape) const {
  if (!is_contiguous()) return make_error(ErrorCode::kInvalidArgument, "reshape of a non-contiguous tensor");
  if (shape_numel(shape) != numel())
    return make_error(ErrorCode::kInvalidArgument, "reshape {} → {}: element counts differ",
                      shape_str(shape_), shape_str(shape));
  auto st = contiguous_strides(shape);
  return Tensor(buf_, dtype_, std::move(shape), std::move(st), offset_);
}

Expected<Tensor> Tensor::slice(int dim, int64_t begin, int64_t end) const {
  if (dim < 0) dim += rank();
  if (dim < 0 || dim >= rank()) return make_error(ErrorCode::kInvalidArgument, "slice: bad dim {}", dim);
  if (begin < 0 || end > shape_[dim] || begin > end)
    return make_error(ErrorCode::kInvalidArgument, "slice [{}, {}) out of range for dim {} of {}",
                      begin, end, dim, shape_str(shape_));
  Shape s = shape_;
  s[dim] = end - begin;
  return Tensor(buf_, dtype_, std::move(s), strides_, offset_ + begin * strides_[dim]);
}

Expected<Tensor> Tensor::select(int dim, int64_t index) const {
  SHARDLM_ASSIGN_OR_RETURN(Tensor t, slice(dim, index, index + 1));
  if (dim < 0) dim += rank();
  Shape s = t.shape_;
  auto st = t.strides_;
  s.erase(s.begin() + dim);
  st.erase(st.begin() + dim);
  return Tensor(t.buf_, dtype_, std::move(s), std::move(st), t.offset_);
}

std::vector<float> Tensor::to_f32_vector() const {
  std::vector<float> out(static_cast<size_t>(numel()));
  if (out.empty()) return out;
  const size_t es = dtype_size(dtype_);
  if (is_contiguous()) {
    convert_to_f32(dtype_, raw(), out.data(), out.size());
    return out;
  }
  const char* base = static_cast<const char*>(buf_->data());
  for_each_element(shape_, strides_, offset_, [&](int64_t i, int64_t off) {
    convert_to_f32(dtype_, base + off * static_cast<int64_t>(es), &out[i], 1);
  });
  return out;
}

Tensor Tensor::to(DType dtype) const {
  Tensor out = empty(dtype, shape_);
  if (dtype == dtype_) {  // a copy: bytes move as they are (i32 beyond 2^24 stays exact)
    if (is_contiguous()) {
      if (nbytes() > 0) std::memcpy(out.raw(), raw(), nbytes());
      return out;
    }
    const size_t es = dtype_size(dtype_);
    const char* src = static_cast<const char*>(buf_->data());
    char* dst = static_cast<char*>(out.raw());
    for_each_element(shape_, strides_, offset_, [&](int64_t i, int64_t off) {
      std::memcpy(dst + i * es, src + off * static_cast<int64_t>(es), es);
    });
    return out;
  }
  auto f = to_f32_vector();
  convert_from_f32(dtype, f.data(), out.raw(), f.size());
  return out;
}

}  // namespace shardlm
