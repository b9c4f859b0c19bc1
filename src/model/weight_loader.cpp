#include "model/weight_loader.h"

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

}  // namespace shardlm
