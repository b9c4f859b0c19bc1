#include "runtime/pipeline_worker.h"

#include <chrono>
#include <cmath>

#include "base/clock.h"
#include "base/log.h"
#include "runtime/fault_injection.h"
#include "runtime/sampler.h"

namespace shardlm {
namespace {

constexpr int kActivationTag = 1;   // the one p2p slot activations travel on
constexpr double kPollSeconds = 0.1;  // idle polling of the count/term channels

bool is_timeout(const Status& s) { return s.code() == ErrorCode::kTimeout; }

// Wall-clock microseconds: comparable across the processes of one machine (tests
// order events of different ranks by it).
int64_t wall_us() {
  return std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

double log_softmax_at(const float* row, int64_t vocab, int32_t target) {
  double mx = row[0];
  for (int64_t v = 1; v < vocab; ++v) mx = std::max<double>(mx, row[v]);
  double sum = 0;
  for (int64_t v = 0; v < vocab; ++v) sum += std::exp(row[v] - mx);
  return row[target] - mx - std::log(sum);
}

}  // namespace

PipelineWorker::PipelineWorker(DistContext& ctx, const ModelConfig& model, const graph::Program& program,
                               graph::Backend& backend, WorkerOptions options)
    : ctx_(ctx), model_(model), program_(program), backend_(backend), opt_(std::move(options)),
      m_(ctx.mapping()) {
  if (!opt_.trace_path.empty()) trace_.open(opt_.trace_path, std::ios::trunc);
}

PipelineWorker::~PipelineWorker() {
  stop_ = true;
  send_cv_.notify_all();
  tok_cv_.notify_all();
  if (relay_thread_.joinable()) relay_thread_.join();
  if (sender_thread_.joinable()) sender_thread_.join();
}

int PipelineWorker::upstream() const { return m_.is_first_stage() ? 0 : ctx_.prev_rank(); }
bool PipelineWorker::relay_source_exists() const { return m_.pp > 1 && !m_.is_last_stage(); }
int PipelineWorker::relay_source() const {
  return m_.pp_rank() == 0 ? m_.rank_of(m_.tp_rank(), m_.pp - 1) : m_.rank_of(m_.tp_rank(), m_.pp_rank() - 1);
}

Status PipelineWorker::forward(const graph::StepInput& step, const std::vector<float>* in,
                               std::vector<float>* out, std::vector<float>* logits) {
  const int64_t index = forwards_++;
  if (FaultInjection::get().forward_fails(m_.rank, index))
    return make_error(ErrorCode::kInternal, "injected failure in forward #{} (SHARDLM_FAULT_FORWARD_FAIL)", index);
  return backend_.forward(program_, step, in, out, logits);
}

Status PipelineWorker::warmup_forward(int64_t n, int64_t num_kv_blocks, int64_t block_size) {
  graph::StepInput step;
  const int64_t blocks = (n + block_size - 1) / block_size;
  if (blocks > num_kv_blocks)
    return make_error(ErrorCode::kInvalidArgument, "warmup shape {} needs {} KV blocks, {} exist", n, blocks,
                      num_kv_blocks);
  for (int64_t i = 0; i < n; ++i) {
    step.token_ids.push_back(0);
    step.positions.push_back(static_cast<int32_t>(i));
    step.slot_mapping.push_back(-1);  // read the cache, never write it
  }
  step.q_start = {0, static_cast<int32_t>(n)};
  step.ctx_len = {static_cast<int32_t>(n)};
  for (int64_t b = 0; b < blocks; ++b) step.block_tables.push_back(static_cast<int32_t>(b));
  step.max_blocks_per_seq = blocks;
  step.logit_rows = {static_cast<int32_t>(n - 1)};
  std::vector<float> in, out, logits;
  const bool device_io = backend_.stage_io_on_device();  // the backend moves activations itself
  if (!m_.is_first_stage() && !device_io) {
    in.resize(n * program_.hidden);
    SHARDLM_TRY(ctx_.prev_stage()->recv(in.data(), in.size() * 4, 0, kActivationTag));
  }
  SHARDLM_TRY(forward(step, m_.is_first_stage() || device_io ? nullptr : &in, &out, &logits));
  if (!m_.is_last_stage() && !device_io)
    SHARDLM_TRY(ctx_.next_stage()->send(out.data(), out.size() * 4, 1, kActivationTag));
  return Status::Ok();
}

void PipelineWorker::sender_loop() {
  for (;;) {
    std::vector<float> data;
    {
      std::unique_lock<std::mutex> lk(send_mu_);
      send_cv_.wait(lk, [this] { return stop_ || !send_queue_.empty(); });
      if (send_queue_.empty()) return;
      data = std::move(send_queue_.front());
      send_queue_.pop_front();
    }
    Status st = ctx_.next_stage()->send(data.data(), data.size() * 4, 1, kActivationTag);
    if (!st.ok()) {
      std::lock_guard<std::mutex> lk(send_mu_);
      send_error_ = st.with_context("sending activations to rank " + std::to_string(ctx_.next_rank()));
      return;
    }
  }
}

Status PipelineWorker::forward_relay(const RelayMsg& m, const std::string& bytes) {
  (void)m;
  const int next = m_.pp_rank() + 1;
  if (m_.pp > 1 && !m_.is_last_stage() && next <= m_.pp - 2)
    SHARDLM_TRY(ctx_.relay().send(m_.rank_of(m_.tp_rank(), next), bytes, opt_.wait_timeout_s));
  if (m_.rank == 0) SHARDLM_TRY(ctx_.resp().send(0, bytes, opt_.wait_timeout_s));
  return Status::Ok();
}

Status PipelineWorker::relay_one(double timeout_s) {
  SHARDLM_ASSIGN_OR_RETURN(std::string bytes, ctx_.relay().recv_from(relay_source(), timeout_s));
  SHARDLM_ASSIGN_OR_RETURN(RelayMsg msg, decode_relay(bytes));
  SHARDLM_TRY(forward_relay(msg, bytes));
  std::lock_guard<std::mutex> lk(tok_mu_);
  tokens_[msg.mb_id] = std::move(msg);
  tok_cv_.notify_all();
  return Status::Ok();
}

void PipelineWorker::relay_loop() {
  while (!stop_) {
    Status st = relay_one(kPollSeconds);
    if (st.ok() || is_timeout(st)) continue;
    std::lock_guard<std::mutex> lk(tok_mu_);
    relay_error_ = st.with_context("relay from rank " + std::to_string(relay_source()));
    tok_cv_.notify_all();
    return;
  }
}

Expected<RelayMsg> PipelineWorker::take_tokens(uint64_t mb_id) {
  Deadline deadline(opt_.wait_timeout_s);
  for (;;) {
    {
      std::unique_lock<std::mutex> lk(tok_mu_);
      if (opt_.synchronous_relay || m_.is_last_stage() || m_.pp == 1) {
        auto it = tokens_.find(mb_id);
        if (it != tokens_.end()) {
          RelayMsg msg = std::move(it->second);
          tokens_.erase(it);
          return msg;
        }
      } else {
        tok_cv_.wait_for(lk, std::chrono::milliseconds(100), [&] { return tokens_.count(mb_id) || !relay_error_.ok(); });
        if (!relay_error_.ok()) return relay_error_;
        auto it = tokens_.find(mb_id);
        if (it != tokens_.end()) {
          RelayMsg msg = std::move(it->second);
          tokens_.erase(it);
          return msg;
        }
      }
    }
    if (deadline.expired())
      return make_error(ErrorCode::kTimeout, "rank {} waited {} s for the sampled tokens of micro-batch {}",
                        m_.rank, opt_.wait_timeout_s, mb_id);
    if (opt_.synchronous_relay || m_.is_last_stage() || m_.pp == 1) {
      return make_error(ErrorCode::kInternal, "micro-batch {} retired before it ran on rank {}", mb_id, m_.rank);
    }
  }
}

Status PipelineWorker::retire(uint64_t count, uint64_t iteration) {
  for (uint64_t i = 0; i < count; ++i) {
    if (in_flight_.empty())
      return make_error(ErrorCode::kInternal, "rank {} told to retire more micro-batches than it ran", m_.rank);
    const uint64_t mb = in_flight_.front();
    SHARDLM_ASSIGN_OR_RETURN(RelayMsg msg, take_tokens(mb));
    in_flight_.pop_front();
    if (trace_) trace_ << "it " << iteration << " retire mb " << mb << ":";
    for (const auto& t : msg.tokens) {
      auto it = replicas_.find(t.seq_id);
      if (it != replicas_.end()) it->second.output.push_back(t.token.token);
      if (trace_) trace_ << " " << t.seq_id << "=" << t.token.token;
    }
    if (trace_) trace_ << "\n" << std::flush;
  }
  return Status::Ok();
}

Status PipelineWorker::execute(const ScheduleMsg& s) {
  const graph::StepInput& step = s.step;
  const int64_t ntok = step.num_tokens();
  std::vector<float> in, out, logits;
  const bool device_io = backend_.stage_io_on_device();  // the backend moves activations itself
  if (!m_.is_first_stage() && !device_io) {
    in.resize(ntok * program_.hidden);
    SHARDLM_TRY(ctx_.prev_stage()->recv(in.data(), in.size() * 4, 0, kActivationTag)
                    .with_context("receiving activations of micro-batch " + std::to_string(s.mb_id)));
  }
  if (trace_) trace_ << "exec mb " << s.mb_id << " start " << wall_us() << "\n" << std::flush;
  // Last stage: tokens drawn on the backend (only they leave the device) when
  // no row needs its logits on the host (prompt logprobs, logprobs, penalties).
  bool on_backend = m_.is_last_stage() && (opt_.sampler == "backend" ||
                                           (opt_.sampler == "auto" && backend_.samples_on_device()));
  std::vector<kernels::cpu::CounterSampling> sampling;
  for (size_t r = 0; on_backend && r < s.rows.size(); ++r) {
    const LogitRow& row = s.rows[r];
    auto it = replicas_.find(row.seq_id);
    if (row.kind == 1 || it == replicas_.end() || !counter_sampling_eligible(it->second.params)) {
      on_backend = false;
      break;
    }
    sampling.push_back(counter_sampling(it->second));
  }
  std::vector<int32_t> drawn;
  if (on_backend) {
    const int64_t index = forwards_++;
    if (FaultInjection::get().forward_fails(m_.rank, index))
      return make_error(ErrorCode::kInternal, "injected failure in forward #{} (SHARDLM_FAULT_FORWARD_FAIL)", index);
    SHARDLM_TRY(backend_.forward_sample(program_, step, m_.is_first_stage() || device_io ? nullptr : &in, sampling,
                                        &drawn));
  } else {
    SHARDLM_TRY(forward(step, m_.is_first_stage() || device_io ? nullptr : &in, &out, &logits));
  }
  in_flight_.push_back(s.mb_id);
  if (!m_.is_last_stage()) {
    if (!device_io) {  // device_io: forward() already sent them (NCCL, in micro-batch order)
      std::lock_guard<std::mutex> lk(send_mu_);
      if (!send_error_.ok()) return send_error_;
      send_queue_.push_back(std::move(out));
      send_cv_.notify_all();
    }
    if (!opt_.synchronous_relay) return Status::Ok();
    // Synchronous switch: wait here for this micro-batch's tokens and relay
    // them on before the next iteration (what the background thread does
    // otherwise, without holding up the loop).
    Deadline deadline(opt_.wait_timeout_s);
    for (;;) {
      {
        std::lock_guard<std::mutex> tl(tok_mu_);
        if (tokens_.count(s.mb_id)) return Status::Ok();
      }
      if (deadline.expired())
        return make_error(ErrorCode::kTimeout, "rank {} waited {} s for the tokens of micro-batch {}", m_.rank,
                          opt_.wait_timeout_s, s.mb_id);
      Status st = relay_one(kPollSeconds);
      if (!st.ok() && !is_timeout(st)) return st;
    }
  }
  // Last stage: sample, keep the tokens for our own retirement, start the relay.
  if (int d = FaultInjection::get().sample_delay_ms; d > 0)
    std::this_thread::sleep_for(std::chrono::milliseconds(d));
  RelayMsg msg;
  msg.mb_id = s.mb_id;
  const int64_t vocab = model_.vocab_size;
  for (size_t r = 0; r < s.rows.size(); ++r) {
    const LogitRow& row = s.rows[r];
    const float* lg = on_backend ? nullptr : &logits[r * vocab];
    if (row.kind == 1) {
      msg.prompt_logprobs.push_back(PromptLogprob{row.seq_id, row.position, log_softmax_at(lg, vocab, row.target)});
      continue;
    }
    auto it = replicas_.find(row.seq_id);
    if (it == replicas_.end())
      return make_error(ErrorCode::kInternal, "rank {} has no replica of sequence {}", m_.rank, row.seq_id);
    SampleResult res;
    if (on_backend) res.token = drawn[r];
    else res = sample_token(lg, vocab, it->second);
    res.logprob.token = res.token;
    msg.tokens.push_back(SampledToken{row.seq_id, std::move(res.logprob)});
  }
  if (trace_) trace_ << "sampled mb " << s.mb_id << " end " << wall_us() << "\n" << std::flush;
  const std::string bytes = encode(msg);
  {
    std::lock_guard<std::mutex> lk(tok_mu_);
    tokens_[s.mb_id] = msg;
  }
  if (m_.pp > 1) {
    SHARDLM_TRY(ctx_.relay().send(m_.rank_of(m_.tp_rank(), 0), bytes, opt_.wait_timeout_s));
  } else if (m_.rank == 0) {
    SHARDLM_TRY(ctx_.resp().send(0, bytes, opt_.wait_timeout_s));
  }
  return Status::Ok();
}

Status PipelineWorker::run() {
  if (!m_.is_last_stage()) sender_thread_ = std::thread([this] { sender_loop(); });
  if (relay_source_exists() && !opt_.synchronous_relay) relay_thread_ = std::thread([this] { relay_loop(); });
  const int up = upstream();
  const bool has_next = !m_.is_last_stage();
  for (;;) {
    // 1. The executed count (idle ranks wait here, polling for shutdown).
    std::string count_bytes;
    for (;;) {
      auto c = ctx_.count().recv_from(up, kPollSeconds);
      if (c.ok()) {
        count_bytes = std::move(*c);
        break;
      }
      if (!is_timeout(c.status())) return c.status().with_context("count channel");
      auto t = ctx_.term().recv(0.0);
      if (t.ok()) {
        SLOG_INFO("worker: shutdown received after {} micro-batches", forwards_);
        return Status::Ok();
      }
      std::lock_guard<std::mutex> lk(send_mu_);
      if (!send_error_.ok()) return send_error_;
    }
    SHARDLM_ASSIGN_OR_RETURN(CountMsg count, decode_count(count_bytes));
    if (has_next) SHARDLM_TRY(ctx_.count().send(ctx_.next_rank(), count_bytes, opt_.wait_timeout_s));
    SHARDLM_TRY(retire(count.retire, count.iteration));

    // 2. The schedule of the same iteration.
    SHARDLM_ASSIGN_OR_RETURN(std::string sched_bytes, ctx_.sched().recv_from(up, opt_.wait_timeout_s));
    SHARDLM_ASSIGN_OR_RETURN(ScheduleMsg s, decode_schedule(sched_bytes));
    if (s.iteration != count.iteration)
      return make_error(ErrorCode::kInternal, "rank {}: schedule of iteration {} after count of iteration {}",
                        m_.rank, s.iteration, count.iteration);
    if (has_next) SHARDLM_TRY(ctx_.sched().send(ctx_.next_rank(), sched_bytes, opt_.wait_timeout_s));
    for (const auto& r : s.new_requests) {
      Sequence& seq = replicas_[r.id];
      seq.id = r.id;
      seq.prompt = r.prompt;
      seq.params = r.params;
      seed_sequence(seq, r.params.seed);
    }
    for (int64_t id : s.finished) replicas_.erase(id);
    if (s.has_batch) SHARDLM_TRY(execute(s));
  }
}

}  // namespace shardlm
