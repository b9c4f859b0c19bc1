// Linear layers through cuBLASLt: y[m, n] = x[m, k] · w[n, k]ᵀ (+ bias[n]),
// row-major bf16 (or f16) x and w, f32 accumulation, y in the input dtype or
// f32 (the LM head writes f32 logits directly). The algorithm for each
// (m, n, k, dtypes, bias) is chosen once — the fastest of cuBLASLt's
// heuristic candidates, timed on the first call outside graph capture — and
// cached; calls inside a capture use the cached plan (or the top heuristic).
// Raw pointers + stream; the cuBLASLt types stay inside gemm.cu.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace shardlm::kernels::cuda {

enum class GemmType : uint8_t { kBF16, kF16, kF32 };

class Gemm {
 public:
  // workspace_bytes of device scratch for cuBLASLt (allocated here, once).
  static std::unique_ptr<Gemm> create(size_t workspace_bytes, std::string* error);
  ~Gemm();

  // ab: dtype of x and w (kBF16 or kF16); y_type: ab's type or kF32. bias (ab's
  // type) may be null. Returns false with *error set on failure.
  bool matmul(const void* x, const void* w, const void* bias, void* y, int64_t m, int64_t n, int64_t k,
              GemmType ab, GemmType y_type, cudaStream_t stream, std::string* error);

  int cached_plans() const;

 private:
  Gemm() = default;
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace shardlm::kernels::cuda
