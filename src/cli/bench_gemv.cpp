// `shardlm bench gemv`: the decode-time linears (gemv / gemv_silu_mul, batch
// 1 … 8; cuBLASLt alone up to 256 rows, the batch-64 and -256 decode steps) of the Llama-3-8B shape, at tp 1 and tp 2 slices: the gemv kernel
// (plain, and as a programmatic dependent launch) and cuBLASLt (+ silu_mul
// for the gated MLP) as the peer, next to the device-to-device copy
// bandwidth measured in the same run (bytes read + written per second, as
// `bench decode`'s roofline uses it).
//   * per linear: µs per call, replayed in a CUDA graph that cycles through
//     enough copies of the weights (≥ 1 GiB) that none is still in L2;
//     GB/s = weight bytes / time, and that as a fraction of copy bandwidth;
//   * per layer: qkv → o → gate|up·silu → down chained on one stream (each
//     reads the previous one's output), 8 layers of distinct weights: the
//     time of one layer's linears including the gaps between kernels, against
//     its weight bytes at copy bandwidth — what a decode step pays 32 times;
//     and (m ≤ 4) the same layers as the decode path runs them: o_proj …
//     the next qkv with both add+RMSNorms as one linear_chain kernel each.
// A benchmark, not a test: nothing here asserts a time.
#include <algorithm>
#include <cstdlib>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "cli/bench_command.h"

#if SHARDLM_HAVE_COMM_CUDA
#include <cuda_runtime.h>

#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/gemm.h"
#endif

