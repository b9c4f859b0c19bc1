// CUDA row kernels against the CPU reference kernels on awkward shapes (one
// row, odd widths that take the scalar path, head counts that are not powers
// of two, positions in the thousands for RoPE).
//
// Inputs are bf16 values (so both sides see identical inputs); the CPU runs in
// f32 on them. Tolerance: |gpu − cpu| ≤ atol + 1/64·|cpu| — the GPU output is
// bf16 (relative rounding 2^-9) and HF's bf16 order rounds once more inside
// RMSNorm / SiLU, so two or three bf16 roundings bound the difference.
#include <gtest/gtest.h>

#include <algorithm>

#include "cuda_test_util.h"
#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cuda/cuda_kernels.h"

namespace shardlm {
namespace {

namespace kc = kernels::cuda;
namespace cpu = kernels::cpu;
using namespace cuda_testing;
using bf16 = __nv_bfloat16;

constexpr double kRtol = 1.0 / 64;

class CudaRowKernels : public ::testing::TestWithParam<std::pair<int64_t, int64_t>> {};

TEST_P(CudaRowKernels, RMSNormMatchesCpu) {
  SHARDLM_REQUIRE_GPU();
  const auto [rows, cols] = GetParam();
  auto x = random_bf16_values(rows * cols, 1, -3, 3);
  auto w = random_bf16_values(cols, 2, 0.5, 1.5);
  DeviceBuffer<bf16> dx(x.size()), dw(cols), dy(x.size());
  upload_bf16(dx, x);
  upload_bf16(dw, w);
  CUDA_OK(kc::rmsnorm(dx.get(), dw.get(), dy.get(), rows, cols, 1e-5f, nullptr));
  CUDA_OK(cudaDeviceSynchronize());
  std::vector<float> ref(x.size());
  cpu::rmsnorm(x.data(), w.data(), ref.data(), rows, cols, 1e-5f);
  expect_close(download_bf16(dy, x.size()), ref, 1e-3, kRtol, "rmsnorm");
  // In place (y aliases x), as the head norm and the engine may use it.
  CUDA_OK(kc::rmsnorm(dx.get(), dw.get(), dx.get(), rows, cols, 1e-5f, nullptr));
  CUDA_OK(cudaDeviceSynchronize());
  expect_close(download_bf16(dx, x.size()), ref, 1e-3, kRtol, "rmsnorm in place");
}

TEST_P(CudaRowKernels, AddRMSNormMatchesCpu) {
  SHARDLM_REQUIRE_GPU();
  const auto [rows, cols] = GetParam();
  auto x = random_bf16_values(rows * cols, 3, -2, 2);
  auto res = random_bf16_values(rows * cols, 4, -2, 2);
  auto w = random_bf16_values(cols, 5, 0.5, 1.5);
  DeviceBuffer<bf16> dx(x.size()), dr(x.size()), dw(cols), dy(x.size());
  upload_bf16(dx, x);
  upload_bf16(dr, res);
  upload_bf16(dw, w);
  CUDA_OK(kc::add_rmsnorm(dx.get(), dr.get(), dw.get(), dy.get(), rows, cols, 1e-6f, nullptr));
  CUDA_OK(cudaDeviceSynchronize());
  std::vector<float> ref_res = res, ref(x.size());
  cpu::add_rmsnorm(x.data(), ref_res.data(), w.data(), ref.data(), rows, cols, 1e-6f);
  expect_close(download_bf16(dr, x.size()), ref_res, 1e-3, kRtol, "residual");
  expect_close(download_bf16(dy, x.size()), ref, 2e-3, kRtol, "add_rmsnorm");
}

TEST_P(CudaRowKernels, SiLUMulAndAddMatchCpu) {
  SHARDLM_REQUIRE_GPU();
  const auto [rows, inter] = GetParam();
  auto gu = random_bf16_values(rows * 2 * inter, 6, -6, 6);
  DeviceBuffer<bf16> dgu(gu.size()), dout(rows * inter);
  upload_bf16(dgu, gu);
  CUDA_OK(kc::silu_mul(dgu.get(), dout.get(), rows, inter, nullptr));
  CUDA_OK(cudaDeviceSynchronize());
  std::vector<float> ref(rows * inter);
  cpu::silu_mul(gu.data(), ref.data(), rows, inter);
  expect_close(download_bf16(dout, ref.size()), ref, 1e-2, kRtol, "silu_mul");

  auto a = random_bf16_values(rows * inter, 7), b = random_bf16_values(rows * inter, 8);
  DeviceBuffer<bf16> da(a.size()), db(b.size());
  upload_bf16(da, a);
  upload_bf16(db, b);
  CUDA_OK(kc::add(da.get(), db.get(), da.get(), a.size(), nullptr));
  CUDA_OK(cudaDeviceSynchronize());
  std::vector<float> sum(a.size());
  cpu::add(a.data(), b.data(), sum.data(), a.size());
  expect_close(download_bf16(da, a.size()), sum, 1e-6, 1.0 / 256, "add");
}

TEST_P(CudaRowKernels, EmbeddingMatchesCpu) {
  SHARDLM_REQUIRE_GPU();
  const auto [n, hidden] = GetParam();
  const int64_t vocab = 301, offset = 150;  // a vocab shard: ids outside [150, 451) give zeros
  auto table = random_bf16_values(vocab * hidden, 9);
  std::vector<int32_t> ids(n);
  for (int64_t i = 0; i < n; ++i) ids[i] = static_cast<int32_t>((i * 97 + 13) % 600);
  DeviceBuffer<bf16> dt(table.size()), dout(n * hidden);
  DeviceBuffer<int32_t> did(n);
  upload_bf16(dt, table);
  upload(did, ids);
  CUDA_OK(kc::embedding(dt.get(), vocab, hidden, did.get(), n, dout.get(), offset, nullptr));
  CUDA_OK(cudaDeviceSynchronize());
  std::vector<float> ref(n * hidden);
  cpu::embedding(table.data(), vocab, hidden, ids.data(), n, ref.data(), offset);
  expect_close(download_bf16(dout, ref.size()), ref, 0, 0, "embedding (exact)");
}

// (rows, width): one row; odd widths (scalar path); the 8B model's widths;
// the widest row the norms keep in registers (8192) and one vector past it.
INSTANTIATE_TEST_SUITE_P(Shapes, CudaRowKernels,
                         ::testing::Values(std::make_pair(1, 4096), std::make_pair(3, 67), std::make_pair(5, 96),
                                           std::make_pair(17, 14336), std::make_pair(2, 1), std::make_pair(2, 8192),
                                           std::make_pair(3, 8200)),
                         [](const auto& i) {
                           return "r" + std::to_string(i.param.first) + "_c" + std::to_string(i.param.second);
                         });

struct RopeCase {
  int64_t ntok, nq, nkv, hd;
  bool llama3;
};

class CudaRope : public ::testing::TestWithParam<RopeCase> {};

TEST_P(CudaRope, MatchesCpu) {
  SHARDLM_REQUIRE_GPU();
  const RopeCase c = GetParam();
  const int64_t width = (c.nq + 2 * c.nkv) * c.hd;
  auto qkv = random_bf16_values(c.ntok * width, 10);
  std::vector<int32_t> pos(c.ntok);
  for (int64_t t = 0; t < c.ntok; ++t) pos[t] = static_cast<int32_t>((t * 1237) % 9000);  // up to 9000
  cpu::RopeParams rp;
  rp.head_dim = rp.rotary_dim = c.hd;
  rp.theta = 500000.0;
  rp.llama3_scaling = c.llama3;
  rp.factor = 8.0;
  rp.original_max_position = 8192;
  std::vector<float> inv(c.hd / 2);
  cpu::rope_inv_freq(rp, inv.data());
  DeviceBuffer<bf16> d(qkv.size());
  DeviceBuffer<int32_t> dpos(c.ntok);
  DeviceBuffer<float> dinv(inv.size());
  upload_bf16(d, qkv);
  upload(dpos, pos);
  upload(dinv, inv);
  CUDA_OK(kc::rope_qk(d.get(), width, dpos.get(), c.ntok, c.nq, c.nkv, c.hd, dinv.get(), nullptr));
  CUDA_OK(cudaDeviceSynchronize());
  std::vector<float> ref = qkv;
  for (int64_t t = 0; t < c.ntok; ++t)  // q and k heads rotated, v untouched
    cpu::rope(ref.data() + t * width, &pos[t], 1, c.nq + c.nkv, c.hd, c.hd, inv.data());
  // Angles reach 9000 rad: an f32 angle's ulp (~1e-3) bounds the agreement, hence the atol.
  expect_close(download_bf16(d, qkv.size()), ref, 4e-3, kRtol, "rope");
}

// rope_kv_write (graph pass rope_attention) against rope_qk then kv_write,
// bit for bit: the rotated q and k in the packed rows, the cache rows of
// every token (a negative slot leaves its rows untouched).
TEST_P(CudaRope, FusedWithKvWriteIsBitwiseTheTwoKernels) {
  SHARDLM_REQUIRE_GPU();
  const RopeCase c = GetParam();
  const int64_t width = (c.nq + 2 * c.nkv) * c.hd, kvw = c.nkv * c.hd;
  auto qkv = random_bf16_values(c.ntok * width, 11);
  std::vector<int32_t> pos(c.ntok), slots(c.ntok);
  for (int64_t t = 0; t < c.ntok; ++t) {
    pos[t] = static_cast<int32_t>((t * 977) % 5000);
    slots[t] = t == 1 ? -1 : static_cast<int32_t>((t * 5 + 3) % (2 * c.ntok + 3));  // distinct, one padding row
  }
  std::vector<float> inv(c.hd / 2);
  cpu::RopeParams rp;
  rp.head_dim = rp.rotary_dim = c.hd;
  rp.theta = 10000.0;
  cpu::rope_inv_freq(rp, inv.data());
  const int64_t bs = 4;  // cache block size: slots of one block interleave with other heads' runs
  const int64_t cache_rows = (2 * c.ntok + 3 + bs - 1) / bs * bs;
  DeviceBuffer<bf16> a(qkv.size()), b(qkv.size()), ka(cache_rows * kvw), va(cache_rows * kvw), kb(cache_rows * kvw),
      vb(cache_rows * kvw);
  DeviceBuffer<int32_t> dpos(c.ntok), dslots(c.ntok);
  DeviceBuffer<float> dinv(inv.size());
  upload_bf16(a, qkv);
  upload_bf16(b, qkv);
  upload(dpos, pos);
  upload(dslots, slots);
  upload(dinv, inv);
  for (auto* buf : {&ka, &va, &kb, &vb}) CUDA_OK(cudaMemset(buf->get(), 0x3c, cache_rows * kvw * 2));
  CUDA_OK(kc::rope_qk(a.get(), width, dpos.get(), c.ntok, c.nq, c.nkv, c.hd, dinv.get(), nullptr));
  CUDA_OK(kc::kv_write(a.get(), width, c.nq * c.hd, (c.nq + c.nkv) * c.hd, ka.get(), va.get(), dslots.get(), c.ntok,
                       c.nkv, c.hd, bs, nullptr));
  CUDA_OK(kc::rope_kv_write(b.get(), width, dpos.get(), dslots.get(), c.ntok, c.nq, c.nkv, c.hd, bs, dinv.get(),
                            kb.get(), vb.get(), nullptr));
  CUDA_OK(cudaDeviceSynchronize());
  expect_close(download_bf16(b, qkv.size()), download_bf16(a, qkv.size()), 0, 0, "rope_kv_write qkv");
  expect_close(download_bf16(kb, cache_rows * kvw), download_bf16(ka, cache_rows * kvw), 0, 0, "rope_kv_write k cache");
  expect_close(download_bf16(vb, cache_rows * kvw), download_bf16(va, cache_rows * kvw), 0, 0, "rope_kv_write v cache");
  // The cache layout itself is the CPU reference's (head-major blocks): the
  // rotated rows written by cpu::kv_write land where the GPU put them.
  const std::vector<float> rotated = download_bf16(a, qkv.size());
  std::vector<float> k_rows(c.ntok * kvw), v_rows(c.ntok * kvw);
  for (int64_t t = 0; t < c.ntok; ++t)
    for (int64_t e = 0; e < kvw; ++e) {
      k_rows[t * kvw + e] = rotated[t * width + c.nq * c.hd + e];
      v_rows[t * kvw + e] = rotated[t * width + (c.nq + c.nkv) * c.hd + e];
    }
  std::vector<float> want_k(cache_rows * kvw, from_bf16_bits(0x3c3c)), want_v = want_k;
  cpu::kv_write(k_rows.data(), v_rows.data(), want_k.data(), want_v.data(), slots.data(), c.ntok, c.nkv, c.hd, bs);
  expect_close(download_bf16(ka, cache_rows * kvw), want_k, 0, 0, "kv_write k cache vs cpu::kv_write");
  expect_close(download_bf16(va, cache_rows * kvw), want_v, 0, 0, "kv_write v cache vs cpu::kv_write");
}

INSTANTIATE_TEST_SUITE_P(Shapes, CudaRope,
                         ::testing::Values(RopeCase{1, 32, 8, 128, true}, RopeCase{5, 6, 3, 40, false},
                                           RopeCase{9, 7, 1, 64, true}, RopeCase{3, 4, 2, 16, false},
                                           RopeCase{2, 2, 2, 256, true}),
                         [](const auto& i) {
                           const RopeCase& c = i.param;
                           return "t" + std::to_string(c.ntok) + "_q" + std::to_string(c.nq) + "_kv" +
                                  std::to_string(c.nkv) + "_hd" + std::to_string(c.hd) + (c.llama3 ? "_llama3" : "");
                         });

TEST(CudaHeadNorm, MatchesCpuPerHead) {
  SHARDLM_REQUIRE_GPU();
  const int64_t ntok = 3, nq = 6, nkv = 3, hd = 40, width = (nq + 2 * nkv) * hd;
  auto qkv = random_bf16_values(ntok * width, 11, -2, 2);
  auto wq = random_bf16_values(hd, 12, 0.5, 1.5), wk = random_bf16_values(hd, 13, 0.5, 1.5);
  DeviceBuffer<bf16> d(qkv.size()), dwq(hd), dwk(hd);
  upload_bf16(d, qkv);
  upload_bf16(dwq, wq);
  upload_bf16(dwk, wk);
  CUDA_OK(kc::head_rmsnorm(d.get(), width, ntok, nq, nkv, hd, dwq.get(), dwk.get(), 1e-6f, nullptr));
  CUDA_OK(cudaDeviceSynchronize());
  std::vector<float> ref = qkv;
  for (int64_t t = 0; t < ntok; ++t) {
    float* row = ref.data() + t * width;
    cpu::rmsnorm(row, wq.data(), row, nq, hd, 1e-6f);
    cpu::rmsnorm(row + nq * hd, wk.data(), row + nq * hd, nkv, hd, 1e-6f);
  }
  expect_close(download_bf16(d, qkv.size()), ref, 2e-3, kRtol, "head_rmsnorm");
}

TEST(CudaGatherRows, CopiesSelectedRows) {
  SHARDLM_REQUIRE_GPU();
  const int64_t rows = 9, width = 301;  // f32 rows of odd width
  std::vector<float> in(rows * width);
  for (size_t i = 0; i < in.size(); ++i) in[i] = static_cast<float>(i) * 0.5f;
  std::vector<int32_t> sel = {8, 0, 3};
  DeviceBuffer<float> din(in.size()), dout(sel.size() * width);
  DeviceBuffer<int32_t> dsel(sel.size());
  upload(din, in);
  upload(dsel, sel);
  CUDA_OK(kc::gather_rows(din.get(), dout.get(), dsel.get(), sel.size(), width * 4, nullptr));
  CUDA_OK(cudaDeviceSynchronize());
  auto got = download(dout, sel.size() * width);
  for (size_t r = 0; r < sel.size(); ++r)
    for (int64_t c = 0; c < width; ++c) ASSERT_EQ(got[r * width + c], in[sel[r] * width + c]);
}

// The operands of the twenty-layer gemv → add+RMSNorm → gemv chains below.
// Host values, made once per shape: x [m, k], residual [m, n], w1 and w2
// [n, k], the norm weight g [n] (seeds seed … seed + 4).
struct NormGemvInputs {
  std::vector<float> x, res, w1, w2, g;
  NormGemvInputs(int64_t m, int64_t n, int64_t k, uint64_t seed)
      : x(random_bf16_values(m * k, seed, -1, 1)),
        res(random_bf16_values(m * n, seed + 1, -1, 1)),
        w1(random_bf16_values(n * k, seed + 2, -0.05f, 0.05f)),
        w2(random_bf16_values(n * k, seed + 3, -0.05f, 0.05f)),
        g(random_bf16_values(n, seed + 4, 0.5, 1.5)) {}
};
// Their device copies, and a the first gemv's output, y the norm's.
struct NormGemvBuffers {
  DeviceBuffer<bf16> x, a, r, y, w1, w2, g;
  NormGemvBuffers(const NormGemvInputs& in, int64_t m, int64_t n, int64_t k)
      : x(m * k), a(m * n), r(m * n), y(m * n), w1(n * k), w2(n * k), g(n) {
    upload_bf16(x, in.x);
    upload_bf16(r, in.res);
    upload_bf16(w1, in.w1);
    upload_bf16(w2, in.w2);
    upload_bf16(g, in.g);
  }
};

// gemv_add_rmsnorm (the norm done by the gemv's last block) against gemv then
// add_rmsnorm: twenty layers of [fused or the pair] → gemv on one stream, one
// shared counter, launched ordinarily, programmatically, and programmatically
// with the shared-memory prologue (every gemv and the fused kernel); the
// outputs, the residual and each layer's normalised row must be bit for bit
// the ordinarily launched pair's. Widths 4096 (the 8B hidden: whole rows in
// shared memory), 72 (k below one warp's pieces: the tail loop, no prologue),
// 8192 (the largest the registers hold; half of each row in shared memory);
// 8200 and 1004 are refused.
TEST(CudaGemvAddRMSNorm, IsGemvThenAddRMSNormBitwise) {
  SHARDLM_REQUIRE_GPU();
  for (const int64_t cols : {4096, 72, 8192}) {
    const int64_t n = cols, k = cols;
    const NormGemvInputs in(1, n, k, 70);
    std::vector<float> ref[4];  // the ordinarily launched pair: out, residual, normalised row, linear's output
    for (int mode = 0; mode < 3; ++mode) {
      for (int fused = 0; fused < 2; ++fused) {
        NormGemvBuffers d(in, 1, n, k);
        auto &dx = d.x, &da = d.a, &dr = d.r, &dy = d.y, &dw1 = d.w1, &dw2 = d.w2, &dg = d.g;
        DeviceBuffer<int32_t> counter(1);
        CUDA_OK(cudaMemset(counter.get(), 0, sizeof(int32_t)));
        cudaStream_t s;
        ASSERT_EQ(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), cudaSuccess);
        const bool pl = mode >= 1, smem = mode == 2;
        for (int layer = 0; layer < 20; ++layer) {
          if (fused) {
            CUDA_OK(kc::gemv_add_rmsnorm(dx.get(), dw1.get(), nullptr, da.get(), n, k, dr.get(), dg.get(), dy.get(),
                                         1e-5f, counter.get(), s, pl && layer > 0, smem));
          } else {
            CUDA_OK(
                kc::gemv(dx.get(), dw1.get(), nullptr, da.get(), false, 1, n, k, s, false, pl && layer > 0, smem));
            CUDA_OK(kc::add_rmsnorm(da.get(), dr.get(), dg.get(), dy.get(), 1, n, 1e-5f, s, pl));
          }
          CUDA_OK(kc::gemv(dy.get(), dw2.get(), nullptr, dx.get(), false, 1, n, k, s, false, pl, smem));
        }
        CUDA_OK(cudaStreamSynchronize(s));
        cudaStreamDestroy(s);
        const std::vector<float> got[4] = {download_bf16(dx, k), download_bf16(dr, n), download_bf16(dy, n),
                                           download_bf16(da, n)};
        int32_t left = -1;
        CUDA_OK(cudaMemcpy(&left, counter.get(), sizeof(left), cudaMemcpyDeviceToHost));
        EXPECT_EQ(left, 0) << "the counter is left zero";
        const std::string tag = "cols " + std::to_string(cols) + (fused ? ", fused" : ", pair") +
                                (mode == 1 ? ", programmatic" : mode == 2 ? ", programmatic + smem prologue" : "");
        if (mode == 0 && fused == 0) {
          for (int i = 0; i < 4; ++i) ref[i] = got[i];
          bool finite = true;
          for (float v : got[0]) finite = finite && std::isfinite(v);
          EXPECT_TRUE(finite) << tag;
          continue;
        }
        for (int i = 0; i < 4; ++i)
          EXPECT_EQ(0, std::memcmp(ref[i].data(), got[i].data(), ref[i].size() * sizeof(float))) << tag << ", output "
                                                                                                 << i;
      }
    }
  }
  DeviceBuffer<bf16> big(8200 * 8), small(1004 * 8);
  DeviceBuffer<int32_t> counter(1);
  EXPECT_EQ(kc::gemv_add_rmsnorm(big.get(), big.get(), nullptr, big.get(), 8200, 8, big.get(), big.get(), big.get(),
                                 1e-5f, counter.get(), nullptr),
            cudaErrorInvalidValue);
  EXPECT_EQ(kc::gemv_add_rmsnorm(small.get(), small.get(), nullptr, small.get(), 1004, 8, small.get(), small.get(),
                                 small.get(), 1e-5f, counter.get(), nullptr),
            cudaErrorInvalidValue);
}

}  // namespace
}  // namespace shardlm

