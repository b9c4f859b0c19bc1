// `shardlm bench decode`: decode and prefill speed of the CUDA backend on a
// Llama-3-8B-shaped model whose bf16 weights are random numbers made on the
// device (no checkpoint), each figure printed next to its hardware limit
// measured in the same run (DESIGN §4):
//   decode   ms per step at each batch size with every sequence at --context
//            tokens; roofline = (weight bytes read + KV bytes read) / the
//            device-to-device copy bandwidth (bytes read + written per second).
//            Steps run through CUDA graphs (captured in warmup) and do not
//            download logits (a GPU sampler would not either); the cost of
//            downloading them is printed once, at batch 1.
//   prefill  one --prefill-tokens prompt: TFLOP/s of the linear layers and of
//            attention (per-op CUDA events) against the bf16 GEMM peak
//            (8192³ through the same cuBLASLt path).
//   workload B × (PP + TG), llama.cpp's `llama-batched-bench` measure (the
//            issue's peer figure is one): B prompts of PP tokens prefilled,
//            then TG decode steps of B tokens with the contexts growing from
//            PP + 1 to PP + TG, graph-replayed like a serving engine's steps;
//            generated tokens/s = B·TG / the decode steps' time (S_TG), and
//            the prefill's and the whole run's tokens/s. Run twice, the
//            second reported (the first captures its graph, tunes the GEMMs).
//   ready    seconds from start to the first graph-replayed step: weights,
//            KV cache, warmup and graph capture.
// With --tp N every rank holds its shard of the same random model (each
// weight element is a hash of its index in the full tensor), the TP group's
// all-reduces run through the GPU collectives (Lamport / NCCL), and every rank
// runs the same steps; rank 0 prints. --dump-logits writes the logits of a
// fixed prefill and a graph-replayed decode step, so layouts can be compared
// (bench/compare_logits.py).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <numeric>
#include <sstream>

#include <nlohmann/json.hpp>

#include "cli/bench_command.h"
#include "cli/kernel_timeline_report.h"
#include "cli/launcher.h"
#include "comm/gpu_collectives.h"
#include "graph/cuda_backend.h"
#include "model/decoder_builder.h"
#include "model/model_config.h"
#include "model/weight_loader.h"
#include "runtime/gpu_assignment.h"

