#include "runtime/gpu_assignment.h"

#include <unistd.h>

#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

#include "graph/cuda_backend.h"

namespace shardlm {
namespace {

std::string this_host() {
  char buf[256] = {};
  if (gethostname(buf, sizeof(buf) - 1) != 0) return "?";
  return buf;
}

}  // namespace

Expected<int> assign_gpu(DistContext& ctx, double timeout_s) {
  const Mapping& m = ctx.mapping();
  SHARDLM_ASSIGN_OR_RETURN(const int device, pick_device(ctx.launch(), graph::cuda_device_count()));
  Rendezvous& rv = ctx.rendezvous();
  const std::string mine = this_host() + " (PCI " + graph::cuda_device_bus_id(device) + ")";
  SHARDLM_TRY(rv.set("gpu/" + std::to_string(m.rank), mine + "\n" + std::to_string(device)));
  std::vector<std::pair<std::string, int>> all;
  for (int r = 0; r < m.world; ++r) {
    SHARDLM_ASSIGN_OR_RETURN(std::string v, rv.get("gpu/" + std::to_string(r), timeout_s));
    const size_t nl = v.rfind('\n');
    all.emplace_back(v.substr(0, nl), nl == std::string::npos ? 0 : std::atoi(v.c_str() + nl + 1));
  }
  SHARDLM_TRY(check_device_assignment(all));
  return device;
}

}  // namespace shardlm
