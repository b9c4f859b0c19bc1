// safetensors through mmap, and the HF model directory (single file or shards).
// The whole header is validated at open, so get() can only fail for a tensor
// that is absent or whose dtype shardlm cannot represent.
#include "model/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

namespace shardlm {

namespace {

using json = nlohmann::json;

constexpr uint64_t kMaxHeaderBytes = 100ull * 1000 * 1000;  // as the reference implementation

struct StDtype {
  const char* name;
  int bits;                 // element size in bits (F4/F6 are sub-byte)
  bool loadable;            // representable as a shardlm DType
  DType dtype;
};

// Every dtype of the safetensors format.
constexpr StDtype kDtypes[] = {
    {"F32", 32, true, DType::kF32},      {"F16", 16, true, DType::kF16},
    {"BF16", 16, true, DType::kBF16},    {"I32", 32, true, DType::kI32},
    {"F64", 64, false, DType::kF32},     {"I64", 64, false, DType::kF32},
    {"U64", 64, false, DType::kF32},     {"C64", 64, false, DType::kF32},
    {"U32", 32, false, DType::kF32},     {"I16", 16, false, DType::kF32},
    {"U16", 16, false, DType::kF32},     {"I8", 8, false, DType::kF32},
    {"U8", 8, false, DType::kF32},       {"BOOL", 8, false, DType::kF32},
    {"F8_E4M3", 8, false, DType::kF32},  {"F8_E5M2", 8, false, DType::kF32},
    {"F8_E8M0", 8, false, DType::kF32},  {"F6_E2M3", 6, false, DType::kF32},
    {"F6_E3M2", 6, false, DType::kF32},  {"F4", 4, false, DType::kF32},
};

const StDtype* find_dtype(const std::string& s) {
  for (const auto& d : kDtypes)
    if (s == d.name) return &d;
  return nullptr;
}

// A non-negative JSON integer (floats such as 2.0 are refused: the format says integer).
bool as_size(const json& v, uint64_t& out) {
  if (v.is_number_unsigned()) {
    out = v.get<uint64_t>();
    return true;
  }
  if (v.is_number_integer() && v.get<int64_t>() >= 0) {
    out = static_cast<uint64_t>(v.get<int64_t>());
    return true;
  }
  return false;
}

std::string shown(const json& v) {
  std::string s = v.dump();
  if (s.size() > 80) s = s.substr(0, 77) + "...";
  return s;
}

Status io_error(const std::string& what, const std::string& path) {
  int e = errno;
  return make_error(e == ENOENT ? ErrorCode::kNotFound : ErrorCode::kIo, "{} {}: {}", what, path,
                    std::strerror(e));
}

// Validates one header entry and fills `out`.
Status parse_entry(const std::string& name, const json& v, uint64_t data_size,
                   const std::string& path, SafetensorsEntry& out) {
  auto bad = [&](const std::string& what) {
    return make_error(ErrorCode::kFormat, "tensor '{}' in {}: {}", name, path, what);
  };
  if (!v.is_object()) return bad("header entry must be an object, got " + shown(v));
  out.name = name;

  auto dt = v.find("dtype");
  if (dt == v.end()) return bad("missing 'dtype'");
  if (!dt->is_string()) return bad("'dtype' must be a string, got " + shown(*dt));
  out.st_dtype = dt->get<std::string>();
  const StDtype* d = find_dtype(out.st_dtype);
  if (!d)
    return make_error(ErrorCode::kUnsupported, "tensor '{}' in {}: unknown dtype '{}'", name, path,
                      out.st_dtype);
  out.loadable = d->loadable;
  out.dtype = d->dtype;

  auto sh = v.find("shape");
  if (sh == v.end()) return bad("missing 'shape'");
  if (!sh->is_array()) return bad("'shape' must be a list of non-negative integers, got " + shown(*sh));
  uint64_t numel = 1;
  for (const auto& x : *sh) {
    uint64_t n = 0;
    if (!as_size(x, n) || n > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
      return bad("'shape' must be a list of non-negative integers, got " + shown(*sh));
    if (__builtin_mul_overflow(numel, n, &numel)) return bad("shape " + shown(*sh) + " overflows");
    out.shape.push_back(static_cast<int64_t>(n));
  }
  uint64_t nbits = 0;
  if (__builtin_mul_overflow(numel, static_cast<uint64_t>(d->bits), &nbits))
    return bad("shape " + shown(*sh) + " overflows");
  if (nbits % 8 != 0) return bad(fmt::format("{} elements of {} do not fill whole bytes", numel, out.st_dtype));
  const uint64_t nbytes = nbits / 8;

  auto off = v.find("data_offsets");
  if (off == v.end()) return bad("missing 'data_offsets'");
  uint64_t begin = 0, end = 0;
  if (!off->is_array() || off->size() != 2 || !as_size((*off)[0], begin) || !as_size((*off)[1], end))
    return bad("'data_offsets' must be [begin, end] with non-negative integers, got " + shown(*off));
  if (begin > end) return bad(fmt::format("data_offsets [{}, {}] has begin > end", begin, end));
  if (end > data_size)
    return bad(fmt::format("data_offsets [{}, {}] run past the data section ({} bytes; truncated file?)",
                           begin, end, data_size));
  if (end - begin != nbytes)
    return bad(fmt::format("data_offsets [{}, {}] hold {} bytes but shape {} of {} needs {}", begin, end,
                           end - begin, shape_str(out.shape), out.st_dtype, nbytes));
  out.begin = static_cast<size_t>(begin);
  out.end = static_cast<size_t>(end);
  return Status::Ok();
}

}  // namespace

SafetensorsFile::~SafetensorsFile() {
  if (map_) ::munmap(map_, map_size_);
}

Expected<std::shared_ptr<SafetensorsFile>> SafetensorsFile::open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return io_error("cannot open", path);
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    Status s = io_error("cannot stat", path);
    ::close(fd);
    return s;
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return make_error(ErrorCode::kFormat, "{} is not a regular file", path);
  }
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  if (size < 8) {
    ::close(fd);
    return make_error(ErrorCode::kFormat,
                      "{} is {} bytes: too short for a safetensors file (8-byte header length first)",
                      path, size);
  }
  void* map = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  if (map == MAP_FAILED) {
    Status s = io_error("cannot mmap", path);
    ::close(fd);
    return s;
  }
  ::close(fd);  // the mapping stays valid