namespace shardlm::cli {
namespace {

struct DecodeBenchOptions {
  std::vector<int64_t> batches = {1, 8, 64, 256};
  int64_t context = 512;
  int64_t steps = 30;
  int64_t prefill_tokens = 4096;
  int64_t layers = 32;
  double kv_cache_fraction = 0.9;
  int device = 0;
  bool no_graphs = false;
  bool no_gemv = false;
  bool pdl = false;
  bool no_rope_fusion = false;
  bool linear_chain = false;
  bool no_prelaunch = false;
  bool gemv_norm = false;
  bool gemv_prologue = false;
  bool gemv_smem = false;
  bool no_gemv_smem_oproj = false;
  bool attn_late_trigger = false;
  bool early_trigger = false;
  std::vector<double> l2_prefetch_mb;  // {attention, norm}; empty: the backend's defaults
  std::vector<std::string> skip_ops;  // timing diagnostics: op kinds left out (outputs wrong)
  std::vector<int64_t> workload_batches = {64};  // empty: no workload run
  int64_t workload_prompt = 128, workload_generate = 128;
  std::string json_path;
  std::string dump_logits;  // raw f32 [rows, vocab]: prefill rows, then one decode row
  bool timeline = false;    // print the kernel timeline of one step per batch ≤ 8 (diagnostic builds)
  DistArgs dist;            // --tp (pp = 1)
};

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

ModelConfig llama3_8b(int64_t layers) {
  ModelConfig c;
  c.arch = Architecture::kLlama;
  c.vocab_size = 128256;
  c.hidden_size = 4096;
  c.intermediate_size = 14336;
  c.num_layers = layers;
  c.num_heads = 32;
  c.num_kv_heads = 8;
  c.head_dim = 128;
  c.max_position_embeddings = 8192;
  c.rms_norm_eps = 1e-5;
  c.rope_theta = 500000.0;
  c.rope_llama3 = true;
  c.rope_factor = 8.0;
  c.rope_low_freq_factor = 1.0;
  c.rope_high_freq_factor = 4.0;
  c.rope_original_max_position = 8192;
  c.torch_dtype = DType::kBF16;
  return c;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

// A decode step: `batch` sequences, each at `context` tokens after this step;
// sequence s owns blocks [s·bps, (s+1)·bps).
graph::StepInput decode_step(int64_t batch, int64_t context, int64_t block_size, int64_t bps) {
  graph::StepInput in;
  in.max_blocks_per_seq = bps;
  in.q_start.push_back(0);
  for (int64_t s = 0; s < batch; ++s) {
    const int64_t pos = context - 1;
    in.token_ids.push_back(static_cast<int32_t>((s * 7919 + 11) % 128000));
    in.positions.push_back(static_cast<int32_t>(pos));
    in.slot_mapping.push_back(static_cast<int32_t>((s * bps + pos / block_size) * block_size + pos % block_size));
    in.q_start.push_back(static_cast<int32_t>(s + 1));
    in.ctx_len.push_back(static_cast<int32_t>(context));
    for (int64_t j = 0; j < bps; ++j) in.block_tables.push_back(static_cast<int32_t>(s * bps + j));
    in.logit_rows.push_back(static_cast<int32_t>(s));
  }
  return in;
}

// llama-batched-bench's measure: `batch` prompts of `prompt` tokens (sequence
// s owns blocks [first_block + s·bps, …)), prefilled in forwards of whole
// prompts of at most `chunk_tokens` tokens with each prompt's last row
// projected to logits, then `generate` decode steps of one token per sequence.
struct WorkloadResult {
  double prefill_s = 0, decode_s = 0;
  std::vector<double> step_ms;  // each decode step's wall time
};

Expected<WorkloadResult> run_workload(graph::CudaBackend& be, const graph::Program& prog, int64_t batch,
                                      int64_t prompt, int64_t generate, int64_t block_size, int64_t first_block,
                                      int64_t chunk_tokens) {
  const int64_t bps = (prompt + generate + block_size - 1) / block_size;
  auto slot = [&](int64_t s, int64_t pos) {
    return static_cast<int32_t>((first_block + s * bps + pos / block_size) * block_size + pos % block_size);
  };
  WorkloadResult r;
  const int64_t per_chunk = std::max<int64_t>(1, chunk_tokens / prompt);
  double t0 = now_s();
  for (int64_t s0 = 0; s0 < batch; s0 += per_chunk) {
    graph::StepInput in;
    in.max_blocks_per_seq = (prompt + block_size - 1) / block_size;
    in.q_start.push_back(0);
    for (int64_t s = s0; s < std::min(batch, s0 + per_chunk); ++s) {
      for (int64_t p = 0; p < prompt; ++p) {
        in.token_ids.push_back(static_cast<int32_t>((s * 131 + p * 7877 + 101) % 128000));
        in.positions.push_back(static_cast<int32_t>(p));
        in.slot_mapping.push_back(slot(s, p));
      }
      in.q_start.push_back(static_cast<int32_t>(in.token_ids.size()));
      in.ctx_len.push_back(static_cast<int32_t>(prompt));
      for (int64_t j = 0; j < in.max_blocks_per_seq; ++j)
        in.block_tables.push_back(static_cast<int32_t>(first_block + s * bps + j));
      in.logit_rows.push_back(static_cast<int32_t>(in.token_ids.size() - 1));
    }
    SHARDLM_TRY(be.forward(prog, in, nullptr, nullptr, nullptr));
  }
  SHARDLM_TRY(be.memory_info().status());  // a sync point: the prefill has finished
  const double t1 = now_s();
  r.prefill_s = t1 - t0;
  for (int64_t t = 0; t < generate; ++t) {
    const int64_t pos = prompt + t;  // the token decoded now; the context holds pos + 1 tokens after it
    graph::StepInput in;
    in.max_blocks_per_seq = pos / block_size + 1;  // the blocks in use, as the engine passes them
    in.q_start.push_back(0);
    for (int64_t s = 0; s < batch; ++s) {
      in.token_ids.push_back(static_cast<int32_t>((s * 7919 + t * 31 + 11) % 128000));
      in.positions.push_back(static_cast<int32_t>(pos));
      in.slot_mapping.push_back(slot(s, pos));
      in.q_start.push_back(static_cast<int32_t>(s + 1));
      in.ctx_len.push_back(static_cast<int32_t>(pos + 1));
      for (int64_t j = 0; j < in.max_blocks_per_seq; ++j)
        in.block_tables.push_back(static_cast<int32_t>(first_block + s * bps + j));
      in.logit_rows.push_back(static_cast<int32_t>(s));
    }
    const double ts = now_s();
    SHARDLM_TRY(be.forward(prog, in, nullptr, nullptr, nullptr));
    r.step_ms.push_back((now_s() - ts) * 1e3);
  }
  SHARDLM_TRY(be.memory_info().status());
  r.decode_s = now_s() - t1;
  return r;
}

int run_decode_bench(const DecodeBenchOptions& o, DistContext* ctx) {
  const double t_start = now_s();
  const int rank = ctx ? ctx->mapping().rank : 0;
  auto fail = [rank](const Status& st) {
    std::fprintf(stderr, "shardlm bench decode: rank %d: %s\n", rank, st.to_string().c_str());
    return 1;
  };
  int device = o.device;
  if (ctx) {
    auto d = assign_gpu(*ctx, 120);  // one GPU per rank: a clear error, not NCCL's "invalid usage"
    if (!d.ok()) return fail(d.status());
    device = *d;
  }
  // Only rank 0 prints the tables (every rank runs the same steps).
  if (rank != 0 && !std::freopen("/dev/null", "w", stdout)) return fail(make_error(ErrorCode::kIo, "stdout"));
  // Declared before the backend so that it is destroyed after it: the
  // backend's captured graphs hold NCCL work of this group, and destroying
  // them after the NCCL communicator hung the first tp = 2 run at exit.
  std::unique_ptr<GpuCollectives> tp_group;
  graph::CudaBackendOptions bo;
  bo.device = device;
  bo.cuda_graphs = !o.no_graphs;
  if (o.no_gemv) bo.gemv_max_rows = 0;
  bo.gemv_overlap_prologue = o.pdl || o.gemv_prologue;
  bo.programmatic_launch = o.pdl;
  bo.fuse_rope_attention = !o.no_rope_fusion;
  bo.linear_chain = o.linear_chain;
  bo.prelaunch_after_gemv = bo.prelaunch_gemv = !o.no_prelaunch;
  bo.fuse_gemv_norm = o.gemv_norm;
  bo.gemv_smem_prologue = o.gemv_smem;
  bo.gemv_smem_after_attention = !o.no_gemv_smem_oproj;
  bo.attention_trigger_after_arrival = o.attn_late_trigger;
  bo.trigger_dependents_early = o.early_trigger;
  if (!o.l2_prefetch_mb.empty()) {
    bo.l2_prefetch_attention_bytes = static_cast<int64_t>(o.l2_prefetch_mb[0] * (1 << 20));
    bo.l2_prefetch_norm_bytes = static_cast<int64_t>(o.l2_prefetch_mb.back() * (1 << 20));
  }
  bo.timing_skip_ops = o.skip_ops;
  if (!o.skip_ops.empty())
    std::printf("TIMING DIAGNOSTIC: launches of op kinds {%s} are left out; every output below is wrong\n",
                [&] {
                  std::string l;
                  for (const auto& k : o.skip_ops) l += (l.empty() ? "" : ",") + k;
                  return l;
                }()
                    .c_str());
  auto backend_or = graph::make_cuda_backend(bo);
  if (!backend_or.ok()) return fail(backend_or.status());
  graph::CudaBackend& be = **backend_or;

  const ModelConfig mc = llama3_8b(o.layers);
  auto mapping = ctx ? Expected<Mapping>(ctx->mapping()) : Mapping::make(0, 1, 1, 1);
  if (!mapping.ok()) return fail(mapping.status());
  auto built_or = build_decoder(mc, *mapping);
  if (!built_or.ok()) return fail(built_or.status());
  const BuiltModel& built = *built_or;
  const graph::Program& prog = built.program;

  // Weights: `--load-format dummy`'s random model (model/weight_loader.h), the same in every layout.
  int64_t embed_bytes = 0, linear_params = 0;
  if (Status st = load_dummy_weights(built, be, false); !st.ok()) return fail(st);
  for (size_t id = 0; id < built.recipes.size(); ++id)
    if (prog.weights[id] == "embed_tokens") embed_bytes = shape_numel(dummy_weight_shape(built.recipes[id])) * 2;
  for (const graph::Op& op : prog.ops)
    if ((op.kind == graph::OpKind::kLinear || op.kind == graph::OpKind::kLinearSiLUMul) && op.out != prog.logits_buffer)
      linear_params += shape_numel(dummy_weight_shape(built.recipes[op.weights[0]]));
  const int64_t lm_head_params = mc.vocab_size * mc.hidden_size / mapping->tp;
  if (mapping->tp > 1) {
    std::vector<int> ranks;
    for (int i = 0; i < mapping->tp; ++i) ranks.push_back(i);
    CommGroup g{&ctx->rendezvous(), "bench_tp", ranks, mapping->tp_rank()};
    auto made = make_gpu_collectives(g, device, DType::kBF16);
    if (!made.ok()) return fail(made.status());
    tp_group = std::move(*made);
    be.set_gpu_collectives(tp_group.get());
  }
  int64_t max_batch = *std::max_element(o.batches.begin(), o.batches.end());
  // The workload's prompts are prefilled in forwards of at most this many tokens (whole prompts).
  const int64_t wl_len = o.workload_prompt + o.workload_generate;
  const int64_t wl_chunk = std::max<int64_t>(o.workload_prompt, 4096);
  int64_t max_tokens = std::max(o.prefill_tokens, max_batch);
  for (int64_t b : o.workload_batches) {
    max_batch = std::max(max_batch, b);
    max_tokens = std::max({max_tokens, b, std::min(b * o.workload_prompt, wl_chunk)});
  }
  Status st = be.reserve(prog, max_tokens, max_batch,
                         std::max({o.context, o.prefill_tokens, o.workload_batches.empty() ? int64_t{0} : wl_len}));
  if (!st.ok()) return fail(st);
  auto sync_st = be.memory_info();  // also a sync point: the fills above are done
  if (!sync_st.ok()) return fail(sync_st.status());
  const double t_weights = now_s();

  // Ceilings, measured before the KV cache takes the memory.
  auto copy_bw = be.measure_copy_bandwidth(1ll << 30);
  if (!copy_bw.ok()) return fail(copy_bw.status());
  auto peak = be.measure_gemm_flops(8192, 8192, 8192);
  if (!peak.ok()) return fail(peak.status());
  const double t_ceilings = now_s();

  // KV cache: --kv-cache-fraction of the free memory, at least what the runs need.
  const int64_t block_size = 16;
  graph::KvCacheShape kv;
  kv.num_layers = prog.num_layers_local;
  kv.num_blocks = 1;
  kv.block_size = block_size;
  kv.nkv_heads = prog.attn.nkv_heads;
  kv.head_dim = prog.attn.head_dim;
  const int64_t per_block = kv.bytes(2);
  const int64_t bps = (o.context + block_size - 1) / block_size;
  const int64_t wl_bps = (wl_len + block_size - 1) / block_size;
  int64_t wl_blocks = 0;
  for (int64_t b : o.workload_batches) wl_blocks = std::max(wl_blocks, b * wl_bps);
  const int64_t need =
      std::max({max_batch * bps, (o.prefill_tokens + block_size - 1) / block_size, wl_blocks});
  auto mem = be.memory_info();
  if (!mem.ok()) return fail(mem.status());
  const int64_t fit = static_cast<int64_t>(mem->free_bytes * o.kv_cache_fraction) / per_block;
  if (fit < need) {
    std::fprintf(stderr, "shardlm bench decode: the KV cache needs %lld blocks, %.2f GiB free × %.2f holds %lld\n",
                 static_cast<long long>(need), mem->free_bytes / double(1ull << 30), o.kv_cache_fraction,
                 static_cast<long long>(fit));
    return 1;
  }
  kv.num_blocks = fit;
  if (Status s2 = be.allocate_kv_cache(kv); !s2.ok()) return fail(s2);
  if (Status s2 = be.fill_kv_random(77); !s2.ok()) return fail(s2);
  const double t_kv = now_s();

  // Warmup: the first step of each batch runs eagerly and captures its graph; the second replays it.
  for (int64_t b : o.batches) {
    graph::StepInput in = decode_step(b, o.context, block_size, bps);
    for (int i = 0; i < 2; ++i)
      if (Status s2 = be.forward(prog, in, nullptr, nullptr, nullptr); !s2.ok()) return fail(s2);
  }
  const double t_ready = now_s();
  const double ready_s = (t_ready - t_start) - (t_ceilings - t_weights);  // the ceiling runs are not startup

  if (!o.dump_logits.empty()) {
    // A 31-token prefill (logits of its last 4 rows), then one decode step at
    // position 31 through the batch-1 graph, in sequence 0's blocks.
    constexpr int64_t kPrompt = 31;
    graph::StepInput pre;
    pre.max_blocks_per_seq = bps;
    pre.q_start = {0, static_cast<int32_t>(kPrompt)};
    pre.ctx_len = {static_cast<int32_t>(kPrompt)};
    for (int64_t j = 0; j < bps; ++j) pre.block_tables.push_back(static_cast<int32_t>(j));
    for (int64_t t = 0; t < kPrompt; ++t) {
      pre.token_ids.push_back(static_cast<int32_t>((t * 7877 + 101) % 128000));
      pre.positions.push_back(static_cast<int32_t>(t));
      pre.slot_mapping.push_back(static_cast<int32_t>(t));
    }
    for (int64_t t = kPrompt - 4; t < kPrompt; ++t) pre.logit_rows.push_back(static_cast<int32_t>(t));
    graph::StepInput dec = decode_step(1, kPrompt + 1, block_size, bps);
    dec.token_ids = {4242};
    std::vector<float> a, b;
    if (Status s2 = be.forward(prog, pre, nullptr, nullptr, &a); !s2.ok()) return fail(s2);
    for (int i = 0; i < 2; ++i)  // the second call replays the captured graph
      if (Status s2 = be.forward(prog, dec, nullptr, nullptr, &b); !s2.ok()) return fail(s2);
    if (rank == 0) {
      std::ofstream f(o.dump_logits, std::ios::binary);
      f.write(reinterpret_cast<const char*>(a.data()), static_cast<std::streamsize>(a.size() * 4));
      f.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size() * 4));
      if (!f) return fail(make_error(ErrorCode::kIo, "cannot write {}", o.dump_logits));
      std::fprintf(stderr, "logits [%zu, %lld] f32 written to %s\n", (a.size() + b.size()) / mc.vocab_size,
                   static_cast<long long>(mc.vocab_size), o.dump_logits.c_str());
    }
  }

