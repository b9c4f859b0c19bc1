#include "comm/gloo_communicator.h"

#include <gloo/allgather.h>
#include <gloo/allreduce.h>
#include <gloo/barrier.h>
#include <gloo/broadcast.h>
#include <gloo/common/error.h>
#include <gloo/math.h>
#include <gloo/rendezvous/context.h>
#include <gloo/rendezvous/store.h>
#include <gloo/transport/tcp/device.h>
#include <gloo/transport/unbound_buffer.h>
#include <gloo/types.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <set>

#include "base/clock.h"
#include "base/log.h"
#include "comm/hmac.h"
#include "comm/rendezvous_wire.h"

namespace shardlm {
namespace {

constexpr uint8_t kP2PSlotPrefix = 0x40;  // gloo's collectives use 0x01..0x08

// gloo::rendezvous::Store over our Rendezvous, with a key prefix per group.
// Errors are thrown (gloo's interface) and caught by the factory.
class RendezvousStore : public gloo::rendezvous::Store {
 public:
  RendezvousStore(Rendezvous& rv, std::string prefix, double timeout_s)
      : rv_(rv), prefix_(std::move(prefix)), timeout_s_(timeout_s) {}

  void set(const std::string& key, const std::vector<char>& data) override {
    Status st = rv_.set(prefix_ + key, std::string_view(data.data(), data.size()), timeout_s_);
    if (!st.ok()) throw gloo::IoException(st.to_string());
  }
  std::vector<char> get(const std::string& key) override {
    auto v = rv_.get(prefix_ + key, timeout_s_);
    if (!v.ok()) throw gloo::IoException(v.status().to_string());
    return std::vector<char>(v->begin(), v->end());
  }
  void wait(const std::vector<std::string>& keys) override { wait(keys, to_ms(timeout_s_)); }
  void wait(const std::vector<std::string>& keys, const std::chrono::milliseconds& timeout) override {
    std::vector<std::string> full;
    for (const auto& k : keys) full.push_back(prefix_ + k);
    double t = timeout.count() > 0 ? std::min(timeout_s_, timeout.count() / 1000.0) : timeout_s_;
    Status st = rv_.wait(full, t);
    if (!st.ok()) throw gloo::IoException(st.to_string());
  }
  static std::chrono::milliseconds to_ms(double s) {
    return std::chrono::milliseconds(static_cast<int64_t>(s * 1000));
  }

