// cuBLASLt linears against cpu::matmul, and device sampling against its
// definition.
//
// GEMM: x, w bf16 values; reference in f32 (CPU matmul) on the same values.
// The GPU accumulates in f32 too, so the difference is the output rounding
// (bf16 out: 2^-9 relative; f32 out: summation order, ~k·2^-24) plus an atol
// scaled by √k·(typical |x·w|) for outputs near zero.
//
// Sampling: greedy is exactly the argmax (lowest id on ties); a draw is
// reproducible for a (seed, offset); top-k = 1 and top-p → 0 collapse to the
// argmax; draws stay inside the top-k set; and the empirical distribution of
// many seeded draws matches softmax(logits / T) within 4 standard errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <map>

#include "cuda_test_util.h"
#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/gemm.h"

namespace shardlm {
namespace {

namespace kc = kernels::cuda;
namespace cpu = kernels::cpu;
using namespace cuda_testing;
using bf16 = __nv_bfloat16;

struct GemmCase {
  int64_t m, n, k;
  bool bias, f32_out;
};

std::string gemm_name(const ::testing::TestParamInfo<GemmCase>& i) {
  const GemmCase& c = i.param;
  return "m" + std::to_string(c.m) + "_n" + std::to_string(c.n) + "_k" + std::to_string(c.k) +
         (c.bias ? "_bias" : "") + (c.f32_out ? "_f32out" : "");
}

class CudaGemm : public ::testing::TestWithParam<GemmCase> {};

TEST_P(CudaGemm, MatchesCpuMatmul) {
  SHARDLM_REQUIRE_GPU();
  const GemmCase c = GetParam();
  std::string err;
  auto gemm = kc::Gemm::create(32 << 20, &err);
  ASSERT_TRUE(gemm) << err;
  auto x = random_bf16_values(c.m * c.k, 20), w = random_bf16_values(c.n * c.k, 21), b = random_bf16_values(c.n, 22);
  DeviceBuffer<bf16> dx(x.size()), dw(w.size()), db(c.n);
  upload_bf16(dx, x);
  upload_bf16(dw, w);
  upload_bf16(db, b);
  std::vector<float> ref(c.m * c.n);
  cpu::matmul(x.data(), w.data(), c.bias ? b.data() : nullptr, ref.data(), c.m, c.n, c.k);
  const double atol = 2e-3 * std::sqrt(static_cast<double>(c.k));
  // Twice: the first call tunes and caches the plan, the second uses the cache.
  for (int rep = 0; rep < 2; ++rep) {
    if (c.f32_out) {
      DeviceBuffer<float> dy(c.m * c.n);
      ASSERT_TRUE(gemm->matmul(dx.get(), dw.get(), nullptr, dy.get(), c.m, c.n, c.k, kc::GemmType::kBF16,
                               kc::GemmType::kF32, nullptr, &err))
          << err;
      CUDA_OK(cudaDeviceSynchronize());
      expect_close(download(dy, ref.size()), ref, atol, 1e-5, "gemm f32 out");
    } else {
      DeviceBuffer<bf16> dy(c.m * c.n);
      ASSERT_TRUE(gemm->matmul(dx.get(), dw.get(), c.bias ? db.get() : nullptr, dy.get(), c.m, c.n, c.k,
                               kc::GemmType::kBF16, kc::GemmType::kBF16, nullptr, &err))
          << err;
      CUDA_OK(cudaDeviceSynchronize());
      expect_close(download_bf16(dy, ref.size()), ref, atol, 1.0 / 128, "gemm bf16 out");
    }
  }
  EXPECT_EQ(gemm->cached_plans(), 1);
}

INSTANTIATE_TEST_SUITE_P(Shapes, CudaGemm,
                         ::testing::Values(GemmCase{1, 4096, 4096, false, false},  // decode, 8B o_proj
                                           GemmCase{1, 301, 96, false, true},      // odd vocab LM head
                                           GemmCase{7, 130, 68, true, false},      // odd rows, bias (Qwen2 qkv)
                                           GemmCase{64, 256, 512, true, false}, GemmCase{33, 1000, 96, false, true},
                                           GemmCase{256, 512, 4096, false, false}),
                         gemm_name);

class CudaGemv : public ::testing::TestWithParam<GemmCase> {};

// The decode-time kernel for m ≤ 8: same contract and tolerance as the cuBLASLt path.
TEST_P(CudaGemv, MatchesCpuMatmul) {
  SHARDLM_REQUIRE_GPU();
  const GemmCase c = GetParam();
  auto x = random_bf16_values(c.m * c.k, 23), w = random_bf16_values(c.n * c.k, 24), b = random_bf16_values(c.n, 25);
  DeviceBuffer<bf16> dx(x.size()), dw(w.size()), db(c.n);
  upload_bf16(dx, x);
  upload_bf16(dw, w);
  upload_bf16(db, b);
  ASSERT_TRUE(kc::gemv_supported(c.m, c.k, dx.get(), dw.get()));
  std::vector<float> ref(c.m * c.n);
  cpu::matmul(x.data(), w.data(), c.bias ? b.data() : nullptr, ref.data(), c.m, c.n, c.k);
  const double atol = 2e-3 * std::sqrt(static_cast<double>(c.k));
  // Plain launch, and the programmatic dependent launch right behind a kernel that writes x
  // (a copy kernel standing in for the norm before a linear): the wait must see x complete.
  for (bool pdl : {false, true}) {
    DeviceBuffer<bf16> dx2(x.size());
    CUDA_OK(cudaMemset(dx2.get(), 0, x.size() * 2));
    CUDA_OK(kc::add(dx.get(), dx2.get(), dx2.get(), x.size(), nullptr));  // dx2 = x, written by a kernel
    const std::string tag = pdl ? " (programmatic launch)" : "";
    if (c.f32_out) {
      DeviceBuffer<float> dy(c.m * c.n);
      CUDA_OK(kc::gemv(dx2.get(), dw.get(), c.bias ? db.get() : nullptr, dy.get(), true, c.m, c.n, c.k, nullptr, pdl));
      CUDA_OK(cudaDeviceSynchronize());
      expect_close(download(dy, ref.size()), ref, atol, 1e-5, "gemv f32 out" + tag);
    } else {
      DeviceBuffer<bf16> dy(c.m * c.n);
      CUDA_OK(cudaMemset(dy.get(), 0xff, c.m * c.n * 2));  // NaN until written
      CUDA_OK(kc::gemv(dx2.get(), dw.get(), c.bias ? db.get() : nullptr, dy.get(), false, c.m, c.n, c.k, nullptr, pdl));
      CUDA_OK(cudaDeviceSynchronize());
      expect_close(download_bf16(dy, ref.size()), ref, atol, 1.0 / 128, "gemv bf16 out" + tag);
    }
  }
}

// k = 96 and 40·… take only the tail loop; 4096, 7168 (tp 2's down projection) and 14336 the
// unrolled one; odd n, n = 1 and n = 50021 (an LM head slice); bias; every m.
INSTANTIATE_TEST_SUITE_P(Shapes, CudaGemv,
                         ::testing::Values(GemmCase{1, 4096, 4096, false, false}, GemmCase{1, 301, 96, false, true},
                                           GemmCase{3, 130, 136, true, false}, GemmCase{8, 1000, 14336, false, false},
                                           GemmCase{5, 257, 4096, true, true}, GemmCase{2, 6144, 4096, true, false},
                                           GemmCase{7, 33, 1032, false, false}, GemmCase{4, 9, 8, false, true},
                                           GemmCase{6, 77, 2056, false, false}, GemmCase{1, 4096, 7168, false, false},
                                           GemmCase{1, 50021, 256, false, true}, GemmCase{1, 1, 16, true, true}),
                         gemm_name);

// The gate|up linear fused with silu·up (graph pass linear_silu_mul): bit for
// bit gemv (bf16 out) then silu_mul, the unfused pair it replaces; every m,
// bias, the tail-only and unrolled k paths, both launch modes.
TEST(CudaGemv, SiluMulFusedIsBitwiseGemvThenSiluMul) {
  SHARDLM_REQUIRE_GPU();
  struct Case { int64_t m, inter, k; bool bias; };
  for (const Case c : {Case{1, 14336, 4096, false}, Case{3, 77, 136, true}, Case{8, 1000, 4096, false},
                       Case{5, 33, 96, true}, Case{2, 7168, 4096, false}, Case{7, 9, 1032, false},
                       Case{1, 3000, 7168, true}}) {
    auto x = random_bf16_values(c.m * c.k, 31), w = random_bf16_values(2 * c.inter * c.k, 32),
         b = random_bf16_values(2 * c.inter, 33);
    DeviceBuffer<bf16> dx(x.size()), dw(w.size()), db(b.size()), dgu(c.m * 2 * c.inter), dref(c.m * c.inter),
        dy(c.m * c.inter);
    upload_bf16(dx, x);
    upload_bf16(dw, w);
    upload_bf16(db, b);
    const bf16* bias = c.bias ? db.get() : nullptr;
    for (bool pdl : {false, true}) {
      CUDA_OK(cudaMemset(dy.get(), 0xff, c.m * c.inter * 2));  // NaN until written
      CUDA_OK(kc::gemv(dx.get(), dw.get(), bias, dgu.get(), false, c.m, 2 * c.inter, c.k, nullptr, pdl));
      CUDA_OK(kc::silu_mul(dgu.get(), dref.get(), c.m, c.inter, nullptr));
      CUDA_OK(kc::gemv_silu_mul(dx.get(), dw.get(), bias, dy.get(), c.m, c.inter, c.k, nullptr, pdl));
      CUDA_OK(cudaDeviceSynchronize());
      const std::string tag = "m" + std::to_string(c.m) + " inter " + std::to_string(c.inter) + " k " +
                              std::to_string(c.k) + (pdl ? " (programmatic launch)" : "");
      expect_close(download_bf16(dy, c.m * c.inter), download_bf16(dref, c.m * c.inter), 0, 0, "gemv_silu_mul " + tag);
    }
  }
}

// The shared-memory prologue (m = 1: each block's first ≤ 64 KB of weight rows
// bulk-copied to shared memory before the wait) against the register stream,
// bit for bit: whole rows in shared memory (k 4096), part of them (k 14336,
// and silu's two rows a warp at k 4096), one piece over (k 264: 32 pieces
// copied, one streamed), too short a row (k 72: no prologue), a partial last
// block (n 13), bias, f32 out; launched ordinarily and programmatically behind
// a kernel that writes x.
TEST(CudaGemv, SmemPrologueIsBitwiseTheRegisterStream) {
  SHARDLM_REQUIRE_GPU();
  struct Case { int64_t n, k; bool bias, f32, silu; };
  for (const Case c : {Case{4096, 4096, false, false, false}, Case{13, 14336, true, false, false},
                       Case{301, 264, false, true, false}, Case{77, 72, true, false, false},
                       Case{3000, 4096, false, false, true}, Case{9, 7168, true, false, true},
                       Case{50021, 256, false, true, false}}) {
    const int64_t rows = c.silu ? 2 * c.n : c.n;
    auto x = random_bf16_values(c.k, 41), w = random_bf16_values(rows * c.k, 42), b = random_bf16_values(rows, 43);
    DeviceBuffer<bf16> dx(c.k), dx2(c.k), dw(w.size()), db(rows);
    upload_bf16(dx, x);
    upload_bf16(dw, w);
    upload_bf16(db, b);
    const bf16* bias = c.bias ? db.get() : nullptr;
    const int64_t bytes = c.n * (c.f32 ? 4 : 2);
    DeviceBuffer<unsigned char> ref(bytes), got(bytes);
    auto run = [&](void* y, bool programmatic, bool smem) {
      CUDA_OK(cudaMemset(dx2.get(), 0, c.k * 2));
      CUDA_OK(kc::add(dx.get(), dx2.get(), dx2.get(), c.k, nullptr));  // x written by the kernel before
      CUDA_OK(cudaMemset(y, 0xff, bytes));                                // NaN until written
      if (c.silu) {
        CUDA_OK(kc::gemv_silu_mul(dx2.get(), dw.get(), bias, static_cast<bf16*>(y), 1, c.n, c.k, nullptr, false,
                                  programmatic, smem));
      } else {
        CUDA_OK(kc::gemv(dx2.get(), dw.get(), bias, y, c.f32, 1, c.n, c.k, nullptr, false, programmatic, smem));
      }
      CUDA_OK(cudaDeviceSynchronize());
    };
    run(ref.get(), false, false);
    std::vector<unsigned char> want(bytes), have(bytes);
    CUDA_OK(cudaMemcpy(want.data(), ref.get(), bytes, cudaMemcpyDeviceToHost));
    for (bool programmatic : {false, true}) {
      run(got.get(), programmatic, true);
      CUDA_OK(cudaMemcpy(have.data(), got.get(), bytes, cudaMemcpyDeviceToHost));
      EXPECT_EQ(0, std::memcmp(want.data(), have.data(), bytes))
          << "n " << c.n << " k " << c.k << (c.silu ? " silu" : "") << (programmatic ? " programmatic" : "");
    }
  }
}

TEST(CudaGemv, RejectsWhatItCannotDo) {
  EXPECT_FALSE(kc::gemv_supported(9, 64, nullptr, nullptr));
  EXPECT_FALSE(kc::gemv_supported(1, 67, nullptr, nullptr));
  EXPECT_TRUE(kc::gemv_supported(8, 64, nullptr, nullptr));
}

std::vector<int32_t> sample(const std::vector<float>& logits, int64_t rows, int64_t vocab,
                            const std::vector<kc::SamplingRow>& params) {
  DeviceBuffer<float> dl(logits.size());
  DeviceBuffer<kc::SamplingRow> dp(params.size());
  DeviceBuffer<int32_t> dt(rows);
  upload(dl, logits);
  upload(dp, params);
  EXPECT_EQ(kc::sample_rows(dl.get(), rows, vocab, dp.get(), dt.get(), nullptr), cudaSuccess);
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  return download(dt, rows);
}

TEST(CudaSampling, GreedyIsArgmaxWithLowestIdOnTies) {
  SHARDLM_REQUIRE_GPU();
  const int64_t rows = 5, vocab = 128256;  // Llama-3 vocabulary
  std::vector<float> logits(rows * vocab);
  for (int64_t r = 0; r < rows; ++r) {
    auto v = random_bf16_values(vocab, 30 + r, -10, 10);
    std::copy(v.begin(), v.end(), logits.begin() + r * vocab);
  }
  logits[2 * vocab + 777] = 50;
  logits[2 * vocab + 99999] = 50;  // tie: 777 wins
  std::vector<kc::SamplingRow> p(rows);
  auto got = sample(logits, rows, vocab, p);
  for (int64_t r = 0; r < rows; ++r) {
    const auto* row = &logits[r * vocab];
    const int32_t want = static_cast<int32_t>(std::max_element(row, row + vocab) - row);
    EXPECT_EQ(got[r], want) << "row " << r;
  }
  EXPECT_EQ(got[2], 777);
}

TEST(CudaSampling, SeededDrawsAreReproducibleAndRespectTopKTopP) {
  SHARDLM_REQUIRE_GPU();
  const int64_t vocab = 1000, rows = 64;
  auto base = random_bf16_values(vocab, 40, -3, 3);
  std::vector<float> logits;
  for (int64_t r = 0; r < rows; ++r) logits.insert(logits.end(), base.begin(), base.end());
  const int32_t argmax = static_cast<int32_t>(std::max_element(base.begin(), base.end()) - base.begin());
  std::vector<float> sorted = base;
  std::sort(sorted.rbegin(), sorted.rend());
  const float kth = sorted[9];  // top-10 threshold

  std::vector<kc::SamplingRow> p(rows);
  for (int64_t r = 0; r < rows; ++r) {
    p[r].temperature = 1.0f;
    p[r].seed = 1234;
    p[r].offset = static_cast<uint64_t>(r);
    p[r].top_k = r % 3 == 0 ? 1 : 10;
    p[r].top_p = r % 3 == 1 ? 1e-6f : 1.0f;
  }
  auto a = sample(logits, rows, vocab, p), b = sample(logits, rows, vocab, p);
  EXPECT_EQ(a, b) << "same (seed, offset) must give the same token";
  for (int64_t r = 0; r < rows; ++r) {
    if (p[r].top_k == 1 || p[r].top_p < 1e-3f) EXPECT_EQ(a[r], argmax) << "row " << r;
    EXPECT_GE(base[a[r]], kth) << "row " << r << " drew outside the top 10";
  }
}

// Against the CPU reference (kernels/cpu sample_row_counter, what the CPU
// backend's forward_sample runs): greedy always the same token; sampled rows
// the same token unless a draw lands within float rounding of a boundary
// between two tokens' mass (exp and the sums are computed in another order),
// so at least 97 % of 512 draws over an odd vocabulary of 1001.
TEST(CudaSampling, MatchesTheCpuReference) {
  SHARDLM_REQUIRE_GPU();
  const int64_t vocab = 1001, rows = 512;
  std::vector<float> logits(rows * vocab);
  for (int64_t r = 0; r < rows; ++r) {
    auto v = random_bf16_values(vocab, 500 + r, -4, 4);
    std::copy(v.begin(), v.end(), logits.begin() + r * vocab);
  }
  std::vector<kc::SamplingRow> p(rows);
  for (int64_t r = 0; r < rows; ++r) {
    p[r].temperature = r % 4 == 0 ? 0.0f : 0.5f + 0.25f * (r % 5);
    p[r].top_k = r % 3 == 0 ? 0 : static_cast<int32_t>(5 + r % 40);
    p[r].top_p = r % 2 == 0 ? 1.0f : 0.8f;
    p[r].seed = 77 + r / 7;
    p[r].offset = static_cast<uint64_t>(r);
  }
  auto got = sample(logits, rows, vocab, p);
  int same = 0, greedy = 0;
  for (int64_t r = 0; r < rows; ++r) {
    shardlm::kernels::cpu::CounterSampling c;
    c.temperature = p[r].temperature;
    c.top_k = p[r].top_k;
    c.top_p = p[r].top_p;
    c.seed = p[r].seed;
    c.offset = p[r].offset;
    const int32_t want = shardlm::kernels::cpu::sample_row_counter(&logits[r * vocab], vocab, c);
    if (p[r].temperature == 0.0f) {
      EXPECT_EQ(got[r], want) << "greedy row " << r;
      ++greedy;
    }
    same += got[r] == want;
  }
  std::printf("  device sampler = CPU reference in %d of %lld rows (%d greedy)\n", same,
              static_cast<long long>(rows), greedy);
  EXPECT_GE(same, static_cast<int>(0.97 * rows));
}

TEST(CudaSampling, DrawsFollowTheSoftmax) {
  SHARDLM_REQUIRE_GPU();
  const int64_t vocab = 6, rows = 20000;
  const std::vector<float> base = {1.0f, 0.5f, -1.0f, 2.0f, 0.0f, 1.5f};
  const float temp = 0.7f;
  std::vector<float> logits;
  for (int64_t r = 0; r < rows; ++r) logits.insert(logits.end(), base.begin(), base.end());
  std::vector<kc::SamplingRow> p(rows);
  for (int64_t r = 0; r < rows; ++r) {
    p[r].temperature = temp;
    p[r].seed = 99;
    p[r].offset = static_cast<uint64_t>(r);
  }
  auto got = sample(logits, rows, vocab, p);
  std::vector<double> want(vocab);
  double z = 0;
  for (int64_t i = 0; i < vocab; ++i) z += want[i] = std::exp((base[i] - 2.0) / temp);
  std::vector<int64_t> count(vocab, 0);
  for (int32_t t : got) {
    ASSERT_GE(t, 0);
    ASSERT_LT(t, vocab);
    ++count[t];
  }
  for (int64_t i = 0; i < vocab; ++i) {
    const double pi = want[i] / z, f = static_cast<double>(count[i]) / rows;
    EXPECT_NEAR(f, pi, 4 * std::sqrt(pi * (1 - pi) / rows) + 1e-3) << "token " << i;
  }
}

}  // namespace
}  // namespace shardlm
