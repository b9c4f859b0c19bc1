#include "runtime/dist_context.h"

#include <chrono>
#include <vector>

#include "base/log.h"

namespace shardlm {

Expected<std::unique_ptr<DistContext>> DistContext::create(const LaunchInfo& launch, const DistOptions& opts) {
  SHARDLM_ASSIGN_OR_RETURN(Mapping mapping, Mapping::make(launch.rank, launch.world, opts.tp, opts.pp));
  std::unique_ptr<DistContext> c(new DistContext());
  c->launch_ = launch;
  c->mapping_ = mapping;

  RendezvousOptions ro;
  ro.master_addr = launch.master_addr.empty() ? "127.0.0.1" : launch.master_addr;
  ro.master_port = launch.master_port;
  ro.rank = launch.rank;
  ro.world = launch.world;
  ro.job_key = resolve_job_key(launch, std::nullopt);
  ro.connect_timeout_s = opts.connect_timeout_s;
  ro.timeout_s = opts.connect_timeout_s;
  SHARDLM_ASSIGN_OR_RETURN(c->rv_, Rendezvous::create(ro));
  Rendezvous& rv = *c->rv_;
  if (launch.rank == 0 && opts.on_rendezvous_ready) SHARDLM_TRY(opts.on_rendezvous_ready(rv.port()));
  const double t = opts.collective_timeout_s;
  const Mapping& m = c->mapping_;

  std::vector<int> all(m.world);
  for (int r = 0; r < m.world; ++r) all[r] = r;
  SHARDLM_ASSIGN_OR_RETURN(auto world, make_gloo_communicator(rv, "world", all, m.rank, t));
  c->world_.reset(static_cast<GlooCommunicator*>(world.release()));
  if (m.tp > 1) {
    std::vector<int> stage;
    for (int i = 0; i < m.tp; ++i) stage.push_back(m.rank_of(i, m.pp_rank()));
    SHARDLM_ASSIGN_OR_RETURN(c->tp_, make_gloo_communicator(rv, "tp" + std::to_string(m.pp_rank()), stage, m.rank, t));
  }
  // Pairs in stage order: a rank joins (p−1, p) before (p, p+1), so the chain of
  // set-ups never waits in a cycle.
  auto pair_name = [&](int p) { return "pp" + std::to_string(m.tp_rank()) + "_" + std::to_string(p); };
  if (!m.is_first_stage()) {
    SHARDLM_ASSIGN_OR_RETURN(c->prev_, make_gloo_communicator(rv, pair_name(m.pp_rank() - 1),
                                                               {c->prev_rank(), m.rank}, m.rank, t));
  }
  if (!m.is_last_stage()) {
    SHARDLM_ASSIGN_OR_RETURN(c->next_, make_gloo_communicator(rv, pair_name(m.pp_rank()),
                                                               {m.rank, c->next_rank()}, m.rank, t));
  }
  SHARDLM_ASSIGN_OR_RETURN(c->sched_, ControlChannel::open(rv, "sched"));
  SHARDLM_ASSIGN_OR_RETURN(c->count_, ControlChannel::open(rv, "count"));
  SHARDLM_ASSIGN_OR_RETURN(c->relay_, ControlChannel::open(rv, "relay"));
  SHARDLM_ASSIGN_OR_RETURN(c->resp_, ControlChannel::open(rv, "resp"));
  SHARDLM_ASSIGN_OR_RETURN(c->term_, ControlChannel::open(rv, "term"));
  SLOG_INFO("distributed context ready: {} via {}", m.str(), launch.describe());
  return c;
}

DistContext::~DistContext() {
  stop_ = true;
  if (watchdog_.joinable()) watchdog_.join();
}

void DistContext::report_fatal(const std::string& message) {
  const std::string text = "rank " + std::to_string(mapping_.rank) + ": " + message;
  SLOG_ERROR("fatal: {}", text);
  if (rv_) (void)rv_->set("job/fatal", text, 2.0);  // best effort: peers also see our death
}

void DistContext::start_watchdog(std::function<void(const std::string&)> on_fatal) {
  watchdog_ = std::thread([this, on_fatal = std::move(on_fatal)] {
    // 200 ms polls: deaths surface via the rendezvous within ~6 s, well inside
    // the 10 s every rank has to notice and exit.
    while (!stop_) {
      Status h = rv_->health();
      if (!h.ok()) {
        on_fatal(h.message());
        return;
      }
      auto present = rv_->check({"job/fatal"}, 2.0);
      if (present.ok() && *present) {
        auto msg = rv_->get("job/fatal", 2.0);
        on_fatal(msg.ok() ? *msg : std::string("a rank reported a fatal error"));
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
  });
}

}  // namespace shardlm
