// KV write + paged attention on the GPU against cpu::kv_write +
// cpu::paged_attention, on batches that mix decode rows, chunked-prefill rows
// and whole prompts; contexts that cross block boundaries; shuffled block
// tables; GQA groups of 1, 2, 4 and 7; head_dim 16 … 256; sliding windows;
// and long contexts that take the split-K path (several splits + combine).
// With head_dim 64/128, sequences with ≥ kPrefillTensorCoreRows rows take the
// tensor-core prefill kernel and the other rows the tensor-core decode kernel
// (GQA group ≤ 16); both round P to bf16 before P·V (|err| ≤ 2^-9·max|v|,
// inside the bound below). simt_only cases run the SIMT kernel on the same
// shapes (it serves every other head_dim and group).
//
// q, k, v are bf16 values; the CPU reference runs in f32 on the same values.
// Outputs are convex combinations of v ∈ [-1, 1]: the GPU rounds the result
// once to bf16 (≤ 2^-9 relative) and sums in another order, so
// |gpu − cpu| ≤ 4e-3 + 1/128·|cpu| is a bf16 bound, not a loose one.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <numeric>
#include <random>

#include "cuda_test_util.h"
#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cuda/cuda_kernels.h"

namespace shardlm {
namespace {

namespace kc = kernels::cuda;
namespace cpu = kernels::cpu;
using namespace cuda_testing;
using bf16 = __nv_bfloat16;

struct AttnCase {
  std::string name;
  int64_t nq, nkv, hd, block_size;
  std::vector<int32_t> q_len, ctx;  // per sequence
  int64_t window = 0;
  bool simt_only = false;  // tensor_cores = false: the SIMT kernel for every row
};

void run_case(const AttnCase& c) {
  const int64_t ns = static_cast<int64_t>(c.ctx.size());
  const int64_t width = (c.nq + 2 * c.nkv) * c.hd, q_width = c.nq * c.hd, kv_width = c.nkv * c.hd;
  std::vector<int32_t> q_start(ns + 1, 0);
  for (int64_t s = 0; s < ns; ++s) q_start[s + 1] = q_start[s] + c.q_len[s];
  const int64_t ntok = q_start[ns];
  int64_t max_ctx = 0, mb = 0;
  for (int32_t x : c.ctx) max_ctx = std::max<int64_t>(max_ctx, x);
  mb = (max_ctx + c.block_size - 1) / c.block_size;
  const int64_t nblocks = ns * mb + 3;
  // Shuffled, non-contiguous block tables (-1 padded past each sequence's blocks).
  std::vector<int32_t> perm(nblocks);
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), std::mt19937(42));
  std::vector<int32_t> tables(ns * mb, -1);
  int64_t next = 0;
  for (int64_t s = 0; s < ns; ++s)
    for (int64_t j = 0; j < (c.ctx[s] + c.block_size - 1) / c.block_size; ++j) tables[s * mb + j] = perm[next++];

  // Cache contents before this step (the earlier tokens of every sequence), random.
  const int64_t cache_elems = nblocks * c.block_size * kv_width;
  std::vector<float> kcache = random_bf16_values(cache_elems, 100), vcache = random_bf16_values(cache_elems, 101);
  const std::vector<float> kcache0 = kcache, vcache0 = vcache;  // before this step's k/v are written
  // This step's rows: packed qkv, and the slots of its tokens (the last q_len of each sequence).
  std::vector<float> qkv = random_bf16_values(ntok * width, 102);
  std::vector<int32_t> slots(ntok), token_seq(ntok);
  for (int64_t s = 0; s < ns; ++s)
    for (int32_t t = q_start[s]; t < q_start[s + 1]; ++t) {
      const int64_t pos = c.ctx[s] - c.q_len[s] + (t - q_start[s]);
      slots[t] = tables[s * mb + pos / c.block_size] * c.block_size + pos % c.block_size;
      token_seq[t] = static_cast<int32_t>(s);
    }

