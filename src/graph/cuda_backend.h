// The CUDA backend (DESIGN §2): graph::Backend on one GPU, plus what the
// runtime and the benchmarks need beyond the interface (the GPU collectives of
// a TP group, activation reservation before KV sizing, memory figures, per-op
// profiling, hardware ceilings). Random (dummy) weights are made on the device.
//
// This header exists in every build. In a build without CUDA,
// make_cuda_backend() returns kUnsupported (graph/cuda_backend_stub.cpp); with
// CUDA the implementation lives in graph/cuda_backend*.cc (target
// shardlm_cuda_backend, see src/CMakeLists.txt).
//
// Numerics: weights are stored as bf16 (checkpoints in f32/f16 are rounded
// once at upload), activations are bf16, every kernel accumulates in f32, and
// the LM head writes f32 logits. The KV cache is bf16.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "comm/gpu_collectives.h"
#include "graph/backend.h"

namespace shardlm::graph {

struct CudaBackendOptions {
  int device = 0;
  // Capture decode steps (one token per sequence) as CUDA graphs, one per
  // batch-size bucket (1, 2, 4, …, 512) × block-table-width bucket; the first
  // step of a bucket runs eagerly and captures the graph, later ones replay it.
  bool cuda_graphs = true;
  // Linears with ≤ gemv_max_rows rows go through the gemv kernel instead of
  // cuBLASLt (0: never). Measured on H200, 8B shape, sum of the linears of one
  // step: m = 1 gemv 3.99 ms vs cuBLASLt 4.15 ms; m = 8 gemv 15.4 ms vs 4.2 ms
  // (its x reads through L1 grow with m), hence 1 (bench/NOTES_runs_01-12.md, run 3).
  int64_t gemv_max_rows = 1;
  // Launch those gemvs as programmatic dependent launches that request their
  // first weights while the previous kernel drains (kernels/cuda/gemv.cu), and
  // all hot-path kernels as programmatic dependent launches. Off: measured
  // slower at batch 1 (4.96 vs 4.38 ms/step on H200; bench/NOTES_runs_01-12.md
  // run 4, bench/NOTES_runs_13-17.md runs 13 and 15) and no faster at batch ≥ 8; kept,
  // tested, for later tuning.
  bool gemv_overlap_prologue = false;
  bool programmatic_launch = false;
  // Decode steps (every row one token) rotate q and the new k inside the
  // tensor-core decode attention kernel, which also writes the new k and v to
  // the cache: no rope_kv_write launch per layer. Off: the two kernels (A/B).
  bool fuse_rope_attention = true;
  // Decode steps of ≤ min(gemv_max_rows, 4) rows run each stretch of linears
  // joined by add+RMSNorm (o_proj … the next layer's qkv at tp 1; gate|up and
  // down at tp > 1) as one persistent kernel (kernels/cuda/linear_chain.cu),
  // bit for bit the per-op kernels. Off by default: its grid barriers (~2.5 µs
  // each) and stage tails cost about what the kernel boundaries did; batch 1
  // measured 5.56 vs 5.52 ms on H100, 4.39 vs 4.41–4.44 on H200 (bench/NOTES_runs_13-17.md run 17).
  bool linear_chain = false;
  // The decode attention (with the RoPE fusion) and the add+RMSNorm that
  // directly follow a gemv are launched as programmatic dependents of it: the
  // gemv lets them be scheduled as soon as it starts, and they read what the
  // gemv does not write (step inputs and the first cached K/V tile; the
  // residual and norm weight) before waiting for its output. Takes their
  // launch gap and first round trips off the critical path of batch-1 steps.
  // Bitwise the ordinary launches. Measured (H100, 8B shape, interleaved in
  // one call, bench/NOTES.md run 18): batch 1 5.54 → 5.47 ms; with
  // prelaunch_gemv 5.45 (H200: 4.31 → 4.22); batches 8 to 256 unchanged.
  bool prelaunch_after_gemv = true;
  // A gemv that directly follows a decode attention or an add+RMSNorm is
  // launched programmatically too, waiting before it reads anything (its
  // blocks are resident when that kernel ends). Requesting its first weights
  // before the wait instead (gemv_overlap_prologue's kernel) measured slower
  // there as well: 5.50 vs 5.46 ms.
  bool prelaunch_gemv = true;
  // A batch-1 linear followed by the add+RMSNorm of its output (o_proj and
  // down at tp 1) runs as one gemv_add_rmsnorm kernel: the gemv's last block
  // does the norm (kernels/cuda/gemv.cu). Bitwise the two kernels (GPU test
  // cuda_kernels_test › CudaGemvAddRMSNorm); a decode layer launches two
  // kernels fewer. Off: slower, batch 1 5.54 vs 5.39 ms on an H100 (every
  // block waits for its arrival atomic before it retires, and the last one
  // loads the norm's operands only then; bench/NOTES.md run 24).
  // `bench decode --gemv-norm` turns it on.
  bool fuse_gemv_norm = false;
  // Batch-1 gemvs have the first ≤ 64 KB of each block's weight rows
  // bulk-copied into shared memory before they wait for the kernel before
  // them (kernels/cuda/gemv.cu, kSmemPrologue), and a gemv behind a gemv is
  // launched programmatically too: the blocks made resident during a decode
  // attention, an add+RMSNorm or the previous gemv's last wave fetch their
  // weights while HBM would idle. Bitwise the other modes. Off: slower at
  // batch 1, 5.48 vs 5.32 ms on an H100 (bench/NOTES.md run 25: the copies
  // behind the norms and gemvs gain nothing there and take SM slots);
  // `bench decode --gemv-smem` turns it on.
  bool gemv_smem_prologue = false;
  // The same prologue for the gemv right behind a decode attention alone
  // (o_proj), the boundary where HBM idles longest (~9 µs a layer,
  // bench/NOTES.md run 21); that gemv then gets no L2 prefetch from the
  // attention. Measured at batch 1 (H100, interleaved, three calls): 5.28 vs
  // 5.32 ms (−0.7 %), with the attention's 16 MiB prefetch of the rows after
  // the copied ones 5.38 (bench/NOTES.md run 25). `bench decode
  // --no-gemv-smem-oproj` turns it off (A/B).
  bool gemv_smem_after_attention = true;
  // The decode attention and the add+RMSNorm let the next kernel be
  // scheduled when they start rather than after their wait, so that with
  // gemv_smem_prologue the next gemv's first wave is resident (and copying)
  // earlier: through the previous gemv's tail. Off by default until timed.
  bool trigger_dependents_early = false;
  // The decode attention lets the next kernel (o_proj) be scheduled only once
  // its blocks have counted themselves in, not after their wait
  // (PagedAttentionParams::trigger_dependents_after_arrival): the o_proj
  // first wave's copies then stay out of the attention's partial stores and
  // arrivals, but overlap its merge instead. Off: slower with that prologue
  // (5.35 vs 5.27–5.29 ms at batch 1, H100), parity without it (bench/NOTES.md
  // run 25). `bench decode --attn-late-trigger` turns it on.
  bool attention_trigger_after_arrival = false;
  // A decode attention / add+RMSNorm followed by a linear of ≤
  // l2_prefetch_max_rows rows pulls up to these many bytes of that linear's
  // weights into L2 while it runs: HBM idles through those latency-bound
  // kernels, and the linear then streams fewer bytes from it after them
  // (bench/NOTES.md run 20). 0: off. Measured at batch 1 (8B shape, H100,
  // interleaved): 16 MiB of o_proj's 32 behind the attention 5.629 → 5.584
  // ms on a slower H100; 24 and more slower again (the prefetch then
  // outlasts the attention). The norms' prefetch (2 MiB of gate|up or qkv)
  // gained nothing once the attention's came after its K/V reads: off. On
  // the H200 the 16 MiB cost +0.011 ms (0.26 %, run 21); a gemv's finishing
  // warps prefetching the next linear instead were slower there (+0.07 ms).
  int64_t l2_prefetch_attention_bytes = 16ll << 20;
  int64_t l2_prefetch_norm_bytes = 0;
  int64_t l2_prefetch_max_rows = 8;
  // Timing diagnostics only (`bench decode --skip-ops`): op kind names (as the
  // per-op profile prints them, "lm_head" for the logits linear) whose
  // launches are left out of every step, so that a graph replay's time with
  // and without them gives what they cost in the pipeline, boundaries
  // included. The step's outputs are then wrong; nothing else sets this.
  std::vector<std::string> timing_skip_ops;
  int64_t gemm_workspace_bytes = 32ll << 20;  // cuBLASLt scratch; 32 MiB covers its split-K kernels on Hopper
};

struct CudaMemoryInfo {
  int64_t free_bytes = 0;
  int64_t total_bytes = 0;
};

struct CudaOpTime {
  std::string op;  // op kind name ("linear", "attention", …)
  double ms = 0;   // device time summed over the profiled steps
  int64_t calls = 0;
};

class CudaBackend : public Backend {
 public:
  // The GPU collectives of this rank's tensor-parallel group (tp > 1); must be
  // made on this backend's device and outlive it (destroy the backend first:
  // its captured decode graphs contain NCCL work of the group). The Communicator of
  // set_tp_communicator() (host memory) is not used by this backend.
  virtual void set_gpu_collectives(GpuCollectives* group) = 0;
  // Pipeline stages on GPUs: the residual stream comes from `prev` (non-first
  // stage) and goes to `next` (non-last stage) as bf16, device to device
  // (null: through the host, forward()'s stage_input / stage_output). Must
  // outlive the backend.
  virtual void set_stage_links(GpuStageLink* prev, GpuStageLink* next) = 0;

