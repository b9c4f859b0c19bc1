// CUDA kernels: raw device pointers + a stream, no engine headers (DESIGN §2).
// Each launcher mirrors one CPU reference kernel (kernels/cpu/cpu_kernels.h)
// with the same layouts, in bf16 storage with f32 arithmetic:
//   activations  x[ntok, hidden] bf16
//   qkv rows     [q heads | k heads | v heads] bf16, row stride `row_stride`
//   paged cache  k_cache/v_cache[num_blocks, nkv_heads, block_size, head_dim] bf16
//                (head-major blocks: a kv head's keys of one block are contiguous)
//   linear       w[n, k] bf16 (gemm.h): y = x · wᵀ + b
//
// Errors: every launcher returns cudaGetLastError() after its launch, or
// cudaErrorInvalidValue / cudaErrorNotSupported for shapes it does not handle
// (callers turn that into a Status naming the op). Launchers never allocate
// and never synchronise, so all of them can be captured into a CUDA graph.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace shardlm::kernels::cuda {

using bf16 = __nv_bfloat16;

// Launch the kernels below as programmatic dependent launches (Hopper): each
// kernel may be scheduled while the previous one drains and waits for it on
// the device (griddepcontrol.wait) before reading anything, which hides the
// launch gap between dependent kernels. Process-wide; off by default.
void set_programmatic_launch(bool on);

// out[i, :] = table[ids[i] - vocab_offset, :]; ids outside the shard give zeros.
cudaError_t embedding(const bf16* table, int64_t vocab, int64_t hidden, const int32_t* ids, int64_t n,
                      bf16* out, int64_t vocab_offset, cudaStream_t stream);

// y = bf16(w · bf16(x · rsqrt(mean(x²) + eps))) per row (HF LlamaRMSNorm in bf16). y may alias x.
cudaError_t rmsnorm(const bf16* x, const bf16* w, bf16* y, int64_t rows, int64_t cols, float eps,
                    cudaStream_t stream);
// Device memory to pull into L2 while a latency-bound kernel runs: the
// first bytes of the weights of the batch-1 gemv that follows it, which then
// reads them from L2 instead of HBM (bench/NOTES.md run 20): the first
// bytes_per_row bytes of `rows` rows `stride` bytes apart. A hint, no effect
// on any result; nothing when ptr, stride or bytes_per_row is not a multiple
// of 16.
struct L2Prefetch {
  const void* ptr = nullptr;
  int64_t rows = 0;
  int64_t stride = 0;         // bytes from one row to the next
  int64_t bytes_per_row = 0;  // ≤ stride
  bool valid() const {
    return ptr && rows > 0 && bytes_per_row > 0 && bytes_per_row <= stride &&
           (reinterpret_cast<uintptr_t>(ptr) % 16 | stride % 16 | bytes_per_row % 16) == 0;
  }
};

// residual = bf16(residual + x); y = rmsnorm(residual). y may alias x (not residual).
// programmatic: launched as a programmatic dependent of the previous kernel in
// the stream, reading residual and w (rows ≤ 8192) before waiting for it — so
// that kernel must have been launched ordinarily and write neither (the CUDA
// backend sets it behind a gemv, which lets its dependents start early).
// prefetch (cols ≤ 8192): kL2PrefetchBlocks extra blocks wait for the previous
// kernel, then pull it into L2 while the norm runs.
// trigger_early: the next kernel may be scheduled as soon as the norm's blocks
// start, not after their wait (PagedAttentionParams::trigger_dependents_early).
constexpr int kL2PrefetchBlocks = 32;
cudaError_t add_rmsnorm(const bf16* x, bf16* residual, const bf16* w, bf16* y, int64_t rows, int64_t cols,
                        float eps, cudaStream_t stream, bool programmatic = false, L2Prefetch prefetch = {},
                        bool trigger_early = false);
// Per-head RMSNorm of the q heads (weight wq[head_dim]) and k heads (wk) of packed qkv rows, in place.
cudaError_t head_rmsnorm(bf16* qkv, int64_t row_stride, int64_t ntok, int64_t nq_heads, int64_t nkv_heads,
                         int64_t head_dim, const bf16* wq, const bf16* wk, float eps, cudaStream_t stream);