  if (o.timeline)
    for (int64_t b : o.batches) {
      if (b > 8) continue;  // the stamped kernels are the gemv path's
      graph::StepInput in = decode_step(b, o.context, block_size, bps);
      Status s2 = print_kernel_timeline([&] { return be.forward(prog, in, nullptr, nullptr, nullptr); },
                                        "batch " + std::to_string(b) + ", one graph-replayed step");
      if (!s2.ok()) return fail(s2);
    }

  std::printf("shardlm bench decode — Llama-3-8B shape (%lld layers), random bf16 weights made on the device\n",
              static_cast<long long>(o.layers));
  std::printf("device: %s%s\n", be.device_name().c_str(),
              mapping->tp > 1 ? (", tp " + std::to_string(mapping->tp) + " (one GPU per rank; per-rank figures: "
                                 "weights, roofline and TFLOP/s are of one GPU's shard; " +
                                 tp_group->describe() + ")")
                                    .c_str()
                              : "");
  std::printf("weights %.2f GiB; KV cache %lld blocks × %lld tokens = %.1f GiB\n", be.weight_bytes() / double(1ull << 30),
              static_cast<long long>(kv.num_blocks), static_cast<long long>(block_size),
              kv.bytes(2) / double(1ull << 30));
  std::printf("ceilings (measured now): copy bandwidth %.0f GB/s (read + write), bf16 GEMM 8192³ %.0f TFLOP/s\n",
              *copy_bw / 1e9, *peak / 1e12);
  std::printf("time to ready: %.2f s (weights + buffers %.2f s, KV cache %.2f s, warmup + %d graph captures %.2f s)\n",
              ready_s, t_weights - t_start, t_kv - t_ceilings, be.num_graphs(), t_ready - t_kv);