namespace shardlm::cli {
namespace {

// The kernel configurations `--variants` accepts (see register_bench_gemv).
bool known_variant(const std::string& v) { return v == "gemv" || v == "gemv+pdl" || v == "cublaslt"; }
constexpr long kMaxRows = 256;  // the largest decode batch bucket `bench decode` times

struct GemvBenchOptions {
  int device = 0;
  std::vector<int64_t> rows = {1};
  std::vector<std::string> variants = {"gemv", "gemv+pdl", "cublaslt"};
  int reps = 20;
  bool chain_sweep = false;  // also time the chain kernel at every barrier prefetch depth
};

#if SHARDLM_HAVE_COMM_CUDA
namespace kc = kernels::cuda;

struct Linear {
  const char* name;
  int64_t n, k;  // w is [n, k]; for the gated MLP n = inter and w holds 2·inter rows
  bool silu = false;
  bool f32_out = false;
  int64_t weight_bytes() const { return (silu ? 2 : 1) * n * k * 2; }
};

std::vector<Linear> layer_linears(int tp) {
  return {{"qkv", (4096 + 2 * 1024) / tp, 4096},
          {"o_proj", 4096, 4096 / tp},
          {"gate|up·silu", 14336 / tp, 4096, true},
          {"down", 4096, 14336 / tp}};
}

// A kernel configuration: the gemv kernel, plainly or as a programmatic
// dependent launch (L2 prefetch of w before the wait), or cuBLASLt.
struct Variant {
  bool cublaslt = false;
  bool pdl = false;
};

bool parse_variant(const std::string& s, Variant* v) {
  *v = Variant{};
  if (s == "gemv") return true;
  if (s == "gemv+pdl") return v->pdl = true;
  if (s == "cublaslt") return v->cublaslt = true;
  return false;
}

#define GEMV_TRY(expr)                                                                          \
  do {                                                                                          \
    const cudaError_t e_ = (expr);                                                              \
    if (e_ != cudaSuccess) {                                                                    \
      std::fprintf(stderr, "shardlm bench gemv: %s: %s\n", #expr, cudaGetErrorString(e_));      \
      return false;                                                                             \
    }                                                                                           \
  } while (0)

struct DevBuf {
  void* p = nullptr;
  ~DevBuf() { cudaFree(p); }
};

// Captures `body` (a sequence of launches) into a graph, replays it reps
// times after a warm-up, and returns the mean ms per replay (0 on failure).
template <typename Body>
double time_graph(cudaStream_t s, int reps, Body body) {
  cudaGraph_t g = nullptr;
  cudaGraphExec_t ge = nullptr;
  if (cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal) != cudaSuccess) return 0;
  const bool ok = body();
  if (cudaStreamEndCapture(s, &g) != cudaSuccess || !ok) {
    if (g) cudaGraphDestroy(g);
    return 0;
  }
  if (cudaGraphInstantiate(&ge, g, 0) != cudaSuccess) {
    cudaGraphDestroy(g);
    return 0;
  }
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0);
  cudaEventCreate(&e1);
  for (int i = 0; i < 2; ++i) cudaGraphLaunch(ge, s);
  cudaEventRecord(e0, s);
  for (int i = 0; i < reps; ++i) cudaGraphLaunch(ge, s);
  cudaEventRecord(e1, s);
  const bool done = cudaEventSynchronize(e1) == cudaSuccess;
  float ms = 0;
  cudaEventElapsedTime(&ms, e0, e1);
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  cudaGraphExecDestroy(ge);
  cudaGraphDestroy(g);
  return done ? ms / reps : 0;
}

bool launch_linear(const Linear& l, const kc::bf16* x, const kc::bf16* w, void* y, void* scratch, int64_t m,
                   const Variant& v, kc::Gemm& gemm, cudaStream_t s) {
  if (m > kc::kGemvMaxRows && !v.cublaslt) return true;  // the gemv kernel stops at kGemvMaxRows (cell: n/a)
  if (v.cublaslt) {
    std::string err;
    const int64_t rows = l.silu ? 2 * l.n : l.n;
    if (!gemm.matmul(x, w, nullptr, l.silu ? scratch : y, m, rows, l.k, kc::GemmType::kBF16,
                     l.f32_out ? kc::GemmType::kF32 : kc::GemmType::kBF16, s, &err)) {
      std::fprintf(stderr, "shardlm bench gemv: cuBLASLt %s: %s\n", l.name, err.c_str());
      return false;
    }
    if (l.silu) GEMV_TRY(kc::silu_mul(static_cast<const kc::bf16*>(scratch), static_cast<kc::bf16*>(y), m, l.n, s));
    return true;
  }
  if (l.silu)
    GEMV_TRY(kc::gemv_silu_mul(x, w, nullptr, static_cast<kc::bf16*>(y), m, l.n, l.k, s, v.pdl));
  else
    GEMV_TRY(kc::gemv(x, w, nullptr, y, l.f32_out, m, l.n, l.k, s, v.pdl));
  return true;
}

int run_gemv_bench(const GemvBenchOptions& o) {
  std::vector<Variant> configs(o.variants.size());
  for (size_t i = 0; i < o.variants.size(); ++i)
    if (!parse_variant(o.variants[i], &configs[i])) {
      std::fprintf(stderr, "shardlm bench gemv: unknown variant '%s' (gemv, gemv+pdl, cublaslt)\n",
                   o.variants[i].c_str());
      return 2;
    }
  if (cudaSetDevice(o.device) != cudaSuccess) {
    std::fprintf(stderr, "shardlm bench gemv: no CUDA device %d\n", o.device);
    return 1;
  }
  cudaDeviceProp prop{};
  cudaGetDeviceProperties(&prop, o.device);
  cudaStream_t s;
  cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking);
  double bw = 0;
  if (const cudaError_t e = kc::measure_copy_bandwidth(1ll << 30, s, &bw); e != cudaSuccess || bw <= 0) {
    std::fprintf(stderr, "shardlm bench gemv: copy-bandwidth run failed: %s\n", cudaGetErrorString(e));
    return 1;
  }
  std::printf("device %s, %d SMs; copy bandwidth %.0f GB/s (read + write), measured now\n", prop.name,
              prop.multiProcessorCount, bw / 1e9);
  std::printf("cells: µs per call, and weight bytes / time as %% of copy bandwidth\n");
  std::string gemm_err;
  auto gemm = kc::Gemm::create(32ll << 20, &gemm_err);
  if (!gemm) {
    std::fprintf(stderr, "shardlm bench gemv: cuBLASLt: %s\n", gemm_err.c_str());
    return 1;
  }
  const int64_t max_k = 14336, max_m = *std::max_element(o.rows.begin(), o.rows.end());
  DevBuf x, y, scratch;
  if (cudaMalloc(&x.p, max_m * max_k * 2 * 2) != cudaSuccess || cudaMalloc(&y.p, max_m * 131072 * 4) != cudaSuccess ||
      cudaMalloc(&scratch.p, max_m * 2 * 14336 * 2) != cudaSuccess)
    return 1;
  kc::fill_random_bf16(static_cast<kc::bf16*>(x.p), max_m * max_k * 2, 3, 1.0f, s);
  auto* xb = static_cast<kc::bf16*>(x.p);
  int failures = 0;
  for (int64_t m : o.rows)
    for (int tp : {1, 2}) {
      std::vector<Linear> lins = layer_linears(tp);
      lins.push_back({"lm_head", 128256 / tp, 4096, false, true});
      std::printf("\n== m %ld, tp %d slice of the 8B shape\n%-14s %9s", static_cast<long>(m), tp, "linear", "MB");
      for (const auto& v : o.variants) std::printf(" %16s", v.c_str());
      std::printf("\n");
      for (const Linear& l : lins) {
        const int64_t bytes = l.weight_bytes();
        const int copies = static_cast<int>(std::max<int64_t>(1, ((1ll << 30) + bytes - 1) / bytes));
        DevBuf w;
        if (cudaMalloc(&w.p, bytes * copies) != cudaSuccess) return 1;
        kc::fill_random_bf16(static_cast<kc::bf16*>(w.p), bytes / 2 * copies, 5, 0.05f, s);
        std::printf("%-14s %9.1f", l.name, bytes / 1e6);
        for (const auto& c : configs) {
          if (m > kc::kGemvMaxRows && !c.cublaslt) {
            std::printf(" %16s", "n/a");
            continue;
          }
          // One eager call first: cuBLASLt picks and caches its algorithm outside capture.
          if (!launch_linear(l, xb, static_cast<kc::bf16*>(w.p), y.p, scratch.p, m, c, *gemm, s)) return 1;
          const double ms = time_graph(s, o.reps, [&] {
            for (int i = 0; i < copies; ++i)
              if (!launch_linear(l, xb, static_cast<kc::bf16*>(w.p) + bytes / 2 * i, y.p, scratch.p, m, c, *gemm, s))
                return false;
            return true;
          });
          if (ms <= 0) ++failures;
          const double us = ms * 1e3 / copies;
          std::printf(" %8.2f (%4.0f%%)", us, us > 0 ? 100.0 * bytes / (us * 1e-6) / bw : 0.0);
        }
        std::printf("\n");
      }
      // A layer's four linears chained, 8 layers of distinct weights.
      constexpr int kLayers = 8;
      const std::vector<Linear> layer = layer_linears(tp);
      int64_t layer_bytes = 0;
      for (const Linear& l : layer) layer_bytes += l.weight_bytes();
      DevBuf w, a, b;
      if (cudaMalloc(&w.p, layer_bytes * kLayers) != cudaSuccess ||
          cudaMalloc(&a.p, max_m * 14336 * 2) != cudaSuccess || cudaMalloc(&b.p, max_m * 14336 * 2) != cudaSuccess)
        return 1;
      kc::fill_random_bf16(static_cast<kc::bf16*>(w.p), layer_bytes / 2 * kLayers, 9, 0.05f, s);
      kc::fill_random_bf16(static_cast<kc::bf16*>(a.p), max_m * 14336, 10, 1.0f, s);
      std::printf("%-14s %9.1f", "layer (chain)", layer_bytes / 1e6);
      for (const auto& c : configs) {
        if (m > kc::kGemvMaxRows && !c.cublaslt) {
          std::printf(" %16s", "n/a");
          continue;
        }
        const double ms = time_graph(s, o.reps, [&] {
          const auto* wp = static_cast<const kc::bf16*>(w.p);
          auto *in = static_cast<kc::bf16*>(a.p), *out = static_cast<kc::bf16*>(b.p);
          for (int i = 0; i < kLayers; ++i)
            for (const Linear& l : layer) {
              if (!launch_linear(l, in, wp, out, scratch.p, m, c, *gemm, s)) return false;
              wp += l.weight_bytes() / 2;
              std::swap(in, out);
            }
          return true;
        });
        if (ms <= 0) ++failures;
        const double us = ms * 1e3 / kLayers;
        std::printf(" %8.2f (%4.0f%%)", us, us > 0 ? 100.0 * layer_bytes / (us * 1e-6) / bw : 0.0);
      }
      std::printf("\n");
      // The same layers as decode runs them at batch ≤ 4: o_proj, add+RMSNorm, gate|up·silu, down,
      // add+RMSNorm, the next qkv in one persistent kernel (linear_chain.cu), one launch a layer.
      if (m <= kc::kLinearChainMaxRows) {
        DevBuf resid, normed, gamma, ws;
        if (cudaMalloc(&resid.p, max_m * 4096 * 2) != cudaSuccess || cudaMalloc(&normed.p, max_m * 4096 * 2) != cudaSuccess ||
            cudaMalloc(&gamma.p, 4096 * 2) != cudaSuccess ||
            cudaMalloc(&ws.p, kc::kLinearChainWorkspaceBytes) != cudaSuccess)
          return 1;
        kc::fill_random_bf16(static_cast<kc::bf16*>(resid.p), max_m * 4096, 12, 1.0f, s);
        kc::fill_bf16(static_cast<kc::bf16*>(gamma.p), 4096, 1.0f, s);
        cudaMemsetAsync(ws.p, 0, kc::kLinearChainWorkspaceBytes, s);
        // tl: one eager launch of the last layer with the per-block timeline (below).
        auto launch_layers = [&](unsigned long long* tl, int halves) {
          const auto* wp = static_cast<const kc::bf16*>(w.p);
          auto *in = static_cast<kc::bf16*>(a.p), *out = static_cast<kc::bf16*>(b.p);
          auto* g = static_cast<const kc::bf16*>(gamma.p);
          for (int i = 0; i < kLayers; ++i) {
            const kc::bf16* wl[4];  // qkv, o, gate|up, down of this layer
            for (int j = 0; j < 4; ++j) {
              wl[j] = wp;
              wp += layer[j].weight_bytes() / 2;
            }
            kc::LinearChainStage st[4];
            const int order[4] = {1, 2, 3, 0};  // o, gate|up, down, then qkv
            kc::bf16* x = in;
            for (int j = 0; j < 4; ++j) {
              const Linear& l = layer[order[j]];
              kc::LinearChainStage& S = st[j];
              S.x = x, S.w = wl[order[j]], S.y = j % 2 ? in : out, S.n = l.n, S.k = l.k, S.silu = l.silu;
              if (j == 1 || j == 3)  // add+RMSNorm before gate|up and before qkv
                S.norm_w = g, S.residual = static_cast<kc::bf16*>(resid.p),
                S.norm_out = static_cast<kc::bf16*>(normed.p), S.eps = 1e-5f;
              x = S.y;
            }
            if (tl && i + 1 < kLayers) continue;
            if (kc::linear_chain(st, 4, m, static_cast<unsigned*>(ws.p), s, tl, halves) != cudaSuccess) return false;
          }
          return true;
        };
        // Also how much of the next stage's weights to request during a barrier (halves of a step).
        for (int halves : {kc::kLinearChainDefaultPrefetchHalves, 0, 1, 2}) {
          const bool dflt = halves == kc::kLinearChainDefaultPrefetchHalves;
          if (!dflt && !o.chain_sweep) continue;
          const double ms = time_graph(s, o.reps, [&] { return launch_layers(nullptr, halves); });
          if (ms <= 0) ++failures;
          const double us = ms * 1e3 / kLayers;
          std::printf("%-14s %9.1f %8.2f (%4.0f%%)  o … qkv with both add+RMSNorms as one kernel%s\n",
                      dflt ? "layer (1 kern)" : "  prefetch", layer_bytes / 1e6, us,
                      us > 0 ? 100.0 * layer_bytes / (us * 1e-6) / bw : 0.0,
                      dflt ? "" : (" (" + std::to_string(halves) + " half steps during a barrier)").c_str());
        }
        // Where a launch spends its time: per stage, µs from the earliest block start to each
        // block's x in shared memory / input ready / last row done / barrier left (min, median, max).
        const int G = kc::linear_chain_grid(), per = 1 + 4 * 4;
        DevBuf tlb;
        if (G > 0 && cudaMalloc(&tlb.p, sizeof(unsigned long long) * G * per) == cudaSuccess && launch_layers(
                static_cast<unsigned long long*>(tlb.p), kc::kLinearChainDefaultPrefetchHalves) &&
            cudaStreamSynchronize(s) == cudaSuccess) {
          std::vector<unsigned long long> t(static_cast<size_t>(G) * per);
          cudaMemcpy(t.data(), tlb.p, t.size() * 8, cudaMemcpyDeviceToHost);
          unsigned long long t0 = ~0ull;
          for (int blk = 0; blk < G; ++blk) t0 = std::min(t0, t[blk * per]);
          std::printf("  one launch, µs (min/median/max over %d blocks):", G);
          const char* what[4] = {"x", "in", "rows", "bar"};
          for (int at = 0; at < per; ++at) {
            std::vector<double> v(G);
            for (int blk = 0; blk < G; ++blk) v[blk] = (t[blk * per + at] - t0) / 1e3;
            std::sort(v.begin(), v.end());
            if (at == 0)
              std::printf(" start %.1f/%.1f/%.1f", v[0], v[G / 2], v[G - 1]);
            else
              std::printf("%s s%d %s %.1f/%.1f/%.1f", at % 4 == 1 ? ";" : ",", (at - 1) / 4, what[(at - 1) % 4], v[0],
                          v[G / 2], v[G - 1]);
          }
          std::printf("\n");
        }
      }
      std::printf("%-14s %9s", "  at copy bw", "");
      std::printf(" %8.2f µs\n", layer_bytes / bw * 1e6);
    }
  cudaStreamDestroy(s);
  if (failures) std::fprintf(stderr, "shardlm bench gemv: %d timings failed (shown as 0)\n", failures);
  return failures ? 1 : 0;
}
#endif