  DeviceBuffer<bf16> dqkv(qkv.size()), dk(cache_elems), dv(cache_elems), dout(ntok * q_width);
  DeviceBuffer<int32_t> dslots(ntok), dseq(ntok), dqs(ns + 1), dctx(ns), dtab(tables.size());
  upload_bf16(dqkv, qkv);
  upload_bf16(dk, kcache);
  upload_bf16(dv, vcache);
  upload(dslots, slots);
  upload(dseq, token_seq);
  upload(dqs, q_start);
  upload(dctx, c.ctx);
  upload(dtab, tables);
  CUDA_OK(cudaMemset(dout.get(), 0xff, ntok * q_width * 2));  // poison: NaN bf16 until written

  CUDA_OK(kc::kv_write(dqkv.get(), width, q_width, q_width + kv_width, dk.get(), dv.get(), dslots.get(), ntok, c.nkv,
                       c.hd, c.block_size, nullptr));
  kc::PagedAttentionParams p;
  p.num_tokens = ntok;
  p.token_seq = dseq.get();
  p.q_start = dqs.get();
  p.ctx_len = dctx.get();
  p.block_tables = dtab.get();
  p.max_blocks_per_seq = mb;
  p.block_size = c.block_size;
  p.nq_heads = c.nq;
  p.nkv_heads = c.nkv;
  p.head_dim = c.hd;
  p.scale = 1.0f / std::sqrt(static_cast<float>(c.hd));
  p.sliding_window = c.window;
  p.max_context = max_ctx;
  p.num_seqs = ns;
  p.max_q_len = *std::max_element(c.q_len.begin(), c.q_len.end());
  p.tensor_cores = !c.simt_only;
  const size_t ws_bytes = kc::paged_attention_workspace_bytes(p);
  DeviceBuffer<float> ws(ws_bytes / 4 + 1);
  CUDA_OK(cudaMemset(ws.get(), 0, ws_bytes + 4));  // the split counters start at zero
  // Twice, the output poisoned in between: the second call checks that the
  // first left the split counters at zero (its last blocks must merge again).
  CUDA_OK(kc::paged_attention(dqkv.get(), width, dk.get(), dv.get(), dout.get(), p, ws.get(), ws_bytes, nullptr));
  CUDA_OK(cudaMemset(dout.get(), 0xff, ntok * q_width * 2));
  CUDA_OK(kc::paged_attention(dqkv.get(), width, dk.get(), dv.get(), dout.get(), p, ws.get(), ws_bytes, nullptr));
  CUDA_OK(cudaDeviceSynchronize());
  std::printf("  %s: %lld rows, split-K workspace %zu bytes\n", c.name.c_str(), static_cast<long long>(ntok), ws_bytes);
  // The engine's call gives the rows' positions (the decode kernel then reads
  // them instead of deriving them). Twice, the output poisoned in between.
  std::vector<int32_t> positions(ntok);
  for (int64_t s = 0; s < ns; ++s)
    for (int32_t t = q_start[s]; t < q_start[s + 1]; ++t) positions[t] = c.ctx[s] - c.q_len[s] + (t - q_start[s]);
  DeviceBuffer<int32_t> dpos(ntok);
  upload(dpos, positions);
  kc::PagedAttentionParams pp = p;
  pp.positions = dpos.get();
  DeviceBuffer<bf16> out_pos(ntok * q_width);
  const size_t ws_pos_bytes = kc::paged_attention_workspace_bytes(pp);
  DeviceBuffer<float> ws_pos(ws_pos_bytes / 4 + 1);
  CUDA_OK(cudaMemset(ws_pos.get(), 0, ws_pos_bytes + 4));
  for (int rep = 0; rep < 2; ++rep) {
    CUDA_OK(cudaMemset(out_pos.get(), 0xff, ntok * q_width * 2));
    CUDA_OK(kc::paged_attention(dqkv.get(), width, dk.get(), dv.get(), out_pos.get(), pp, ws_pos.get(), ws_pos_bytes,
                                nullptr));
  }
  CUDA_OK(cudaDeviceSynchronize());

