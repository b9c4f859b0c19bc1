// `shardlm bench allreduce`: all-reduce latency and bandwidth on the GPUs of
// this host, one process per GPU (the command forks them itself, before any
// CUDA call, and rank 0 prints). Per message size (--min … --max bytes, ×2
// steps, bf16):
//   Lamport one-shot, Lamport two-shot (while the message fits the workspace)
//   and NCCL; each timed as CUDA-graph replays of back-to-back calls
//   (latency = graph time / calls); algorithm bandwidth = bytes / latency,
//   next to the peer-copy bandwidth measured in the same run (a cudaMemcpy
//   into the peer's IPC-mapped buffer, both ranks at once: the link limit
//   an all-reduce of W = 2 moves its bytes over).
// --fused: hidden 4096 and 8192 × 1…512 tokens: the fused Lamport
//   all-reduce+residual+RMSNorm vs (NCCL all-reduce + add_rmsnorm) vs
//   (Lamport all-reduce + add_rmsnorm) vs the Lamport all-reduce alone.
// --table: the strategy row (allreduce_strategy_table.h) these numbers imply.
// torch symmetric memory is timed by bench/torch_symm_mem_allreduce.py in the
// same device call (bench/run_gpu_comm.sh).
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <functional>
#include <thread>

#include <nlohmann/json.hpp>

#include "cli/commands.h"

#if SHARDLM_HAVE_COMM_CUDA
#include <cuda_runtime.h>

#include "base/clock.h"
#include "comm/lamport_allreduce.h"
#include "comm/nccl_communicator.h"
#include "comm/rendezvous.h"
#include "kernels/cuda/cuda_kernels.h"
#endif

