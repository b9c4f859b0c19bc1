// Control channels: ordering across real processes, several named channels at
// once, bounded receives, slow-consumer detection, HMAC rejection.
#include "comm/control_channel.h"

#include <gtest/gtest.h>

#include <zmq.hpp>

#include "comm/hmac.h"
#include "multiproc.h"

namespace shardlm {
namespace {

using namespace shardlm::testing;

// Rank 0 broadcasts a numbered stream on "schedule"; each worker checks the
// order, answers on "count", and the workers talk to each other on "relay".
TEST(ControlChannel, OrderedBroadcastAndPointToPoint) {
  constexpr int kWorld = 3, kMessages = 2000;
  MultiProc mp(kWorld);
  mp.start([](int rank) {
    auto rvx = child_rendezvous(rank, kWorld);
    CHILD_OK(rank, rvx.status());
    auto& rv = **rvx;
    auto sched = ControlChannel::open(rv, "schedule");
    CHILD_OK(rank, sched.status());
    auto count = ControlChannel::open(rv, "count");
    CHILD_OK(rank, count.status());
    auto relay = ControlChannel::open(rv, "relay");
    CHILD_OK(rank, relay.status());
    if (rank == 0) {
      for (int i = 0; i < kMessages; ++i) CHILD_OK(rank, (*sched)->broadcast(fmt::format("step {}", i), 10));
      CHILD_OK(rank, (*sched)->broadcast(std::string(1 << 20, 'x'), 10));  // a large one
      for (int w = 1; w < kWorld; ++w) {
        auto m = (*count)->recv(20);
        CHILD_OK(rank, m.status());
        CHILD_CHECK(rank, m->body == fmt::format("rank {} saw {}", m->from, kMessages + 1), m->body);
      }
      // The coordinator can send to its own worker thread too.
      CHILD_OK(rank, (*relay)->send(0, "to myself", 5));
      auto self = (*relay)->recv_from(0, 5);
      CHILD_CHECK(rank, self.ok() && *self == "to myself", "self send");
    } else {
      for (int i = 0; i < kMessages; ++i) {
        auto m = (*sched)->recv_from(0, 20);
        CHILD_OK(rank, m.status());
        CHILD_CHECK(rank, *m == fmt::format("step {}", i), *m);
      }
      auto big = (*sched)->recv(20);
      CHILD_OK(rank, big.status());
      CHILD_CHECK(rank, big->from == 0 && big->seq == kMessages && big->body.size() == (1u << 20), "large message");
      int other = rank == 1 ? 2 : 1;
      for (int i = 0; i < 50; ++i) CHILD_OK(rank, (*relay)->send(other, fmt::format("{}:{}", rank, i), 10));
      for (int i = 0; i < 50; ++i) {
        auto m = (*relay)->recv_from(other, 20);
        CHILD_OK(rank, m.status());
        CHILD_CHECK(rank, *m == fmt::format("{}:{}", other, i), *m);
      }
      CHILD_OK(rank, (*count)->send(0, fmt::format("rank {} saw {}", rank, kMessages + 1), 10));
    }
    CHILD_CHECK(rank, (*sched)->rejected() == 0, "nothing rejected");
    CHILD_OK(rank, rv.barrier("done", 30));
    return 0;
  });
  mp.expect_exit(90);
}

std::unique_ptr<Rendezvous> solo() {
  auto rv = Rendezvous::create(test_options(0, 1));
  EXPECT_TRUE(rv.ok()) << rv.status().to_string();
  return rv.ok() ? std::move(rv).value() : nullptr;
}

TEST(ControlChannel, ReceiveTimesOut) {
  auto rv = solo();
  ASSERT_TRUE(rv);
  auto ch = ControlChannel::open(*rv, "quiet");
  ASSERT_TRUE(ch.ok()) << ch.status().to_string();
  double t0 = now_seconds();
  auto m = (*ch)->recv(0.3);
  EXPECT_EQ(m.status().code(), ErrorCode::kTimeout);
  EXPECT_NE(m.status().message().find("'quiet'"), std::string::npos);
  EXPECT_LT(now_seconds() - t0, 2.0);
  EXPECT_EQ((*ch)->recv_from(0, 0.1).status().code(), ErrorCode::kTimeout);
}

// Forged messages (wrong key, or the right key for another channel, or
// garbage) are dropped and counted; the real message gets through.
TEST(ControlChannel, BadHmacIsDropped) {
  auto rv = solo();
  ASSERT_TRUE(rv);
  auto ch = ControlChannel::open(*rv, "schedule");
  ASSERT_TRUE(ch.ok()) << ch.status().to_string();

  auto forge = [](const std::string& key, const std::string& mac_ctx, const std::string& payload) {
    std::string signed_part;
    for (uint32_t v : {0x534c4331u, 0u}) {
      for (int s = 24; s >= 0; s -= 8) signed_part.push_back(static_cast<char>((v >> s) & 0xff));
    }
    signed_part.append(8, '\0');  // seq 0
    signed_part += payload;
    Mac mac = hmac_sha256(key, mac_ctx, signed_part);
    return std::string(reinterpret_cast<const char*>(mac.data()), mac.size()) + signed_part;
  };
  zmq::context_t ctx(1);
  zmq::socket_t push(ctx, zmq::socket_type::push);
  push.set(zmq::sockopt::linger, 1000);
  push.connect((*ch)->endpoint());
  push.send(zmq::buffer(forge("wrong-key", "shardlm-ctl|schedule#0|", "evil 1")), zmq::send_flags::none);
  push.send(zmq::buffer(forge(kTestKey, "shardlm-ctl|other#0|", "evil 2")), zmq::send_flags::none);
  push.send(zmq::buffer(std::string("short")), zmq::send_flags::none);

  ASSERT_TRUE((*ch)->send(0, "good", 5).ok());
  auto m = (*ch)->recv(5);
  ASSERT_TRUE(m.ok()) << m.status().to_string();
  EXPECT_EQ(m->body, "good");
  EXPECT_EQ(m->from, 0);
  Deadline d(5);
  while ((*ch)->rejected() < 3 && !d.expired()) (void)(*ch)->recv(0.05);
  EXPECT_EQ((*ch)->rejected(), 3);
  EXPECT_EQ((*ch)->recv(0.2).status().code(), ErrorCode::kTimeout) << "nothing forged was delivered";
}

// A consumer that stops reading: the sender gets kTimeout naming it once the
// bounded queues are full, instead of buffering without limit.
TEST(ControlChannel, SlowConsumerIsReported) {
  auto rv = solo();
  ASSERT_TRUE(rv);
  ControlChannelOptions o;
  o.send_hwm = 4;
  auto ch = ControlChannel::open(*rv, "slow", o);
  ASSERT_TRUE(ch.ok()) << ch.status().to_string();
  std::string big(256 << 10, 'b');
  Status st;
  int sent = 0;
  for (; sent < 10000; ++sent) {
    st = (*ch)->send(0, big, 0.3);
    if (!st.ok()) break;
  }
  EXPECT_EQ(st.code(), ErrorCode::kTimeout) << st.to_string();
  EXPECT_NE(st.message().find("rank 0 has not taken messages"), std::string::npos) << st.message();
  EXPECT_LT(sent, 10000);
  // Draining restores the flow, in order.
  for (int i = 0; i < sent; ++i) {
    auto m = (*ch)->recv(5);
    ASSERT_TRUE(m.ok()) << i << ": " << m.status().to_string();
    ASSERT_EQ(m->seq, static_cast<uint64_t>(i));
  }
}

TEST(ControlChannel, SendToUnopenedRankIsBounded) {
  auto rv0 = Rendezvous::create(test_options(0, 2));
  ASSERT_TRUE(rv0.ok());
  auto ch = ControlChannel::open(**rv0, "lonely");
  ASSERT_TRUE(ch.ok());
  double t0 = now_seconds();
  Status st = (*ch)->send(1, "anyone?", 0.5);
  EXPECT_EQ(st.code(), ErrorCode::kTimeout) << st.to_string();
  EXPECT_NE(st.message().find("rank 1 has not opened it"), std::string::npos) << st.message();
  EXPECT_LT(now_seconds() - t0, 10.0);
  EXPECT_FALSE((*ch)->send(5, "x", 0.1).ok());
}

}  // namespace
}  // namespace shardlm
