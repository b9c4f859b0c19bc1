// CPU reference kernels: plain, readable f32 loops over raw pointers. They are
// the oracle every CUDA kernel is tested against, and the CPU backend that CI
// runs end to end. No engine headers here (DESIGN §2): raw pointers + sizes.
//
// Layout conventions (row-major, all f32 unless noted):
//   activations  x[ntok, hidden]
//   q[ntok, nq_heads, head_dim], k/v[ntok, nkv_heads, head_dim]
//   paged cache  k_cache/v_cache[num_blocks, nkv_heads, block_size, head_dim]
//                (head-major inside a block: one kv head's keys of a block are
//                one contiguous block_size × head_dim run, which is what the
//                GPU decode kernel streams)
//   linear       w[n, k] as in HF (out_features × in_features): y = x · wᵀ + b
//
// Batch invariance: every kernel computes a row of its output from that row's
// inputs only, with a summation order that depends on the shapes of the row
// (k, head_dim, ctx), never on how many rows are in the call, what they hold or
// how many threads run. So a sequence gets bitwise the same values alone or in
// a continuous batch, in one prefill or in chunks. Tests check this bitwise.
//
// Threads: kernels split work over base/thread_pool.h's parallel_for; they
// are safe to call from any thread. Outputs must not alias inputs unless said.
#pragma once

#include <cstdint>

