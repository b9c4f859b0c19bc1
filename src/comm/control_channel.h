// Control plane (DESIGN §1, §3.2): named ZeroMQ channels between ranks, one per
// flow (schedule, sampled-token relay, executed count, termination), each with
// its own sockets so each can live on its own thread.
//
// Per channel, every rank that opens it binds one PULL socket on
// tcp://<rv.local_address()>:0, reads back the real endpoint
// (ZMQ_LAST_ENDPOINT) and publishes it at "ctl/<name>#<generation>/<rank>"
// through the rendezvous. A sender connects one PUSH socket per peer on first
// use (looking the endpoint up, bounded by the send timeout). The generation
// counts opens of that name on this rank (Rendezvous::next_sequence), so ranks
// must open same-named channels in the same order (opening is not collective:
// only the ranks that use a channel open it).
//
//   - Order: messages from one sender to one receiver arrive in send order
//     (one TCP pipe per pair). Each message carries (sender, sequence number);
//     a gap — a message lost to a reconnect — poisons the channel with an error
//     naming the sender instead of letting ranks diverge silently.
//   - Slow consumers: a PUSH queue holds at most send_hwm messages and only to a
//     connected peer (ZMQ_IMMEDIATE); send() waits at most its timeout for room
//     and then returns kTimeout naming the rank that is not taking messages.
//   - Integrity: every message is [HMAC-SHA256 (32 bytes)][body], the MAC
//     covering the channel name and the body with the job key; a message with a
//     bad MAC (or malformed) is dropped, logged, and counted in rejected().
//   - Every receive has a timeout. Liveness of peers is the rendezvous' job
//     (Rendezvous::on_peer_lost); a channel only reports what it sees.
// Thread-safety: send/broadcast and recv/recv_from may be called from two
// different threads (separate locks); one thread per direction is the intent.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "base/status.h"
#include "comm/rendezvous.h"

namespace zmq {
class context_t;
class socket_t;
}  // namespace zmq

namespace shardlm {

struct ControlMessage {
  int from = -1;
  uint64_t seq = 0;  // per (sender → this rank), from 0
  std::string body;
};

struct ControlChannelOptions {
  int send_hwm = 1000;  // messages queued per peer (each side) before send() waits
  double linger_s = 2.0;         // on close, unsent messages get this long to flush
  int64_t max_message_bytes = 256ll << 20;
};

class ControlChannel {
 public:
  // Binds and publishes this rank's endpoint; never waits for peers.
  static Expected<std::unique_ptr<ControlChannel>> open(Rendezvous& rv, const std::string& name,
                                                        const ControlChannelOptions& opts = {});
  ~ControlChannel();
  ControlChannel(const ControlChannel&) = delete;
  ControlChannel& operator=(const ControlChannel&) = delete;

  // To one rank (itself included). Waits at most timeout_s for the peer's
  // endpoint and for queue room.
  Status send(int peer, std::string_view body, double timeout_s);
  // To every other rank of the world, in rank order (each sees the same order
  // of broadcasts from one sender).
  Status broadcast(std::string_view body, double timeout_s);
  // The next message from any peer (arrival order).
  Expected<ControlMessage> recv(double timeout_s);
  // The next message from `peer`; messages from others stay queued for later.
  Expected<std::string> recv_from(int peer, double timeout_s);

  const std::string& name() const { return name_; }
  const std::string& endpoint() const { return endpoint_; }
  int rejected() const;

 private:
  ControlChannel() = default;
  Expected<zmq::socket_t*> push_for(int peer, double timeout_s);
  // Moves what the PULL socket has into inbox_, waiting up to timeout_ms for
  // the first message. Requires recv_mu_.
  Status pump(int timeout_ms);
  std::string store_key(int rank) const;

  Rendezvous* rv_ = nullptr;
  std::string name_;
  int gen_ = 0;
  std::string mac_context_;
  std::string endpoint_;
  ControlChannelOptions opts_;
  std::unique_ptr<zmq::context_t> ctx_;  // declared first: destroyed last

  std::mutex send_mu_;
  std::map<int, std::unique_ptr<zmq::socket_t>> push_;
  std::map<int, uint64_t> next_send_seq_;

  mutable std::mutex recv_mu_;
  std::unique_ptr<zmq::socket_t> pull_;
  std::deque<ControlMessage> inbox_;
  std::map<int, uint64_t> next_recv_seq_;
  int rejected_ = 0;
  Status broken_;
};

}  // namespace shardlm
