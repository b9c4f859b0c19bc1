// Tensor: a typed, strided view over a Buffer. Views share the buffer (shared
// ownership), so slicing a weight or an activation never copies. Strides are in
// elements. A Buffer is either owned host memory or borrowed memory (an mmap'd
// safetensors region kept alive by its owner handle, or device memory later).
#pragma once

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "base/status.h"
#include "tensor/dtype.h"

namespace shardlm {

enum class Device : uint8_t { kCpu, kCuda };

class Buffer {
 public:
  // Owned, zero-initialised host memory (64-byte aligned for vector loads).
  static std::shared_ptr<Buffer> allocate_host(size_t bytes);
  // Borrowed memory; `keepalive` holds whatever owns it (an mmap, a device pool).
  static std::shared_ptr<Buffer> borrow(void* data, size_t bytes, Device device,
                                        std::shared_ptr<void> keepalive);
  ~Buffer();
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }
  Device device() const { return device_; }

 private:
  Buffer() = default;
  void* data_ = nullptr;
  size_t bytes_ = 0;
  Device device_ = Device::kCpu;
  bool owned_ = false;
  std::shared_ptr<void> keepalive_;
};

using Shape = std::vector<int64_t>;

int64_t shape_numel(const Shape& s);
std::string shape_str(const Shape& s);  // "[2, 3, 4]"

class Tensor {
 public:
  Tensor() = default;
  Tensor(std::shared_ptr<Buffer> buf, DType dtype, Shape shape, std::vector<int64_t> strides,
         int64_t offset_elems = 0);

  // A new contiguous zero-filled host tensor.
  static Tensor empty(DType dtype, Shape shape);
  // A contiguous host tensor that copies `values` (f32 or i32 from a vector).
  static Tensor from_f32(const std::vector<float>& values, Shape shape);

  bool defined() const { return buf_ != nullptr; }
  DType dtype() const { return dtype_; }
  const Shape& shape() const { return shape_; }
  int64_t dim(int i) const { return shape_[i < 0 ? shape_.size() + i : i]; }
  int rank() const { return static_cast<int>(shape_.size()); }
  const std::vector<int64_t>& strides() const { return strides_; }
  int64_t numel() const { return shape_numel(shape_); }
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype_); }
  Device device() const { return buf_ ? buf_->device() : Device::kCpu; }
  bool is_contiguous() const;
  const std::shared_ptr<Buffer>& buffer() const { return buf_; }

  void* raw() const;
  template <typename T>
  T* data() const { return static_cast<T*>(raw()); }

  // Views (no copy). Errors when the request does not fit the shape.
  Expected<Tensor> reshape(Shape shape) const;            // contiguous only
  Expected<Tensor> slice(int dim, int64_t begin, int64_t end) const;  // [begin, end)
  Expected<Tensor> select(int dim, int64_t index) const;  // drops `dim`

  // A contiguous copy (any dtype → `dtype`, conversions through f32).
  Tensor to(DType dtype) const;
  Tensor contiguous() const { return to(dtype_); }
  // All elements as f32, in row-major order (for tests and the CPU backend).
  std::vector<float> to_f32_vector() const;

 private:
  std::shared_ptr<Buffer> buf_;
  DType dtype_ = DType::kF32;
  Shape shape_;
  std::vector<int64_t> strides_;
  int64_t offset_ = 0;  // in elements
};

std::vector<int64_t> contiguous_strides(const Shape& s);

}  // namespace shardlm
