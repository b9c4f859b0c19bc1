// make_gpu_collectives() in a build without NCCL (see gpu_collectives.h). With
// NCCL, shardlm_comm is compiled with SHARDLM_COMM_CUDA=1 and the real one is
// in gpu_collectives.cc (target shardlm_comm_cuda).
#include "comm/gpu_collectives.h"

#if !SHARDLM_COMM_CUDA
namespace shardlm {

Expected<std::unique_ptr<GpuCollectives>> make_gpu_collectives(const CommGroup&, int, DType,
                                                               const GpuCollectivesOptions&) {
  return make_error(ErrorCode::kUnsupported,
                    "this shardlm was built without NCCL: GPU tensor parallelism is not available "
                    "(install NCCL and rebuild with nvcc)");
}

Expected<std::unique_ptr<GpuStageLink>> make_gpu_stage_link(const CommGroup&, int, double) {
  return make_error(ErrorCode::kUnsupported,
                    "this shardlm was built without NCCL: pipeline stages cannot pass activations on the GPU "
                    "(use --pp-transport host)");
}

}  // namespace shardlm
#endif