  nlohmann::json js;
  js["device"] = be.device_name();
  js["tp"] = mapping->tp;
  js["copy_bandwidth_Bps"] = *copy_bw;
  js["bf16_peak_flops"] = *peak;
  js["time_to_ready_s"] = ready_s;
  js["weight_bytes"] = be.weight_bytes();
  std::printf("\n%6s %6s %10s %10s %12s %11s %9s\n", "batch", "ctx", "ms/step", "tok/s", "roofline ms", "of roofline",
              "GB/s");
  const int64_t kv_bytes_per_token = 2 * o.layers * prog.attn.nkv_heads * prog.attn.head_dim * 2;
  std::vector<std::string> profiles;
  auto fmt_batch = [](int64_t b) { return std::to_string(b); };
  for (int64_t b : o.batches) {
    graph::StepInput in = decode_step(b, o.context, block_size, bps);
    std::vector<double> t;
    for (int64_t i = 0; i < o.steps; ++i) {
      const double t0 = now_s();
      if (Status s2 = be.forward(prog, in, nullptr, nullptr, nullptr); !s2.ok()) return fail(s2);
      t.push_back(now_s() - t0);
    }
    const double step = median(t);
    const double bytes = static_cast<double>(be.weight_bytes() - embed_bytes + b * mc.hidden_size * 2) +
                         static_cast<double>(b) * o.context * kv_bytes_per_token;
    const double roof = bytes / *copy_bw;
    std::printf("%6lld %6lld %10.3f %10.0f %12.3f %10.2fx %9.0f\n", static_cast<long long>(b),
                static_cast<long long>(o.context), step * 1e3, b / step, roof * 1e3, step / roof, bytes / step / 1e9);
    js["decode"].push_back({{"batch", b}, {"context", o.context}, {"ms_per_step", step * 1e3},
                            {"tokens_per_s", b / step}, {"roofline_ms", roof * 1e3}, {"bytes", bytes}});
    // Where the time goes: one eager step with CUDA events around each op.
    be.set_profiling(true);
    if (Status s2 = be.forward(prog, in, nullptr, nullptr, nullptr); !s2.ok()) return fail(s2);
    be.set_profiling(false);
    std::string line;
    double total = 0;
    for (const auto& p : be.take_profile()) {
      total += p.ms;
      char buf[96];
      std::snprintf(buf, sizeof buf, " %s %.3f;", p.op.c_str(), p.ms);
      line += buf;
    }
    profiles.push_back(fmt_batch(b) + " (eager, ops sum " + std::to_string(total).substr(0, 6) + " ms):" + line);
  }
  for (const auto& l : profiles) std::printf("  per op, batch %s\n", l.c_str());
  {
    // What downloading the f32 logits adds at batch 1 (the engine's host sampler needs them).
    graph::StepInput in = decode_step(1, o.context, block_size, bps);
    std::vector<float> logits;
    std::vector<double> t;
    for (int i = 0; i < 10; ++i) {
      const double t0 = now_s();
      if (Status s2 = be.forward(prog, in, nullptr, nullptr, &logits); !s2.ok()) return fail(s2);
      t.push_back(now_s() - t0);
    }
    std::printf("batch 1 with the f32 logits downloaded to the host: %.3f ms/step\n", median(t) * 1e3);
    js["decode_b1_with_logits_ms"] = median(t) * 1e3;
  }

