// Test helpers: a temporary directory and a tiny safetensors writer, so the
// loader tests build every good and bad file they need by hand.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace shardlm::test {

// A fresh directory under the temp dir, removed with everything in it.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }
  void write(const std::string& name, const std::string& bytes) const;

 private:
  std::string path_;
};

struct StTensor {
  std::string name;
  std::string dtype;  // "F32", "BF16", …
  std::vector<int64_t> shape;
  std::string bytes;  // raw little-endian data
};

// A well-formed file: tensors laid out back to back in the given order; the
// header is padded with spaces to a multiple of `align` (1 = no padding).
void write_safetensors(const std::string& path, const std::vector<StTensor>& tensors,
                       size_t align = 8, const std::string& metadata_json = "");
// The header JSON write_safetensors would use (for tests that then edit it).
std::string safetensors_header(const std::vector<StTensor>& tensors);
// Exactly these bytes: 8-byte length (hlen, or header.size()), header, data.
void write_raw_safetensors(const std::string& path, const std::string& header, const std::string& data,
                           std::optional<uint64_t> hlen = std::nullopt);

std::string f32_bytes(const std::vector<float>& v);
std::string f16_bytes(const std::vector<float>& v);
std::string bf16_bytes(const std::vector<float>& v);

}  // namespace shardlm::test