  // CPU reference on the same values.
  std::vector<float> q(ntok * q_width), k(ntok * kv_width), v(ntok * kv_width);
  for (int64_t t = 0; t < ntok; ++t) {
    std::copy_n(&qkv[t * width], q_width, &q[t * q_width]);
    std::copy_n(&qkv[t * width + q_width], kv_width, &k[t * kv_width]);
    std::copy_n(&qkv[t * width + q_width + kv_width], kv_width, &v[t * kv_width]);
  }
  cpu::kv_write(k.data(), v.data(), kcache.data(), vcache.data(), slots.data(), ntok, c.nkv, c.hd, c.block_size);
  // The GPU cache after kv_write equals the CPU cache bit for bit (a copy of bf16 values).
  expect_close(download_bf16(dk, cache_elems), kcache, 0, 0, c.name + " k cache");
  expect_close(download_bf16(dv, cache_elems), vcache, 0, 0, c.name + " v cache");
  cpu::PagedAttentionArgs a;
  a.num_seqs = ns;
  a.q_start = q_start.data();
  a.ctx_len = c.ctx.data();
  a.block_tables = tables.data();
  a.max_blocks_per_seq = mb;
  a.block_size = c.block_size;
  a.nq_heads = c.nq;
  a.nkv_heads = c.nkv;
  a.head_dim = c.hd;
  a.scale = p.scale;
  a.sliding_window = c.window;
  std::vector<float> ref(ntok * q_width);
  cpu::paged_attention(q.data(), kcache.data(), vcache.data(), ref.data(), a);
  expect_close(download_bf16(dout, ref.size()), ref, 4e-3, 1.0 / 128, c.name);
  expect_close(download_bf16(out_pos, ref.size()), ref, 4e-3, 1.0 / 128, c.name + " (positions given)");

