// Gloo communicator: every collective with 2, 3 and 4 real processes over
// loopback, subgroups (TP/PP-shaped), and bounded failure (a peer that never
// joins, a peer that dies).
#include "comm/gloo_communicator.h"

#include <gtest/gtest.h>

#include <cmath>
#include <numeric>

#include "multiproc.h"
#include "tensor/dtype.h"

namespace shardlm {
namespace {

using namespace shardlm::testing;

std::vector<int> iota_ranks(int n) {
  std::vector<int> r(n);
  std::iota(r.begin(), r.end(), 0);
  return r;
}

// All collectives on the world group; returns 0 on success.
int run_all_collectives(int rank, int world) {
  auto rvx = child_rendezvous(rank, world);
  CHILD_OK(rank, rvx.status());
  auto& rv = **rvx;
  auto cx = make_gloo_communicator(rv, "world", iota_ranks(world), rank, 20);
  CHILD_OK(rank, cx.status());
  auto& c = **cx;
  CHILD_CHECK(rank, c.rank() == rank && c.size() == world, "rank/size");

  // all_reduce f32 (odd length, not a multiple of the world)
  const size_t n = 1003;
  std::vector<float> f(n);
  for (size_t i = 0; i < n; ++i) f[i] = static_cast<float>(rank + 1) * 0.5f + static_cast<float>(i);
  CHILD_OK(rank, c.all_reduce_sum(f.data(), n, DType::kF32));
  float rank_sum = 0.5f * world * (world + 1) / 2.0f;
  for (size_t i = 0; i < n; ++i)
    CHILD_CHECK(rank, std::fabs(f[i] - (rank_sum + world * static_cast<float>(i))) < 1e-3f, fmt::format("f32[{}]={}", i, f[i]));

  // i32
  std::vector<int32_t> ints = {rank, -rank, 1000 * rank + 7};
  CHILD_OK(rank, c.all_reduce_sum(ints.data(), ints.size(), DType::kI32));
  int tri = world * (world - 1) / 2;
  CHILD_CHECK(rank, ints[0] == tri && ints[1] == -tri && ints[2] == 1000 * tri + 7 * world, "i32");

  // bf16 and f16 go through f32
  for (DType dt : {DType::kBF16, DType::kF16}) {
    std::vector<float> src = {1.0f * (rank + 1), -2.0f, 0.25f};
    std::vector<uint16_t> h(src.size());
    convert_from_f32(dt, src.data(), h.data(), h.size());
    CHILD_OK(rank, c.all_reduce_sum(h.data(), h.size(), dt));
    std::vector<float> back(h.size());
    convert_to_f32(dt, h.data(), back.data(), h.size());
    CHILD_CHECK(rank, back[0] == world * (world + 1) / 2.0f && back[1] == -2.0f * world && back[2] == 0.25f * world,
                dtype_name(dt));
  }

  // min / max (the warmup agreement)
  auto* g = dynamic_cast<GlooCommunicator*>(&c);
  CHILD_CHECK(rank, g != nullptr, "GlooCommunicator");
  int32_t free_blocks = 100 - rank;
  CHILD_OK(rank, g->all_reduce(&free_blocks, 1, DType::kI32, ReduceOp::kMin));
  CHILD_CHECK(rank, free_blocks == 100 - (world - 1), std::to_string(free_blocks));
  float mx = static_cast<float>(rank);
  CHILD_OK(rank, g->all_reduce(&mx, 1, DType::kF32, ReduceOp::kMax));
  CHILD_CHECK(rank, mx == world - 1.0f, "max");

  // all_gather
  std::vector<int32_t> mine = {rank, rank * 10};
  std::vector<int32_t> all(2 * world, -1);
  CHILD_OK(rank, c.all_gather(mine.data(), all.data(), 2, DType::kI32));
  for (int r = 0; r < world; ++r) CHILD_CHECK(rank, all[2 * r] == r && all[2 * r + 1] == r * 10, "all_gather");

  // broadcast from every root
  for (int root = 0; root < world; ++root) {
    std::string buf = rank == root ? fmt::format("hello from {}", root) : std::string(12, '?');
    buf.resize(12);
    CHILD_OK(rank, c.broadcast(buf.data(), buf.size(), root));
    CHILD_CHECK(rank, buf == fmt::format("hello from {}", root).substr(0, 12), buf);
  }

  // send/recv around the ring, two tags in opposite directions
  int next = (rank + 1) % world, prev = (rank + world - 1) % world;
  std::vector<float> out(257, static_cast<float>(rank)), in(257, -1);
  if (rank % 2 == 0) {
    CHILD_OK(rank, c.send(out.data(), out.size() * 4, next, 7));
    CHILD_OK(rank, c.recv(in.data(), in.size() * 4, prev, 7));
  } else {
    CHILD_OK(rank, c.recv(in.data(), in.size() * 4, prev, 7));
    CHILD_OK(rank, c.send(out.data(), out.size() * 4, next, 7));
  }
  CHILD_CHECK(rank, in[0] == prev && in[256] == prev, "ring recv");

  for (int i = 0; i < 3; ++i) CHILD_OK(rank, c.barrier());
  CHILD_CHECK(rank, !c.send(out.data(), 4, rank, 0).ok(), "send to self is refused");
  return 0;
}

class GlooWorld : public ::testing::TestWithParam<int> {};

TEST_P(GlooWorld, AllCollectives) {
  int world = GetParam();
  MultiProc mp(world);
  mp.start([world](int rank) { return run_all_collectives(rank, world); });
  mp.expect_exit(90);
}

INSTANTIATE_TEST_SUITE_P(Ranks, GlooWorld, ::testing::Values(2, 3, 4));

// tp = 2, pp = 2 laid out tp-fastest: TP groups {0,1} {2,3}, PP groups {0,2}
// {1,3}; plus a group of one and a second group over the same ranks.
TEST(Gloo, SubgroupsShapedLikeTpAndPp) {
  constexpr int kWorld = 4, kTp = 2;
  MultiProc mp(kWorld);
  mp.start([](int rank) {
    auto rvx = child_rendezvous(rank, kWorld);
    CHILD_OK(rank, rvx.status());
    auto& rv = **rvx;
    int stage = rank / kTp, tp_rank = rank % kTp;
    std::vector<int> tp_group = {stage * kTp, stage * kTp + 1};
    std::vector<int> pp_group = {tp_rank, kTp + tp_rank};
    auto tp = make_gloo_communicator(rv, fmt::format("tp{}", stage), tp_group, rank, 20);
    CHILD_OK(rank, tp.status());
    auto pp = make_gloo_communicator(rv, fmt::format("pp{}", tp_rank), pp_group, rank, 20);
    CHILD_OK(rank, pp.status());
    auto relay = make_gloo_communicator(rv, fmt::format("pp{}", tp_rank), pp_group, rank, 20);  // same name again
    CHILD_OK(rank, relay.status());
    auto self = make_gloo_communicator(rv, fmt::format("self{}", rank), {rank}, rank, 20);
    CHILD_OK(rank, self.status());

    float x = static_cast<float>(rank);
    CHILD_OK(rank, (*tp)->all_reduce_sum(&x, 1, DType::kF32));
    CHILD_CHECK(rank, x == tp_group[0] + tp_group[1], "tp sum");
    CHILD_CHECK(rank, (*pp)->rank() == stage, "pp rank = stage");

    // Stage 0 sends activations to stage 1 on the PP group; the relay group
    // carries tokens back at the same time.
    std::vector<int32_t> act(64, rank), tok(4, -1);
    if (stage == 0) {
      CHILD_OK(rank, (*pp)->send(act.data(), act.size() * 4, 1, 0));
      CHILD_OK(rank, (*relay)->recv(tok.data(), tok.size() * 4, 1, 0));
      CHILD_CHECK(rank, tok[0] == 100 + pp_group[1], "relay");
    } else {
      std::vector<int32_t> got(64, -1);
      CHILD_OK(rank, (*pp)->recv(got.data(), got.size() * 4, 0, 0));
      CHILD_CHECK(rank, got[0] == pp_group[0] && got[63] == pp_group[0], "activations");
      std::vector<int32_t> t(4, 100 + rank);
      CHILD_OK(rank, (*relay)->send(t.data(), t.size() * 4, 0, 0));
    }
    int32_t y = 5;
    CHILD_OK(rank, (*self)->all_reduce_sum(&y, 1, DType::kI32));
    CHILD_CHECK(rank, y == 5, "group of one is the identity");
    int32_t one = 3, gathered = 0;
    CHILD_OK(rank, (*self)->all_gather(&one, &gathered, 1, DType::kI32));
    CHILD_CHECK(rank, gathered == 3, "group of one gathers itself");
    CHILD_OK(rank, (*tp)->barrier());
    CHILD_OK(rank, (*pp)->barrier());
    return 0;
  });
  mp.expect_exit(90);
}

TEST(Gloo, InvalidGroupsAreRefused) {
  RendezvousOptions o = test_options(0, 2);
  auto rv = Rendezvous::create(o);
  ASSERT_TRUE(rv.ok()) << rv.status().to_string();
  EXPECT_FALSE(make_gloo_communicator(**rv, "g", {}, 0, 5).ok());
  EXPECT_FALSE(make_gloo_communicator(**rv, "g", {0, 0}, 0, 5).ok());
  EXPECT_FALSE(make_gloo_communicator(**rv, "g", {0, 2}, 0, 5).ok());
  EXPECT_FALSE(make_gloo_communicator(**rv, "g", {1}, 0, 5).ok());
}

// A member that never creates the group: creation fails within the timeout.
TEST(Gloo, GroupCreationIsBounded) {
  MultiProc mp(2);
  mp.start([](int rank) {
    auto rvx = child_rendezvous(rank, 2);
    CHILD_OK(rank, rvx.status());
    auto& rv = **rvx;
    if (rank == 0) {
      double t0 = now_seconds();
      auto c = make_gloo_communicator(rv, "lonely", {0, 1}, 0, 1.5);
      double dt = now_seconds() - t0;
      CHILD_CHECK(rank, !c.ok() && c.status().code() == ErrorCode::kTimeout, c.status().to_string());
      CHILD_CHECK(rank, c.status().message().find("lonely") != std::string::npos, c.status().message());
      CHILD_CHECK(rank, dt < 10, fmt::format("took {:.1f} s", dt));
    }
    CHILD_OK(rank, rv.barrier("done", 30));
    return 0;
  });
  mp.expect_exit(60);
}

// A collective that a peer never joins times out (bounded) instead of hanging,
// and poisons the communicator; the late peer fails too instead of hanging.
TEST(Gloo, CollectiveWithAbsentPeerTimesOut) {
  MultiProc mp(2);
  mp.start([](int rank) {
    auto rvx = child_rendezvous(rank, 2);
    CHILD_OK(rank, rvx.status());
    auto& rv = **rvx;
    auto cx = make_gloo_communicator(rv, "world", {0, 1}, rank, 1.5);
    CHILD_OK(rank, cx.status());
    auto& c = **cx;
    float x = 1;
    CHILD_OK(rank, c.all_reduce_sum(&x, 1, DType::kF32));  // works while both are there
    if (rank == 0) {
      double t0 = now_seconds();
      Status st = c.all_reduce_sum(&x, 1, DType::kF32);
      double dt = now_seconds() - t0;
      CHILD_CHECK(rank, st.code() == ErrorCode::kTimeout, st.to_string());
      CHILD_CHECK(rank, st.message().find("group 'world'") != std::string::npos, st.message());
      CHILD_CHECK(rank, dt >= 1.0 && dt < 8.0, fmt::format("took {:.1f} s", dt));
      Status again = c.barrier();
      CHILD_CHECK(rank, !again.ok() && again.message() == st.message(), "poisoned: " + again.to_string());
      CHILD_OK(rank, rv.set("timed-out", "1"));
    } else {
      CHILD_OK(rank, rv.wait({"timed-out"}, 30));
      double t0 = now_seconds();
      Status st = c.all_reduce_sum(&x, 1, DType::kF32);
      CHILD_CHECK(rank, !st.ok(), "the late collective cannot succeed");
      CHILD_CHECK(rank, now_seconds() - t0 < 8.0, "bounded");
    }
    CHILD_OK(rank, rv.barrier("done", 30));
    return 0;
  });
  mp.expect_exit(60);
}

// A peer that dies: the survivors' collective fails (no hang, no SIGPIPE).
TEST(Gloo, DeadPeerFailsTheCollective) {
  MultiProc mp(3);
  mp.start([](int rank) {
    auto rvx = child_rendezvous(rank, 3);
    CHILD_OK(rank, rvx.status());
    auto& rv = **rvx;
    auto cx = make_gloo_communicator(rv, "world", {0, 1, 2}, rank, 5);
    CHILD_OK(rank, cx.status());
    std::vector<float> x(1 << 16, 1.0f);
    CHILD_OK(rank, (*cx)->all_reduce_sum(x.data(), x.size(), DType::kF32));
    CHILD_OK(rank, rv.barrier("connected", 20));
    if (rank == 2) _exit(0);  // vanishes without a goodbye
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    double t0 = now_seconds();
    Status st = (*cx)->all_reduce_sum(x.data(), x.size(), DType::kF32);
    CHILD_CHECK(rank, !st.ok(), "collective with a dead peer must fail");
    CHILD_CHECK(rank, now_seconds() - t0 < 10.0, "bounded");
    return 0;
  });
  mp.expect_exit(60);
}

}  // namespace
}  // namespace shardlm
