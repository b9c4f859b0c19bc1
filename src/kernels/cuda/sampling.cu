// Token selection on the device, one block of 1024 threads per row of logits:
//   greedy (temperature ≤ 0): argmax, lowest id on ties (as the host sampler).
//   sampling: p_i = exp(l_i/T − max) (unnormalised). The top-k and top-p cuts
//     are thresholds on p found by bisection (32 halvings of [0, 1], each one
//     block-wide count / mass over the row): τ_k = the largest τ with
//     #{p ≥ τ} ≥ k; τ_p = the largest τ ≥ τ_k with Σ_{p≥τ} p ≥ top_p · Σ_{p≥τ_k} p.
//     Tokens with p ≥ max(τ_k, τ_p) are kept (ties at the cut are all kept).
//     One uniform u from splitmix64(seed, offset) picks the first token, in id
//     order, whose running kept mass exceeds u · mass: each thread owns a
//     contiguous slice, slice sums are scanned in shared memory, and the
//     owning thread walks its slice. Deterministic for a given (seed, offset).
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/cuda_kernels.h"

namespace shardlm::kernels::cuda {
namespace {

using namespace detail;

constexpr int kThreads = 1024;

__global__ void __launch_bounds__(kThreads) sample_kernel(const float* __restrict__ logits, int64_t vocab,
                                                          const SamplingRow* __restrict__ params,
                                                          int32_t* __restrict__ out) {
  const int64_t r = blockIdx.x;
  const float* x = logits + r * vocab;
  const SamplingRow sp = params[r];
  const int tid = threadIdx.x;
  __shared__ float sv[kThreads];
  __shared__ int si[kThreads];

  // argmax (also the max for the softmax)
  float best = -INFINITY;
  int bi = 0x7fffffff;
  for (int64_t i = tid; i < vocab; i += kThreads) {
    const float v = x[i];
    if (v > best || (v == best && i < bi)) {
      best = v;
      bi = static_cast<int>(i);
    }
  }
  sv[tid] = best;
  si[tid] = bi;
  __syncthreads();
  for (int o = kThreads / 2; o > 0; o >>= 1) {
    if (tid < o) {
      const float v = sv[tid + o];
      const int j = si[tid + o];
      if (v > sv[tid] || (v == sv[tid] && j < si[tid])) {
        sv[tid] = v;
        si[tid] = j;
      }
    }
    __syncthreads();
  }
  const float mx = sv[0];
  const int arg = si[0];
  if (!(sp.temperature > 0.0f) || !(mx > -INFINITY)) {
    if (tid == 0) out[r] = arg;
    return;
  }
  const float inv_t = 1.0f / sp.temperature;
  auto prob = [&](int64_t i) { return __expf((x[i] - mx) * inv_t); };

  float tau = 0.0f;
  if (sp.top_k > 0 && sp.top_k < vocab) {
    float lo = 0.0f, hi = 1.0f;  // count(p ≥ lo) ≥ k always; p max = 1
    for (int it = 0; it < 32; ++it) {
      const float mid = 0.5f * (lo + hi);
      float c = 0.0f;
      for (int64_t i = tid; i < vocab; i += kThreads) c += prob(i) >= mid ? 1.0f : 0.0f;
      if (block_sum(c) >= static_cast<float>(sp.top_k)) lo = mid;
      else hi = mid;
    }
    tau = lo;
  }
  if (sp.top_p < 1.0f) {
    float m = 0.0f;
    for (int64_t i = tid; i < vocab; i += kThreads) {
      const float p = prob(i);
      m += p >= tau ? p : 0.0f;
    }
    const float want = sp.top_p * block_sum(m);
    float lo = tau, hi = 1.0f;
    for (int it = 0; it < 32; ++it) {
      const float mid = 0.5f * (lo + hi);
      float s = 0.0f;
      for (int64_t i = tid; i < vocab; i += kThreads) {
        const float p = prob(i);
        s += p >= mid ? p : 0.0f;
      }
      if (block_sum(s) >= want) lo = mid;
      else hi = mid;
    }
    tau = lo;
  }
  // Contiguous slices for the ordered walk.
  const int64_t per = (vocab + kThreads - 1) / kThreads;
  const int64_t b = tid * per, e = min(vocab, b + per);
  float mine = 0.0f;
  for (int64_t i = b; i < e; ++i) {
    const float p = prob(i);
    mine += p >= tau ? p : 0.0f;
  }
  __syncthreads();
  sv[tid] = mine;
  __syncthreads();
  // Inclusive scan (Hillis–Steele) of the slice sums.
  for (int o = 1; o < kThreads; o <<= 1) {
    const float add = tid >= o ? sv[tid - o] : 0.0f;
    __syncthreads();
    sv[tid] += add;
    __syncthreads();
  }
  const float total = sv[kThreads - 1];
  const float u = uniform01(mix64(sp.seed ^ mix64(sp.offset + 0x5bd1e995ull))) * total;
  const float before = tid > 0 ? sv[tid - 1] : 0.0f;
  if (tid == 0) si[0] = arg;  // fallback if rounding leaves u past the end
  __syncthreads();
  if (u >= before && u < sv[tid] && mine > 0.0f) {
    float run = before;
    int pick = -1;
    for (int64_t i = b; i < e; ++i) {
      const float p = prob(i);
      if (p >= tau) {
        pick = static_cast<int>(i);
        run += p;
        if (run > u) break;
      }
    }
    si[0] = pick;
  }
  __syncthreads();
  if (tid == 0) out[r] = si[0];
}

}  // namespace

cudaError_t sample_rows(const float* logits, int64_t rows, int64_t vocab, const SamplingRow* params,
                        int32_t* out_tokens, cudaStream_t stream) {
  if (rows <= 0) return cudaSuccess;
  if (vocab <= 0 || vocab > 0x7fffffff) return cudaErrorInvalidValue;
  sample_kernel<<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(logits, vocab, params, out_tokens);
  return cudaGetLastError();
}

}  // namespace shardlm::kernels::cuda