// y = a + b (n elements). y may alias a or b.
cudaError_t add(const bf16* a, const bf16* b, bf16* y, int64_t n, cudaStream_t stream);
// gate_up[rows, 2·inter] = [gate | up] → out[rows, inter] = bf16(bf16(silu(gate)) · up).
cudaError_t silu_mul(const bf16* gate_up, bf16* out, int64_t rows, int64_t inter, cudaStream_t stream);

// HF rotate_half rotary embedding, in place, on the q heads and the k heads of
// packed qkv rows: pair (i, i + head_dim/2), angle = f32(pos) · inv_freq[i]
// (inv_freq[head_dim/2] f32 on the device, computed on the host by
// cpu::rope_inv_freq so llama3 scaling is identical to the CPU backend).
cudaError_t rope_qk(bf16* qkv, int64_t row_stride, const int32_t* positions, int64_t ntok, int64_t nq_heads,
                    int64_t nkv_heads, int64_t head_dim, const float* inv_freq, cudaStream_t stream);

// Writes the k and v parts of packed qkv rows (at element offsets k_offset and
// v_offset of each row) into cache slot slot_mapping[t]; a negative slot skips.
cudaError_t kv_write(const bf16* qkv, int64_t row_stride, int64_t k_offset, int64_t v_offset, bf16* k_cache,
                     bf16* v_cache, const int32_t* slot_mapping, int64_t ntok, int64_t nkv_heads,
                     int64_t head_dim, int64_t block_size, cudaStream_t stream);

// rope_qk followed by kv_write in one kernel (the rope → attention fusion):
// q and k rotated in place in the packed rows ([q heads | k heads | v heads]),
// the rotated k and the v part written to cache slot slot_mapping[t]
// (negative: skipped). Bit for bit the two kernels' result.
cudaError_t rope_kv_write(bf16* qkv, int64_t row_stride, const int32_t* positions, const int32_t* slot_mapping,
                          int64_t ntok, int64_t nq_heads, int64_t nkv_heads, int64_t head_dim, int64_t block_size,
                          const float* inv_freq, bf16* k_cache, bf16* v_cache, cudaStream_t stream);

// out[r, :] = in[rows[r], :] for r < n, rows of row_bytes bytes (any dtype; row_bytes % 2 == 0).
cudaError_t gather_rows(const void* in, void* out, const int32_t* rows, int64_t n, int64_t row_bytes,
                        cudaStream_t stream);

cudaError_t f32_to_bf16(const float* in, bf16* out, int64_t n, cudaStream_t stream);
cudaError_t bf16_to_f32(const bf16* in, float* out, int64_t n, cudaStream_t stream);
// Uniform in [-scale, scale) from a counter hash of (seed, index): reproducible, no state.
cudaError_t fill_random_bf16(bf16* p, int64_t n, uint64_t seed, float scale, cudaStream_t stream);
// dst[(dst_row + r) · cols + c] = element (row0 + r, col0 + c) of the [·, full_cols]
// tensor that fill_random_bf16(…, seed, scale) would make (a shard of it).
cudaError_t fill_random_bf16_block(bf16* dst, int64_t dst_row, int64_t rows, int64_t cols, int64_t full_cols,
                                   int64_t row0, int64_t col0, uint64_t seed, float scale, cudaStream_t stream);
cudaError_t fill_bf16(bf16* p, int64_t n, float value, cudaStream_t stream);

// Device-to-device copy bandwidth over a `bytes` buffer, read + written bytes
// per second (copy_bandwidth.cu): the rooflines' limit. Synchronises `stream`.
cudaError_t measure_copy_bandwidth(int64_t bytes, cudaStream_t stream, double* bytes_per_s);

// ---- kernel timeline (kernel_timeline.cuh): diagnostic builds only ----------
// With -DSHARDLM_KERNEL_TIMELINE=ON the decode-path kernels store %globaltimer
// at named points into buf[region][slot][point] (u64 ns, 0 = not reached);
// null detaches. Without it: cudaErrorNotSupported, nothing is stamped.
struct KernelTimelineLayout {
  bool stamped;  // built with SHARDLM_KERNEL_TIMELINE
  int regions, slots, points;
};
KernelTimelineLayout kernel_timeline_layout();
cudaError_t kernel_timeline_attach(unsigned long long* buf);

