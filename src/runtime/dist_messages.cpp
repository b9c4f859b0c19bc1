#include "runtime/dist_messages.h"

#include "runtime/wire_codec.h"

namespace shardlm {
namespace {

using wire::Reader;
using wire::Writer;

void put_params(Writer& w, const SamplingParams& p) {
  w.put(p.temperature);
  w.put(p.top_k);
  w.put(p.top_p);
  w.put(p.min_p);
  w.put(p.repetition_penalty);
  w.put(p.presence_penalty);
  w.put(p.frequency_penalty);
  w.put(p.seed);
  w.put<uint8_t>(p.has_seed);
  w.put(p.max_tokens);
  w.put_vec(p.stop_token_ids);
  w.put<uint64_t>(p.stop.size());
  for (const auto& s : p.stop) w.put_str(s);
  w.put<uint8_t>(p.ignore_eos);
  w.put(p.logprobs);
}

bool get_params(Reader& r, SamplingParams* p) {
  uint8_t has_seed = 0, ignore_eos = 0;
  uint64_t nstop = 0;
  bool ok = r.get(&p->temperature) && r.get(&p->top_k) && r.get(&p->top_p) && r.get(&p->min_p) &&
            r.get(&p->repetition_penalty) && r.get(&p->presence_penalty) && r.get(&p->frequency_penalty) &&
            r.get(&p->seed) && r.get(&has_seed) && r.get(&p->max_tokens) && r.get_vec(&p->stop_token_ids) &&
            r.get(&nstop);
  if (!ok || nstop > 1024) return false;
  p->stop.resize(nstop);
  for (auto& s : p->stop)
    if (!r.get_str(&s)) return false;
  ok = r.get(&ignore_eos) && r.get(&p->logprobs);
  p->has_seed = has_seed;
  p->ignore_eos = ignore_eos;
  return ok;
}

void put_step(Writer& w, const graph::StepInput& s) {
  w.put_vec(s.token_ids);
  w.put_vec(s.positions);
  w.put_vec(s.slot_mapping);
  w.put_vec(s.q_start);
  w.put_vec(s.ctx_len);
  w.put_vec(s.block_tables);
  w.put(s.max_blocks_per_seq);
  w.put_vec(s.logit_rows);
}

bool get_step(Reader& r, graph::StepInput* s) {
  return r.get_vec(&s->token_ids) && r.get_vec(&s->positions) && r.get_vec(&s->slot_mapping) &&
         r.get_vec(&s->q_start) && r.get_vec(&s->ctx_len) && r.get_vec(&s->block_tables) &&
         r.get(&s->max_blocks_per_seq) && r.get_vec(&s->logit_rows);
}

void put_logprob(Writer& w, const TokenLogprob& t) {
  w.put(t.token);
  w.put(t.logprob);
  w.put<uint64_t>(t.top.size());
  for (const auto& [id, lp] : t.top) {
    w.put(id);
    w.put(lp);
  }
}

bool get_logprob(Reader& r, TokenLogprob* t) {
  uint64_t n;
  if (!(r.get(&t->token) && r.get(&t->logprob) && r.get(&n)) || n > (1u << 20)) return false;
  t->top.resize(n);
  for (auto& [id, lp] : t->top)
    if (!(r.get(&id) && r.get(&lp))) return false;
  return true;
}

// Message kinds, so a message on the wrong channel is caught, not misparsed.
constexpr uint32_t kSchedule = 0x53434844, kCount = 0x434f554e, kRelay = 0x52454c59;

Status malformed(const char* what) {
  return make_error(ErrorCode::kFormat, "malformed {} message", what);
}

}  // namespace

std::string encode(const ScheduleMsg& m) {
  Writer w;
  w.put(kSchedule);
  w.put(m.iteration);
  w.put<uint64_t>(m.new_requests.size());
  for (const auto& r : m.new_requests) {
    w.put(r.id);
    w.put_vec(r.prompt);
    put_params(w, r.params);
  }
  w.put_vec(m.finished);
  w.put<uint8_t>(m.has_batch);
  w.put(m.mb_id);
  put_step(w, m.step);
  w.put_vec(m.rows);
  return w.take();
}

std::string encode(const CountMsg& m) {
  Writer w;
  w.put(kCount);
  w.put(m.iteration);
  w.put(m.retire);
  return w.take();
}

std::string encode(const RelayMsg& m) {
  Writer w;
  w.put(kRelay);
  w.put(m.mb_id);
  w.put<uint64_t>(m.tokens.size());
  for (const auto& t : m.tokens) {
    w.put(t.seq_id);
    put_logprob(w, t.token);
  }
  w.put_vec(m.prompt_logprobs);
  return w.take();
}

Expected<ScheduleMsg> decode_schedule(const std::string& s) {
  Reader r(s);
  ScheduleMsg m;
  uint32_t kind = 0;
  uint64_t n = 0;
  uint8_t has_batch = 0;
  if (!r.get(&kind) || kind != kSchedule || !r.get(&m.iteration) || !r.get(&n) || n > (1u << 24))
    return malformed("schedule");
  m.new_requests.resize(n);
  for (auto& q : m.new_requests)
    if (!(r.get(&q.id) && r.get_vec(&q.prompt) && get_params(r, &q.params))) return malformed("schedule");
  if (!(r.get_vec(&m.finished) && r.get(&has_batch) && r.get(&m.mb_id) && get_step(r, &m.step) &&
        r.get_vec(&m.rows) && r.at_end()))
    return malformed("schedule");
  m.has_batch = has_batch;
  return m;
}

Expected<CountMsg> decode_count(const std::string& s) {
  Reader r(s);
  CountMsg m;
  uint32_t kind = 0;
  if (!(r.get(&kind) && kind == kCount && r.get(&m.iteration) && r.get(&m.retire) && r.at_end()))
    return malformed("count");
  return m;
}

Expected<RelayMsg> decode_relay(const std::string& s) {
  Reader r(s);
  RelayMsg m;
  uint32_t kind = 0;
  uint64_t n = 0;
  if (!(r.get(&kind) && kind == kRelay && r.get(&m.mb_id) && r.get(&n)) || n > (1u << 24)) return malformed("relay");
  m.tokens.resize(n);
  for (auto& t : m.tokens)
    if (!(r.get(&t.seq_id) && get_logprob(r, &t.token))) return malformed("relay");
  if (!(r.get_vec(&m.prompt_logprobs) && r.at_end())) return malformed("relay");
  return m;
}

}  // namespace shardlm
