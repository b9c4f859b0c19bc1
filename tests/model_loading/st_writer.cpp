#include "st_writer.h"

#include <stdlib.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>

#include "tensor/dtype.h"

namespace shardlm::test {

TempDir::TempDir() {
  std::string tmpl = (std::filesystem::temp_directory_path() / "shardlm_model_XXXXXX").string();
  if (!mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
  path_ = tmpl;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

void TempDir::write(const std::string& name, const std::string& bytes) const {
  std::ofstream out(file(name), std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) throw std::runtime_error("cannot write " + file(name));
}

namespace {

std::string header_json(const std::vector<StTensor>& tensors, const std::string& metadata_json) {
  std::string h = "{";
  size_t off = 0;
  bool first = true;
  if (!metadata_json.empty()) {
    h += "\"__metadata__\":" + metadata_json;
    first = false;
  }
  for (const auto& t : tensors) {
    if (!first) h += ",";
    first = false;
    h += "\"" + t.name + "\":{\"dtype\":\"" + t.dtype + "\",\"shape\":[";
    for (size_t i = 0; i < t.shape.size(); ++i) h += (i ? "," : "") + std::to_string(t.shape[i]);
    h += "],\"data_offsets\":[" + std::to_string(off) + "," + std::to_string(off + t.bytes.size()) + "]}";
    off += t.bytes.size();
  }
  return h + "}";
}

}  // namespace

std::string safetensors_header(const std::vector<StTensor>& tensors) { return header_json(tensors, ""); }

void write_safetensors(const std::string& path, const std::vector<StTensor>& tensors, size_t align,
                       const std::string& metadata_json) {
  std::string h = header_json(tensors, metadata_json);
  while ((8 + h.size()) % align != 0) h += ' ';
  std::string data;
  for (const auto& t : tensors) data += t.bytes;
  write_raw_safetensors(path, h, data);
}

void write_raw_safetensors(const std::string& path, const std::string& header, const std::string& data,
                           std::optional<uint64_t> hlen) {
  uint64_t n = hlen.value_or(header.size());
  char len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(len, 8);
  out.write(header.data(), static_cast<std::streamsize>(header.size()));
  out.write(data.data(), static_cast<std::streamsize>(data.size()));
  if (!out) throw std::runtime_error("cannot write " + path);
}

std::string f32_bytes(const std::vector<float>& v) {
  std::string s(v.size() * 4, '\0');
  std::memcpy(s.data(), v.data(), s.size());
  return s;
}

std::string f16_bytes(const std::vector<float>& v) {
  std::string s(v.size() * 2, '\0');
  for (size_t i = 0; i < v.size(); ++i) {
    uint16_t h = f32_to_f16(v[i]);
    std::memcpy(&s[2 * i], &h, 2);
  }
  return s;
}

std::string bf16_bytes(const std::vector<float>& v) {
  std::string s(v.size() * 2, '\0');
  for (size_t i = 0; i < v.size(); ++i) {
    uint16_t h = f32_to_bf16(v[i]);
    std::memcpy(&s[2 * i], &h, 2);
  }
  return s;
}

}  // namespace shardlm::test