  // From here the destructor unmaps on every error return.
  auto f = std::shared_ptr<SafetensorsFile>(new SafetensorsFile());
  f->path_ = path;
  f->map_ = map;
  f->map_size_ = static_cast<size_t>(size);
  f->self_ = f;

  const auto* bytes = static_cast<const unsigned char*>(map);
  uint64_t hlen = 0;
  for (int i = 7; i >= 0; --i) hlen = (hlen << 8) | bytes[i];  // little-endian
  if (hlen > size - 8)
    return make_error(ErrorCode::kFormat,
                      "{}: header length {} is larger than the file allows ({} bytes; truncated file?)",
                      path, hlen, size);
  if (hlen > kMaxHeaderBytes)
    return make_error(ErrorCode::kFormat, "{}: header length {} exceeds the {} byte limit", path, hlen,
                      kMaxHeaderBytes);
  f->data_start_ = static_cast<size_t>(8 + hlen);
  const uint64_t data_size = size - 8 - hlen;

  // Parse, noting duplicate top-level keys (nlohmann would keep only the last).
  std::string duplicate;
  std::set<std::string> seen;
  json header;
  try {
    header = json::parse(
        reinterpret_cast<const char*>(bytes + 8), reinterpret_cast<const char*>(bytes + 8 + hlen),
        [&](int depth, json::parse_event_t ev, json& parsed) {
          if (depth == 1 && ev == json::parse_event_t::key && duplicate.empty() &&
              !seen.insert(parsed.get<std::string>()).second)
            duplicate = parsed.get<std::string>();
          return true;
        });
  } catch (const json::exception& e) {
    return make_error(ErrorCode::kFormat, "{}: header is not valid JSON: {}", path, e.what());
  }
  if (!header.is_object())
    return make_error(ErrorCode::kFormat, "{}: header must be a JSON object, got {}", path,
                      header.type_name());
  if (!duplicate.empty())
    return make_error(ErrorCode::kFormat, "tensor '{}' in {}: listed twice in the header", duplicate, path);

  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") {
      if (!it->is_object() && !it->is_null())
        return make_error(ErrorCode::kFormat, "{}: __metadata__ must be an object", path);
      continue;
    }
    SafetensorsEntry e;
    SHARDLM_TRY(parse_entry(it.key(), it.value(), data_size, path, e));
    f->entries_.emplace(e.name, std::move(e));
  }

  // No two non-empty tensors may share a byte.
  std::vector<const SafetensorsEntry*> by_begin;
  for (const auto& [name, e] : f->entries_)
    if (e.end > e.begin) by_begin.push_back(&e);
  std::sort(by_begin.begin(), by_begin.end(), [](const SafetensorsEntry* a, const SafetensorsEntry* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->name < b->name;
  });
  for (size_t i = 1; i < by_begin.size(); ++i) {
    const auto* a = by_begin[i - 1];
    const auto* b = by_begin[i];
    if (b->begin < a->end)
      return make_error(ErrorCode::kFormat,
                        "tensor '{}' in {}: data_offsets [{}, {}] overlap tensor '{}' at [{}, {}]", b->name,
                        path, b->begin, b->end, a->name, a->begin, a->end);
  }
  return f;
}