// ---- skinny linears (gemv.cu) ----------------------------------------------
// y[m, n] = x[m, k] · w[n, k]ᵀ (+ bias[n]) for m ≤ kGemvMaxRows, bf16 x/w/bias,
// y bf16 or f32: the decode-time linear as one stream over w (cuBLASLt's
// kernels for m this small read w at a lower fraction of the bandwidth).
// Needs k % 8 == 0 and 16-byte aligned x and w (gemv_supported).
constexpr int64_t kGemvMaxRows = 8;
bool gemv_supported(int64_t m, int64_t k, const void* x, const void* w);
// overlap_prologue: launch as a programmatic dependent launch that prefetches
// w before waiting for the previous kernel in the stream (see gemv.cu).
// programmatic (without overlap_prologue): a programmatic dependent launch
// that waits for the previous kernel before reading anything. Launched
// ordinarily, the kernel lets the next one start at once (add_rmsnorm's and
// PagedAttentionParams' `programmatic`).
// smem_prologue (m = 1; launched programmatically when overlap_prologue or
// programmatic holds): each block of the first wave has the first ≤ 64 KB of
// its weight rows bulk-copied into shared memory before it waits, so that
// blocks made resident behind a latency-bound kernel fetch their weights
// while it runs.
// The same sums in the same order: bit for bit the other modes.
cudaError_t gemv(const bf16* x, const bf16* w, const bf16* bias, void* y, bool y_f32, int64_t m, int64_t n, int64_t k,
                 cudaStream_t stream, bool overlap_prologue = false, bool programmatic = false,
                 bool smem_prologue = false);
// The gated MLP's first half: y[m, inter] = silu(x·w[0:inter]ᵀ + b) · (x·w[inter:2·inter]ᵀ + b)
// with w = [gate rows | up rows] ([2·inter, k]); bit for bit gemv (bf16 out)
// followed by silu_mul, without the [m, 2·inter] intermediate.
cudaError_t gemv_silu_mul(const bf16* x, const bf16* w, const bf16* bias, bf16* y, int64_t m, int64_t inter, int64_t k,
                          cudaStream_t stream, bool overlap_prologue = false, bool programmatic = false,
                          bool smem_prologue = false);
// One row (m = 1): y[n] = x·wᵀ (+ bias), bf16, then add_rmsnorm(y, residual,
// norm_w) → norm_out done by the kernel's last block, bit for bit gemv
// followed by add_rmsnorm, one launch. counter: one int32 of device memory,
// zero before the launch and left zero (launches on one stream may share it).
// Supported (else cudaErrorInvalidValue): gemv_supported, n % 8 == 0,
// n ≤ 8192, 16-byte aligned y, residual, norm_w and norm_out.
// programmatic, smem_prologue: as gemv's.
bool gemv_add_rmsnorm_supported(int64_t n, int64_t k, const void* x, const void* w, const void* y,
                                const void* residual, const void* norm_w, const void* norm_out);
cudaError_t gemv_add_rmsnorm(const bf16* x, const bf16* w, const bf16* bias, bf16* y, int64_t n, int64_t k,
                             bf16* residual, const bf16* norm_w, bf16* norm_out, float eps, int32_t* counter,
                             cudaStream_t stream, bool programmatic = false, bool smem_prologue = false);

