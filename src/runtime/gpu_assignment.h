// Which GPU each rank of a job drives, checked across the job before any
// GPU communicator exists: two ranks on one GPU would share its memory and
// serialise its kernels (the Lamport spin-waits of the two could deadlock,
// and NCCL refuses the pair with a bare "invalid usage"), so a job that
// starts more ranks on a host than it has GPUs ends here with a message
// naming the ranks, the device and the fix.
#pragma once

#include "base/status.h"
#include "runtime/dist_context.h"

namespace shardlm {

// Collective over the world (every rank must call it): picks this rank's
// device (local rank modulo the visible count), publishes host + PCI bus id
// under "gpu/<rank>", reads every other rank's within timeout_s and checks
// that no two share a device. Returns this rank's device.
Expected<int> assign_gpu(DistContext& ctx, double timeout_s);

}  // namespace shardlm