  for (int64_t b : o.workload_batches) {
    // llama-batched-bench's B × (PP + TG); the first run captures the graph
    // of each block-table bucket and tunes the prefill GEMMs.
    WorkloadResult w;
    for (int rep = 0; rep < 2; ++rep) {
      auto r = run_workload(be, prog, b, o.workload_prompt, o.workload_generate, block_size, 0, wl_chunk);
      if (!r.ok()) return fail(r.status());
      w = *r;
    }
    const double gen = static_cast<double>(b * o.workload_generate);
    const double pp = static_cast<double>(b * o.workload_prompt);
    std::printf("\nworkload B %lld × (PP %lld + TG %lld), as llama-batched-bench: prefill %.1f ms (S_PP %.0f tok/s); "
                "%lld decode steps %.1f ms, median step %.3f ms (contexts %lld → %lld): S_TG %.0f generated tok/s; "
                "whole run %.0f tok/s\n",
                static_cast<long long>(b), static_cast<long long>(o.workload_prompt),
                static_cast<long long>(o.workload_generate), w.prefill_s * 1e3, pp / w.prefill_s,
                static_cast<long long>(o.workload_generate), w.decode_s * 1e3, median(w.step_ms),
                static_cast<long long>(o.workload_prompt + 1), static_cast<long long>(wl_len), gen / w.decode_s,
                (pp + gen) / (w.prefill_s + w.decode_s));
    js["workload"].push_back({{"batch", b},
                              {"prompt", o.workload_prompt},
                              {"generate", o.workload_generate},
                              {"prefill_ms", w.prefill_s * 1e3},
                              {"decode_ms", w.decode_s * 1e3},
                              {"median_step_ms", median(w.step_ms)},
                              {"generated_tokens_per_s", gen / w.decode_s},
                              {"prefill_tokens_per_s", pp / w.prefill_s}});
  }