Expected<Tensor> SafetensorsFile::get(const std::string& name) const {
  auto it = entries_.find(name);
  if (it == entries_.end())
    return make_error(ErrorCode::kNotFound, "no tensor '{}' in {}", name, path_);
  const SafetensorsEntry& e = it->second;
  if (!e.loadable)
    return make_error(ErrorCode::kUnsupported,
                      "tensor '{}' in {} has dtype {}, which shardlm cannot load (F32, F16, BF16, I32)",
                      name, path_, e.st_dtype);
  char* p = static_cast<char*>(map_) + data_start_ + e.begin;
  const size_t nbytes = e.end - e.begin;
  if (reinterpret_cast<uintptr_t>(p) % dtype_size(e.dtype) != 0) {
    // Misaligned for its element type: an aligned owned copy (byte copy, no typed reads).
    Tensor t = Tensor::empty(e.dtype, e.shape);
    if (nbytes) std::memcpy(t.raw(), p, nbytes);
    return t;
  }
  std::shared_ptr<SafetensorsFile> keep = self_.lock();
  auto buf = Buffer::borrow(p, nbytes, Device::kCpu, std::move(keep));
  return Tensor(std::move(buf), e.dtype, e.shape, contiguous_strides(e.shape));
}

// ---------------------------------------------------------------------------
// WeightStore

namespace {

Expected<json> read_json_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return io_error("cannot open", path);
  std::ostringstream ss;
  ss << in.rdbuf();
  try {
    return json::parse(ss.str());
  } catch (const json::exception& e) {
    return make_error(ErrorCode::kFormat, "{} is not valid JSON: {}", path, e.what());
  }
}

}  // namespace

