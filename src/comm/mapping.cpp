#include "comm/mapping.h"

#include <fmt/format.h>

namespace shardlm {

std::string Mapping::str() const {
  return fmt::format("rank {}/{} (tp {}/{}, pp {}/{})", rank, world, tp_rank(), tp, pp_rank(), pp);
}

Expected<Mapping> Mapping::make(int rank, int world, int tp, int pp) {
  if (tp < 1 || pp < 1) return make_error(ErrorCode::kInvalidArgument, "tp ({}) and pp ({}) must be ≥ 1", tp, pp);
  if (world != tp * pp)
    return make_error(ErrorCode::kInvalidArgument,
                      "world size {} ≠ tp × pp = {} × {} = {}: launch exactly tp × pp ranks "
                      "or change --tp/--pp",
                      world, tp, pp, tp * pp);
  if (rank < 0 || rank >= world)
    return make_error(ErrorCode::kInvalidArgument, "rank {} out of range for world {}", rank, world);
  Mapping m;
  m.rank = rank;
  m.world = world;
  m.tp = tp;
  m.pp = pp;
  return m;
}

Range split_range(int64_t n, int parts, int i) {
  int64_t base = n / parts, rem = n % parts;
  int64_t begin = i * base + std::min<int64_t>(i, rem);
  return Range{begin, begin + base + (i < rem ? 1 : 0)};
}

}  // namespace shardlm