  // Decode steps with RoPE fused into the kernel (decode_rope_fusable): q and
  // the new k/v unrotated in the qkv rows, the kernel rotates and writes the
  // cache. Against rope_kv_write + paged_attention on the GPU bit for bit
  // (output, both caches, the qkv rows left as they were) and against
  // cpu::rope + kv_write + paged_attention within the bf16 bound. Row 1 (when
  // there is one) is a padding row: slot −1, its k/v stay out of the cache.
  kc::PagedAttentionParams fp = pp;
  fp.slot_mapping = dslots.get();
  fp.rope_inv_freq = nullptr;
  if (!kc::decode_rope_fusable(fp)) return;
  std::vector<int32_t> fslots = slots;
  if (ntok > 1) fslots[1] = -1;
  cpu::RopeParams rp;
  rp.head_dim = rp.rotary_dim = c.hd;
  rp.theta = 500000.0;
  rp.llama3_scaling = c.hd == 128;  // the Llama-3 angles; plain ones at hd 64
  std::vector<float> inv(c.hd / 2);
  cpu::rope_inv_freq(rp, inv.data());
  DeviceBuffer<float> dinv(inv.size());
  upload(dinv, inv);
  DeviceBuffer<int32_t> dfslots(ntok);
  upload(dfslots, fslots);
  DeviceBuffer<bf16> qa(qkv.size()), qb(qkv.size()), ka(cache_elems), va(cache_elems), kb(cache_elems), vb(cache_elems),
      oa(ntok * q_width), ob(ntok * q_width);
  for (auto* d : {&qa, &qb}) upload_bf16(*d, qkv);
  for (auto* d : {&ka, &kb}) upload_bf16(*d, kcache0);
  for (auto* d : {&va, &vb}) upload_bf16(*d, vcache0);
  CUDA_OK(kc::rope_kv_write(qa.get(), width, dpos.get(), dfslots.get(), ntok, c.nq, c.nkv, c.hd, c.block_size,
                            dinv.get(), ka.get(), va.get(), nullptr));
  CUDA_OK(kc::paged_attention(qa.get(), width, ka.get(), va.get(), oa.get(), pp, ws_pos.get(), ws_pos_bytes, nullptr));
  fp.slot_mapping = dfslots.get();
  fp.rope_inv_freq = dinv.get();
  for (int rep = 0; rep < 2; ++rep) {  // the second call finds its own k/v already in the cache: same result
    CUDA_OK(cudaMemset(ob.get(), 0xff, ntok * q_width * 2));
    CUDA_OK(kc::paged_attention(qb.get(), width, kb.get(), vb.get(), ob.get(), fp, ws_pos.get(), ws_pos_bytes,
                                nullptr));
  }
  CUDA_OK(cudaDeviceSynchronize());
  // Launched programmatically behind the gemv that writes the qkv rows (the
  // backend's prelaunch_after_gemv): the blocks gather their first cached
  // tile before waiting for it, q and the new k/v only after. The gemv
  // rebuilds the rows exactly (x = identity rows, w[n][t] = qkv[t][n]) over a
  // 4096-wide k, into rows poisoned with NaN, so a read before its end shows.
  if (ntok <= kc::kGemvMaxRows) {
    constexpr int64_t kId = 4096;
    std::vector<float> xid(ntok * kId, 0.0f), wq(width * kId, 0.0f);
    for (int64_t t = 0; t < ntok; ++t) {
      xid[t * kId + t] = 1.0f;
      for (int64_t e = 0; e < width; ++e) wq[e * kId + t] = qkv[t * width + e];
    }
    DeviceBuffer<bf16> dxid(xid.size()), dwq(wq.size()), qc(qkv.size()), kc2(cache_elems), vc2(cache_elems),
        oc(ntok * q_width);
    upload_bf16(dxid, xid);
    upload_bf16(dwq, wq);
    upload_bf16(kc2, kcache0);
    upload_bf16(vc2, vcache0);
    kc::PagedAttentionParams pf = fp;
    pf.programmatic = true;
    for (int rep = 0; rep < 3; ++rep) {
      CUDA_OK(cudaMemset(qc.get(), 0xff, qkv.size() * 2));
      CUDA_OK(cudaMemset(oc.get(), 0xff, ntok * q_width * 2));
      CUDA_OK(kc::gemv(dxid.get(), dwq.get(), nullptr, qc.get(), false, ntok, width, kId, nullptr));
      CUDA_OK(kc::paged_attention(qc.get(), width, kc2.get(), vc2.get(), oc.get(), pf, ws_pos.get(), ws_pos_bytes,
                                  nullptr));
    }
    CUDA_OK(cudaDeviceSynchronize());
    expect_close(download_bf16(oc, ntok * q_width), download_bf16(ob, ntok * q_width), 0, 0,
                 c.name + " fused rope launched behind the qkv gemv");
    expect_close(download_bf16(kc2, cache_elems), download_bf16(kb, cache_elems), 0, 0,
                 c.name + " fused rope behind the gemv: k cache");
    expect_close(download_bf16(vc2, cache_elems), download_bf16(vb, cache_elems), 0, 0,
                 c.name + " fused rope behind the gemv: v cache");
  }
  std::vector<float> got = download_bf16(ob, ntok * q_width), want = download_bf16(oa, ntok * q_width);
  std::vector<float> gpu_ref = want;
  if (ntok > 1)  // the padding row attends to a stale cache row in the two-kernel path: compare the others
    for (int64_t e = 0; e < q_width; ++e) got[q_width + e] = want[q_width + e];
  expect_close(got, want, 0, 0, c.name + " fused rope vs rope_kv_write + attention");
  expect_close(download_bf16(kb, cache_elems), download_bf16(ka, cache_elems), 0, 0, c.name + " fused rope k cache");
  expect_close(download_bf16(vb, cache_elems), download_bf16(va, cache_elems), 0, 0, c.name + " fused rope v cache");
  expect_close(download_bf16(qb, qkv.size()), qkv, 0, 0, c.name + " fused rope leaves qkv unrotated");
  // CPU: rotate q and k (rounded to bf16 as the GPU stores them), write, attend.
  std::vector<float> rq = q, rk = k, rkc = kcache0, rvc = vcache0;
  for (int64_t t = 0; t < ntok; ++t) {
    cpu::rope(&rq[t * q_width], &positions[t], 1, c.nq, c.hd, c.hd, inv.data());
    cpu::rope(&rk[t * kv_width], &positions[t], 1, c.nkv, c.hd, c.hd, inv.data());
  }
  for (float& x : rq) x = round_bf16(x);
  for (float& x : rk) x = round_bf16(x);
  cpu::kv_write(rk.data(), v.data(), rkc.data(), rvc.data(), fslots.data(), ntok, c.nkv, c.hd, c.block_size);
  std::vector<float> fref(ntok * q_width);
  cpu::paged_attention(rq.data(), rkc.data(), rvc.data(), fref.data(), a);
  std::vector<float> fgot = download_bf16(ob, ntok * q_width);
  if (ntok > 1)
    for (int64_t e = 0; e < q_width; ++e) fgot[q_width + e] = fref[q_width + e];
  // Angles up to ~10^3 rad: an f32 angle's ulp moves a rotated value by ≤ 1 bf16 step, inside the bound.
  expect_close(fgot, fref, 4e-3, 1.0 / 128, c.name + " fused rope vs cpu");
  std::printf("  %s: fused RoPE checked (bitwise vs the two kernels, and vs cpu)\n", c.name.c_str());
}