// ---- a chain of skinny linears in one launch (linear_chain.cu) -------------
// Runs stages 0..n-1 in order in one cooperative kernel, a grid barrier
// between them; each stage is gemv (or gemv_silu_mul with silu) on bf16, and
// with norm_w first does add_rmsnorm(x, residual, norm_w) → norm_out and uses
// that as its input. Every output is bit for bit the unfused kernels'.
constexpr int kLinearChainMaxStages = 8;
constexpr int64_t kLinearChainMaxRows = 4;
// Device workspace of the chain's barriers: zeroed once before the first
// launch; every launch leaves it ready for the next (launches on one stream).
constexpr size_t kLinearChainWorkspaceBytes = 64;
struct LinearChainStage {
  const bf16* x = nullptr;         // [m, k] the stage input, or the norm's input with norm_w
  const bf16* norm_w = nullptr;    // [k] add+RMSNorm weight; null: no norm
  bf16* residual = nullptr;        // [m, k] with norm_w: updated in place to bf16(residual + x)
  bf16* norm_out = nullptr;        // [m, k] with norm_w: rmsnorm(residual)·norm_w (the linear's input)
  float eps = 0.0f;
  const bf16* w = nullptr;         // [n, k], or [2·n, k] = [gate | up] with silu
  const bf16* bias = nullptr;      // [n] ([2·n] with silu) or null
  bf16* y = nullptr;               // [m, n]
  int64_t n = 0, k = 0;
  bool silu = false;
};
// m ≤ kLinearChainMaxRows, k % 8 == 0, 16-byte aligned vectors, no norm in
// stage 0 nor in two stages in a row, and the copies of x, the residual and
// the norm weight fit a block's shared memory.
bool linear_chain_supported(const LinearChainStage* stages, int n_stages, int64_t m);
// timeline (benchmarks): null, or linear_chain_grid() × (1 + 4 · n_stages)
// device u64 that get each block's global-timer ns at its start and, per
// stage, when its x is in shared memory, when its input (x or the norm) is
// ready, when its last row is done and when it leaves the barrier after it. prefetch_halves (benchmarks): how much
// of the next stage's first weight step a warp requests while it waits at a
// barrier, in halves (0, 1, 2).
constexpr int kLinearChainDefaultPrefetchHalves = 1;
cudaError_t linear_chain(const LinearChainStage* stages, int n_stages, int64_t m, unsigned* workspace,
                         cudaStream_t stream, unsigned long long* timeline = nullptr,
                         int prefetch_halves = kLinearChainDefaultPrefetchHalves);
int linear_chain_grid();  // blocks a launch uses (one per SM)