 private:
  Rendezvous& rv_;
  std::string prefix_;
  double timeout_s_;
};

std::chrono::milliseconds ms(double s) { return std::chrono::milliseconds(std::max<int64_t>(1, static_cast<int64_t>(s * 1000))); }

bool looks_like_timeout(const std::string& what) {
  std::string w = what;
  std::transform(w.begin(), w.end(), w.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return w.find("timed out") != std::string::npos || w.find("timeout") != std::string::npos;
}

template <typename T>
gloo::AllreduceOptions::Func reducer(ReduceOp op) {
  using Fn = void (*)(void*, const void*, const void*, size_t);
  switch (op) {
    case ReduceOp::kSum: return static_cast<Fn>(&gloo::sum<T>);
    case ReduceOp::kMin: return static_cast<Fn>(&gloo::min<T>);
    case ReduceOp::kMax: return static_cast<Fn>(&gloo::max<T>);
  }
  return static_cast<Fn>(&gloo::sum<T>);
}

std::string ranks_str(const std::vector<int>& r) {
  std::string s;
  for (size_t i = 0; i < r.size(); ++i) s += (i ? "," : "") + std::to_string(r[i]);
  return s;
}

}  // namespace

GlooCommunicator::~GlooCommunicator() = default;

std::string GlooCommunicator::describe() const {
  return fmt::format("group '{}' (rank {} of {}, global ranks [{}])", name_, rank_, size(), ranks_str(global_ranks_));
}

Status GlooCommunicator::health() const {
  std::lock_guard<std::mutex> lk(mu_);
  return broken_;
}

template <typename F>
Status GlooCommunicator::run(const char* op, F&& f) {
  std::lock_guard<std::mutex> lk(mu_);
  if (!broken_.ok()) return broken_;
  double t0 = now_seconds();
  ErrorCode code;
  std::string what;
  try {
    f();
    return Status::Ok();
  } catch (const gloo::IoException& e) {
    what = e.what();
    code = looks_like_timeout(what) ? ErrorCode::kTimeout : ErrorCode::kIo;
  } catch (const gloo::EnforceNotMet& e) {
    what = e.what();
    code = ErrorCode::kInternal;
  } catch (const std::exception& e) {
    what = e.what();
    code = looks_like_timeout(what) ? ErrorCode::kTimeout : ErrorCode::kIo;
  }
  broken_ = Status(code, fmt::format("gloo {} in {} failed after {:.1f} s (timeout {:.1f} s): {}; the communicator "
                                     "is unusable from now on",
                                     op, describe(), now_seconds() - t0, timeout_s_, what));
  SLOG_ERROR("{}", broken_.message());
  return broken_;
}

Status GlooCommunicator::all_reduce(void* data, size_t count, DType dtype, ReduceOp op) {
  if (size() == 1 || count == 0) return Status::Ok();
  if (dtype == DType::kF16 || dtype == DType::kBF16) {
    std::vector<float> tmp(count);
    convert_to_f32(dtype, data, tmp.data(), count);
    SHARDLM_TRY(all_reduce(tmp.data(), count, DType::kF32, op));
    convert_from_f32(dtype, tmp.data(), data, count);
    return Status::Ok();
  }
  return run("all_reduce", [&] {
    gloo::AllreduceOptions opts(ctx_);
    if (dtype == DType::kF32) {
      opts.setInput(static_cast<float*>(data), count);
      opts.setOutput(static_cast<float*>(data), count);
      opts.setReduceFunction(reducer<float>(op));
    } else {
      opts.setInput(static_cast<int32_t*>(data), count);
      opts.setOutput(static_cast<int32_t*>(data), count);
      opts.setReduceFunction(reducer<int32_t>(op));
    }
    opts.setTag(tag_++);
    opts.setTimeout(ms(timeout_s_));
    gloo::allreduce(opts);
  });
}

Status GlooCommunicator::all_reduce_sum(void* data, size_t count, DType dtype) {
  return all_reduce(data, count, dtype, ReduceOp::kSum);
}

Status GlooCommunicator::all_gather(const void* in, void* out, size_t count, DType dtype) {
  size_t bytes = count * dtype_size(dtype);
  if (size() == 1) {
    if (bytes && in != out) std::memmove(out, in, bytes);
    return Status::Ok();
  }
  if (bytes == 0) return Status::Ok();
  return run("all_gather", [&] {
    gloo::AllgatherOptions opts(ctx_);
    opts.setInput(static_cast<char*>(const_cast<void*>(in)), bytes);
    opts.setOutput(static_cast<char*>(out), bytes * static_cast<size_t>(size()));
    opts.setTag(tag_++);
    opts.setTimeout(ms(timeout_s_));
    gloo::allgather(opts);
  });
}

Status GlooCommunicator::broadcast(void* data, size_t bytes, int root) {
  if (root < 0 || root >= size())
    return make_error(ErrorCode::kInvalidArgument, "broadcast root {} outside {}", root, describe());
  if (size() == 1 || bytes == 0) return Status::Ok();
  return run("broadcast", [&] {
    gloo::BroadcastOptions opts(ctx_);
    opts.setOutput(static_cast<char*>(data), bytes);
    opts.setRoot(root);
    opts.setTag(tag_++);
    opts.setTimeout(ms(timeout_s_));
    gloo::broadcast(opts);
  });
}

Status GlooCommunicator::send(const void* data, size_t bytes, int peer, int tag) {
  if (peer < 0 || peer >= size() || peer == rank_)
    return make_error(ErrorCode::kInvalidArgument, "send to peer {} in {}", peer, describe());
  return run("send", [&] {
    auto buf = ctx_->createUnboundBuffer(const_cast<void*>(data), bytes);
    buf->send(peer, gloo::Slot::build(kP2PSlotPrefix, static_cast<uint32_t>(tag)));
    if (!buf->waitSend(ms(timeout_s_))) throw gloo::IoException(fmt::format("send to peer {} aborted", peer));
  });
}

Status GlooCommunicator::recv(void* data, size_t bytes, int peer, int tag) {
  if (peer < 0 || peer >= size() || peer == rank_)
    return make_error(ErrorCode::kInvalidArgument, "recv from peer {} in {}", peer, describe());
  return run("recv", [&] {
    auto buf = ctx_->createUnboundBuffer(data, bytes);
    buf->recv(peer, gloo::Slot::build(kP2PSlotPrefix, static_cast<uint32_t>(tag)));
    if (!buf->waitRecv(ms(timeout_s_))) throw gloo::IoException(fmt::format("recv from peer {} aborted", peer));
  });
}

Status GlooCommunicator::barrier() {
  if (size() == 1) return Status::Ok();
  return run("barrier", [&] {
    gloo::BarrierOptions opts(ctx_);
    opts.setTag(tag_++);
    opts.setTimeout(ms(timeout_s_));
    gloo::barrier(opts);
  });
}

Expected<std::unique_ptr<Communicator>> make_gloo_communicator(Rendezvous& rv, const std::string& group_name,
                                                              const std::vector<int>& global_ranks,
                                                              int my_global_rank, double timeout_s) {
  if (global_ranks.empty())
    return make_error(ErrorCode::kInvalidArgument, "gloo group '{}' has no ranks", group_name);
  std::set<int> uniq(global_ranks.begin(), global_ranks.end());
  if (uniq.size() != global_ranks.size() || *uniq.begin() < 0 || *uniq.rbegin() >= rv.world())
    return make_error(ErrorCode::kInvalidArgument, "gloo group '{}': ranks [{}] must be distinct and in [0, {})",
                      group_name, ranks_str(global_ranks), rv.world());
  auto me = std::find(global_ranks.begin(), global_ranks.end(), my_global_rank);
  if (me == global_ranks.end())
    return make_error(ErrorCode::kInvalidArgument, "gloo group '{}': rank {} is not one of [{}]", group_name,
                      my_global_rank, ranks_str(global_ranks));
  if (timeout_s <= 0)
    return make_error(ErrorCode::kInvalidArgument, "gloo group '{}': timeout must be > 0", group_name);

  std::unique_ptr<GlooCommunicator> c(new GlooCommunicator());
  c->name_ = group_name;
  c->global_ranks_ = global_ranks;
  c->rank_ = static_cast<int>(me - global_ranks.begin());
  c->timeout_s_ = timeout_s;
  if (global_ranks.size() == 1) return std::unique_ptr<Communicator>(std::move(c));

  rdzv::ignore_sigpipe();
  int gen = rv.next_sequence("gloo/" + group_name);
  std::string prefix = fmt::format("gloo/{}#{}/{}/", group_name, gen, sha256_hex(ranks_str(global_ranks)).substr(0, 12));
  RendezvousStore store(rv, prefix, timeout_s);
  double t0 = now_seconds();
  try {
    gloo::transport::tcp::attr attr;
    attr.hostname = rv.local_address();
    auto dev = gloo::transport::tcp::CreateDevice(attr);
    auto ctx = std::make_shared<gloo::rendezvous::Context>(c->rank_, c->size());
    ctx->setTimeout(ms(timeout_s));
    ctx->connectFullMesh(store, dev);
    c->ctx_ = std::move(ctx);
  } catch (const std::exception& e) {
    std::string what = e.what();
    ErrorCode code = looks_like_timeout(what) ? ErrorCode::kTimeout : ErrorCode::kIo;
    return Status(code, fmt::format("connecting {} failed after {:.1f} s (timeout {:.1f} s; every member must create "
                                    "the group): {}",
                                    c->describe(), now_seconds() - t0, timeout_s, what));
  }
  SLOG_DEBUG("gloo: connected {} in {:.2f} s on {}", c->describe(), now_seconds() - t0, rv.local_address());
  return std::unique_ptr<Communicator>(std::move(c));
}

}  // namespace shardlm