class CudaPagedAttention : public ::testing::TestWithParam<AttnCase> {};

TEST_P(CudaPagedAttention, MatchesCpu) {
  SHARDLM_REQUIRE_GPU();
  run_case(GetParam());
}

INSTANTIATE_TEST_SUITE_P(
    Cases, CudaPagedAttention,
    ::testing::Values(
        // Decode, batch 1, first token: the smallest possible step.
        AttnCase{"decode_b1_ctx1", 32, 8, 128, 16, {1}, {1}},
        // Llama-3-8B decode shape at 512 context (split-K at batch 1) and at batch 8.
        AttnCase{"decode_b1_ctx512", 32, 8, 128, 16, {1}, {512}},
        AttnCase{"decode_b8", 32, 8, 128, 16, {1, 1, 1, 1, 1, 1, 1, 1}, {512, 17, 16, 33, 1, 500, 129, 64}},
        AttnCase{"decode_b8_simt", 32, 8, 128, 16, {1, 1, 1, 1, 1, 1, 1, 1}, {512, 17, 16, 33, 1, 500, 129, 64}, 0,
                 true},
        AttnCase{"long_split_k_hd128_simt", 32, 8, 128, 16, {1}, {8191}, 0, true},
        // Tensor-core decode: 64 rows (the batch-64 shape) with contexts across
        // block and tile edges; GQA 16 (the slab's limit) and GQA 1 at hd 64.
        AttnCase{"decode_b64_tc", 32, 8, 128, 16, std::vector<int32_t>(64, 1),
                 [] {
                   std::vector<int32_t> c(64);
                   for (int i = 0; i < 64; ++i) c[i] = 1 + (i * 37) % 700;
                   return c;
                 }()},
        AttnCase{"decode_gqa16_tc", 32, 2, 64, 16, {1, 1, 2}, {1, 65, 129}},
        // Long grids of decode rows (more than two waves: the combine kernel, or
        // no split): batch 256 at hd 128; 201 rows with GQA 8 at hd 64, a
        // window and block size 32.
        AttnCase{"decode_b256_tc", 32, 8, 128, 16, std::vector<int32_t>(256, 1),
                 [] {
                   std::vector<int32_t> c(256);
                   for (int i = 0; i < 256; ++i) c[i] = 1 + (i * 53) % 900;
                   return c;
                 }()},
        AttnCase{"decode_b201_gqa8_hd64_window", 64, 8, 64, 32, std::vector<int32_t>(201, 1),
                 [] {
                   std::vector<int32_t> c(201);
                   for (int i = 0; i < 201; ++i) c[i] = 1 + (i * 97) % 1500;
                   return c;
                 }(),
                 200},
        AttnCase{"decode_mha_hd64_window", 4, 4, 64, 16, {1, 3}, {300, 90}, 70},
        // Mixed batch: decode, chunked prefill (7 new of 40), whole prompt (23), odd heads, hd 40.
        AttnCase{"mixed_odd_heads_hd40", 6, 3, 40, 16, {1, 7, 1, 23}, {1, 40, 300, 23}},
        // Long contexts: many splits and the combine kernel; GQA 4 and block size 32.
        AttnCase{"long_split_k", 8, 2, 64, 32, {1, 1}, {5000, 3333}},
        AttnCase{"long_split_k_hd128", 32, 8, 128, 16, {1}, {8191}},
        // Prefill of a whole prompt longer than one split, chunked against a cached prefix.
        AttnCase{"prefill_chunk_on_prefix", 4, 2, 64, 16, {200}, {700}},
        AttnCase{"prefill_chunk_on_prefix_simt", 4, 2, 64, 16, {200}, {700}, 0, true},
        // Tensor-core prefill: Llama-3 heads (GQA 4, hd 128) on a whole prompt of
        // odd length; a chunk against a prefix next to a decode row, a 16-row
        // sequence (the threshold) and a 15-row one (SIMT) in one batch; MHA hd 64
        // with block size 32; a sliding window shorter than the chunk.
        AttnCase{"prefill_tc_hd128_gqa4", 32, 8, 128, 16, {301}, {301}},
        AttnCase{"prefill_tc_mixed_batch", 8, 2, 128, 16, {130, 1, 16, 15}, {1000, 50, 16, 90}},
        AttnCase{"prefill_tc_mha_hd64_bs32", 6, 6, 64, 32, {64, 77}, {64, 200}},
        AttnCase{"prefill_tc_window", 4, 2, 128, 16, {100}, {150}, 37},
        // MHA (group 1), group 7 (not a power of two), head_dim 16, 32, 80, 96 and 256.
        AttnCase{"mha_hd16", 5, 5, 16, 16, {3, 1}, {3, 77}},
        AttnCase{"gqa7_hd32", 14, 2, 32, 8, {2, 1}, {9, 130}},
        AttnCase{"hd80", 4, 1, 80, 16, {1, 5}, {33, 5}},
        AttnCase{"hd96", 6, 2, 96, 16, {4}, {260}},
        AttnCase{"hd256", 8, 1, 256, 16, {1, 3}, {1000, 70}},
        AttnCase{"group16", 16, 1, 64, 16, {1}, {2000}},
        // Sliding window (Mistral): prefill and decode rows with keys dropped off the front.
        AttnCase{"sliding_window", 4, 2, 64, 16, {1, 30, 1}, {200, 60, 37}, 37}),
    [](const auto& info) { return info.param.name; });

