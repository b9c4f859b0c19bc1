// The persistent linear chain (linear_chain.cu) against the unfused kernels
// and the CPU reference, on the stretch of a decoder layer it replaces:
//   o = attn·Woᵀ; (R, N1) = add_rmsnorm(o, R, g1); a = silu·up(N1·Wguᵀ);
//   d = a·Wdᵀ; (R, N2) = add_rmsnorm(d, R, g2); qkv = N2·Wqkvᵀ + b.
// Every output (o, N1, a, d, N2, qkv and the residual R) must equal the
// unfused kernels' bit for bit, and each stage must match the CPU reference
// computed from the GPU's input to that stage. Shapes: the 8B layer at batch
// 1, k taking only the tail loop (72), odd widths, rows past add_rmsnorm's
// register path (8200), every batch 1–4, bias; eager twice (the barrier
// counters must come back to zero) and replayed from a CUDA graph.
#include <gtest/gtest.h>

#include "cuda_test_util.h"
#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cuda/cuda_kernels.h"

namespace shardlm {
namespace {

namespace kc = kernels::cuda;
namespace cpu = kernels::cpu;
using namespace cuda_testing;
using bf16 = __nv_bfloat16;

struct ChainCase {
  int64_t m, hidden, q_width, inter, qkv_width;
  bool bias;
};

std::string case_name(const ChainCase& c) {
  return "m" + std::to_string(c.m) + " hidden " + std::to_string(c.hidden) + " q " + std::to_string(c.q_width) +
         " inter " + std::to_string(c.inter) + " qkv " + std::to_string(c.qkv_width) + (c.bias ? " bias" : "");
}

// The activations of one run: the same inputs, outputs written by the chain or by the unfused kernels.
struct Acts {
  DeviceBuffer<bf16> attn, o, resid, n1, act, down, n2, qkv;
  explicit Acts(const ChainCase& c)
      : attn(c.m * c.q_width), o(c.m * c.hidden), resid(c.m * c.hidden), n1(c.m * c.hidden), act(c.m * c.inter),
        down(c.m * c.hidden), n2(c.m * c.hidden), qkv(c.m * c.qkv_width) {}
  void poison(const ChainCase& c) {  // NaN until written
    for (auto* b : {&o, &n1, &act, &down, &n2, &qkv}) ASSERT_EQ(cudaMemset(b->get(), 0xff, b->size() * 2), cudaSuccess);
    (void)c;
  }
};

struct Weights {
  std::vector<float> wo, g1, wgu, wd, g2, wqkv, b;
  DeviceBuffer<bf16> dwo, dg1, dwgu, dwd, dg2, dwqkv, db;
  explicit Weights(const ChainCase& c)
      : wo(random_bf16_values(c.hidden * c.q_width, 41, -0.05f, 0.05f)),
        g1(random_bf16_values(c.hidden, 42, 0.5f, 1.5f)),
        wgu(random_bf16_values(2 * c.inter * c.hidden, 43, -0.05f, 0.05f)),
        wd(random_bf16_values(c.hidden * c.inter, 44, -0.05f, 0.05f)),
        g2(random_bf16_values(c.hidden, 45, 0.5f, 1.5f)),
        wqkv(random_bf16_values(c.qkv_width * c.hidden, 46, -0.05f, 0.05f)),
        b(random_bf16_values(c.qkv_width, 47)),
        dwo(wo.size()), dg1(g1.size()), dwgu(wgu.size()), dwd(wd.size()), dg2(g2.size()), dwqkv(wqkv.size()),
        db(b.size()) {
    upload_bf16(dwo, wo);
    upload_bf16(dg1, g1);
    upload_bf16(dwgu, wgu);
    upload_bf16(dwd, wd);
    upload_bf16(dg2, g2);
    upload_bf16(dwqkv, wqkv);
    upload_bf16(db, b);
  }
};

constexpr float kEps = 1e-5f;

std::vector<kc::LinearChainStage> stages_for(const ChainCase& c, const Weights& w, Acts& a) {
  std::vector<kc::LinearChainStage> st(4);
  st[0].x = a.attn.get(), st[0].w = w.dwo.get(), st[0].y = a.o.get(), st[0].n = c.hidden, st[0].k = c.q_width;
  st[1].x = a.o.get(), st[1].norm_w = w.dg1.get(), st[1].residual = a.resid.get(), st[1].norm_out = a.n1.get();
  st[1].eps = kEps, st[1].w = w.dwgu.get(), st[1].y = a.act.get(), st[1].n = c.inter, st[1].k = c.hidden;
  st[1].silu = true;
  st[2].x = a.act.get(), st[2].w = w.dwd.get(), st[2].y = a.down.get(), st[2].n = c.hidden, st[2].k = c.inter;
  st[3].x = a.down.get(), st[3].norm_w = w.dg2.get(), st[3].residual = a.resid.get(), st[3].norm_out = a.n2.get();
  st[3].eps = kEps, st[3].w = w.dwqkv.get(), st[3].bias = c.bias ? w.db.get() : nullptr, st[3].y = a.qkv.get();
  st[3].n = c.qkv_width, st[3].k = c.hidden;
  return st;
}

cudaError_t run_unfused(const ChainCase& c, const Weights& w, Acts& a, cudaStream_t s) {
  cudaError_t e = kc::gemv(a.attn.get(), w.dwo.get(), nullptr, a.o.get(), false, c.m, c.hidden, c.q_width, s);
  if (e == cudaSuccess) e = kc::add_rmsnorm(a.o.get(), a.resid.get(), w.dg1.get(), a.n1.get(), c.m, c.hidden, kEps, s);
  if (e == cudaSuccess) e = kc::gemv_silu_mul(a.n1.get(), w.dwgu.get(), nullptr, a.act.get(), c.m, c.inter, c.hidden, s);
  if (e == cudaSuccess) e = kc::gemv(a.act.get(), w.dwd.get(), nullptr, a.down.get(), false, c.m, c.hidden, c.inter, s);
  if (e == cudaSuccess)
    e = kc::add_rmsnorm(a.down.get(), a.resid.get(), w.dg2.get(), a.n2.get(), c.m, c.hidden, kEps, s);
  if (e == cudaSuccess)
    e = kc::gemv(a.n2.get(), w.dwqkv.get(), c.bias ? w.db.get() : nullptr, a.qkv.get(), false, c.m, c.qkv_width,
                 c.hidden, s);
  return e;
}

void expect_same(const Acts& got, const Acts& want, const ChainCase& c, const std::string& how) {
  const std::string tag = case_name(c) + " " + how;
  expect_close(download_bf16(got.o, got.o.size()), download_bf16(want.o, want.o.size()), 0, 0, "o_proj " + tag);
  expect_close(download_bf16(got.n1, got.n1.size()), download_bf16(want.n1, want.n1.size()), 0, 0, "norm 1 " + tag);
  expect_close(download_bf16(got.act, got.act.size()), download_bf16(want.act, want.act.size()), 0, 0,
               "gate|up·silu " + tag);
  expect_close(download_bf16(got.down, got.down.size()), download_bf16(want.down, want.down.size()), 0, 0,
               "down " + tag);
  expect_close(download_bf16(got.n2, got.n2.size()), download_bf16(want.n2, want.n2.size()), 0, 0, "norm 2 " + tag);
  expect_close(download_bf16(got.resid, got.resid.size()), download_bf16(want.resid, want.resid.size()), 0, 0,
               "residual " + tag);
  expect_close(download_bf16(got.qkv, got.qkv.size()), download_bf16(want.qkv, want.qkv.size()), 0, 0, "qkv " + tag);
}

// Each stage against the CPU reference on the GPU's own input to that stage.
void expect_matches_cpu(const ChainCase& c, const Weights& w, const Acts& a, const std::vector<float>& attn,
                        const std::vector<float>& resid0) {
  const std::string tag = case_name(c);
  auto rnd = [](std::vector<float> v) {
    for (auto& x : v) x = round_bf16(x);
    return v;
  };
  auto lin_tol = [](int64_t k) { return 2e-3 * std::sqrt(static_cast<double>(k)); };
  std::vector<float> o(c.m * c.hidden);
  cpu::matmul(attn.data(), w.wo.data(), nullptr, o.data(), c.m, c.hidden, c.q_width);
  expect_close(download_bf16(a.o, o.size()), o, lin_tol(c.q_width), 1.0 / 128, "cpu o_proj " + tag);

  std::vector<float> r = resid0, n1(c.m * c.hidden);
  cpu::add_rmsnorm(download_bf16(a.o, o.size()).data(), r.data(), w.g1.data(), n1.data(), c.m, c.hidden, kEps);
  expect_close(download_bf16(a.n1, n1.size()), n1, 1e-2, 1.0 / 64, "cpu norm 1 " + tag);

  std::vector<float> gu(c.m * 2 * c.inter), act(c.m * c.inter);
  cpu::matmul(download_bf16(a.n1, n1.size()).data(), w.wgu.data(), nullptr, gu.data(), c.m, 2 * c.inter, c.hidden);
  cpu::silu_mul(rnd(gu).data(), act.data(), c.m, c.inter);
  expect_close(download_bf16(a.act, act.size()), act, lin_tol(c.hidden), 1.0 / 64, "cpu gate|up·silu " + tag);

  std::vector<float> d(c.m * c.hidden);
  cpu::matmul(download_bf16(a.act, act.size()).data(), w.wd.data(), nullptr, d.data(), c.m, c.hidden, c.inter);
  expect_close(download_bf16(a.down, d.size()), d, lin_tol(c.inter), 1.0 / 128, "cpu down " + tag);

  r = rnd(r);  // the device keeps the residual in bf16
  std::vector<float> n2(c.m * c.hidden);
  cpu::add_rmsnorm(download_bf16(a.down, d.size()).data(), r.data(), w.g2.data(), n2.data(), c.m, c.hidden, kEps);
  expect_close(download_bf16(a.n2, n2.size()), n2, 1e-2, 1.0 / 64, "cpu norm 2 " + tag);
  expect_close(download_bf16(a.resid, r.size()), r, 1e-2, 1.0 / 128, "cpu residual " + tag);

  std::vector<float> qkv(c.m * c.qkv_width);
  cpu::matmul(download_bf16(a.n2, n2.size()).data(), w.wqkv.data(), c.bias ? w.b.data() : nullptr, qkv.data(), c.m,
              c.qkv_width, c.hidden);
  expect_close(download_bf16(a.qkv, qkv.size()), qkv, lin_tol(c.hidden), 1.0 / 128, "cpu qkv " + tag);
}

class CudaLinearChain : public ::testing::TestWithParam<ChainCase> {};

TEST_P(CudaLinearChain, IsBitwiseTheUnfusedKernelsAndMatchesCpu) {
  SHARDLM_REQUIRE_GPU();
  const ChainCase c = GetParam();
  const Weights w(c);
  const auto attn = random_bf16_values(c.m * c.q_width, 48), resid0 = random_bf16_values(c.m * c.hidden, 49, -2, 2);
  Acts ref(c), got(c);
  for (Acts* a : {&ref, &got}) {
    upload_bf16(a->attn, attn);
    upload_bf16(a->resid, resid0);
    a->poison(c);
  }
  CUDA_OK(run_unfused(c, w, ref, nullptr));
  const auto st = stages_for(c, w, got);
  ASSERT_TRUE(kc::linear_chain_supported(st.data(), 4, c.m)) << case_name(c);
  DeviceBuffer<unsigned> ws(kc::kLinearChainWorkspaceBytes / sizeof(unsigned));
  CUDA_OK(cudaMemset(ws.get(), 0, kc::kLinearChainWorkspaceBytes));
  // Eager, twice from the same inputs: the second launch finds the counters the first left.
  for (int run = 0; run < 2; ++run) {
    upload_bf16(got.resid, resid0);
    got.poison(c);
    CUDA_OK(kc::linear_chain(st.data(), 4, c.m, ws.get(), nullptr));
    CUDA_OK(cudaDeviceSynchronize());
    expect_same(got, ref, c, "eager run " + std::to_string(run));
  }
  expect_matches_cpu(c, w, got, attn, resid0);

  // Captured into a graph with the residual's reset, replayed three times.
  DeviceBuffer<bf16> resid_saved(resid0.size());
  upload_bf16(resid_saved, resid0);
  cudaStream_t s;
  CUDA_OK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  cudaGraph_t g = nullptr;
  CUDA_OK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
  cudaError_t cap = cudaMemcpyAsync(got.resid.get(), resid_saved.get(), resid0.size() * 2, cudaMemcpyDeviceToDevice, s);
  if (cap == cudaSuccess) cap = kc::linear_chain(st.data(), 4, c.m, ws.get(), s);
  CUDA_OK(cudaStreamEndCapture(s, &g));
  CUDA_OK(cap);
  cudaGraphExec_t ge = nullptr;
  CUDA_OK(cudaGraphInstantiate(&ge, g, 0));
  for (int replay = 0; replay < 3; ++replay) {
    got.poison(c);
    CUDA_OK(cudaGraphLaunch(ge, s));
    CUDA_OK(cudaStreamSynchronize(s));
    expect_same(got, ref, c, "graph replay " + std::to_string(replay));
  }
  cudaGraphExecDestroy(ge);
  cudaGraphDestroy(g);
  cudaStreamDestroy(s);
}

INSTANTIATE_TEST_SUITE_P(Shapes, CudaLinearChain,
                         ::testing::Values(ChainCase{1, 4096, 4096, 14336, 6144, false},  // the 8B layer, batch 1
                                           ChainCase{3, 72, 64, 200, 37, true},           // tail loop only, odd n
                                           ChainCase{2, 1032, 520, 1000, 777, false},
                                           ChainCase{4, 4096, 2048, 7168, 3072, true},    // tp 2 shards, batch 4
                                           ChainCase{1, 8200, 256, 512, 300, false}),     // norm past 8192
                         [](const ::testing::TestParamInfo<ChainCase>& i) {
                           const ChainCase& c = i.param;
                           return "m" + std::to_string(c.m) + "_h" + std::to_string(c.hidden) + "_i" +
                                  std::to_string(c.inter) + (c.bias ? "_bias" : "");
                         });

TEST(CudaLinearChain, RejectsWhatItCannotDo) {
  SHARDLM_REQUIRE_GPU();
  DeviceBuffer<bf16> x(8 * 200000), w(8 * 200000), y(8);
  kc::LinearChainStage st;
  st.x = x.get(), st.w = w.get(), st.y = y.get(), st.n = 8, st.k = 64;
  EXPECT_TRUE(kc::linear_chain_supported(&st, 1, 1));
  EXPECT_FALSE(kc::linear_chain_supported(&st, 1, kc::kLinearChainMaxRows + 1));  // more rows than it unrolls
  EXPECT_FALSE(kc::linear_chain_supported(&st, 0, 1));
  st.k = 68;  // not a multiple of 8
  EXPECT_FALSE(kc::linear_chain_supported(&st, 1, 1));
  st.k = 8 * 20000;  // x would not fit shared memory
  EXPECT_FALSE(kc::linear_chain_supported(&st, 1, 1));
  st.k = 64;
  kc::LinearChainStage two[2] = {st, st};
  two[1].norm_w = w.get();  // a norm without its residual
  EXPECT_FALSE(kc::linear_chain_supported(two, 2, 1));
  two[1].residual = two[1].norm_out = y.get();
  EXPECT_TRUE(kc::linear_chain_supported(two, 2, 1));
  two[0] = two[1];  // a norm in stage 0 (no barrier before it to read the residual behind)
  EXPECT_FALSE(kc::linear_chain_supported(two, 2, 1));
  two[0].norm_w = nullptr;
  kc::LinearChainStage three[3] = {two[0], two[1], two[1]};  // two norm stages in a row
  EXPECT_FALSE(kc::linear_chain_supported(three, 3, 1));
  EXPECT_EQ(kc::linear_chain(&st, 1, 1, nullptr, nullptr), cudaErrorInvalidValue);
}

}  // namespace
}  // namespace shardlm