namespace shardlm::kernels::cpu {

// out[i, :] = table[ids[i] - vocab_offset, :]. `table` holds the `vocab` rows
// [vocab_offset, vocab_offset + vocab) of the full embedding (the whole table
// when vocab_offset = 0); ids are global token ids. Ids outside that range give
// a zero row, so vocab-parallel shards sum (all-reduce) to the full lookup.
void embedding(const float* table, int64_t vocab, int64_t hidden, const int32_t* ids, int64_t n,
               float* out, int64_t vocab_offset = 0);

// y = w * (x * (1 / sqrt(mean(x²) + eps))) per row of `cols`, in HF's order
// (f32, squares summed in double). y may alias x.
void rmsnorm(const float* x, const float* w, float* y, int64_t rows, int64_t cols, float eps);

// residual += x; y = rmsnorm(residual, w). The pre-norm transformer's
// "add the sublayer output to the stream, then normalise" in one pass.
// y may alias x (not residual).
void add_rmsnorm(const float* x, float* residual, const float* w, float* y, int64_t rows,
                 int64_t cols, float eps);

// y = a + b elementwise (n elements). y may alias a or b.
void add(const float* a, const float* b, float* y, int64_t n);

// Rotary embedding parameters: theta plus optional llama3 frequency scaling.
struct RopeParams {
  int64_t head_dim = 0;
  int64_t rotary_dim = 0;  // dims rotated (== head_dim for all supported models)
  double theta = 10000.0;
  bool llama3_scaling = false;
  double factor = 8.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position = 8192;
};

// inv_freq[i] = 1 / theta^(2i/rotary_dim) for i < rotary_dim/2 (rotary_dim 0 →
// head_dim), then llama3 scaling; f32 step by step as HF computes it.
void rope_inv_freq(const RopeParams& p, float* inv_freq);

// In-place rotary embedding, HF "rotate_half" (NeoX) convention: the pair for
// dim i is (i, i + rotary_dim/2); dims >= rotary_dim pass through.
// x[ntok, nheads, head_dim] contiguous; positions[ntok]; angle = f32(pos) * inv_freq[i].
void rope(float* x, const int32_t* positions, int64_t ntok, int64_t nheads, int64_t head_dim,
          int64_t rotary_dim, const float* inv_freq);

// gate_up[rows, 2*inter] = [gate | up]; out[rows, inter] = silu(gate) * up.
// out must not alias gate_up.
void silu_mul(const float* gate_up, float* out, int64_t rows, int64_t inter);

// y[m, n] = x[m, k] · w[n, k]ᵀ (+ bias[n] when non-null). Threaded over n.
// Batch-invariant: y[i, j] is bitwise independent of m and of the other rows
// (fixed 8-lane summation over k, see vec.h). y must not alias x or w.
void matmul(const float* x, const float* w, const float* bias, float* y, int64_t m, int64_t n,
            int64_t k);

// Row-wise numerically stable softmax, in place (a row of all -inf gives NaN, as torch).
void softmax(float* x, int64_t rows, int64_t cols);

// Writes k/v rows into the paged cache. slot_mapping[t] = block * block_size +
// offset; a negative slot skips the token (padding). k/v[ntok, nkv_heads,
// head_dim] contiguous; each head goes to its own run of the block (layout above).
void kv_write(const float* k, const float* v, float* k_cache, float* v_cache,
              const int32_t* slot_mapping, int64_t ntok, int64_t nkv_heads, int64_t head_dim,
              int64_t block_size);

// One attention call covers prefill, chunked prefill and decode: sequence s owns
// query rows [q_start[s], q_start[s+1]) which are its *last* q_len tokens, i.e.
// positions [ctx_len[s] - q_len, ctx_len[s]); its keys/values (already written)
// live in the cache blocks block_tables[s * max_blocks_per_seq + j]. Causal:
// the query at position p sees keys 0..p (and, with sliding_window > 0, only the
// last sliding_window of them: positions (p - sliding_window, p]). GQA: query
// head h reads kv head h / (nq/nkv). Requires q_len <= ctx_len[s] <=
// max_blocks_per_seq * block_size. out must not alias q.
struct PagedAttentionArgs {
  int64_t num_seqs = 0;
  const int32_t* q_start = nullptr;       // [num_seqs + 1], prefix sums of q_len
  const int32_t* ctx_len = nullptr;       // [num_seqs], tokens in the cache incl. this step
  const int32_t* block_tables = nullptr;  // [num_seqs, max_blocks_per_seq]
  int64_t max_blocks_per_seq = 0;
  int64_t block_size = 0;
  int64_t nq_heads = 0;
  int64_t nkv_heads = 0;
  int64_t head_dim = 0;
  float scale = 1.0f;            // usually 1/sqrt(head_dim)
  int64_t sliding_window = 0;    // 0 = full attention
};

// q[ntok, nq_heads, head_dim] → out[ntok, nq_heads, head_dim].
void paged_attention(const float* q, const float* k_cache, const float* v_cache, float* out,
                     const PagedAttentionArgs& args);

// Random weights (random_fill.cpp; same numbers as kernels/cuda's fills).
// splitmix64: the counter hash. random_weight_value: element `index` of a
// tensor filled with `seed` and `scale`, rounded to bf16 (returned as f32).
// fill_random_block: dst[(dst_row + r) · cols + c] = element (row0 + r, col0 + c)
// of such a [·, full_cols] tensor — a shard of it.
uint64_t splitmix64(uint64_t x);

// Counter-based token sampling (sampling.cpp), the reference of the CUDA
// sampler (kernels/cuda sample_rows): temperature ≤ 0 → argmax (lowest id on
// ties); else top-k / top-p thresholds and one draw keyed by (seed, offset).
struct CounterSampling {
  float temperature = 0.0f;
  int32_t top_k = 0;     // 0: off
  float top_p = 1.0f;    // 1: off
  uint64_t seed = 0;
  uint64_t offset = 0;   // the sequence's output length: one draw per position
};
int32_t sample_row_counter(const float* logits, int64_t vocab, const CounterSampling& params);
float random_weight_value(uint64_t seed, uint64_t index, float scale);
void fill_random_block(float* dst, int64_t dst_row, int64_t rows, int64_t cols, int64_t full_cols, int64_t row0,
                       int64_t col0, uint64_t seed, float scale);

}  // namespace shardlm::kernels::cpu