  // Allocates activation buffers and attention scratch for steps of up to
  // `max_tokens` tokens, `max_logit_rows` logit rows and contexts of up to
  // `max_context` tokens, so KV sizing from free memory sees them.
  virtual Status reserve(const Program& p, int64_t max_tokens, int64_t max_logit_rows, int64_t max_context) = 0;
  // Fills the whole KV cache with random bf16 (benchmarks of decode at a given context).
  virtual Status fill_kv_random(uint64_t seed) = 0;
  virtual Expected<CudaMemoryInfo> memory_info() const = 0;
  virtual std::string device_name() const = 0;
  virtual int64_t weight_bytes() const = 0;
  virtual int num_graphs() const = 0;

  // Per-op device time of the eager steps run while profiling is on (CUDA
  // events around each op; graph replays are timed as one). take_profile()
  // returns the sums and clears them.
  virtual void set_profiling(bool on) = 0;
  virtual std::vector<CudaOpTime> take_profile() = 0;

  // Hardware ceilings, measured on this device now:
  // device-to-device copy of `bytes`, returned as (bytes read + bytes written) / s;
  virtual Expected<double> measure_copy_bandwidth(int64_t bytes) = 0;
  // bf16 GEMM [m,k]·[n,k]ᵀ through the same cuBLASLt path as the linears, FLOP/s.
  virtual Expected<double> measure_gemm_flops(int64_t m, int64_t n, int64_t k) = 0;
};

// Empty when a CUDA device can be used, else why not ("no CUDA device: <error>").
std::string cuda_unavailable_reason();
// Devices this process sees (0 without CUDA), and a device's PCI bus id (what
// tells two ranks apart when each sees a different CUDA_VISIBLE_DEVICES).
int cuda_device_count();
std::string cuda_device_bus_id(int device);

Expected<std::unique_ptr<CudaBackend>> make_cuda_backend(const CudaBackendOptions& options = {});

}  // namespace shardlm::graph