  if (o.prefill_tokens > 0) {
    const int64_t T = o.prefill_tokens;
    graph::StepInput in;
    in.max_blocks_per_seq = (T + block_size - 1) / block_size;
    in.q_start = {0, static_cast<int32_t>(T)};
    in.ctx_len = {static_cast<int32_t>(T)};
    for (int64_t j = 0; j < in.max_blocks_per_seq; ++j) in.block_tables.push_back(static_cast<int32_t>(j));
    for (int64_t p = 0; p < T; ++p) {
      in.token_ids.push_back(static_cast<int32_t>((p * 31 + 7) % 128000));
      in.positions.push_back(static_cast<int32_t>(p));
      in.slot_mapping.push_back(static_cast<int32_t>(p));
    }
    in.logit_rows = {static_cast<int32_t>(T - 1)};
    if (Status s2 = be.forward(prog, in, nullptr, nullptr, nullptr); !s2.ok()) return fail(s2);  // warm, tune
    std::vector<double> t;
    for (int i = 0; i < 3; ++i) {
      const double t0 = now_s();
      if (Status s2 = be.forward(prog, in, nullptr, nullptr, nullptr); !s2.ok()) return fail(s2);
      t.push_back(now_s() - t0);
    }
    be.set_profiling(true);
    if (Status s2 = be.forward(prog, in, nullptr, nullptr, nullptr); !s2.ok()) return fail(s2);
    be.set_profiling(false);
    const auto prof = be.take_profile();
    double lin_ms = 0, attn_ms = 0;
    for (const auto& p : prof) {
      // The fused ops count with their main part: linear_silu_mul is the
      // gate|up linear (+ silu·up), rope_attention the attention (+ rope).
      if (p.op == "linear" || p.op == "linear_silu_mul") lin_ms += p.ms;
      if (p.op == "attention" || p.op == "rope_attention") attn_ms += p.ms;
    }
    const double lin_flops = 2.0 * T * linear_params;
    const double attn_flops = 2.0 * o.layers * prog.attn.nq_heads * prog.attn.head_dim * T * (T + 1.0);  // causal
    std::printf("\nprefill %lld tokens: %.1f ms (%.0f tokens/s); bf16 peak %.0f TFLOP/s\n", static_cast<long long>(T),
                median(t) * 1e3, T / median(t), *peak / 1e12);
    std::printf("  linear layers: %7.1f ms  %6.1f TFLOP/s  (%.0f %% of peak)\n", lin_ms, lin_flops / lin_ms / 1e9,
                100.0 * lin_flops / (lin_ms * 1e-3) / *peak);
    std::printf("  attention:     %7.1f ms  %6.1f TFLOP/s  (%.0f %% of peak)\n", attn_ms, attn_flops / attn_ms / 1e9,
                100.0 * attn_flops / (attn_ms * 1e-3) / *peak);
    std::printf("  per op (one profiled step, events around each op):");
    for (const auto& p : prof) std::printf(" %s %.1f ms;", p.op.c_str(), p.ms);
    std::printf("\n  (LM head on the last row only: %.1f GFLOP)\n", 2.0 * lm_head_params / 1e9);
    js["prefill"] = {{"tokens", T},         {"ms", median(t) * 1e3},          {"linear_ms", lin_ms},
                     {"attention_ms", attn_ms}, {"linear_tflops", lin_flops / lin_ms / 1e9},
                     {"attention_tflops", attn_flops / attn_ms / 1e9}};
  }
  if (!o.json_path.empty()) {
    std::ofstream f(o.json_path);
    f << js.dump(2) << "\n";
  }
  return 0;
}

std::vector<int64_t> parse_list(const std::string& s) {
  std::vector<int64_t> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ','))
    if (!item.empty()) out.push_back(std::stoll(item));
  return out;
}

