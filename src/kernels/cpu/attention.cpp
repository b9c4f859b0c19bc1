// Paged attention over the KV cache: one call for prefill, chunked prefill and
// decode (see PagedAttentionArgs). Each (query row, kv head) is one work item:
// its group of query heads scores every visible key, takes a softmax, and sums
// the values. An item reads nothing but its own query row and its sequence's
// cache, and always runs the same loops, so a row's output is bitwise the same
// whatever else is in the batch (and whether its prompt came in one chunk or
// several).
//
// Order of operations, as HF's eager attention: s_j = (q·k_j) * scale;
// p_j = exp(s_j - max) / Σ exp (f32 exponentials, the sum in double);
// out = Σ_j p_j v_j in f32, j ascending.
#include <algorithm>
#include <cassert>
#include <cmath>
#include <vector>

#include "base/thread_pool.h"
#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/vec.h"

namespace shardlm::kernels::cpu {

void paged_attention(const float* q, const float* k_cache, const float* v_cache, float* out,
                     const PagedAttentionArgs& a) {
  assert(a.nkv_heads > 0 && a.nq_heads % a.nkv_heads == 0);
  const int64_t ntok = a.q_start[a.num_seqs];
  const int64_t group = a.nq_heads / a.nkv_heads;
  const int64_t hd = a.head_dim;

  std::vector<int32_t> seq_of(static_cast<size_t>(ntok));
  int64_t max_ctx = 1;
  for (int64_t s = 0; s < a.num_seqs; ++s) {
    assert(a.ctx_len[s] >= a.q_start[s + 1] - a.q_start[s]);
    assert(a.ctx_len[s] <= a.max_blocks_per_seq * a.block_size);
    for (int64_t t = a.q_start[s]; t < a.q_start[s + 1]; ++t) seq_of[t] = static_cast<int32_t>(s);
    max_ctx = std::max<int64_t>(max_ctx, a.ctx_len[s]);
  }

  auto run = [&](int64_t i0, int64_t i1) {
    std::vector<float> scores(static_cast<size_t>(group * max_ctx));
    for (int64_t item = i0; item < i1; ++item) {
      const int64_t t = item / a.nkv_heads;
      const int64_t g = item % a.nkv_heads;
      const int64_t s = seq_of[t];
      const int64_t q_len = a.q_start[s + 1] - a.q_start[s];
      const int64_t pos = a.ctx_len[s] - q_len + (t - a.q_start[s]);
      const int64_t lo = a.sliding_window > 0 ? std::max<int64_t>(0, pos - a.sliding_window + 1) : 0;
      const int64_t n = pos - lo + 1;  // visible keys: positions [lo, pos]
      const int32_t* table = a.block_tables + s * a.max_blocks_per_seq;
      auto slot = [&](int64_t j) {
        return ((static_cast<int64_t>(table[j / a.block_size]) * a.nkv_heads + g) * a.block_size +
                j % a.block_size) * hd;
      };
      const float* qg = q + (t * a.nq_heads + g * group) * hd;
      float* og = out + (t * a.nq_heads + g * group) * hd;

      for (int64_t j = 0; j < n; ++j) {
        const float* kj = k_cache + slot(lo + j);
        for (int64_t h = 0; h < group; ++h)
          scores[h * max_ctx + j] = detail::dot(qg + h * hd, kj, hd) * a.scale;
      }
      for (int64_t h = 0; h < group; ++h) {
        float* p = scores.data() + h * max_ctx;
        float mx = p[0];
        for (int64_t j = 1; j < n; ++j) mx = std::max(mx, p[j]);
        double sum = 0.0;
        for (int64_t j = 0; j < n; ++j) {
          p[j] = std::exp(p[j] - mx);
          sum += p[j];
        }
        const float denom = static_cast<float>(sum);
        for (int64_t j = 0; j < n; ++j) p[j] = p[j] / denom;
        std::fill(og + h * hd, og + (h + 1) * hd, 0.0f);
      }
      for (int64_t j = 0; j < n; ++j) {
        const float* vj = v_cache + slot(lo + j);
        for (int64_t h = 0; h < group; ++h)
          detail::axpy(scores[h * max_ctx + j], vj, og + h * hd, hd);
      }
    }
  };
  const int64_t work_per_item = std::max<int64_t>(1, max_ctx * group * hd);
  parallel_for(ntok * a.nkv_heads, run, std::max<int64_t>(1, (32 << 10) / work_per_item));
}

}  // namespace shardlm::kernels::cpu