std::vector<std::string> split_commas(const std::string& s) {
  std::vector<std::string> out;
  size_t at = 0;
  while (at <= s.size()) {
    const size_t comma = std::min(s.find(',', at), s.size());
    if (comma > at) out.push_back(s.substr(at, comma - at));
    at = comma + 1;
  }
  return out;
}

}  // namespace

void register_bench_gemv(CLI::App& bench, CommandRunner* run) {
  auto opts = std::make_shared<GemvBenchOptions>();
  auto rows = std::make_shared<std::string>("1");
  auto variants = std::make_shared<std::string>();
  for (const auto& v : opts->variants) *variants += (variants->empty() ? "" : ",") + v;
  auto* cmd = bench.add_subcommand(
      "gemv",
      "Decode-time linears (batch ≤ 8 for the gemv kernel, ≤ 256 for cuBLASLt) of the Llama-3-8B shape at tp 1 and tp 2 slices: the gemv kernel and "
      "cuBLASLt against the copy bandwidth measured in the same run; also a layer's four linears chained.");
  cmd->add_option("--rows", *rows,
                  "Comma-separated batch rows m (1–256; the gemv variants stop at 8 and show n/a above)")
      ->capture_default_str();
  cmd->add_option("--variants", *variants,
                  "Comma-separated: gemv (the decode kernel), gemv+pdl (as a programmatic dependent launch that "
                  "prefetches w into L2 before waiting), cublaslt (cuBLASLt, + silu_mul for the gated MLP)")
      ->capture_default_str();
  cmd->add_option("--reps", opts->reps, "Graph replays timed per cell")->capture_default_str()->check(CLI::Range(1, 10000));
  cmd->add_option("--device", opts->device, "CUDA device")->capture_default_str();
  cmd->add_flag("--chain-sweep", opts->chain_sweep,
                "Also time the one-kernel layer with 0, 1 and 2 half steps of weights requested during each barrier");
  cmd->callback([run, opts, rows, variants] {
    *run = [opts, rows, variants]() -> int {
      opts->rows.clear();
      for (const std::string& r : split_commas(*rows)) {
        char* end = nullptr;
        const long m = std::strtol(r.c_str(), &end, 10);
        if (*end != '\0' || m < 1 || m > kMaxRows) {
          std::fprintf(stderr, "shardlm bench gemv: --rows: '%s' is not a number in 1–%ld\n", r.c_str(), kMaxRows);
          return 2;
        }
        opts->rows.push_back(m);
      }
      opts->variants = split_commas(*variants);
      if (opts->rows.empty() || opts->variants.empty()) {
        std::fprintf(stderr, "shardlm bench gemv: --rows and --variants need at least one entry\n");
        return 2;
      }
      for (const std::string& v : opts->variants)
        if (!known_variant(v)) {
          std::fprintf(stderr, "shardlm bench gemv: unknown variant '%s' (gemv, gemv+pdl, cublaslt)\n", v.c_str());
          return 2;
        }
#if SHARDLM_HAVE_COMM_CUDA
      return run_gemv_bench(*opts);
#else
      std::fprintf(stderr, "shardlm bench gemv: this build has no CUDA\n");
      return 1;
#endif
    };
  });
}

}  // namespace shardlm::cli
