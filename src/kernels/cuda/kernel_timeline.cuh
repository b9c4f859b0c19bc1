// Kernel timeline stamps: a diagnostic build, not a feature of the product.
//
// Built with -DSHARDLM_KERNEL_TIMELINE=ON (CMake option of the same name),
// the decode-path kernels (gemv, decode attention, add+RMSNorm) record the
// device's %globaltimer at named points of each block into a buffer attached
// at run time (kernel_timeline_attach, cuda_kernels.h): slot
// [region][block][point]. `bench decode --timeline` replays one step per
// batch and prints, per region and point, when the blocks got there relative
// to the qkv gemv's first block. A region holds the last launch of its kind in
// the step (the last layer's; the layers are alike), so one step shows the
// qkv gemv → attention → o_proj → norm → gate|up → down → norm chain of a
// layer inside the CUDA graph, boundaries included — which is what
// `--skip-ops` can only give as a difference.
//
// Why a build option and not a run-time switch: even a null check reads a
// device variable, a load on every kernel's critical path; the stamps'
// stores are small but not free either. The default build has none of it.
#pragma once

#include <cstdint>

#ifdef SHARDLM_KERNEL_TIMELINE
#include <cuda_runtime.h>

#include <vector>
#endif

namespace shardlm::kernels::cuda::detail {

// Regions (what instance of which kernel the stamps describe).
enum TimelineRegion : int {
  kTlGemvQkv = 0,    // plain gemv, n > 4096 and n ≤ 16384 (the 8B shape's qkv: 6144)
  kTlGemvSmall = 1,  // plain gemv, n ≤ 4096, k ≤ 8192 (o_proj)
  kTlGemvSiLU = 2,   // gemv_silu_mul (gate|up)
  kTlGemvWide = 3,   // plain gemv, k > 8192 (down)
  kTlGemvHead = 4,   // plain gemv, n > 16384 (LM head; blocks past kTlSlots are not stamped)
  kTlAttention = 5,  // tensor-core decode attention
  kTlNorm = 6,       // add+RMSNorm (register path)
  kTlRegions = 7
};
constexpr int kTlSlots = 4096;  // blocks a region records
constexpr int kTlPoints = 16;   // points a block records

#ifdef SHARDLM_KERNEL_TIMELINE
// Each translation unit keeps its own pointer (no relocatable device code);
// kernel_timeline_attach sets every unit's through this registry.
using TimelineAttach = cudaError_t (*)(unsigned long long*);
inline std::vector<TimelineAttach>& timeline_units() {
  static std::vector<TimelineAttach> units;
  return units;
}
namespace {
__device__ unsigned long long* g_timeline = nullptr;
cudaError_t attach_timeline_here(unsigned long long* buf) { return cudaMemcpyToSymbol(g_timeline, &buf, sizeof buf); }
[[maybe_unused]] const bool g_timeline_registered = (timeline_units().push_back(&attach_timeline_here), true);
}  // namespace

__device__ __forceinline__ unsigned long long timeline_now() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}
// SHARDLM_TL_BEGIN loads the buffer pointer once at kernel entry (into a
// register), SHARDLM_TL_STAMP stores the time at (region, slot, point).
#define SHARDLM_TL_BEGIN() unsigned long long* const tl_buf_ = ::shardlm::kernels::cuda::detail::g_timeline
#define SHARDLM_TL_STAMP(region, slot, point)                                                                  \
  do {                                                                                                         \
    const long long tl_slot_ = static_cast<long long>(slot);                                                   \
    if (tl_buf_ && tl_slot_ < ::shardlm::kernels::cuda::detail::kTlSlots)                                      \
      tl_buf_[((static_cast<long long>(region) * ::shardlm::kernels::cuda::detail::kTlSlots + tl_slot_) *      \
               ::shardlm::kernels::cuda::detail::kTlPoints) +                                                  \
              (point)] = ::shardlm::kernels::cuda::detail::timeline_now();                                     \
  } while (0)
#else
#define SHARDLM_TL_BEGIN() \
  do {                     \
  } while (0)
#define SHARDLM_TL_STAMP(region, slot, point) \
  do {                                        \
  } while (0)
#endif

}  // namespace shardlm::kernels::cuda::detail