namespace shardlm::cli {

struct AllReduceBenchOptions {
  int world = 2;
  size_t min_bytes = 4 << 10;
  size_t max_bytes = 256u << 20;
  size_t capacity = 64u << 20;
  bool fused = false;
  bool table = false;
  bool no_pdl = false;
  int fused_reg_max_rows = 1 << 30;
  int fused_block_vectors = 128;
  bool fused_whole_row = false;
  std::string json_path;
};

#if SHARDLM_HAVE_COMM_CUDA
namespace {

struct SharedPort {
  std::atomic<int> port{0};
};

#define BENCH_CUDA(call)                                                                         \
  do {                                                                                           \
    cudaError_t _e = (call);                                                                     \
    if (_e != cudaSuccess) return make_error(ErrorCode::kInternal, "{}: {}", #call, cudaGetErrorString(_e)); \
  } while (0)

// Seconds per call: `calls` back-to-back ops captured in one graph, replayed
// `reps` times after warmup; both ranks start together (rendezvous barrier).
Expected<double> time_op(const std::function<Status(cudaStream_t)>& op, int calls, int reps, cudaStream_t s,
                         Rendezvous& rv, const std::string& key) {
  cudaGraph_t g;
  cudaGraphExec_t exec;
  BENCH_CUDA(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
  for (int i = 0; i < calls; ++i) {
    Status st = op(s);
    if (!st.ok()) {
      cudaStreamEndCapture(s, &g);
      return st;
    }
  }
  BENCH_CUDA(cudaStreamEndCapture(s, &g));
  BENCH_CUDA(cudaGraphInstantiate(&exec, g, 0));
  for (int i = 0; i < 3; ++i) BENCH_CUDA(cudaGraphLaunch(exec, s));
  BENCH_CUDA(cudaStreamSynchronize(s));
  SHARDLM_TRY(rv.barrier(key, 120));
  cudaEvent_t a, b;
  cudaEventCreate(&a);
  cudaEventCreate(&b);
  cudaEventRecord(a, s);
  for (int i = 0; i < reps; ++i) BENCH_CUDA(cudaGraphLaunch(exec, s));
  cudaEventRecord(b, s);
  BENCH_CUDA(cudaEventSynchronize(b));
  float ms = 0;
  cudaEventElapsedTime(&ms, a, b);
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(g);
  return ms * 1e-3 / (static_cast<double>(calls) * reps);
}

std::string human(size_t b) {
  if (b >= (1u << 20)) return fmt::format("{} MB", b >> 20);
  if (b >= 1024) return fmt::format("{} KB", b >> 10);
  return fmt::format("{} B", b);
}

Status run_rank(int rank, const AllReduceBenchOptions& o, SharedPort* shared) {
  BENCH_CUDA(cudaSetDevice(rank));
  RendezvousOptions ro;
  ro.master_addr = "127.0.0.1";
  ro.master_port = 0;
  ro.rank = rank;
  ro.world = o.world;
  ro.job_key = "bench-allreduce";
  ro.timeout_s = 120;
  if (rank != 0) {
    Deadline d(60);
    while (shared->port.load() == 0 && !d.expired()) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    ro.master_port = shared->port.load();
  }
  SHARDLM_ASSIGN_OR_RETURN(auto rv, Rendezvous::create(ro));
  if (rank == 0) shared->port = rv->port();
  CommGroup g;
  g.rv = rv.get();
  g.prefix = "bench";
  for (int r = 0; r < o.world; ++r) g.ranks.push_back(r);
  g.index = rank;
  cudaStream_t s;
  BENCH_CUDA(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  SHARDLM_ASSIGN_OR_RETURN(auto nccl, NcclCommunicator::create(g, rank, s));
  LamportOptions lo;
  lo.capacity_bytes = o.capacity;
  lo.pdl = !o.no_pdl;
  lo.fused_reg_max_rows = o.fused_reg_max_rows;
  lo.fused_block_vectors = o.fused_block_vectors;
  lo.fused_whole_row = o.fused_whole_row;
  SHARDLM_ASSIGN_OR_RETURN(auto ar, LamportAllReduce::create(g, DType::kBF16, rank, lo, nccl.get()));
  const bool lead = rank == 0;
  nlohmann::json js;

  // Peer-copy bandwidth: the link limit.
  double copy_gbs = 0;
  {
    const size_t bytes = 256u << 20;
    SHARDLM_ASSIGN_OR_RETURN(auto cb, SymmetricBuffer::create(g, "bench_copy", bytes, rank));
    void* src = nullptr;
    BENCH_CUDA(cudaMalloc(&src, bytes));
    BENCH_CUDA(cudaMemset(src, 1, bytes));
    void* dst = cb->peer((rank + 1) % o.world);
    SHARDLM_ASSIGN_OR_RETURN(double t, time_op([&](cudaStream_t st) {
                               return cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, st) == cudaSuccess
                                          ? Status::Ok()
                                          : make_error(ErrorCode::kInternal, "peer copy");
                             }, 2, 5, s, *rv, "bench/copy"));
    copy_gbs = bytes / t / 1e9;
    cudaFree(src);
    SHARDLM_TRY(rv->barrier("bench/copy_done", 60));
  }
  if (lead) {
    std::printf("shardlm bench allreduce: %d ranks, bf16, Lamport capacity %s, PDL %s\n", o.world,
                human(o.capacity).c_str(), o.no_pdl ? "off" : "on");
    std::printf("peer copy (cudaMemcpy into the peer's IPC-mapped buffer, both ranks at once): %.1f GB/s\n\n", copy_gbs);
    std::printf("%10s | %21s | %21s | %21s | %s\n", "size", "lamport one-shot", "lamport two-shot", "nccl", "picked");
    std::printf("%10s | %9s %11s | %9s %11s | %9s %11s |\n", "", "us", "algbw GB/s", "us", "algbw GB/s", "us",
                "algbw GB/s");
  }
  js["peer_copy_gbs"] = copy_gbs;
  void *in = nullptr, *out = nullptr;
  // The fused table reads up to 512 tokens × hidden 8192 bf16 from `in`, whatever --max says.
  const size_t in_bytes = std::max(o.max_bytes, o.fused ? size_t{512} * 8192 * 2 : size_t{0});
  BENCH_CUDA(cudaMalloc(&in, in_bytes));
  BENCH_CUDA(cudaMalloc(&out, in_bytes));
  BENCH_CUDA(cudaMemset(in, 0, in_bytes));
  size_t one_shot_max = 0, two_shot_max = 0;
  for (size_t bytes = o.min_bytes; bytes <= o.max_bytes; bytes *= 2) {
    const size_t count = bytes / 2;
    const int calls = bytes <= (1u << 20) ? 50 : bytes <= (16u << 20) ? 10 : 2;
    const int reps = bytes <= (16u << 20) ? 20 : 5;
    double t[3] = {-1, -1, -1};
    const AllReduceAlgo algos[3] = {AllReduceAlgo::kOneShot, AllReduceAlgo::kTwoShot, AllReduceAlgo::kNccl};
    for (int a = 0; a < 3; ++a) {
      if (a < 2 && bytes > ar->capacity_bytes()) continue;
      auto r = time_op([&](cudaStream_t st) { return ar->all_reduce(in, out, count, st, algos[a]); }, calls, reps, s,
                       *rv, fmt::format("bench/{}/{}", bytes, a));
      if (!r.ok()) return r.status();
      SHARDLM_TRY(ar->check(s));
      t[a] = *r;
    }
    int best = 2;
    for (int a = 0; a < 3; ++a)
      if (t[a] > 0 && t[a] < t[best]) best = a;
    if (best == 0) one_shot_max = bytes;
    if (best == 1) two_shot_max = bytes;
    if (lead) {
      auto cell = [&](double x) {
        return x < 0 ? fmt::format("{:>9} {:>11}", "-", "-") : fmt::format("{:9.2f} {:11.1f}", x * 1e6, bytes / x / 1e9);
      };
      std::printf("%10s | %s | %s | %s | %s (table: %s)\n", human(bytes).c_str(), cell(t[0]).c_str(),
                  cell(t[1]).c_str(), cell(t[2]).c_str(), allreduce_algo_name(algos[best]),
                  allreduce_algo_name(ar->pick(count)));
      std::fflush(stdout);
    }
    js["sizes"].push_back({{"bytes", bytes}, {"oneshot_us", t[0] * 1e6}, {"twoshot_us", t[1] * 1e6},
                           {"nccl_us", t[2] * 1e6}, {"fastest", allreduce_algo_name(algos[best])}});
  }
  if (two_shot_max < one_shot_max) two_shot_max = one_shot_max;
  if (lead && o.table)
    std::printf("\nstrategy row for allreduce_strategy_table.h:\n    {%d, %zu, %zu},\n", o.world, one_shot_max,
                two_shot_max);

  if (o.fused) {
    if (lead) {
      std::printf("\nfused all-reduce + residual + RMSNorm (bf16, us per layer op; table-picked Lamport algorithm)\n");
      std::printf("%6s %6s | %9s | %14s | %16s | %12s | %s\n", "hidden", "tokens", "fused", "nccl+addnorm",
                  "lamport+addnorm", "lamport only", "fused/AR");
    }
    for (int hidden : {4096, 8192}) {
      const size_t max_n = static_cast<size_t>(512) * hidden;
      void *res, *res2, *w, *y;
      BENCH_CUDA(cudaMalloc(&res, max_n * 2));
      BENCH_CUDA(cudaMalloc(&res2, max_n * 2));
      BENCH_CUDA(cudaMalloc(&w, hidden * 2));
      BENCH_CUDA(cudaMalloc(&y, max_n * 2));
      BENCH_CUDA(cudaMemset(res, 0, max_n * 2));
      BENCH_CUDA(cudaMemset(w, 0, hidden * 2));
      for (int tokens = 1; tokens <= 512; tokens *= 2) {
        const size_t n = static_cast<size_t>(tokens) * hidden;
        using kernels::cuda::bf16;
        auto addnorm = [&](cudaStream_t st) {
          cudaError_t e = kernels::cuda::add_rmsnorm(static_cast<const bf16*>(out), static_cast<bf16*>(res2),
                                                     static_cast<const bf16*>(w), static_cast<bf16*>(y), tokens,
                                                     hidden, 1e-5f, st);
          return e == cudaSuccess ? Status::Ok() : make_error(ErrorCode::kInternal, "add_rmsnorm");
        };
        const std::string k = fmt::format("bench/fused/{}/{}", hidden, tokens);
        SHARDLM_ASSIGN_OR_RETURN(double tf, time_op([&](cudaStream_t st) {
                                   return ar->all_reduce_add_rmsnorm(in, res, w, 1e-5f, res2, y, tokens, hidden, st);
                                 }, 50, 20, s, *rv, k + "/f"));
        SHARDLM_TRY(ar->check(s));
        SHARDLM_ASSIGN_OR_RETURN(double tn, time_op([&](cudaStream_t st) {
                                   SHARDLM_TRY(ar->all_reduce(in, out, n, st, AllReduceAlgo::kNccl));
                                   return addnorm(st);
                                 }, 50, 20, s, *rv, k + "/n"));
        SHARDLM_ASSIGN_OR_RETURN(double tl, time_op([&](cudaStream_t st) {
                                   SHARDLM_TRY(ar->all_reduce(in, out, n, st));
                                   return addnorm(st);
                                 }, 50, 20, s, *rv, k + "/l"));
        SHARDLM_ASSIGN_OR_RETURN(double ta, time_op([&](cudaStream_t st) { return ar->all_reduce(in, out, n, st); },
                                                    50, 20, s, *rv, k + "/a"));
        SHARDLM_TRY(ar->check(s));
        if (lead) {
          std::printf("%6d %6d | %9.2f | %14.2f | %16.2f | %12.2f | %.2f\n", hidden, tokens, tf * 1e6, tn * 1e6,
                      tl * 1e6, ta * 1e6, tf / ta);
          std::fflush(stdout);
        }
        js["fused"].push_back({{"hidden", hidden}, {"tokens", tokens}, {"fused_us", tf * 1e6},
                               {"nccl_addnorm_us", tn * 1e6}, {"lamport_addnorm_us", tl * 1e6},
                               {"lamport_only_us", ta * 1e6}});
      }
      for (void* p : {res, res2, w, y}) cudaFree(p);
    }
  }
  if (lead && !o.json_path.empty()) std::ofstream(o.json_path) << js.dump(2) << "\n";
  SHARDLM_TRY(rv->barrier("bench/done", 120));
  return Status::Ok();
}

int run_allreduce_bench(const AllReduceBenchOptions& o) {
  setenv("NCCL_NVLS_ENABLE", "0", 0);
  void* mem = mmap(nullptr, sizeof(SharedPort), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  auto* shared = new (mem) SharedPort();
  std::fflush(stdout);
  std::vector<pid_t> pids;
  for (int r = 0; r < o.world; ++r) {
    pid_t p = fork();
    if (p == 0) {
      Status st = run_rank(r, o, shared);
      if (!st.ok()) std::fprintf(stderr, "shardlm bench allreduce: rank %d: %s\n", r, st.to_string().c_str());
      std::fflush(stdout);
      _exit(st.ok() ? 0 : 1);
    }
    pids.push_back(p);
  }
  int rc = 0;
  for (pid_t p : pids) {
    int st = 0;
    waitpid(p, &st, 0);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) rc = 1;
  }
  munmap(mem, sizeof(SharedPort));
  return rc;
}

}  // namespace
#endif

void register_bench_allreduce(CLI::App& bench, CommandRunner* run) {
  auto o = std::make_shared<AllReduceBenchOptions>();
  auto* cmd = bench.add_subcommand("allreduce",
                                   "All-reduce latency and bandwidth: Lamport one-shot / two-shot vs NCCL on this "
                                   "host's GPUs (one process per GPU, forked here), CUDA-graph timed.");
  cmd->add_option("--world", o->world, "Ranks (GPUs 0..world-1)")->capture_default_str();
  cmd->add_option("--min", o->min_bytes, "Smallest message in bytes")->capture_default_str();
  cmd->add_option("--max", o->max_bytes, "Largest message in bytes")->capture_default_str();
  cmd->add_option("--capacity", o->capacity, "Lamport workspace slot in bytes")->capture_default_str();
  cmd->add_flag("--fused", o->fused, "Also time the fused all-reduce+residual+RMSNorm (hidden 4096/8192 × 1..512)");
  cmd->add_flag("--table", o->table, "Print the strategy-table row these timings imply");
  cmd->add_flag("--no-pdl", o->no_pdl, "Launch without programmatic dependent launch");
  cmd->add_option("--fused-reg-rows", o->fused_reg_max_rows,
                  "Fused kernel: keep each row in registers (one vector per thread) up to this many rows "
                  "(0: never; loop over the row instead)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--fused-block-vectors", o->fused_block_vectors,
                  "Fused kernel, small token counts: cut a row over a cluster of blocks of about this many 16-byte "
                  "vectors (≥ 1024: one block per row)")
      ->check(CLI::Range(32, 1 << 20))
      ->capture_default_str();
  cmd->add_flag("--fused-whole-row,!--no-fused-whole-row", o->fused_whole_row,
                "Fused kernel, small token counts: every block of a row's cluster sums the whole row itself "
                "instead of exchanging its part's sum of squares with the other blocks")
      ->capture_default_str();
  cmd->add_option("--json", o->json_path, "Also write the results as JSON here");
  cmd->callback([run, o] {
    *run = [o] {
#if SHARDLM_HAVE_COMM_CUDA
      if (o->world < 2) {
        std::fprintf(stderr, "shardlm bench allreduce: --world must be ≥ 2\n");
        return 2;
      }
      return run_allreduce_bench(*o);
#else
      std::fprintf(stderr, "shardlm bench allreduce: this build has no CUDA/NCCL (GPU comm left out)\n");
      return 2;
#endif
    };
  });
}

}  // namespace shardlm::cli
