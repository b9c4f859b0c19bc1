// Host side of the kernel timeline (kernel_timeline.cuh: a diagnostic build).
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/kernel_timeline.cuh"

namespace shardlm::kernels::cuda {

KernelTimelineLayout kernel_timeline_layout() {
#ifdef SHARDLM_KERNEL_TIMELINE
  constexpr bool kStamped = true;
#else
  constexpr bool kStamped = false;
#endif
  return {kStamped, detail::kTlRegions, detail::kTlSlots, detail::kTlPoints};
}

cudaError_t kernel_timeline_attach(unsigned long long* buf) {
#ifdef SHARDLM_KERNEL_TIMELINE
  for (const detail::TimelineAttach attach : detail::timeline_units())
    if (const cudaError_t e = attach(buf); e != cudaSuccess) return e;
  return cudaSuccess;
#else
  (void)buf;
  return cudaErrorNotSupported;
#endif
}

}  // namespace shardlm::kernels::cuda
