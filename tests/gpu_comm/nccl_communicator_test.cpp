// NcclCommunicator on 2 GPUs, one forked process each (label gpu; skips with
// the reason without 2 GPUs): every Communicator op against its expected
// values, and a peer that dies mid-job ends the survivor's wait with an error
// (the watchdog sees the rendezvous report the loss and aborts) — no hang.
#include <gtest/gtest.h>

#include <chrono>

#include "comm/nccl_communicator.h"
#include "gpu_comm_util.h"

namespace shardlm::testing {
namespace {

int ops_child(int rank) {
  CUDA_CHILD(rank, cudaSetDevice(rank));
  auto rv = child_rendezvous(rank, kWorld);
  CHILD_OK(rank, rv.status());
  NcclOptions o;
  o.timeout_s = 60;
  auto c = NcclCommunicator::create(group_of(rv->get(), rank), rank, nullptr, o);
  CHILD_OK(rank, c.status());
  auto& nc = **c;
  CHILD_CHECK(rank, nc.rank() == rank && nc.size() == kWorld, "rank/size");
  const size_t n = 1001;
  std::vector<float> h(n), g(kWorld * n);
  for (size_t i = 0; i < n; ++i) h[i] = static_cast<float>(rank * 10000 + i);
  float *d, *dg;
  CUDA_CHILD(rank, cudaMalloc(&d, n * 4));
  CUDA_CHILD(rank, cudaMalloc(&dg, kWorld * n * 4));
  // all-reduce
  CUDA_CHILD(rank, cudaMemcpy(d, h.data(), n * 4, cudaMemcpyHostToDevice));
  CHILD_OK(rank, nc.all_reduce_sum(d, n, DType::kF32));
  CHILD_OK(rank, nc.synchronize());
  CUDA_CHILD(rank, cudaMemcpy(g.data(), d, n * 4, cudaMemcpyDeviceToHost));
  // Σ_r (10000 r + i): exact in f32 for these magnitudes.
  const float base = 10000.f * kWorld * (kWorld - 1) / 2;
  for (size_t i = 0; i < n; ++i)
    CHILD_CHECK(rank, g[i] == base + static_cast<float>(kWorld) * i, fmt::format("all-reduce [{}] {}", i, g[i]));
  // all-gather
  CUDA_CHILD(rank, cudaMemcpy(d, h.data(), n * 4, cudaMemcpyHostToDevice));
  CHILD_OK(rank, nc.all_gather(d, dg, n, DType::kF32));
  CHILD_OK(rank, nc.synchronize());
  CUDA_CHILD(rank, cudaMemcpy(g.data(), dg, kWorld * n * 4, cudaMemcpyDeviceToHost));
  for (int r = 0; r < kWorld; ++r)
    for (size_t i = 0; i < n; ++i)
      CHILD_CHECK(rank, g[r * n + i] == static_cast<float>(r * 10000 + i), fmt::format("all-gather [{}][{}]", r, i));
  // broadcast from rank 1
  CUDA_CHILD(rank, cudaMemcpy(d, h.data(), n * 4, cudaMemcpyHostToDevice));
  CHILD_OK(rank, nc.broadcast(d, n * 4, 1));
  CHILD_OK(rank, nc.synchronize());
  CUDA_CHILD(rank, cudaMemcpy(g.data(), d, n * 4, cudaMemcpyDeviceToHost));
  for (size_t i = 0; i < n; ++i) CHILD_CHECK(rank, g[i] == 10000.f + i, fmt::format("broadcast [{}]", i));
  // send 0 → 1
  CUDA_CHILD(rank, cudaMemcpy(d, h.data(), n * 4, cudaMemcpyHostToDevice));
  if (rank == 0) CHILD_OK(rank, nc.send(d, n * 4, 1, 7));
  if (rank == 1) CHILD_OK(rank, nc.recv(d, n * 4, 0, 7));  // other ranks take no part
  CHILD_OK(rank, nc.synchronize());
  CUDA_CHILD(rank, cudaMemcpy(g.data(), d, n * 4, cudaMemcpyDeviceToHost));
  if (rank <= 1)
    for (size_t i = 0; i < n; ++i) CHILD_CHECK(rank, g[i] == static_cast<float>(i), fmt::format("send/recv [{}]", i));
  CHILD_OK(rank, nc.barrier());
  return 0;
}

int dead_peer_child(int rank) {
  CUDA_CHILD(rank, cudaSetDevice(rank));
  auto rv = child_rendezvous(rank, kWorld);
  CHILD_OK(rank, rv.status());
  NcclOptions o;
  o.timeout_s = 60;  // the watchdog must end it much sooner
  auto c = NcclCommunicator::create(group_of(rv->get(), rank), rank, nullptr, o);
  CHILD_OK(rank, c.status());
  if (rank == 1) _exit(3);  // dies without a goodbye (as kill -9 would)
  float* d;
  CUDA_CHILD(rank, cudaMalloc(&d, 1 << 20));
  const auto t0 = std::chrono::steady_clock::now();
  Status st = (*c)->all_reduce_sum(d, 1 << 18, DType::kF32);
  if (st.ok()) st = (*c)->synchronize();
  const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::fprintf(stderr, "[rank 0] dead peer: %s after %.2f s\n", st.to_string().c_str(), dt);
  CHILD_CHECK(rank, !st.ok(), "an all-reduce with a dead peer succeeded");
  CHILD_CHECK(rank, dt < 30, fmt::format("took {:.1f} s", dt));
  return 0;
}

TEST(NcclCommunicator, EveryOpOnTwoGpus) {
  SKIP_WITHOUT_TWO_GPUS();
  MultiProc mp(kWorld);
  mp.start(ops_child);
  mp.expect_exit(180);
}

TEST(NcclCommunicator, DeadPeerEndsTheWaitInsteadOfHanging) {
  SKIP_WITHOUT_TWO_GPUS();
  MultiProc mp(kWorld);
  mp.start(dead_peer_child);
  mp.expect_exit(120, {0, 3});
}

}  // namespace
}  // namespace shardlm::testing