// "B[,B…]:PP+TG" (or "none") → the workload fields of `o`.
Status parse_workload(const std::string& s, DecodeBenchOptions* o) {
  o->workload_batches.clear();
  if (s == "none" || s.empty()) return Status::Ok();
  const size_t colon = s.find(':'), plus = s.find('+');
  if (colon == std::string::npos || plus == std::string::npos || plus < colon)
    return make_error(ErrorCode::kInvalidArgument, "'{}' is not B:PP+TG (e.g. 64:128+128) or none", s);
  try {
    o->workload_batches = parse_list(s.substr(0, colon));
    size_t used = 0;
    o->workload_prompt = std::stoll(s.substr(colon + 1, plus - colon - 1), &used);
    if (used != plus - colon - 1) throw std::invalid_argument("PP");
    o->workload_generate = std::stoll(s.substr(plus + 1), &used);
    if (used != s.size() - plus - 1) throw std::invalid_argument("TG");
  } catch (const std::exception&) {
    return make_error(ErrorCode::kInvalidArgument, "'{}' is not B:PP+TG (e.g. 64:128+128) or none", s);
  }
  if (o->workload_batches.empty() || o->workload_prompt < 1 || o->workload_generate < 1)
    return make_error(ErrorCode::kInvalidArgument, "'{}': B, PP and TG must be positive", s);
  for (int64_t b : o->workload_batches)
    if (b < 1) return make_error(ErrorCode::kInvalidArgument, "'{}': B must be positive", s);
  return Status::Ok();
}

}  // namespace

