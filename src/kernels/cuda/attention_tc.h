// The tensor-core attention kernels (attention_tc.cu: prefill, attention_tc_decode.cu: decode), called by
// paged_attention(): prefill for the sequences of a step with many query
// rows, decode for the others.
#pragma once

#include "kernels/cuda/cuda_kernels.h"

namespace shardlm::kernels::cuda {

// The 16-byte loads of every attention kernel: q rows, q_stride and both caches.
inline bool attention_operands_aligned(const void* q, int64_t q_stride, const void* k_cache, const void* v_cache) {
  return q_stride % 8 == 0 && ((reinterpret_cast<uintptr_t>(q) | reinterpret_cast<uintptr_t>(k_cache) |
                                reinterpret_cast<uintptr_t>(v_cache)) & 15) == 0;
}

bool prefill_tc_supported(int64_t head_dim);

// Attention for every row of the sequences with at least min_q_len query rows
// (p.num_seqs must be set); rows of other sequences are left untouched.
cudaError_t paged_prefill_attention_tc(const bf16* q, int64_t q_stride, const bf16* k_cache, const bf16* v_cache,
                                       bf16* out, const PagedAttentionParams& p, int min_q_len, cudaStream_t stream);

bool decode_tc_supported(int64_t head_dim, int64_t group);

// The split-K plan of paged_attention (the SIMT kernel's): keys per split, the
// number of splits and the f32 workspace the combine kernel reads.
struct DecodeSplit {
  int64_t keys_per_split = 0;
  int nsplits = 1;
  float* ws_acc = nullptr;  // [num_tokens, nq, nsplits, head_dim]
  float* ws_ml = nullptr;   // [num_tokens, nq, nsplits, 2]
  // [num_tokens, nkv], zero before the first call and left zero by every
  // call: the last split of a (row, kv head) merges in-kernel. nullptr: the
  // partials stay in the workspace for the caller's combine kernel.
  int32_t* counters = nullptr;
};

// Attention for every row except those of sequences with ≥ skip_q_len query
// rows (skip_q_len 0: every row); with split.nsplits > 1 the splits meet in
// the workspace (see DecodeSplit::counters for who merges them).
cudaError_t paged_decode_attention_tc(const bf16* q, int64_t q_stride, bf16* k_cache, bf16* v_cache,
                                      bf16* out, const PagedAttentionParams& p, const DecodeSplit& split,
                                      int skip_q_len, cudaStream_t stream);

}  // namespace shardlm::kernels::cuda