// One workspace serves calls of every shape (the CUDA backend keeps one): the
// split counters of a batch-1 call must not sit where a batch-8 call stores
// its partials. They did, and after one batch-8 step every batch-1 step
// skipped its merge (its output never written) — found by the kernel
// timeline (bench/NOTES.md run 19). Batch 8, then 1, then 8 again, each
// against the CPU reference, the output poisoned before each call.
TEST(CudaPagedAttention, SplitCountersSurviveCallsOfOtherBatchSizes) {
  SHARDLM_REQUIRE_GPU();
  constexpr int64_t nq = 32, nkv = 8, hd = 128, bs = 16, ctx = 512, nseq = 8;
  constexpr int64_t mb = ctx / bs, width = (nq + 2 * nkv) * hd, q_width = nq * hd;
  const int64_t cache_elems = nseq * mb * bs * nkv * hd;
  const std::vector<float> kcache = random_bf16_values(cache_elems, 300), vcache = random_bf16_values(cache_elems, 301);
  const std::vector<float> qkv = random_bf16_values(nseq * width, 302);
  std::vector<int32_t> tables(nseq * mb);
  std::iota(tables.begin(), tables.end(), 0);
  DeviceBuffer<bf16> dqkv(qkv.size()), dk(cache_elems), dv(cache_elems), dout(nseq * q_width);
  upload_bf16(dqkv, qkv);
  upload_bf16(dk, kcache);
  upload_bf16(dv, vcache);
  DeviceBuffer<int32_t> dtab(tables.size());
  upload(dtab, tables);

  // The step of the first `rows` sequences, one decode row each at position ctx − 1.
  struct Step {
    explicit Step(int64_t rows) : dseq(rows), dqs(rows + 1), dctx(rows), dpos(rows) {}
    std::vector<int32_t> seq, q_start, ctx_len, pos;
    DeviceBuffer<int32_t> dseq, dqs, dctx, dpos;
    kc::PagedAttentionParams p;
    std::vector<float> ref;
  };
  auto make_step = [&](int64_t rows) {
    auto st = std::make_unique<Step>(rows);
    for (int64_t s = 0; s < rows; ++s) {
      st->seq.push_back(static_cast<int32_t>(s));
      st->q_start.push_back(static_cast<int32_t>(s));
      st->ctx_len.push_back(ctx);
      st->pos.push_back(ctx - 1);
    }
    st->q_start.push_back(static_cast<int32_t>(rows));
    upload(st->dseq, st->seq);
    upload(st->dqs, st->q_start);
    upload(st->dctx, st->ctx_len);
    upload(st->dpos, st->pos);
    kc::PagedAttentionParams& p = st->p;
    p.num_tokens = rows;
    p.token_seq = st->dseq.get();
    p.positions = st->dpos.get();
    p.q_start = st->dqs.get();
    p.ctx_len = st->dctx.get();
    p.block_tables = dtab.get();
    p.max_blocks_per_seq = mb;
    p.block_size = bs;
    p.nq_heads = nq;
    p.nkv_heads = nkv;
    p.head_dim = hd;
    p.scale = 1.0f / std::sqrt(static_cast<float>(hd));
    p.max_context = ctx;
    p.num_seqs = rows;
    p.max_q_len = 1;
    std::vector<float> q(rows * q_width);
    for (int64_t t = 0; t < rows; ++t) std::copy_n(&qkv[t * width], q_width, &q[t * q_width]);
    cpu::PagedAttentionArgs a;
    a.num_seqs = rows;
    a.q_start = st->q_start.data();
    a.ctx_len = st->ctx_len.data();
    a.block_tables = tables.data();
    a.max_blocks_per_seq = mb;
    a.block_size = bs;
    a.nq_heads = nq;
    a.nkv_heads = nkv;
    a.head_dim = hd;
    a.scale = p.scale;
    st->ref.resize(rows * q_width);
    cpu::paged_attention(q.data(), kcache.data(), vcache.data(), st->ref.data(), a);
    return st;
  };
  const auto b8 = make_step(nseq), b1 = make_step(1);
  const size_t ws_bytes =
      std::max(kc::paged_attention_workspace_bytes(b8->p), kc::paged_attention_workspace_bytes(b1->p));
  ASSERT_GT(kc::paged_attention_workspace_bytes(b1->p), 0u) << "batch 1 at 512 keys splits";
  DeviceBuffer<float> ws(ws_bytes / 4 + 1);
  CUDA_OK(cudaMemset(ws.get(), 0, ws_bytes + 4));
  // The second round also pulls rows of the value cache into L2 (as the
  // backend does with the next gemv's weights): a hint that must change
  // nothing; rows that are not a multiple of the 64 KB piece.
  int call = 0;
  for (Step* st : {b8.get(), b1.get(), b8.get(), b1.get()}) {
    const int64_t rows = st->p.num_tokens;
    if (call++ >= 2) st->p.l2_prefetch = {dv.get(), 7, 70000, 69008};  // rows, stride, bytes of each
    CUDA_OK(cudaMemset(dout.get(), 0xff, rows * q_width * 2));  // NaN until written
    CUDA_OK(kc::paged_attention(dqkv.get(), width, dk.get(), dv.get(), dout.get(), st->p, ws.get(), ws_bytes, nullptr));
    CUDA_OK(cudaDeviceSynchronize());
    expect_close(download_bf16(dout, rows * q_width), st->ref, 4e-3, 1.0 / 128,
                 "batch " + std::to_string(rows) + " after the other batch's call" +
                     (call > 2 ? " (with an L2 prefetch)" : ""));
  }
}

TEST(CudaPagedAttention, RejectsUnsupportedHeadDim) {
  SHARDLM_REQUIRE_GPU();
  EXPECT_FALSE(kc::attention_head_dim_supported(48));
  EXPECT_FALSE(kc::attention_head_dim_supported(512));
  EXPECT_TRUE(kc::attention_head_dim_supported(128));
  kc::PagedAttentionParams p;
  p.num_tokens = 1;
  p.nq_heads = 2;
  p.nkv_heads = 1;
  p.head_dim = 48;
  p.block_size = 16;
  p.max_blocks_per_seq = 1;
  p.max_context = 1;
  EXPECT_EQ(kc::paged_attention(nullptr, 96, nullptr, nullptr, nullptr, p, nullptr, 0, nullptr), cudaErrorNotSupported);
}

}  // namespace
}  // namespace shardlm
