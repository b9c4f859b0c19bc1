#include "model/weight_loader.h"

#include <algorithm>
#include <cmath>

#include <unistd.h>

#include <cstdio>
#include <cstring>

namespace shardlm {

Expected<Tensor> assemble_weight(const WeightRecipe& recipe, const WeightStore& store) {
  std::vector<Tensor> pieces;
  DType dtype = DType::kF32;
  int64_t rows = 0, cols = -1;
  for (size_t i = 0; i < recipe.parts.size(); ++i) {
    const WeightPart& part = recipe.parts[i];
    SHARDLM_ASSIGN_OR_RETURN(Tensor full, store.get_checked(part.hf_name, part.full_shape));
    if (i == 0) dtype = full.dtype();
    SHARDLM_ASSIGN_OR_RETURN(Tensor piece, full.slice(part.dim, part.begin, part.end));
    piece = piece.to(dtype);  // contiguous, one dtype for all parts
    const int64_t c = piece.rank() == 1 ? 1 : piece.numel() / piece.dim(0);
    if (cols >= 0 && c != cols)
      return make_error(ErrorCode::kInternal, "weight parts of '{}' differ in width", part.hf_name);
    cols = c;
    rows += piece.dim(0);
    pieces.push_back(std::move(piece));
  }
  const bool vector = pieces.size() >= 1 && pieces[0].rank() == 1;
  const int64_t total_rows = std::max(rows, recipe.pad_rows);
  Tensor out = Tensor::empty(dtype, vector ? Shape{total_rows} : Shape{total_rows, cols});
  char* dst = static_cast<char*>(out.raw());
  for (const Tensor& piece : pieces) {
    std::memcpy(dst, piece.raw(), piece.nbytes());
    dst += piece.nbytes();
  }
  return out;  // padding rows stay zero (Tensor::empty zero-fills)
}

namespace {

void draw_progress(size_t done, size_t total, bool tty) {
  const int width = 30;
  int filled = total ? static_cast<int>(width * done / total) : width;
  if (!tty && done != total) return;  // no bar redraws into logs; one final line
  std::fprintf(stderr, "\rloading weights [%.*s%*s] %zu/%zu%s", filled,
               "##############################", width - filled, "", done, total,
               done == total ? "\n" : "");
  std::fflush(stderr);
}

}  // namespace

Status load_weights(const BuiltModel& model, const WeightStore& store, graph::Backend& backend,
                    bool progress) {
  const size_t total = model.recipes.size();
  const bool tty = isatty(STDERR_FILENO);
  for (size_t id = 0; id < total; ++id) {
    SHARDLM_ASSIGN_OR_RETURN(Tensor t, assemble_weight(model.recipes[id], store));
    SHARDLM_TRY(backend.set_weight(static_cast<int>(id), t));
    if (progress) draw_progress(id + 1, total, tty);
  }
  return Status::Ok();
}

uint64_t dummy_weight_seed(const std::string& hf_name) {
  uint64_t h = 0xcbf29ce484222325ull;  // FNV-1a 64: stable across builds, unlike std::hash
  for (unsigned char c : hf_name) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  return h;
}

std::vector<graph::RandomBlock> dummy_weight_blocks(const WeightRecipe& recipe) {
  std::vector<graph::RandomBlock> out;
  int64_t dst = 0;
  for (const WeightPart& p : recipe.parts) {
    graph::RandomBlock b;
    b.seed = dummy_weight_seed(p.hf_name);
    const bool matrix = p.full_shape.size() == 2;
    b.full_cols = matrix ? p.full_shape[1] : 1;
    if (!matrix || p.dim == 0) {
      b.row0 = p.begin;
      b.rows = p.end - p.begin;
      b.cols = b.full_cols;
    } else {
      b.rows = p.full_shape[0];
      b.col0 = p.begin;
      b.cols = p.end - p.begin;
    }
    b.dst_row = dst;
    dst += b.rows;
    out.push_back(b);
  }
  return out;
}

Shape dummy_weight_shape(const WeightRecipe& recipe) {
  Shape s;
  int64_t rows = 0;
  for (const WeightPart& p : recipe.parts) {
    Shape ps = p.full_shape;
    ps[p.dim] = p.end - p.begin;
    rows += ps[0];
    if (s.empty()) s = ps;
  }
  if (s.empty()) return s;
  s[0] = std::max(rows, recipe.pad_rows);
  return s;
}

Status load_dummy_weights(const BuiltModel& model, graph::Backend& backend, bool progress) {
  const size_t total = model.recipes.size();
  const bool tty = isatty(STDERR_FILENO);
  for (size_t id = 0; id < total; ++id) {
    const WeightRecipe& r = model.recipes[id];
    if (r.parts.empty()) return make_error(ErrorCode::kInternal, "weight {} has no parts", model.program.weights[id]);
    const Shape& full = r.parts[0].full_shape;
    // Matrices uniform in ±1/√fan_in keep activations O(1) through any depth;
    // vectors (norm weights, biases) uniform in ±1.
    const float scale = full.size() == 2 ? 1.0f / std::sqrt(static_cast<float>(full[1])) : 1.0f;
    SHARDLM_TRY(backend.set_random_weight_blocks(static_cast<int>(id), dummy_weight_shape(r), dummy_weight_blocks(r),
                                                 scale));
    if (progress) draw_progress(id + 1, total, tty);
  }
  return Status::Ok();
}

Expected<std::optional<WeightStore>> open_weights(const std::string& model_dir, const std::string& load_format) {
  if (load_format == "dummy") return std::optional<WeightStore>();
  if (load_format != "auto" && load_format != "safetensors")
    return make_error(ErrorCode::kInvalidArgument, "--load-format must be auto, safetensors or dummy, not '{}'",
                      load_format);
  SHARDLM_ASSIGN_OR_RETURN(WeightStore store, WeightStore::open_dir(model_dir));
  return std::optional<WeightStore>(std::move(store));
}

Status load_model_weights(const std::optional<WeightStore>& store, const BuiltModel& model, graph::Backend& backend,
                          bool progress) {
  return store ? load_weights(model, *store, backend, progress) : load_dummy_weights(model, backend, progress);
}

}  // namespace shardlm