Expected<WeightStore> WeightStore::open_dir(const std::string& model_dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_directory(model_dir, ec))
    return make_error(ErrorCode::kNotFound, "model directory {} does not exist or is not a directory",
                      model_dir);
  WeightStore ws;
  ws.dir_ = model_dir;
  const std::string single = model_dir + "/model.safetensors";
  const std::string index = model_dir + "/model.safetensors.index.json";

  if (fs::exists(single, ec)) {  // as transformers: the single file wins
    SHARDLM_ASSIGN_OR_RETURN(auto f, SafetensorsFile::open(single));
    for (const auto& [name, e] : f->entries()) ws.where_[name] = 0;
    ws.files_.push_back(std::move(f));
    return ws;
  }
  if (!fs::exists(index, ec))
    return make_error(ErrorCode::kNotFound,
                      "no weights in {}: neither model.safetensors nor model.safetensors.index.json exists (--load-format dummy runs on random weights)",
                      model_dir);

  SHARDLM_ASSIGN_OR_RETURN(json j, read_json_file(index));
  if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object())
    return make_error(ErrorCode::kFormat, "{}: missing 'weight_map' object (tensor name → shard file)", index);
  const json& wm = j["weight_map"];

  // Shard file → index in files_, opened in name order.
  std::map<std::string, std::string> first_tensor;  // shard → a tensor naming it
  for (auto it = wm.begin(); it != wm.end(); ++it) {
    if (!it->is_string())
      return make_error(ErrorCode::kFormat, "tensor '{}' in {}: shard must be a file name, got {}", it.key(),
                        index, shown(*it));
    const std::string shard = it->get<std::string>();
    const fs::path sp(shard);
    if (shard.empty() || sp.is_absolute() ||
        std::any_of(sp.begin(), sp.end(), [](const fs::path& c) { return c == ".."; }))
      return make_error(ErrorCode::kFormat, "tensor '{}' in {}: shard '{}' must be a file name inside {}",
                        it.key(), index, shard, model_dir);
    first_tensor.emplace(shard, it.key());
  }
  if (first_tensor.empty()) return make_error(ErrorCode::kFormat, "{}: weight_map lists no tensors", index);

  std::map<std::string, size_t> shard_index;
  for (const auto& [shard, tensor] : first_tensor) {
    const std::string path = model_dir + "/" + shard;
    if (!fs::exists(path, ec))
      return make_error(ErrorCode::kNotFound, "shard {} (named in {} for tensor '{}') does not exist", path,
                        index, tensor);
    SHARDLM_ASSIGN_OR_RETURN(auto f, SafetensorsFile::open(path));
    shard_index[shard] = ws.files_.size();
    ws.files_.push_back(std::move(f));
  }
  for (auto it = wm.begin(); it != wm.end(); ++it) {
    const auto& f = ws.files_[shard_index.at(it->get<std::string>())];
    if (!f->has(it.key()))
      return make_error(ErrorCode::kFormat, "tensor '{}' is listed in {} for {} but is not in that file",
                        it.key(), index, f->path());
  }
  // Every tensor of every shard (also ones the index leaves out), each in one file only.
  for (size_t i = 0; i < ws.files_.size(); ++i) {
    for (const auto& [name, e] : ws.files_[i]->entries()) {
      auto [pos, inserted] = ws.where_.emplace(name, i);
      if (!inserted)
        return make_error(ErrorCode::kFormat, "tensor '{}' is in two shards: {} and {}", name,
                          ws.files_[pos->second]->path(), ws.files_[i]->path());
    }
  }
  return ws;
}

Expected<Tensor> WeightStore::get(const std::string& name) const {
  auto it = where_.find(name);
  if (it == where_.end())
    return make_error(ErrorCode::kNotFound, "missing tensor '{}' (looked in {})", name, dir_);
  return files_[it->second]->get(name);
}

Expected<Tensor> WeightStore::get_checked(const std::string& name, const Shape& expected) const {
  auto it = where_.find(name);
  if (it == where_.end())
    return make_error(ErrorCode::kNotFound, "missing tensor '{}' (looked in {})", name, dir_);
  const SafetensorsFile& f = *files_[it->second];
  const SafetensorsEntry& e = f.entries().at(name);
  if (e.shape != expected)
    return make_error(ErrorCode::kFormat, "tensor '{}' in {} has shape {}, expected {}", name, f.path(),
                      shape_str(e.shape), shape_str(expected));
  if (!e.loadable || e.dtype == DType::kI32)
    return make_error(ErrorCode::kUnsupported, "tensor '{}' in {} has dtype {}, expected F32, F16 or BF16",
                      name, f.path(), e.st_dtype);
  return f.get(name);
}

std::vector<std::string> WeightStore::names() const {
  std::vector<std::string> out;
  out.reserve(where_.size());
  for (const auto& [name, i] : where_) out.push_back(name);
  return out;
}

std::string WeightStore::file_of(const std::string& name) const {
  auto it = where_.find(name);
  return it == where_.end() ? std::string() : files_[it->second]->path();
}

}  // namespace shardlm
