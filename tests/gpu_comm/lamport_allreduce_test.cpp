// Lamport all-reduce on kWorld GPUs (2, or SHARDLM_GPU_TEST_WORLD), one forked
// process each (label gpu; skips with the reason on a machine with fewer).
// Host → device copies go through upload() (ordered on the test's stream).
//   - one-shot, two-shot and NCCL against a float64 host sum, every dtype,
//     1 element … 64 MB including odd sizes, inputs with −0.0, subnormals and
//     large magnitudes; Lamport vs NCCL; results bitwise identical on both ranks;
//   - the same calls captured in a CUDA graph and replayed with new inputs;
//   - 10 000 back-to-back calls alternating sizes and algorithms (a stale read
//     of a group two calls old would show as a wrong sum);
//   - the fused all-reduce + residual + RMSNorm against a host reference;
//   - a rank calling an all-reduce its peer never joins gets kTimeout naming
//     the op and the peer, within the bound.
#include <gtest/gtest.h>

#include <chrono>
#include <memory>

#include "comm/lamport_allreduce.h"
#include "comm/nccl_communicator.h"
#include "gpu_comm_util.h"

namespace shardlm::testing {
namespace {

struct Ctx {
  std::unique_ptr<Rendezvous> rv;
  std::unique_ptr<NcclCommunicator> nccl;
  cudaStream_t stream = nullptr;
};

// Rendezvous + device + NCCL for a child; returns non-zero on failure.
int setup(int rank, Ctx& c) {
  CUDA_CHILD(rank, cudaSetDevice(rank));
  CUDA_CHILD(rank, cudaStreamCreateWithFlags(&c.stream, cudaStreamNonBlocking));
  auto rv = child_rendezvous(rank, kWorld);
  CHILD_OK(rank, rv.status());
  c.rv = std::move(*rv);
  NcclOptions o;
  o.timeout_s = 60;
  auto nccl = NcclCommunicator::create(group_of(c.rv.get(), rank), rank, c.stream, o);
  CHILD_OK(rank, nccl.status());
  c.nccl = std::move(*nccl);
  return 0;
}

// Both ranks publish a hash of their output; returns true when equal.
Expected<bool> same_on_all_ranks(Rendezvous& rv, int rank, const std::string& key, uint64_t h) {
  SHARDLM_TRY(rv.set(key + "/" + std::to_string(rank), std::to_string(h)));
  for (int r = 0; r < kWorld; ++r) {
    SHARDLM_ASSIGN_OR_RETURN(std::string v, rv.get(key + "/" + std::to_string(r)));
    if (v != std::to_string(h)) return false;
  }
  return true;
}

int sweep_child(int rank) {
  Ctx c;
  if (int rc = setup(rank, c)) return rc;
  const std::vector<size_t> sizes_bytes_like = {1, 2, 3, 7, 8, 9, 15, 17, 31, 127, 1000, 1023, 4097, 65535, 65537,
                                               (1u << 20) + 3};
  for (DType dt : {DType::kF32, DType::kF16, DType::kBF16}) {
    const size_t es = dtype_size(dt);
    LamportOptions lo;
    lo.capacity_bytes = 64u << 20;  // 64 MB messages go through Lamport too
    lo.timeout_s = 20;
    auto ar = LamportAllReduce::create(group_of(c.rv.get(), rank, std::string("sweep_") + dtype_name(dt)), dt, rank,
                                       lo, c.nccl.get());
    CHILD_OK(rank, ar.status());
    std::vector<size_t> counts = sizes_bytes_like;
    counts.push_back((64u << 20) / es);      // exactly 64 MB
    counts.push_back((64u << 20) / es - 5);  // odd, just under
    const size_t max_count = (64u << 20) / es;
    void *d_in = nullptr, *d_out = nullptr, *d_nccl = nullptr;
    CUDA_CHILD(rank, cudaMalloc(&d_in, max_count * es));
    CUDA_CHILD(rank, cudaMalloc(&d_out, max_count * es));
    CUDA_CHILD(rank, cudaMalloc(&d_nccl, max_count * es));
    uint64_t seed = 1;
    for (size_t count : counts) {
      ++seed;
      auto in = make_input(dt, rank, seed, count);
      auto ref = reference_sum(dt, seed, count, kWorld);
      auto abs_sum = reference_abs_sum(dt, seed, count, kWorld);
      CUDA_CHILD(rank, upload(d_in, in.data(), count * es, c.stream));
      CHILD_OK(rank, c.nccl->all_reduce_sum(d_in, d_nccl, count, dt));
      CHILD_OK(rank, c.nccl->synchronize());
      std::vector<uint8_t> nccl_out(count * es), out(count * es);
      CUDA_CHILD(rank, cudaMemcpy(nccl_out.data(), d_nccl, count * es, cudaMemcpyDeviceToHost));
      std::string why;
      CHILD_CHECK(rank, first_mismatch(dt, nccl_out, ref, &why, &abs_sum, unit_roundoff(dt)) < 0,
                  fmt::format("NCCL {} count {}: {}", dtype_name(dt), count, why));
      for (AllReduceAlgo algo : {AllReduceAlgo::kOneShot, AllReduceAlgo::kTwoShot}) {
        CUDA_CHILD(rank, cudaMemsetAsync(d_out, 0x55, count * es, c.stream));  // ordered before the kernel
        CHILD_OK(rank, (*ar)->all_reduce(d_in, d_out, count, c.stream, algo));
        CHILD_OK(rank, (*ar)->check(c.stream));
        CUDA_CHILD(rank, cudaMemcpy(out.data(), d_out, count * es, cudaMemcpyDeviceToHost));
        const std::string what = fmt::format("{} {} count {}", allreduce_algo_name(algo), dtype_name(dt), count);
        CHILD_CHECK(rank, first_mismatch(dt, out, ref, &why, &abs_sum) < 0, what + ": " + why);
        // Against NCCL: same values (−0 and +0 compare equal); each side may
        // carry its own accumulation error (different summation orders).
        std::vector<float> a(count), b(count);
        convert_to_f32(dt, out.data(), a.data(), count);
        convert_to_f32(dt, nccl_out.data(), b.data(), count);
        for (size_t i = 0; i < count; ++i)
          CHILD_CHECK(rank, a[i] == b[i] || std::fabs(a[i] - b[i]) <= tolerance(dt).atol + tolerance(dt).rtol * std::fabs(b[i]) +
                                                 accumulation_bound(abs_sum[i]) +
                                                 accumulation_bound(abs_sum[i], unit_roundoff(dt)),
                      fmt::format("{} vs NCCL at {}: {} vs {}", what, i, a[i], b[i]));
        auto same = same_on_all_ranks(*c.rv, rank, "sweep/" + what, hash_bytes(out.data(), out.size()));
        CHILD_OK(rank, same.status());
        CHILD_CHECK(rank, *same, what + ": results differ between ranks");
      }
      // In place.
      CHILD_OK(rank, (*ar)->all_reduce(d_in, d_in, count, c.stream, AllReduceAlgo::kOneShot));
      CHILD_OK(rank, (*ar)->check(c.stream));
      CUDA_CHILD(rank, cudaMemcpy(out.data(), d_in, count * es, cudaMemcpyDeviceToHost));
      CHILD_CHECK(rank, first_mismatch(dt, out, ref, &why, &abs_sum) < 0, fmt::format("in-place count {}: {}", count, why));
    }
    cudaFree(d_in);
    cudaFree(d_out);
    cudaFree(d_nccl);
  }
  return 0;
}

int graph_child(int rank) {
  Ctx c;
  if (int rc = setup(rank, c)) return rc;
  const DType dt = DType::kBF16;
  auto ar = LamportAllReduce::create(group_of(c.rv.get(), rank, "graph"), dt, rank, {}, c.nccl.get());
  CHILD_OK(rank, ar.status());
  const std::vector<size_t> counts = {5, 4096, 100003};
  std::vector<void*> ins, outs;
  for (size_t n : counts) {
    void *i = nullptr, *o = nullptr;
    CUDA_CHILD(rank, cudaMalloc(&i, n * 2));
    CUDA_CHILD(rank, cudaMalloc(&o, n * 2));
    ins.push_back(i);
    outs.push_back(o);
  }
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  CUDA_CHILD(rank, cudaStreamBeginCapture(c.stream, cudaStreamCaptureModeThreadLocal));
  for (size_t k = 0; k < counts.size(); ++k)
    CHILD_OK(rank, (*ar)->all_reduce(ins[k], outs[k], counts[k], c.stream,
                                     k % 2 ? AllReduceAlgo::kTwoShot : AllReduceAlgo::kOneShot));
  CUDA_CHILD(rank, cudaStreamEndCapture(c.stream, &graph));
  CUDA_CHILD(rank, cudaGraphInstantiate(&exec, graph, 0));
  for (int rep = 0; rep < 20; ++rep) {
    for (size_t k = 0; k < counts.size(); ++k) {
      auto in = make_input(dt, rank, 1000 + rep * 10 + k, counts[k]);
      CUDA_CHILD(rank, cudaMemcpyAsync(ins[k], in.data(), in.size(), cudaMemcpyHostToDevice, c.stream));
    }
    CUDA_CHILD(rank, cudaGraphLaunch(exec, c.stream));
    CHILD_OK(rank, (*ar)->check(c.stream));
    for (size_t k = 0; k < counts.size(); ++k) {
      std::vector<uint8_t> out(counts[k] * 2);
      CUDA_CHILD(rank, cudaMemcpy(out.data(), outs[k], out.size(), cudaMemcpyDeviceToHost));
      std::string why;
      auto ref = reference_sum(dt, 1000 + rep * 10 + k, counts[k], kWorld);
      CHILD_CHECK(rank, first_mismatch(dt, out, ref, &why) < 0,
                  fmt::format("graph replay {} op {}: {}", rep, k, why));
    }
  }
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  return 0;
}

int back_to_back_child(int rank) {
  Ctx c;
  if (int rc = setup(rank, c)) return rc;
  const DType dt = DType::kBF16;
  auto ar = LamportAllReduce::create(group_of(c.rv.get(), rank, "b2b"), dt, rank, {}, c.nccl.get());
  CHILD_OK(rank, ar.status());
  const std::vector<size_t> sizes = {1, 4096, 777, 65541, 3};  // 5 sizes × 7 inputs: every call differs from
  constexpr int kInputs = 7;                                   // the one 3 calls before (same buffer group)
  constexpr int kCalls = 10000, kBatch = 100;
  constexpr size_t kStride = 65544;  // ≥ the largest size, a multiple of 8 bf16: 16-byte aligned outputs
  std::vector<std::vector<void*>> d_in(sizes.size(), std::vector<void*>(kInputs));
  std::vector<std::vector<std::vector<double>>> refs(sizes.size(), std::vector<std::vector<double>>(kInputs));
  for (size_t s = 0; s < sizes.size(); ++s)
    for (int k = 0; k < kInputs; ++k) {
      auto in = make_input(dt, rank, 500 + s * 16 + k, sizes[s]);
      CUDA_CHILD(rank, cudaMalloc(&d_in[s][k], in.size()));
      CUDA_CHILD(rank, upload(d_in[s][k], in.data(), in.size(), c.stream));
      refs[s][k] = reference_sum(dt, 500 + s * 16 + k, sizes[s], kWorld);
    }
  void* d_out = nullptr;
  CUDA_CHILD(rank, cudaMalloc(&d_out, kBatch * kStride * 2));
  for (int b = 0; b < kCalls / kBatch; ++b) {
    for (int j = 0; j < kBatch; ++j) {
      const int call = b * kBatch + j;
      const size_t s = call % sizes.size();
      const int k = call % kInputs;
      CHILD_OK(rank, (*ar)->all_reduce(d_in[s][k], static_cast<char*>(d_out) + j * kStride * 2, sizes[s], c.stream,
                                       (call / 5) % 2 ? AllReduceAlgo::kTwoShot : AllReduceAlgo::kOneShot));
    }
    CHILD_OK(rank, (*ar)->check(c.stream));
    for (int j = 0; j < kBatch; ++j) {
      const int call = b * kBatch + j;
      const size_t s = call % sizes.size();
      std::vector<uint8_t> out(sizes[s] * 2);
      CUDA_CHILD(rank, cudaMemcpy(out.data(), static_cast<char*>(d_out) + j * kStride * 2, out.size(),
                                  cudaMemcpyDeviceToHost));
      std::string why;
      CHILD_CHECK(rank, first_mismatch(dt, out, refs[s][call % kInputs], &why) < 0,
                  fmt::format("call {} (size {}): {}", call, sizes[s], why));
    }
  }
  return 0;
}

int fused_child(int rank) {
  Ctx c;
  if (int rc = setup(rank, c)) return rc;
  // Every fused kernel: the row in registers, one vector per thread, cut over
  // a cluster of blocks of ~128 vectors while each row gets its own cluster
  // (the default: 1–17 rows here), of ~64 vectors (clusters of 8 at 4096),
  // one block per row (128 and 300 rows); and the row looped over
  // (fused_reg_max_rows = 0). Rows wider than 1024 vectors (f32 8192, hidden
  // 24576) loop in every run.
  struct Variant {
    int reg_rows, block_vectors;
    bool whole_row;
    const char* name;
  };
  for (const Variant var : {Variant{1 << 30, 128, false, "row in registers"},
                            Variant{1 << 30, 64, false, "row in registers, 64"},
                            Variant{1 << 30, 128, true, "whole row per block"},
                            Variant{1 << 30, 64, true, "whole row per block, 64"},
                            Variant{1 << 30, 512, true, "whole row per block, 512"},
                            Variant{0, 128, false, "row looped over"}})
  for (DType dt : {DType::kBF16, DType::kF16, DType::kF32}) {
    LamportOptions lo;
    lo.fused_reg_max_rows = var.reg_rows;
    lo.fused_block_vectors = var.block_vectors;
    lo.fused_whole_row = var.whole_row;
    auto ar = LamportAllReduce::create(group_of(c.rv.get(), rank,
                                                fmt::format("fused_{}_{}_{}_{}", dtype_name(dt), var.reg_rows,
                                                            var.block_vectors, var.whole_row)),
                                       dt, rank, lo, c.nccl.get());
    CHILD_OK(rank, ar.status());
    const size_t es = dtype_size(dt);
    for (int hidden : {64, 1000 / 8 * 8, 4096, 8192, 24576}) {
      for (int rows : {1, 3, 17, 128, 300}) {
        if (hidden == 24576 && rows > 17) continue;
        const uint64_t seed = 7000 + hidden + rows;
        const size_t n = static_cast<size_t>(rows) * hidden;
        // Inputs: no large magnitudes here (the norm of 1e30² overflows f32, by design of the data).
        std::vector<float> fin(n), res(n), w(hidden);
        for (size_t i = 0; i < n; ++i) {
          fin[i] = input_value(dt, rank, seed, i);
          if (std::fabs(fin[i]) > 100) fin[i] = 1.f;
          res[i] = input_value(dt, 99, seed, i);  // identical on every rank (replicated residual)
          if (std::fabs(res[i]) > 100) res[i] = -0.5f;
        }
        for (int j = 0; j < hidden; ++j) w[j] = 0.5f + (j % 13) / 13.f;
        std::vector<uint8_t> bin, bres, bw;
        to_dtype(dt, fin, bin);
        to_dtype(dt, res, bres);
        to_dtype(dt, w, bw);
        // The reference sums the rounded inputs of every rank: rebuild them the same way.
        std::vector<float> rres(n), rw(hidden);
        convert_to_f32(dt, bres.data(), rres.data(), n);
        convert_to_f32(dt, bw.data(), rw.data(), hidden);
        void *d_in, *d_res, *d_w, *d_ores, *d_out;
        CUDA_CHILD(rank, cudaMalloc(&d_in, n * es));
        CUDA_CHILD(rank, cudaMalloc(&d_res, n * es));
        CUDA_CHILD(rank, cudaMalloc(&d_w, hidden * es));
        CUDA_CHILD(rank, cudaMalloc(&d_ores, n * es));
        CUDA_CHILD(rank, cudaMalloc(&d_out, n * es));
        // upload(): ordered before the kernels on c.stream (see gpu_comm_util.h).
        CUDA_CHILD(rank, upload(d_in, bin.data(), n * es, c.stream));
        CUDA_CHILD(rank, upload(d_w, bw.data(), hidden * es, c.stream));
        // reference_sum recomputes inputs via make_input: clamp the same way there.
        std::vector<double> sum(n, 0.0), abs_sum(n, 0.0);
        for (int r = 0; r < kWorld; ++r)
          for (size_t i = 0; i < n; ++i) {
            float v = input_value(dt, r, seed, i);
            if (std::fabs(v) > 100) v = 1.f;
            uint8_t b[4];
            convert_from_f32(dt, &v, b, 1);
            float y;
            convert_to_f32(dt, b, &y, 1);
            sum[i] += y;
            abs_sum[i] += std::fabs(y);
          }
        auto round = [&](float x) {
          uint8_t b[4];
          convert_from_f32(dt, &x, b, 1);
          float y;
          convert_to_f32(dt, b, &y, 1);
          return y;
        };
        std::vector<float> ref_res(n), ref_out(n);
        for (int t = 0; t < rows; ++t) {
          double ss = 0;
          for (int j = 0; j < hidden; ++j) {
            size_t i = static_cast<size_t>(t) * hidden + j;
            ref_res[i] = round(round(static_cast<float>(sum[i])) + rres[i]);
            ss += static_cast<double>(ref_res[i]) * ref_res[i];
          }
          const double inv = 1.0 / std::sqrt(ss / hidden + 1e-5);
          for (int j = 0; j < hidden; ++j) {
            size_t i = static_cast<size_t>(t) * hidden + j;
            ref_out[i] = round(round(static_cast<float>(ref_res[i] * inv)) * rw[j]);  // HF order
          }
        }
        for (AllReduceAlgo algo : {AllReduceAlgo::kOneShot, AllReduceAlgo::kTwoShot}) {
          // Was a plain cudaMemcpy: from pageable memory on the legacy stream it may
          // return with its last DMA chunk still in flight, and c.stream
          // (non-blocking) does not wait for it, so the kernel could read the
          // previous call's residual (res + s) at the end of the buffer. At W = 4
          // that showed as two-shot rows 128 × 4096 bf16, rank 3, out[491520]
          // (row 120 = the buffer's last 64 KB) 0.0437 vs 0.0522 with that
          // element's residual right: the row's norm had other stale columns.
          CUDA_CHILD(rank, upload(d_res, bres.data(), n * es, c.stream));
          // out_residual aliases residual (in place), as the engine runs it.
          CHILD_OK(rank, (*ar)->all_reduce_add_rmsnorm(d_in, d_res, d_w, 1e-5f, d_res, d_out, rows, hidden, c.stream,
                                                       algo));
          CHILD_OK(rank, (*ar)->check(c.stream));
          std::vector<uint8_t> o(n * es), orr(n * es);
          CUDA_CHILD(rank, cudaMemcpy(o.data(), d_out, n * es, cudaMemcpyDeviceToHost));
          CUDA_CHILD(rank, cudaMemcpy(orr.data(), d_res, n * es, cudaMemcpyDeviceToHost));
          std::vector<float> fo(n), fr(n);
          convert_to_f32(dt, o.data(), fo.data(), n);
          convert_to_f32(dt, orr.data(), fr.data(), n);
          const Tol tol = tolerance(dt);
          const std::string what = fmt::format("{} fused {} rows {} hidden {} ({})", allreduce_algo_name(algo),
                                               dtype_name(dt), rows, hidden,
                                               var.name);
          // The whole residual first, then out: a wrong sum shows as a residual
          // mismatch (with how many elements and rows), not only through the
          // norm of its row.
          int64_t bad = 0, first_bad = -1, bad_rows = 0, last_row = -1;
          for (size_t i = 0; i < n; ++i)
            if (!(std::fabs(fr[i] - ref_res[i]) <=
                  1e-6 * kWorld + tol.rtol * std::fabs(ref_res[i]) + accumulation_bound(abs_sum[i]))) {
              if (first_bad < 0) first_bad = static_cast<int64_t>(i);
              ++bad;
              if (static_cast<int64_t>(i / hidden) != last_row) ++bad_rows, last_row = static_cast<int64_t>(i / hidden);
            }
          CHILD_CHECK(rank, bad == 0,
                      fmt::format("{}: residual[{}] {} vs {} ({} elements in {} rows wrong)", what, first_bad,
                                  first_bad >= 0 ? fr[first_bad] : 0.f, first_bad >= 0 ? ref_res[first_bad] : 0.f, bad,
                                  bad_rows));
          for (size_t i = 0; i < n; ++i) {
            // The norm's f32 sum/rsqrt vs float64 may flip the rounding of
            // T(r · inv) by an ulp, then × w rounds again: 3 × the dtype's rtol.
            CHILD_CHECK(rank, std::fabs(fo[i] - ref_out[i]) <= 1e-5 + 3 * tol.rtol * std::fabs(ref_out[i]),
                        fmt::format("{}: out[{}] {} vs {}", what, i, fo[i], ref_out[i]));
          }
        }
        for (void* p : {d_in, d_res, d_w, d_ores, d_out}) cudaFree(p);
      }
    }
  }
  return 0;
}

int timeout_child(int rank) {
  CUDA_CHILD(rank, cudaSetDevice(rank));
  auto rv = child_rendezvous(rank, kWorld);
  CHILD_OK(rank, rv.status());
  LamportOptions lo;
  lo.timeout_s = 2;
  auto ar = LamportAllReduce::create(group_of(rv->get(), rank, "timeout"), DType::kBF16, rank, lo, nullptr);
  CHILD_OK(rank, ar.status());
  if (rank == 1) {
    // Never joins: waits (bounded) until rank 0 has seen its timeout.
    CHILD_OK(rank, (*rv)->get("timeout/done", 60).status());
    return 0;
  }
  void* d = nullptr;
  CUDA_CHILD(rank, cudaMalloc(&d, 8192 * 2));
  CUDA_CHILD(rank, cudaMemset(d, 0, 8192 * 2));
  cudaStream_t s;
  CUDA_CHILD(rank, cudaStreamCreate(&s));
  const auto t0 = std::chrono::steady_clock::now();
  CHILD_OK(rank, (*ar)->all_reduce(d, d, 8192, s, AllReduceAlgo::kOneShot));
  Status st = (*ar)->check(s);
  const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::fprintf(stderr, "[rank 0] peer never joined: %s after %.2f s\n", st.to_string().c_str(), dt);
  CHILD_CHECK(rank, st.code() == ErrorCode::kTimeout, st.to_string());
  CHILD_CHECK(rank, st.message().find("waiting for rank 1") != std::string::npos, st.message());
  CHILD_CHECK(rank, st.message().find("one-shot") != std::string::npos, st.message());
  CHILD_CHECK(rank, dt < 2 + 10, fmt::format("timeout reported after {:.1f} s (bound 2 s)", dt));
  // Poisoned afterwards: a later call fails at once instead of reading stale state.
  CHILD_CHECK(rank, !(*ar)->all_reduce(d, d, 8192, s, AllReduceAlgo::kOneShot).ok(), "poisoned instance accepted a call");
  CHILD_OK(rank, (*rv)->set("timeout/done", "1"));
  return 0;
}

void run_two(int (*fn)(int), double timeout_s) {
  MultiProc mp(kWorld);
  mp.start([fn](int rank) { return fn(rank); });
  mp.expect_exit(timeout_s);
}

TEST(LamportAllReduce, MatchesFloat64SumAndNcclAllSizesAllDtypes) {
  SKIP_WITHOUT_TWO_GPUS();
  run_two(sweep_child, 600);
}
TEST(LamportAllReduce, InsideCudaGraphs) {
  SKIP_WITHOUT_TWO_GPUS();
  run_two(graph_child, 180);
}
TEST(LamportAllReduce, TenThousandBackToBackCallsAlternatingSizes) {
  SKIP_WITHOUT_TWO_GPUS();
  run_two(back_to_back_child, 300);
}
TEST(LamportAllReduce, FusedResidualRmsNormMatchesReference) {
  SKIP_WITHOUT_TWO_GPUS();
  run_two(fused_child, 300);
}
TEST(LamportAllReduce, PeerThatNeverJoinsIsATimeoutNotAHang) {
  SKIP_WITHOUT_TWO_GPUS();
  run_two(timeout_child, 120);
}

}  // namespace
}  // namespace shardlm::testing