// ---- paged attention (attention.cu) ---------------------------------------
// One call covers prefill, chunked prefill and decode, exactly as
// cpu::paged_attention: row t of sequence s = token_seq[t] sits at position
// ctx_len[s] - q_len + (t - q_start[s]) and sees keys [lo, pos] (lo > 0 only
// with a sliding window). All pointers are device pointers.
struct PagedAttentionParams {
  int64_t num_tokens = 0;
  const int32_t* token_seq = nullptr;     // [num_tokens] sequence of each row
  // [num_tokens] or null: position of each row, ctx_len[s] − q_len + (t − q_start[s]).
  // Given, the decode kernel loads it beside token_seq instead of deriving it
  // from q_start and ctx_len afterwards: one dependent load less before its
  // first key tile is requested.
  const int32_t* positions = nullptr;
  const int32_t* q_start = nullptr;       // [num_seqs + 1]
  const int32_t* ctx_len = nullptr;       // [num_seqs]
  const int32_t* block_tables = nullptr;  // [num_seqs, max_blocks_per_seq]
  int64_t max_blocks_per_seq = 0;
  int64_t block_size = 0;
  int64_t nq_heads = 0, nkv_heads = 0, head_dim = 0;
  float scale = 1.0f;
  int64_t sliding_window = 0;
  // Upper bound of any row's visible keys (≤ max_blocks_per_seq · block_size):
  // sizes the split-K grid, so a CUDA graph captured for a bound serves every
  // batch under it.
  int64_t max_context = 0;
  // The step's shape as the host knows it, for the kernel choice: sequences
  // with at least kPrefillTensorCoreRows query rows (prompts, prefill chunks)
  // go to the tensor-core kernel when head_dim is 64 or 128, the other rows to
  // the SIMT kernel. num_seqs = 0 (unknown): the SIMT kernel for every row.
  int64_t num_seqs = 0;
  int64_t max_q_len = 0;
  // false: the SIMT kernel for every row (tests of it, A/B runs). Decode rows
  // otherwise take the tensor-core decode kernel when head_dim is 64 or 128
  // and a kv head serves at most 16 query heads.
  bool tensor_cores = true;
  // RoPE fused into decode attention (decode_rope_fusable must hold): q and
  // the new k of each row are the unrotated packed qkv rows ([q heads | k
  // heads | v heads] at q + t·q_stride); the kernel rotates q on its way into
  // shared memory, and the block that reads key `positions[t]` rotates the new
  // k, writes it and v to cache slot slot_mapping[t] (negative: not written)
  // and uses them from registers. The result is bit for bit rope_kv_write
  // followed by paged_attention; the qkv rows are left unrotated. Null: q and
  // the cache are ready (rope_kv_write or kv_write ran before).
  const float* rope_inv_freq = nullptr;   // [head_dim / 2], as rope_qk's
  const int32_t* slot_mapping = nullptr;  // [num_tokens]
  // With the RoPE fusion: launch the decode kernel as a programmatic
  // dependent of the previous kernel in the stream. Its blocks read the step
  // inputs above and gather their first cached K/V tile before waiting for
  // that kernel (which writes q), so it must have been launched ordinarily and
  // write neither the cache nor the step inputs (the backend sets it behind
  // the qkv gemv).
  bool programmatic = false;
  // Pulled into L2 by the tensor-core decode kernel's blocks once their K/V
  // tiles have landed (other kernels ignore it).
  L2Prefetch l2_prefetch;
  // The tensor-core decode kernel lets the next kernel be scheduled as soon
  // as its blocks start instead of after its wait: a gemv with the
  // shared-memory prologue behind it then fills the SM slots the qkv gemv's
  // last wave frees and fetches its weights through the attention (other
  // kernels ignore it). The next kernel still waits for this one to finish
  // before reading what it writes.
  bool trigger_dependents_early = false;
  // The opposite: the next kernel is scheduled only once every block has
  // stored its partials and counted itself in (the last ones then merge).
  // The shared-memory prologue of the o_proj gemv behind it then copies its
  // weights after the attention's own memory traffic rather than during it
  // (its copies measured to delay the partials and arrivals ~3–5 µs, bench/NOTES.md
  // run 25; the merge then takes the delay, and batch 1 is slower). Ignored
  // with trigger_dependents_early.
  bool trigger_dependents_after_arrival = false;
};
// Every row a decode row (max_q_len 1), positions given, and the tensor-core
// decode kernel serving the shape: the RoPE fusion above applies.
bool decode_rope_fusable(const PagedAttentionParams& p);
// A sequence with this many query rows in a step fills a quarter of the
// tensor-core kernel's 64-row tile; fewer are cheaper on the SIMT kernel.
constexpr int64_t kPrefillTensorCoreRows = 16;

bool attention_head_dim_supported(int64_t head_dim);
// Scratch the split-K path needs for these params (0 when no split happens).
// It must be zero-filled once when allocated (it holds arrival counters that
// every call leaves at zero again).
size_t paged_attention_workspace_bytes(const PagedAttentionParams& p);
// q rows: head h of row t at q + t·q_stride + h·head_dim; out[num_tokens, nq_heads, head_dim].
cudaError_t paged_attention(const bf16* q, int64_t q_stride, bf16* k_cache, bf16* v_cache,
                            bf16* out, const PagedAttentionParams& p, float* workspace, size_t workspace_bytes,
                            cudaStream_t stream);

// ---- sampling (sampling.cu) -----------------------------------------------
// Per row of logits[rows, vocab] (f32): temperature ≤ 0 → argmax (lowest id
// on ties); else softmax(logits / temperature) restricted to the top_k (0 =
// all) most likely tokens and to the smallest set whose mass reaches top_p,
// then one draw from a counter-based generator keyed by (seeds[r], offsets[r]).
struct SamplingRow {
  float temperature = 0.0f;
  int32_t top_k = 0;
  float top_p = 1.0f;
  uint64_t seed = 0;
  uint64_t offset = 0;  // e.g. the number of tokens generated so far
};
cudaError_t sample_rows(const float* logits, int64_t rows, int64_t vocab, const SamplingRow* params,
                        int32_t* out_tokens, cudaStream_t stream);

}  // namespace shardlm::kernels::cuda