void register_bench_decode(CLI::App& bench, CommandRunner* run) {
  auto opts = std::make_shared<DecodeBenchOptions>();
  auto batches = std::make_shared<std::string>("1,8,64,256");
  auto* cmd = bench.add_subcommand(
      "decode",
      "Decode ms/step at several batch sizes and prefill TFLOP/s of the CUDA backend on a Llama-3-8B-shaped model "
      "with random bf16 weights made on the GPU, each next to its measured hardware limit.");
  cmd->add_option("--batches", *batches, "Comma-separated batch sizes")->capture_default_str();
  cmd->add_option("--context", opts->context, "Tokens in every sequence's context during decode")->capture_default_str();
  auto workload = std::make_shared<std::string>("64:128+128");
  cmd->add_option("--workload", *workload,
                  "llama-batched-bench's measure, B:PP+TG: B prompts of PP tokens prefilled, then TG decode steps; "
                  "prints generated tokens/s (S_TG). Several batches: 1,64:128+128. 'none' skips it")
      ->capture_default_str();
  cmd->add_option("--steps", opts->steps, "Timed decode steps per batch size (median reported)")->capture_default_str();
  cmd->add_option("--prefill-tokens", opts->prefill_tokens, "Prompt length of the prefill run (0: skip)")
      ->capture_default_str();
  cmd->add_option("--layers", opts->layers, "Decoder layers (32 for the 8B shape)")->capture_default_str();
  cmd->add_option("--kv-cache-fraction,--gpu-memory-utilization", opts->kv_cache_fraction,
                  "Fraction of the free GPU memory (after weights) for the KV cache")
      ->capture_default_str();
  cmd->add_option("--device", opts->device, "CUDA device")->capture_default_str();
  cmd->add_flag("--no-graphs", opts->no_graphs, "Run decode steps eagerly instead of replaying CUDA graphs");
  cmd->add_flag("--pdl", opts->pdl,
                "Programmatic dependent launches and gemv weight prefetch (experimental: slower at batch 1 on H200)");
  cmd->add_flag("--no-rope-fusion", opts->no_rope_fusion,
                "Rotate q/k and write the new k/v in their own kernel before decode attention (A/B of the fusion)");
  cmd->add_flag("--linear-chain", opts->linear_chain,
                "Run the batch-1 linears and add+RMSNorms between two attentions as one persistent kernel instead "
                "of a kernel per op (experimental: no faster at batch 1 on H100)");
  cmd->add_flag("--no-prelaunch", opts->no_prelaunch,
                "Launch every kernel ordinarily (A/B): by default the decode attention and add+RMSNorm behind a gemv "
                "start early and load what it does not write before waiting, and the gemv behind them starts early");
  cmd->add_flag("--gemv-norm", opts->gemv_norm,
                "Experimental (slower at batch 1 on H100): a batch-1 linear's last block does the add+RMSNorm after "
                "it, one kernel instead of two");
  cmd->add_flag("--gemv-prologue", opts->gemv_prologue,
                "Experimental: every batch-1 gemv is launched programmatically and requests its first weights before "
                "waiting for the kernel before it (the gemv half of --pdl)");
  cmd->add_flag("--gemv-smem", opts->gemv_smem,
                "Experimental (slower at batch 1 on H100): every batch-1 gemv, not only o_proj, bulk-copies its first "
                "weights into shared memory before waiting for the kernel before it, and a gemv behind a gemv starts "
                "early too");
  cmd->add_flag("--no-gemv-smem-oproj", opts->no_gemv_smem_oproj,
                "A/B: the batch-1 gemv behind the decode attention (o_proj) streams its weights after the attention "
                "like the others (by default its first wave copies them into shared memory while the attention runs, "
                "instead of the attention's L2 prefetch of them)");
  cmd->add_flag("--attn-late-trigger", opts->attn_late_trigger,
                "Experimental (slower at batch 1 on H100): the decode attention lets the next kernel (o_proj) start "
                "once its blocks have stored their partials and counted in, not after their wait");
  cmd->add_flag("--early-trigger", opts->early_trigger,
                "Experimental: the decode attention and add+RMSNorm let the next kernel start when they start, not "
                "after their wait (with --gemv-smem: the next gemv's first wave copies its weights earlier)");
  cmd->add_option("--l2-prefetch-mb", opts->l2_prefetch_mb,
                  "MiB of the next linear's weights that a decode attention and an add+RMSNorm pull into L2 while "
                  "they run, at batches <= 8 (ATTN,NORM or one value for both; 0 turns it off; default 16,0)")
      ->delimiter(',')
      ->expected(1, 2)
      ->check(CLI::Range(0.0, 1024.0));
  cmd->add_option("--skip-ops", opts->skip_ops,
                  "Timing diagnostic: leave out the launches of these op kinds (names as in the per-op line, "
                  "lm_head for the logits linear); the time without them is what they cost. Outputs are wrong")
      ->delimiter(',');
  cmd->add_flag("--no-gemv", opts->no_gemv, "Batch-1 linears through cuBLASLt instead of the gemv kernel");
  cmd->add_option("--json", opts->json_path, "Also write the results as JSON to this file");
  cmd->add_option("--dump-logits", opts->dump_logits,
                  "Write the f32 logits of a fixed 31-token prefill (last 4 rows) and of one decode step to this file "
                  "(compare layouts with bench/compare_logits.py)");
  cmd->add_flag("--timeline", opts->timeline,
                "Diagnostic: print when each decode kernel's blocks reached each point of one graph-replayed step "
                "(batches ≤ 8; needs a build configured with -DSHARDLM_KERNEL_TIMELINE=ON)");
  cmd->add_option("--tp,--tp-size,--tensor-parallel-size", opts->dist.tp,
                  "Tensor-parallel GPUs (one rank per GPU; with no launcher the local ranks are self-spawned)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--dist-timeout", opts->dist.timeout_s, "Seconds any cross-rank wait may take")->capture_default_str();
  cmd->callback([run, opts, batches, workload] {
    *run = [opts, batches, workload] {
      try {
        opts->batches = parse_list(*batches);
      } catch (const std::exception&) {
        opts->batches.clear();
      }
      if (opts->batches.empty() ||
          std::any_of(opts->batches.begin(), opts->batches.end(), [](int64_t b) { return b < 1; })) {
        std::fprintf(stderr, "shardlm bench decode: --batches '%s' is not a list of positive sizes\n", batches->c_str());
        return 2;
      }
      for (const auto& k : opts->skip_ops) {
        bool known = k == "lm_head";
        for (int i = 0; i <= static_cast<int>(graph::OpKind::kAllGatherColumns); ++i)  // the enum's last kind
          known = known || k == graph::op_kind_name(static_cast<graph::OpKind>(i));
        if (!known) {
          std::fprintf(stderr, "shardlm bench decode: --skip-ops: '%s' is not an op kind (e.g. rope_attention, "
                       "add_rmsnorm, linear, linear_silu_mul, lm_head)\n", k.c_str());
          return 2;
        }
      }
      if (opts->timeline && !kernel_timeline_available()) {
        std::fprintf(stderr, "shardlm bench decode: --timeline needs a build configured with "
                     "-DSHARDLM_KERNEL_TIMELINE=ON (this one stamps nothing)\n");
        return 2;
      }
      if (Status st = parse_workload(*workload, opts.get()); !st.ok()) {
        std::fprintf(stderr, "shardlm bench decode: --workload: %s\n", st.message().c_str());
        return 2;
      }
      if (opts->dist.tp == 1) return run_decode_bench(*opts, nullptr);
      auto launch = detect_cli_launch(opts->dist);
      if (!launch.ok()) {
        std::fprintf(stderr, "shardlm bench decode: %s\n", launch.status().to_string().c_str());
        return 2;
      }
      return run_spmd_job(*launch, opts->dist, [opts](DistContext& ctx) { return run_decode_bench(*opts, &ctx); });
    };
  });
}

}  // namespace shardlm::cli
