// Rendezvous: the key-value store with real processes over loopback, bounded
// waits, HMAC rejection, and liveness (kill -9, SIGSTOP, clean leave).
#include "comm/rendezvous.h"

#include <netinet/in.h>
#include <sys/socket.h>

#include <gtest/gtest.h>

#include "comm/hmac.h"
#include "comm/rendezvous_wire.h"
#include "multiproc.h"

namespace shardlm {
namespace {

using namespace shardlm::testing;

std::unique_ptr<Rendezvous> must(Expected<std::unique_ptr<Rendezvous>> rv) {
  EXPECT_TRUE(rv.ok()) << rv.status().to_string();
  return rv.ok() ? std::move(rv).value() : nullptr;
}

TEST(Rendezvous, SetGetWaitAddWithFourRanks) {
  constexpr int kWorld = 4;
  MultiProc mp(kWorld);
  mp.start([](int rank) {
    auto rvx = child_rendezvous(rank, kWorld);
    CHILD_OK(rank, rvx.status());
    auto& rv = **rvx;
    CHILD_OK(rank, rv.set(fmt::format("k/{}", rank), fmt::format("value of {}", rank)));
    std::vector<std::string> keys;
    for (int r = 0; r < kWorld; ++r) keys.push_back(fmt::format("k/{}", r));
    CHILD_OK(rank, rv.wait(keys, 20));
    for (int r = 0; r < kWorld; ++r) {
      auto v = rv.get(fmt::format("k/{}", r), 5);
      CHILD_OK(rank, v.status());
      CHILD_CHECK(rank, *v == fmt::format("value of {}", r), *v);
    }
    // Binary values survive.
    if (rank == 1) CHILD_OK(rank, rv.set("bin", std::string("a\0b\xff", 4)));
    // A get that waits for a key set later by another rank.
    if (rank == 2) {
      auto late = rv.get("late", 20);
      CHILD_OK(rank, late.status());
      CHILD_CHECK(rank, *late == "finally", *late);
    }
    if (rank == 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(300));
      CHILD_OK(rank, rv.set("late", "finally"));
    }
    auto n = rv.add("counter", 10 + rank);
    CHILD_OK(rank, n.status());
    CHILD_OK(rank, rv.barrier("after-add", 20));
    auto total = rv.add("counter", 0);
    CHILD_OK(rank, total.status());
    CHILD_CHECK(rank, *total == 10 + 11 + 12 + 13, std::to_string(*total));
    auto as_string = rv.get("counter", 5);
    CHILD_CHECK(rank, as_string.ok() && *as_string == "46", "counter readable with get");
    auto bin = rv.get("bin", 10);
    CHILD_CHECK(rank, bin.ok() && *bin == std::string("a\0b\xff", 4), "binary value");
    auto has = rv.check({"k/0", "k/3"});
    CHILD_CHECK(rank, has.ok() && *has, "check present");
    auto hasnt = rv.check({"k/0", "nope"});
    CHILD_CHECK(rank, hasnt.ok() && !*hasnt, "check absent");
    // Barriers are reusable.
    for (int i = 0; i < 3; ++i) CHILD_OK(rank, rv.barrier("loop", 20));
    if (rank == 3) CHILD_OK(rank, rv.del("k/3"));
    CHILD_OK(rank, rv.barrier("after-del", 20));
    auto gone = rv.check({"k/3"});
    CHILD_CHECK(rank, gone.ok() && !*gone, "deleted");
    CHILD_CHECK(rank, rv.dead_ranks().empty(), "no deaths");
    CHILD_OK(rank, rv.barrier("end", 20));
    return 0;
  });
  mp.expect_exit(60);
}

TEST(Rendezvous, GetOfMissingKeyTimesOutNamingKeyAndMaster) {
  auto rv = must(Rendezvous::create(test_options(0, 1)));
  ASSERT_TRUE(rv);
  double t0 = now_seconds();
  auto v = rv->get("no/such/key", 0.5);
  double dt = now_seconds() - t0;
  ASSERT_FALSE(v.ok());
  EXPECT_EQ(v.status().code(), ErrorCode::kTimeout);
  EXPECT_NE(v.status().message().find("no/such/key"), std::string::npos) << v.status().message();
  EXPECT_NE(v.status().message().find(fmt::format("127.0.0.1:{}", rv->port())), std::string::npos)
      << v.status().message();
  EXPECT_GE(dt, 0.45);
  EXPECT_LT(dt, 3.0);

  Status w = rv->wait({"present", "absent"}, 0.3);
  EXPECT_EQ(w.code(), ErrorCode::kTimeout);
  EXPECT_NE(w.message().find("present"), std::string::npos);
  ASSERT_TRUE(rv->set("present", "1").ok());
  w = rv->wait({"present", "absent"}, 0.3);
  EXPECT_NE(w.message().find("key 'absent' not set"), std::string::npos) << w.message();
  EXPECT_EQ(rv->barrier("solo", 1).code(), ErrorCode::kOk);
}

TEST(Rendezvous, ConcurrentCallsShareOneConnection) {
  auto rv = must(Rendezvous::create(test_options(0, 1)));
  ASSERT_TRUE(rv);
  // A thread blocked in get() must not block a set() from another thread.
  Expected<std::string> got = Status(ErrorCode::kInternal, "not run");
  std::thread waiter([&] { got = rv->get("handoff", 10); });
  std::vector<std::thread> adders;
  for (int t = 0; t < 4; ++t)
    adders.emplace_back([&] {
      for (int i = 0; i < 50; ++i) ASSERT_TRUE(rv->add("n", 1, 5).ok());
    });
  for (auto& t : adders) t.join();
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  ASSERT_TRUE(rv->set("handoff", "here", 5).ok());
  waiter.join();
  ASSERT_TRUE(got.ok()) << got.status().to_string();
  EXPECT_EQ(*got, "here");
  EXPECT_EQ(*rv->add("n", 0), 200);
}

TEST(Rendezvous, BarrierTimeoutSaysHowManyArrived) {
  auto rv = must(Rendezvous::create(test_options(0, 3)));
  ASSERT_TRUE(rv);
  Status st = rv->barrier("lonely", 0.5);
  EXPECT_EQ(st.code(), ErrorCode::kTimeout);
  EXPECT_NE(st.message().find("barrier 'lonely' timed out after 0.5 s: 1 of 3 ranks arrived"), std::string::npos)
      << st.message();
}

TEST(Rendezvous, BadHmacIsRejectedAndNotApplied) {
  RendezvousOptions o = test_options(0, 2);
  auto rv0 = must(Rendezvous::create(o));
  ASSERT_TRUE(rv0);

  // A raw client with the wrong key tries to set a key: rejected, not applied.
  int fd = *rdzv::tcp_connect("127.0.0.1", rv0->port(), Deadline(5));
  std::string body = rdzv::Writer(rdzv::Msg::kSet, 1).str("evil").str("x").body();
  ASSERT_TRUE(rdzv::write_all(fd, rdzv::seal("wrong-key", body), Deadline(5)).ok());
  std::string in;
  Deadline d(5);
  while (!d.expired()) {
    auto n = rdzv::read_some(fd, in, 100);
    if (!n.ok()) break;  // the server closes after its reject
  }
  close(fd);
  EXPECT_GE(in.size(), 4u + kMacSize) << "the server answers with a reject frame";
  std::string reply;
  EXPECT_EQ(rdzv::take_frame(in, "wrong-key", &reply), rdzv::Take::kBadMac);  // signed with the real key
  auto has = rv0->check({"evil"});
  ASSERT_TRUE(has.ok());
  EXPECT_FALSE(*has);
  EXPECT_EQ(rv0->rejected_messages(), 1);

  // A real client with the wrong key: a clear job-key error.
  RendezvousOptions bad = test_options(1, 2);
  bad.master_port = rv0->port();
  bad.job_key = "not-the-job-key";
  auto rv1 = Rendezvous::create(bad);
  ASSERT_FALSE(rv1.ok());
  EXPECT_NE(rv1.status().message().find("job key"), std::string::npos) << rv1.status().message();
  EXPECT_EQ(rv0->rejected_messages(), 2);
  EXPECT_TRUE(rv0->dead_ranks().empty()) << "a rejected stranger is not a dead rank";
}

TEST(Rendezvous, HelloChecksWorldAndDuplicateRanks) {
  auto rv0 = must(Rendezvous::create(test_options(0, 3)));
  ASSERT_TRUE(rv0);
  RendezvousOptions o = test_options(1, 2);
  o.master_port = rv0->port();
  auto wrong_world = Rendezvous::create(o);
  ASSERT_FALSE(wrong_world.ok());
  EXPECT_NE(wrong_world.status().message().find("world size mismatch"), std::string::npos)
      << wrong_world.status().message();

  o.world = 3;
  auto first = must(Rendezvous::create(o));
  auto second = Rendezvous::create(o);
  ASSERT_FALSE(second.ok());
  EXPECT_NE(second.status().message().find("already connected"), std::string::npos) << second.status().message();
}

TEST(Rendezvous, ClientRetriesUntilRankZeroStarts) {
  // Find a port for this test only (the product never does this: rank 0 binds
  // MASTER_PORT itself and others only connect).
  int s = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(s, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  socklen_t sl = sizeof(a);
  getsockname(s, reinterpret_cast<sockaddr*>(&a), &sl);
  int port = ntohs(a.sin_port);
  close(s);

  RendezvousOptions o1 = test_options(1, 2);
  o1.master_port = port;
  o1.connect_timeout_s = 20;
  Expected<std::unique_ptr<Rendezvous>> rv1 = Status(ErrorCode::kInternal, "not run");
  std::thread t([&] { rv1 = Rendezvous::create(o1); });
  std::this_thread::sleep_for(std::chrono::milliseconds(700));
  RendezvousOptions o0 = test_options(0, 2);
  o0.master_port = port;
  auto rv0 = must(Rendezvous::create(o0));
  t.join();
  ASSERT_TRUE(rv1.ok()) << rv1.status().to_string();
  ASSERT_TRUE((*rv1)->set("x", "y").ok());
  EXPECT_EQ(*rv0->get("x", 5), "y");
}

TEST(Rendezvous, UnreachableMasterIsABoundedError) {
  RendezvousOptions o = test_options(1, 2);
  o.master_port = 1;  // nothing listens there
  o.connect_timeout_s = 1.0;
  double t0 = now_seconds();
  auto rv = Rendezvous::create(o);
  ASSERT_FALSE(rv.ok());
  EXPECT_LT(now_seconds() - t0, 5.0);
  EXPECT_NE(rv.status().message().find("MASTER_ADDR"), std::string::npos) << rv.status().message();
}

// kill -9 of a worker: every other rank learns "rank 3" within 10 s and a
// pending blocking get fails at once instead of waiting out its timeout.
TEST(Rendezvous, KilledWorkerIsNoticedByEveryRank) {
  constexpr int kWorld = 4, kVictim = 3;
  MultiProc mp(kWorld);
  Shared* sh = mp.shared();
  mp.start([sh](int rank) {
    auto rvx = child_rendezvous(rank, kWorld);
    CHILD_OK(rank, rvx.status());
    auto& rv = **rvx;
    rv.on_peer_lost([sh, rank](const PeerLoss& l) {
      if (sh->seen_ns[rank].load() == 0) {
        sh->seen_rank[rank] = l.rank;
        sh->seen_ns[rank] = mono_ns();
      }
    });
    CHILD_OK(rank, rv.barrier("up", 20));
    sh->ready.fetch_add(1);
    if (rank == kVictim) {
      while (true) pause();
    }
    auto never = rv.get("never", 60);  // rank 1 blocks here when the victim dies
    CHILD_CHECK(rank, !never.ok() && never.status().code() == ErrorCode::kAborted, never.status().to_string());
    CHILD_CHECK(rank, never.status().message().find("rank 3") != std::string::npos, never.status().message());
    Deadline d(15);
    while (sh->seen_ns[rank].load() == 0 && !d.expired()) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    CHILD_CHECK(rank, sh->seen_ns[rank].load() != 0, "no loss reported");
    CHILD_CHECK(rank, sh->seen_rank[rank].load() == kVictim, std::to_string(sh->seen_rank[rank].load()));
    double after = (sh->seen_ns[rank].load() - sh->mark_ns.load()) / 1e9;
    CHILD_CHECK(rank, after < 10.0, fmt::format("noticed {:.2f} s after the kill", after));
    CHILD_CHECK(rank, rv.dead_ranks() == std::vector<int>{kVictim}, "dead_ranks");
    CHILD_CHECK(rank, !rv.health().ok() && rv.health().message().find("rank 3") != std::string::npos,
                rv.health().to_string());
    // Non-blocking calls still work (rank 0 is alive).
    CHILD_OK(rank, rv.set(fmt::format("still/{}", rank), "ok"));
    return 0;
  });
  Deadline d(30);
  while (sh->ready.load() < kWorld && !d.expired()) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  ASSERT_EQ(sh->ready.load(), kWorld);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // let the others block in get()
  sh->mark_ns = mono_ns();
  kill(mp.pid(kVictim), SIGKILL);
  mp.expect_exit(30, {0, 0, 0, 128 + SIGKILL});
  for (int r = 0; r < kVictim; ++r)
    if (sh->seen_ns[r].load()) {
      EXPECT_LT((sh->seen_ns[r].load() - sh->mark_ns.load()) / 1e9, 10.0) << r;
    }
}

// kill -9 of rank 0: the workers notice the rendezvous is gone (rank 0).
TEST(Rendezvous, KilledRankZeroIsNoticedByWorkers) {
  constexpr int kWorld = 3;
  MultiProc mp(kWorld);
  Shared* sh = mp.shared();
  mp.start([sh](int rank) {
    auto rvx = child_rendezvous(rank, kWorld);
    CHILD_OK(rank, rvx.status());
    auto& rv = **rvx;
    CHILD_OK(rank, rv.barrier("up", 20));
    sh->ready.fetch_add(1);
    if (rank == 0) {
      while (true) pause();
    }
    auto never = rv.get("never", 60);
    CHILD_CHECK(rank, !never.ok() && never.status().code() == ErrorCode::kAborted, never.status().to_string());
    double after = (mono_ns() - sh->mark_ns.load()) / 1e9;
    CHILD_CHECK(rank, after < 10.0, fmt::format("noticed {:.2f} s after the kill", after));
    auto losses = rv.losses();
    CHILD_CHECK(rank, losses.size() == 1 && losses[0].rank == 0 && !losses[0].clean, "loss of rank 0");
    CHILD_CHECK(rank, rv.dead_ranks() == std::vector<int>{0}, "dead_ranks");
    CHILD_CHECK(rank, !rv.set("x", "y").ok(), "calls fail once rank 0 is gone");
    return 0;
  });
  Deadline d(30);
  while (sh->ready.load() < kWorld && !d.expired()) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  ASSERT_EQ(sh->ready.load(), kWorld);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  sh->mark_ns = mono_ns();
  kill(mp.pid(0), SIGKILL);
  mp.expect_exit(30, {128 + SIGKILL, 0, 0});
}

// A hung rank (SIGSTOP: its socket stays open, no FIN) is declared dead by the
// heartbeat timeout; a hung rank 0 is noticed by the workers the same way.
TEST(Rendezvous, HungRanksAreNoticedByHeartbeatTimeout) {
  for (int victim : {2, 0}) {
    SCOPED_TRACE(victim);
    constexpr int kWorld = 3;
    MultiProc mp(kWorld);
    Shared* sh = mp.shared();
    mp.start([sh, victim](int rank) {
      RendezvousOptions o = test_options(rank, kWorld);
      o.heartbeat_interval_s = 0.2;
      o.heartbeat_timeout_s = 1.5;
      auto rvx = child_rendezvous(rank, kWorld, o);
      CHILD_OK(rank, rvx.status());
      auto& rv = **rvx;
      CHILD_OK(rank, rv.barrier("up", 20));
      sh->ready.fetch_add(1);
      if (rank == victim) {
        while (true) pause();
      }
      Deadline d(15);
      while (rv.dead_ranks().empty() && !d.expired()) std::this_thread::sleep_for(std::chrono::milliseconds(10));
      double after = (mono_ns() - sh->mark_ns.load()) / 1e9;
      CHILD_CHECK(rank, rv.dead_ranks() == std::vector<int>{victim}, rv.health().to_string());
      CHILD_CHECK(rank, after < 10.0, fmt::format("noticed {:.2f} s after SIGSTOP", after));
      CHILD_CHECK(rank, after > 1.0, fmt::format("noticed {:.2f} s after SIGSTOP: before the timeout?", after));
      return 0;
    });
    Deadline d(30);
    while (sh->ready.load() < kWorld && !d.expired()) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    ASSERT_EQ(sh->ready.load(), kWorld);
    sh->mark_ns = mono_ns();
    kill(mp.pid(victim), SIGSTOP);
    auto codes = mp.wait_all(30, {victim});  // the stopped victim is SIGKILLed when the others are done
    for (int r = 0; r < kWorld; ++r)
      if (r != victim) {
        EXPECT_EQ(codes[r], 0) << "rank " << r << ": " << sh->error[r];
      }
  }
}

// A worker that exits cleanly is not a death; rank 0 closing is a clean loss.
TEST(Rendezvous, CleanExitsAreNotDeaths) {
  constexpr int kWorld = 3;
  MultiProc mp(kWorld);
  Shared* sh = mp.shared();
  mp.start([sh](int rank) {
    auto rvx = child_rendezvous(rank, kWorld);
    CHILD_OK(rank, rvx.status());
    auto rv = std::move(rvx).value();
    CHILD_OK(rank, rv->barrier("up", 20));
    if (rank == 2) {
      rv.reset();  // goodbye
      return 0;
    }
    if (rank == 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1500));
      CHILD_CHECK(rank, rv->dead_ranks().empty(), rv->health().to_string());
      CHILD_OK(rank, rv->set("rank0-closing", "1"));
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
      rv.reset();  // closes the rendezvous for everyone
      return 0;
    }
    CHILD_OK(rank, rv->wait({"rank0-closing"}, 20));
    Deadline d(10);
    while (rv->losses().empty() && !d.expired()) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    auto losses = rv->losses();
    CHILD_CHECK(rank, losses.size() == 1 && losses[0].rank == 0 && losses[0].clean,
                losses.empty() ? "none" : losses[0].reason);
    CHILD_CHECK(rank, rv->dead_ranks().empty(), "clean");
    return 0;
  });
  mp.expect_exit(40);
}

}  // namespace
}  // namespace shardlm
