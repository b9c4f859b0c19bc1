// safetensors files through mmap: an 8-byte little-endian header length, a JSON
// header {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": …},
// then the data. Every header is checked before any tensor is handed out:
// header length within the file, JSON well-formed, dtype known, offsets within
// the data section, end - begin == numel × dtype size, no two tensors overlapping.
// Errors name the tensor and the file.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "base/status.h"
#include "tensor/tensor.h"

namespace shardlm {

struct SafetensorsEntry {
  std::string name;
  DType dtype = DType::kF32;
  Shape shape;
  size_t begin = 0;  // byte offsets within the data section
  size_t end = 0;
  // The dtype as the header writes it ("BF16", "I64", "F8_E4M3", …). Every dtype
  // of the safetensors spec is accepted at open (so files with int buffers or
  // fp8 scales still open); `loadable` is false when DType cannot hold it, and
  // get() of such a tensor is an error naming tensor, dtype and file. `dtype` is
  // meaningful only when `loadable`.
  std::string st_dtype;
  bool loadable = true;
};

class SafetensorsFile {
 public:
  static Expected<std::shared_ptr<SafetensorsFile>> open(const std::string& path);
  ~SafetensorsFile();

  const std::string& path() const { return path_; }
  const std::map<std::string, SafetensorsEntry>& entries() const { return entries_; }
  bool has(const std::string& name) const { return entries_.count(name) != 0; }
  // A zero-copy view of the mapped bytes (the tensor keeps the mapping alive).
  // The mapping is read-only (PROT_READ): never write through the tensor.
  // Exception: when the tensor's bytes are not aligned to its element size (a
  // header length that is not a multiple of 8, or an odd begin offset), the
  // result is an aligned owned copy instead of a view.
  Expected<Tensor> get(const std::string& name) const;

 private:
  SafetensorsFile() = default;
  std::string path_;
  void* map_ = nullptr;
  size_t map_size_ = 0;
  size_t data_start_ = 0;
  std::map<std::string, SafetensorsEntry> entries_;
  std::weak_ptr<SafetensorsFile> self_;
};

// All tensors of a HF model directory: model.safetensors, or the shards named in
// model.safetensors.index.json (weight_map: tensor → file; every listed tensor
// must be in its file).
class WeightStore {
 public:
  static Expected<WeightStore> open_dir(const std::string& model_dir);

  bool has(const std::string& name) const { return where_.count(name) != 0; }
  // Error (kNotFound) names the tensor and the directory when it is missing.
  Expected<Tensor> get(const std::string& name) const;
  // Checks presence and shape (and that the dtype is F32/F16/BF16); the error
  // names the tensor, the file, the expected and the actual shape.
  Expected<Tensor> get_checked(const std::string& name, const Shape& expected) const;
  std::vector<std::string> names() const;
  // The file holding `name` (for messages).
  std::string file_of(const std::string& name) const;

 private:
  std::string dir_;
  std::vector<std::shared_ptr<SafetensorsFile>> files_;
  std::map<std::string, size_t> where_;  // tensor name → index in files_
};

}  // namespace shardlm
