// The bulk-copy gemv kernel (gemv_bulk.cu), called by gemv.cu's front end;
// internal to the kernels layer (callers use gemv / gemv_silu_mul).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace shardlm::kernels::cuda {

struct GemvBulkShape {
  int stages = 4;         // 16 KB stages in flight per block
  int blocks_per_sm = 2;  // the grid: SMs × this (capped at n rows)
};

// Same contract as gemv / gemv_silu_mul (cuda_kernels.h); needs sm_90 (TMA bulk copies).
cudaError_t gemv_bulk(const __nv_bfloat16* x, const __nv_bfloat16* w, const __nv_bfloat16* bias, void* y, bool y_f32,
                      int64_t m, int64_t n, int64_t k, const GemvBulkShape& shape, bool overlap_prologue,
                      cudaStream_t s);
cudaError_t gemv_bulk_silu_mul(const __nv_bfloat16* x, const __nv_bfloat16* w, const __nv_bfloat16* bias,
                               __nv_bfloat16* y, int64_t m, int64_t inter, int64_t k, const GemvBulkShape& shape,
                               bool overlap_prologue, cudaStream_t s);

}  // namespace shardlm::kernels::cuda
