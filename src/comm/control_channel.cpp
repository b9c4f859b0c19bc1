#include "comm/control_channel.h"

#include <zmq.hpp>

#include <algorithm>
#include <chrono>

#include "base/clock.h"
#include "base/log.h"
#include "comm/hmac.h"

namespace shardlm {
namespace {

constexpr uint32_t kMagic = 0x534c4331;  // "SLC1"
constexpr size_t kHeader = 4 + 4 + 8;    // magic, from, seq

void put_u32(std::string& s, uint32_t v) {
  for (int sh = 24; sh >= 0; sh -= 8) s.push_back(static_cast<char>((v >> sh) & 0xff));
}
void put_u64(std::string& s, uint64_t v) {
  for (int sh = 56; sh >= 0; sh -= 8) s.push_back(static_cast<char>((v >> sh) & 0xff));
}
uint64_t get_be(const char* p, int n) {
  uint64_t v = 0;
  for (int i = 0; i < n; ++i) v = (v << 8) | static_cast<uint8_t>(p[i]);
  return v;
}

int to_ms(double s) { return static_cast<int>(std::clamp(s, 0.0, 1e6) * 1000); }

std::string zmq_host(const std::string& addr) {
  return addr.find(':') != std::string::npos ? "[" + addr + "]" : addr;
}

}  // namespace

std::string ControlChannel::store_key(int rank) const { return fmt::format("ctl/{}#{}/{}", name_, gen_, rank); }

Expected<std::unique_ptr<ControlChannel>> ControlChannel::open(Rendezvous& rv, const std::string& name,
                                                               const ControlChannelOptions& opts) {
  std::unique_ptr<ControlChannel> c(new ControlChannel());
  c->rv_ = &rv;
  c->name_ = name;
  c->opts_ = opts;
  c->gen_ = rv.next_sequence("ctl/" + name);
  c->mac_context_ = fmt::format("shardlm-ctl|{}#{}|", name, c->gen_);
  try {
    c->ctx_ = std::make_unique<zmq::context_t>(1);
    c->pull_ = std::make_unique<zmq::socket_t>(*c->ctx_, zmq::socket_type::pull);
    c->pull_->set(zmq::sockopt::linger, 0);
    c->pull_->set(zmq::sockopt::maxmsgsize, opts.max_message_bytes + static_cast<int64_t>(kMacSize + kHeader));
    c->pull_->set(zmq::sockopt::rcvhwm, opts.send_hwm);  // bounded: a slow reader stalls its senders
    const std::string& host = rv.local_address();
    if (host.find(':') != std::string::npos) c->pull_->set(zmq::sockopt::ipv6, 1);
    c->pull_->bind("tcp://" + zmq_host(host) + ":0");
    c->endpoint_ = c->pull_->get(zmq::sockopt::last_endpoint);
  } catch (const zmq::error_t& e) {
    return make_error(ErrorCode::kIo, "control channel '{}': cannot bind on {}: {}", name, rv.local_address(),
                      e.what());
  }
  SHARDLM_TRY(rv.set(c->store_key(rv.rank()), c->endpoint_).with_context(
      fmt::format("control channel '{}': publishing {}", name, c->endpoint_)));
  SLOG_DEBUG("control channel '{}': rank {} listens at {}", name, rv.rank(), c->endpoint_);
  return c;
}

ControlChannel::~ControlChannel() {
  {
    std::lock_guard<std::mutex> lk(send_mu_);
    push_.clear();  // each closes with its linger (bounded)
  }
  {
    std::lock_guard<std::mutex> lk(recv_mu_);
    pull_.reset();
  }
  ctx_.reset();
}

int ControlChannel::rejected() const {
  std::lock_guard<std::mutex> lk(recv_mu_);
  return rejected_;
}

Expected<zmq::socket_t*> ControlChannel::push_for(int peer, double timeout_s) {
  auto it = push_.find(peer);
  if (it != push_.end()) return it->second.get();
  auto ep = rv_->get(store_key(peer), timeout_s);
  if (!ep.ok())
    return ep.status().with_context(
        fmt::format("control channel '{}': rank {} has not opened it", name_, peer));
  try {
    auto s = std::make_unique<zmq::socket_t>(*ctx_, zmq::socket_type::push);
    s->set(zmq::sockopt::linger, to_ms(opts_.linger_s));
    s->set(zmq::sockopt::sndhwm, opts_.send_hwm);
    s->set(zmq::sockopt::immediate, 1);  // queue only to a connected peer
    if (ep->find('[') != std::string::npos) s->set(zmq::sockopt::ipv6, 1);
    s->connect(*ep);
    auto* raw = s.get();
    push_[peer] = std::move(s);
    return raw;
  } catch (const zmq::error_t& e) {
    return make_error(ErrorCode::kIo, "control channel '{}': cannot connect to rank {} at {}: {}", name_, peer, *ep,
                      e.what());
  }
}

Status ControlChannel::send(int peer, std::string_view body, double timeout_s) {
  if (peer < 0 || peer >= rv_->world())
    return make_error(ErrorCode::kInvalidArgument, "control channel '{}': no rank {}", name_, peer);
  if (static_cast<int64_t>(body.size()) > opts_.max_message_bytes)
    return make_error(ErrorCode::kInvalidArgument, "control channel '{}': message of {} bytes exceeds the {} limit",
                      name_, body.size(), opts_.max_message_bytes);
  std::lock_guard<std::mutex> lk(send_mu_);
  Deadline d(timeout_s);
  SHARDLM_ASSIGN_OR_RETURN(zmq::socket_t * s, push_for(peer, timeout_s));
  uint64_t seq = next_send_seq_[peer];
  std::string msg(kMacSize, '\0');
  msg.reserve(kMacSize + kHeader + body.size());
  put_u32(msg, kMagic);
  put_u32(msg, static_cast<uint32_t>(rv_->rank()));
  put_u64(msg, seq);
  msg.append(body);
  std::string_view signed_part(msg.data() + kMacSize, msg.size() - kMacSize);
  Mac mac = hmac_sha256(rv_->job_key(), mac_context_, signed_part);
  std::copy(mac.begin(), mac.end(), msg.begin());
  try {
    s->set(zmq::sockopt::sndtimeo, std::max(1, to_ms(d.remaining_seconds())));
    auto sent = s->send(zmq::buffer(msg), zmq::send_flags::none);
    if (!sent)
      return make_error(ErrorCode::kTimeout,
                        "control channel '{}': rank {} has not taken messages for {:.1f} s ({} queued, or not "
                        "connected): it is slow, hung or dead",
                        name_, peer, timeout_s, opts_.send_hwm);
  } catch (const zmq::error_t& e) {
    return make_error(ErrorCode::kIo, "control channel '{}': send to rank {}: {}", name_, peer, e.what());
  }
  next_send_seq_[peer] = seq + 1;
  return Status::Ok();
}

Status ControlChannel::broadcast(std::string_view body, double timeout_s) {
  Deadline d(timeout_s);
  for (int r = 0; r < rv_->world(); ++r) {
    if (r == rv_->rank()) continue;
    SHARDLM_TRY(send(r, body, std::max(0.001, d.remaining_seconds())));
  }
  return Status::Ok();
}

Status ControlChannel::pump(int timeout_ms) {
  if (!broken_.ok()) return broken_;
  try {
    zmq::pollitem_t item{static_cast<void*>(*pull_), 0, ZMQ_POLLIN, 0};
    zmq::poll(&item, 1, std::chrono::milliseconds(timeout_ms));
    if (!(item.revents & ZMQ_POLLIN)) return Status::Ok();
    while (true) {
      zmq::message_t m;
      if (!pull_->recv(m, zmq::recv_flags::dontwait)) break;
      const char* p = static_cast<const char*>(m.data());
      size_t n = m.size();
      bool ok = n >= kMacSize + kHeader && get_be(p + kMacSize, 4) == kMagic &&
                hmac_verify(rv_->job_key(), p, mac_context_, std::string_view(p + kMacSize, n - kMacSize));
      int from = ok ? static_cast<int>(static_cast<int32_t>(get_be(p + kMacSize + 4, 4))) : -1;
      if (ok && (from < 0 || from >= rv_->world())) ok = false;
      if (!ok) {
        ++rejected_;
        SLOG_WARN("control channel '{}': dropped a message of {} bytes with a bad HMAC or header (wrong job key "
                  "or not a shardlm peer)",
                  name_, n);
        continue;
      }
      uint64_t seq = get_be(p + kMacSize + 8, 8);
      uint64_t want = next_recv_seq_[from];
      if (seq != want) {
        broken_ = make_error(ErrorCode::kIo,
                             "control channel '{}': message #{} from rank {} arrived when #{} was expected: "
                             "messages were lost (the connection to rank {} broke)",
                             name_, seq, from, want, from);
        SLOG_ERROR("{}", broken_.message());
        return broken_;
      }
      next_recv_seq_[from] = seq + 1;
      inbox_.push_back(ControlMessage{from, seq, std::string(p + kMacSize + kHeader, n - kMacSize - kHeader)});
    }
  } catch (const zmq::error_t& e) {
    return make_error(ErrorCode::kIo, "control channel '{}': receive: {}", name_, e.what());
  }
  return Status::Ok();
}

Expected<ControlMessage> ControlChannel::recv(double timeout_s) {
  std::lock_guard<std::mutex> lk(recv_mu_);
  Deadline d(timeout_s);
  // Pump before the deadline check, so a zero timeout still reads what arrived.
  while (inbox_.empty()) {
    SHARDLM_TRY(pump(std::max(0, to_ms(d.remaining_seconds()))));
    if (inbox_.empty() && d.expired())
      return make_error(ErrorCode::kTimeout, "control channel '{}': rank {} received nothing for {:.1f} s", name_,
                        rv_->rank(), timeout_s);
  }
  ControlMessage m = std::move(inbox_.front());
  inbox_.pop_front();
  return m;
}

Expected<std::string> ControlChannel::recv_from(int peer, double timeout_s) {
  std::lock_guard<std::mutex> lk(recv_mu_);
  Deadline d(timeout_s);
  while (true) {
    auto it = std::find_if(inbox_.begin(), inbox_.end(), [&](const ControlMessage& m) { return m.from == peer; });
    if (it != inbox_.end()) {
      std::string body = std::move(it->body);
      inbox_.erase(it);
      return body;
    }
    const bool expired = d.expired();
    SHARDLM_TRY(pump(expired ? 0 : std::max(1, to_ms(d.remaining_seconds()))));
    if (expired && std::none_of(inbox_.begin(), inbox_.end(), [&](const ControlMessage& m) { return m.from == peer; }))
      return make_error(ErrorCode::kTimeout, "control channel '{}': rank {} received nothing from rank {} for {:.1f} s",
                        name_, rv_->rank(), peer, timeout_s);
  }
}

}  // namespace shardlm
