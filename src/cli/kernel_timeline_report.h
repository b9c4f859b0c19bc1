// `bench decode --timeline`: one decode step with the kernel timeline
// attached (a diagnostic build, kernels/cuda/kernel_timeline.cuh), printed as
// when each kernel's blocks reached each point, relative to the qkv gemv's
// first block.
#pragma once

#include <functional>
#include <string>

#include "base/status.h"

namespace shardlm::cli {

// True when this binary's kernels were built with SHARDLM_KERNEL_TIMELINE.
bool kernel_timeline_available();
// Runs `step` (one decode step on the current CUDA device) with the timeline
// attached and prints the table under `title`; detaches before returning.
Status print_kernel_timeline(const std::function<Status()>& step, const std::string& title);

}  // namespace shardlm::cli
