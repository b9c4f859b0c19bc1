// See kernel_timeline_report.h. The names of the points are the stamps'
// comments in gemv.cu, attention_tc.cu and norm_elementwise.cu.
#include "cli/kernel_timeline_report.h"

#include <algorithm>
#include <cstdio>
#include <vector>

#if SHARDLM_HAVE_COMM_CUDA
#include <cuda_runtime.h>

#include "kernels/cuda/cuda_kernels.h"
#endif

namespace shardlm::cli {

#if SHARDLM_HAVE_COMM_CUDA
namespace {

struct RegionNames {
  const char* region;
  std::vector<const char*> points;  // index = point; "" = not used
};

// Region order and points as kernel_timeline.cuh and the kernels define them.
const std::vector<RegionNames>& region_names() {
  static const std::vector<RegionNames> names = [] {
    const std::vector<const char*> gemv = {"start", "after wait", "warp 0 row done", "warp 1 row done",
                                           "warp 2 row done", "warp 3 row done", "warp 4 row done",
                                           "warp 5 row done", "warp 6 row done", "warp 7 row done",
                                           "smem copy landed"};
    return std::vector<RegionNames>{
        {"gemv qkv (n 4097..16384)", gemv},
        {"gemv o_proj (n <= 4096)", gemv},
        {"gemv_silu_mul gate|up", gemv},
        {"gemv down (k > 8192)", gemv},
        {"gemv lm_head (n > 16384, first blocks)", gemv},
        {"decode attention (tensor cores)",
         {"start", "after wait", "q rotated, new k/v stored", "tiles computed", "output/partials stored",
          "arrival counted", "splits merged (last block)", "warps' (m, l, O) in smem"}},
        {"add+rmsnorm (last of the step)", {"start", "after wait", "done"}},
    };
  }();
  return names;
}

double median_of(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

bool kernel_timeline_available() { return kernels::cuda::kernel_timeline_layout().stamped; }

Status print_kernel_timeline(const std::function<Status()>& step, const std::string& title) {
  const kernels::cuda::KernelTimelineLayout lay = kernels::cuda::kernel_timeline_layout();
  const size_t n = static_cast<size_t>(lay.regions) * lay.slots * lay.points;
  unsigned long long* dev = nullptr;
  auto cuda_status = [](cudaError_t e, const char* what) {
    return e == cudaSuccess ? Status::Ok() : make_error(ErrorCode::kInternal, "{}: {}", what, cudaGetErrorString(e));
  };
  if (Status s = cuda_status(cudaMalloc(&dev, n * sizeof(unsigned long long)), "timeline buffer"); !s.ok()) return s;
  Status st = cuda_status(cudaMemset(dev, 0, n * sizeof(unsigned long long)), "timeline clear");
  if (st.ok()) st = cuda_status(cudaDeviceSynchronize(), "timeline clear");
  if (st.ok()) st = cuda_status(kernels::cuda::kernel_timeline_attach(dev), "timeline attach");
  if (st.ok()) st = step();
  if (st.ok()) st = cuda_status(cudaDeviceSynchronize(), "timeline step");
  std::vector<unsigned long long> h(n);
  if (st.ok()) st = cuda_status(cudaMemcpy(h.data(), dev, n * sizeof(unsigned long long), cudaMemcpyDeviceToHost), "timeline read");
  const cudaError_t detach = kernels::cuda::kernel_timeline_attach(nullptr);
  cudaFree(dev);
  if (!st.ok()) return st;
  if (Status s = cuda_status(detach, "timeline detach"); !s.ok()) return s;

  auto at = [&](int r, int slot, int p) { return h[(static_cast<size_t>(r) * lay.slots + slot) * lay.points + p]; };
  // Origin: the qkv gemv's first block start (the layer's first kernel).
  unsigned long long t0 = ~0ull;
  for (int s = 0; s < lay.slots; ++s)
    if (const unsigned long long t = at(0, s, 0); t) t0 = std::min(t0, t);
  if (t0 == ~0ull) return make_error(ErrorCode::kInternal, "the timeline recorded no qkv gemv (is this a batch-1..8 decode step?)");
  std::printf("\nkernel timeline, %s (µs from the last layer's qkv gemv start; blocks: how many reached the point; "
              "min / median / max over them)\n",
              title.c_str());
  const auto& names = region_names();
  for (int r = 0; r < lay.regions && r < static_cast<int>(names.size()); ++r) {
    bool header = false;
    for (int p = 0; p < lay.points && p < static_cast<int>(names[r].points.size()); ++p) {
      std::vector<double> us;
      for (int s = 0; s < lay.slots; ++s)
        // A slot keeps the last block that wrote it; one written in an earlier
        // layer only (the merging block of a split differs by layer) is older than t0.
        if (const unsigned long long t = at(r, s, p); t >= t0)
          us.push_back((static_cast<double>(t) - static_cast<double>(t0)) * 1e-3);
      if (us.empty()) continue;
      if (!header) {
        std::printf("  %s\n", names[r].region);
        header = true;
      }
      std::printf("    %-28s %5zu blocks %9.2f %9.2f %9.2f\n", names[r].points[p], us.size(),
                  *std::min_element(us.begin(), us.end()), median_of(us), *std::max_element(us.begin(), us.end()));
    }
  }
  return Status::Ok();
}

#else

bool kernel_timeline_available() { return false; }
Status print_kernel_timeline(const std::function<Status()>&, const std::string&) {
  return make_error(ErrorCode::kUnsupported, "this build has no CUDA");
}

#endif

}  // namespace shardlm::cli