namespace shardlm {
namespace {

// Programmatic dependent launches must keep stream order: a chain of dependent
// kernels (add → rmsnorm → silu_mul-shaped reads) gives bitwise the same result
// with the switch on as off.
TEST(CudaProgrammaticLaunch, KeepsStreamOrderBitwise) {
  SHARDLM_REQUIRE_GPU();
  const int64_t rows = 64, cols = 4096;
  auto x = cuda_testing::random_bf16_values(rows * cols, 50);
  auto w = cuda_testing::random_bf16_values(cols, 51, 0.5, 1.5);
  std::vector<float> results[2];
  for (int on = 0; on < 2; ++on) {
    kernels::cuda::set_programmatic_launch(on == 1);
    cuda_testing::DeviceBuffer<__nv_bfloat16> dx(x.size()), dy(x.size()), dw(cols);
    cuda_testing::upload_bf16(dx, x);
    cuda_testing::upload_bf16(dy, x);
    cuda_testing::upload_bf16(dw, w);
    cudaStream_t s;
    ASSERT_EQ(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), cudaSuccess);
    for (int i = 0; i < 50; ++i) {
      ASSERT_EQ(kernels::cuda::add(dy.get(), dx.get(), dy.get(), x.size(), s), cudaSuccess);
      ASSERT_EQ(kernels::cuda::rmsnorm(dy.get(), dw.get(), dy.get(), rows, cols, 1e-5f, s), cudaSuccess);
    }
    ASSERT_EQ(cudaStreamSynchronize(s), cudaSuccess);
    cudaStreamDestroy(s);
    results[on] = cuda_testing::download_bf16(dy, x.size());
  }
  kernels::cuda::set_programmatic_launch(false);
  ASSERT_EQ(results[0].size(), results[1].size());
  EXPECT_EQ(0, std::memcmp(results[0].data(), results[1].data(), results[0].size() * sizeof(float)));
}

// The decode layer's launch pattern with CudaBackendOptions::prelaunch_after_gemv
// and prelaunch_gemv: gemv (ordinary launch, lets its dependent start at once)
// → add_rmsnorm launched programmatically (loads residual and w before its
// wait, x after) → gemv launched programmatically (waits first) → …, twenty
// layers on one stream. The result must be bit for bit the ordinary launches'
// (a norm that read x before the gemv wrote it would differ). Rows 1 and 3;
// a 4096 row, an odd-sized one (72), and 8200 (past the register path, so
// launched ordinarily whatever is asked).
TEST(CudaProgrammaticLaunch, NormAndGemvBehindAGemvAreBitwiseTheOrdinaryLaunches) {
  SHARDLM_REQUIRE_GPU();
  for (const int64_t m : {1, 3})
    for (const int64_t cols : {4096, 72, 8200}) {
      const int64_t n = cols, k = cols;  // square weights: the output feeds the next layer
      const NormGemvInputs in(m, n, k, 60);
      std::vector<float> out[2], resid[2];
      for (int programmatic = 0; programmatic < 2; ++programmatic) {
        NormGemvBuffers d(in, m, n, k);
        auto &dx = d.x, &da = d.a, &dr = d.r, &dy = d.y, &dw1 = d.w1, &dw2 = d.w2, &dg = d.g;
        cudaStream_t s;
        ASSERT_EQ(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), cudaSuccess);
        const bool pl = programmatic == 1;
        for (int layer = 0; layer < 20; ++layer) {
          CUDA_OK(kc::gemv(dx.get(), dw1.get(), nullptr, da.get(), false, m, n, k, s, false, pl && layer > 0));
          // The programmatic run also pulls the first part of the next gemv's
          // rows into L2, as the backend does.
          const kc::L2Prefetch pf = pl ? kc::L2Prefetch{dw2.get(), n, k * 2, k * 2 / 32 * 16} : kc::L2Prefetch{};
          CUDA_OK(kc::add_rmsnorm(da.get(), dr.get(), dg.get(), dy.get(), m, n, 1e-5f, s, pl, pf));
          CUDA_OK(kc::gemv(dy.get(), dw2.get(), nullptr, dx.get(), false, m, n, k, s, false, pl));
        }
        CUDA_OK(cudaStreamSynchronize(s));
        cudaStreamDestroy(s);
        out[programmatic] = download_bf16(dx, m * k);
        resid[programmatic] = download_bf16(dr, m * n);
      }
      const std::string tag = "m " + std::to_string(m) + ", cols " + std::to_string(cols);
      EXPECT_EQ(0, std::memcmp(out[0].data(), out[1].data(), out[0].size() * sizeof(float))) << tag << " output";
      EXPECT_EQ(0, std::memcmp(resid[0].data(), resid[1].data(), resid[0].size() * sizeof(float)))
          << tag << " residual";
      bool finite = true;
      for (float v : out[0]) finite = finite && std::isfinite(v);
      EXPECT_TRUE(finite) << tag;
    }
}

}  // namespace
}  // namespace shardlm
