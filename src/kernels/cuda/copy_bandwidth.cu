// Device-to-device copy bandwidth: the limit every decode roofline here is
// measured against (`bench decode`, `bench gemv`). A `bytes` buffer of
// random values (METHOD.md: zeros can run faster than real data) is copied
// 10 times after 2 warm-up copies; the figure counts bytes read + written.
#include "kernels/cuda/cuda_kernels.h"

namespace shardlm::kernels::cuda {

cudaError_t measure_copy_bandwidth(int64_t bytes, cudaStream_t s, double* bytes_per_s) {
  *bytes_per_s = 0;
  void *src = nullptr, *dst = nullptr;
  cudaError_t e = cudaMalloc(&src, bytes);
  if (e == cudaSuccess) e = cudaMalloc(&dst, bytes);
  if (e == cudaSuccess) e = fill_random_bf16(static_cast<bf16*>(src), bytes / 2, 7, 1.0f, s);
  cudaEvent_t e0 = nullptr, e1 = nullptr;
  if (e == cudaSuccess) e = cudaEventCreate(&e0);
  if (e == cudaSuccess) e = cudaEventCreate(&e1);
  constexpr int kIters = 10;
  if (e == cudaSuccess) {
    for (int i = 0; i < 2; ++i) cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, s);
    cudaEventRecord(e0, s);
    for (int i = 0; i < kIters; ++i) cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, s);
    cudaEventRecord(e1, s);
    e = cudaEventSynchronize(e1);
  }
  float ms = 0;
  if (e == cudaSuccess) e = cudaEventElapsedTime(&ms, e0, e1);
  if (e == cudaSuccess && ms > 0) *bytes_per_s = 2.0 * static_cast<double>(bytes) * kIters / (ms * 1e-3);
  if (e0) cudaEventDestroy(e0);
  if (e1) cudaEventDestroy(e1);
  cudaFree(src);
  cudaFree(dst);
  return e;
}

}  // namespace shardlm::kernels::cuda
