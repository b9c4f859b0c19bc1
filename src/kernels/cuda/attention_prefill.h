// The tensor-core prefill attention kernel (attention_prefill.cu), called by
// paged_attention() for the sequences of a step that have many query rows.
#pragma once

#include "kernels/cuda/cuda_kernels.h"

namespace shardlm::kernels::cuda {

bool prefill_tc_supported(int64_t head_dim);

// Attention for every row of the sequences with at least min_q_len query rows
// (p.num_seqs must be set); rows of other sequences are left untouched.
cudaError_t paged_prefill_attention_tc(const bf16* q, int64_t q_stride, const bf16* k_cache, const bf16* v_cache,
                                       bf16* out, const PagedAttentionParams& p, int min_q_len, cudaStream_t stream);

}  // namespace shardlm::kernels::cuda
