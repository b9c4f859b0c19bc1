// make_cuda_backend() for builds without CUDA (see graph/cuda_backend.h). With
// CUDA, CMake defines SHARDLM_CUDA_BACKEND for this target and the real
// definitions come from graph/cuda_backend*.cc (target shardlm_cuda_backend).
#include "graph/cuda_backend.h"

#if !defined(SHARDLM_CUDA_BACKEND)

namespace shardlm::graph {

std::string cuda_unavailable_reason() { return "no CUDA device: shardlm was built without CUDA (nvcc not found)"; }

int cuda_device_count() { return 0; }
std::string cuda_device_bus_id(int) { return ""; }

Expected<std::unique_ptr<CudaBackend>> make_cuda_backend(const CudaBackendOptions&) {
  return make_error(ErrorCode::kUnsupported, "{}", cuda_unavailable_reason());
}

}  // namespace shardlm::graph

#endif
