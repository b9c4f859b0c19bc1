// kv_write and paged_attention against a plain double attention over
// contiguous K/V, plus the engine's bitwise promises: chunked prefill equals
// prefill in one go, a decode step equals the last prefill row, and a row's
// output does not depend on the rest of the batch.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "kernels/cpu/cpu_kernels.h"
#include "kernel_test_util.h"

namespace shardlm::kernels::cpu {
namespace {

using testing::bitwise_equal;
using testing::expect_close;
using testing::random_vec;

struct Heads {
  int64_t nq, nkv, hd;
};

// One sequence's full data: q, k, v for every position, [ctx, heads, hd].
struct SeqData {
  int64_t len;
  std::vector<float> q, k, v;
};

SeqData make_seq(const Heads& h, int64_t len, uint64_t seed) {
  return {len, random_vec(len * h.nq * h.hd, seed, -2.0f, 2.0f),
          random_vec(len * h.nkv * h.hd, seed + 1, -2.0f, 2.0f),
          random_vec(len * h.nkv * h.hd, seed + 2)};
}

// Double-precision attention of the query at position `pos` over keys
// 0..pos (the last `window` of them when window > 0); out[nq, hd].
std::vector<double> reference_row(const Heads& h, const SeqData& s, int64_t pos, int64_t window,
                                  double scale) {
  std::vector<double> out(h.nq * h.hd, 0.0);
  for (int64_t qh = 0; qh < h.nq; ++qh) {
    const int64_t kh = qh / (h.nq / h.nkv);
    std::vector<double> w(pos + 1, 0.0);
    double mx = -INFINITY;
    for (int64_t j = 0; j <= pos; ++j) {
      if (window > 0 && pos - j >= window) continue;
      double d = 0;
      for (int64_t e = 0; e < h.hd; ++e)
        d += double(s.q[(pos * h.nq + qh) * h.hd + e]) * s.k[(j * h.nkv + kh) * h.hd + e];
      w[j] = d * scale;
      mx = std::max(mx, w[j]);
    }
    double sum = 0;
    for (int64_t j = 0; j <= pos; ++j) {
      if (window > 0 && pos - j >= window) {
        w[j] = 0;
        continue;
      }
      w[j] = std::exp(w[j] - mx);
      sum += w[j];
    }
    for (int64_t j = 0; j <= pos; ++j)
      for (int64_t e = 0; e < h.hd; ++e)
        out[qh * h.hd + e] += w[j] / sum * s.v[(j * h.nkv + kh) * h.hd + e];
  }
  return out;
}

// A paged KV cache with blocks handed out in shuffled order; unused slots hold
// NaN so that reading anything outside the visible keys poisons the output.
class PagedCache {
 public:
  PagedCache(const Heads& h, int64_t block_size, int64_t num_blocks, uint64_t seed)
      : h_(h), bs_(block_size),
        k_(num_blocks * block_size * h.nkv * h.hd, NAN),
        v_(num_blocks * block_size * h.nkv * h.hd, NAN),
        free_(num_blocks) {
    std::iota(free_.begin(), free_.end(), 0);
    std::shuffle(free_.begin(), free_.end(), std::mt19937(seed));
  }

  // Reserves blocks for `len` tokens; returns the sequence's handle.
  int add_seq(int64_t len) {
    std::vector<int32_t> blocks;
    for (int64_t b = 0; b < (len + bs_ - 1) / bs_; ++b) {
      blocks.push_back(free_.back());
      free_.pop_back();
    }
    tables_.push_back(blocks);
    return static_cast<int>(tables_.size()) - 1;
  }

  // Writes positions [from, to) of `s` through kv_write, with a padding token
  // (slot -1, garbage k/v) in the middle of the batch.
  void write(int seq, const SeqData& s, int64_t from, int64_t to) {
    const int64_t row = h_.nkv * h_.hd;
    std::vector<float> k, v;
    std::vector<int32_t> slots;
    for (int64_t p = from; p < to; ++p) {
      if (p == (from + to) / 2) {
        slots.push_back(-1);
        k.insert(k.end(), row, 1e30f);
        v.insert(v.end(), row, 1e30f);
      }
      slots.push_back(tables_[seq][p / bs_] * bs_ + p % bs_);
      k.insert(k.end(), s.k.begin() + p * row, s.k.begin() + (p + 1) * row);
      v.insert(v.end(), s.v.begin() + p * row, s.v.begin() + (p + 1) * row);
    }
    kv_write(k.data(), v.data(), k_.data(), v_.data(), slots.data(), slots.size(), h_.nkv, h_.hd,
             bs_);
  }

  struct Query {
    int seq;
    const SeqData* data;
    int64_t ctx, q_len;
  };

  // One paged_attention call over `queries`; returns out rows in call order.
  std::vector<float> attend(const std::vector<Query>& queries, int64_t window) const {
    size_t max_blocks = 1;
    for (const auto& t : tables_) max_blocks = std::max(max_blocks, t.size());
    std::vector<int32_t> q_start = {0}, ctx, tables;
    std::vector<float> q;
    for (const auto& qu : queries) {
      q_start.push_back(q_start.back() + static_cast<int32_t>(qu.q_len));
      ctx.push_back(static_cast<int32_t>(qu.ctx));
      auto t = tables_[qu.seq];
      t.resize(max_blocks, -1);
      tables.insert(tables.end(), t.begin(), t.end());
      const int64_t row = h_.nq * h_.hd;
      q.insert(q.end(), qu.data->q.begin() + (qu.ctx - qu.q_len) * row,
               qu.data->q.begin() + qu.ctx * row);
    }
    PagedAttentionArgs a;
    a.num_seqs = static_cast<int64_t>(queries.size());
    a.q_start = q_start.data();
    a.ctx_len = ctx.data();
    a.block_tables = tables.data();
    a.max_blocks_per_seq = static_cast<int64_t>(max_blocks);
    a.block_size = bs_;
    a.nq_heads = h_.nq;
    a.nkv_heads = h_.nkv;
    a.head_dim = h_.hd;
    a.scale = 1.0f / std::sqrt(static_cast<float>(h_.hd));
    a.sliding_window = window;
    std::vector<float> out(q.size(), NAN);
    paged_attention(q.data(), k_.data(), v_.data(), out.data(), a);
    return out;
  }

  const std::vector<float>& k_cache() const { return k_; }
  const std::vector<float>& v_cache() const { return v_; }

 private:
  Heads h_;
  int64_t bs_;
  std::vector<float> k_, v_;
  std::vector<int32_t> free_;
  std::vector<std::vector<int32_t>> tables_;
};

constexpr int64_t kBlock = 16;
const int64_t kContexts[] = {1, 15, 16, 17, 33, 200};

class AttentionHeads : public ::testing::TestWithParam<Heads> {};

// Every context length, as a full prefill, a decode step and (with `partial`)
// a half-prompt chunk, all in one call; each row against the double reference.
void check_batch(const Heads& h, int64_t window, bool partial) {
  PagedCache cache(h, kBlock, 200, 7);
  std::vector<SeqData> data;
  for (int64_t c : kContexts) data.push_back(make_seq(h, c, 100 + c));
  std::vector<PagedCache::Query> queries;
  for (size_t i = 0; i < data.size(); ++i) {
    const int64_t c = data[i].len;
    const int seq = cache.add_seq(c);
    cache.write(seq, data[i], 0, c);
    queries.push_back({seq, &data[i], c, c});
    queries.push_back({seq, &data[i], c, 1});
    if (partial) queries.push_back({seq, &data[i], c, (c + 1) / 2});
  }
  auto out = cache.attend(queries, window);
  const double scale = 1.0 / std::sqrt(static_cast<float>(h.hd));
  size_t row = 0;
  for (const auto& qu : queries) {
    for (int64_t p = qu.ctx - qu.q_len; p < qu.ctx; ++p, ++row) {
      std::vector<float> got(out.begin() + row * h.nq * h.hd, out.begin() + (row + 1) * h.nq * h.hd);
      expect_close(got, reference_row(h, *qu.data, p, window, scale), 2e-6, 2e-5,
                   "ctx " + std::to_string(qu.ctx) + " q_len " + std::to_string(qu.q_len) +
                       " pos " + std::to_string(p) + " window " + std::to_string(window));
      if (::testing::Test::HasFailure()) return;
    }
  }
  EXPECT_EQ(row * h.nq * h.hd, out.size());
}

TEST_P(AttentionHeads, MatchesReference) { check_batch(GetParam(), 0, true); }

TEST_P(AttentionHeads, SlidingWindowMatchesReference) {
  // 1: only itself; 16: one block; 17: crosses a block boundary; 100: many blocks.
  for (int64_t window : {1, 16, 17, 100}) check_batch(GetParam(), window, false);
}

// A prompt written and attended in chunks of 5 gives the rows of one prefill.
TEST_P(AttentionHeads, ChunkedPrefillEqualsOneGo) {
  const Heads h = GetParam();
  for (int64_t len : {33, 200}) {
    for (int64_t window : {0, 17}) {
      auto s = make_seq(h, len, 300 + len);
      PagedCache whole(h, kBlock, 40, 1), chunked(h, kBlock, 40, 2);
      const int a = whole.add_seq(len), b = chunked.add_seq(len);
      whole.write(a, s, 0, len);
      auto ref = whole.attend({{a, &s, len, len}}, window);
      std::vector<float> got;
      for (int64_t from = 0; from < len; from += 5) {
        const int64_t to = std::min(len, from + 5);
        chunked.write(b, s, from, to);
        auto part = chunked.attend({{b, &s, to, to - from}}, window);
        got.insert(got.end(), part.begin(), part.end());
      }
      ASSERT_EQ(got.size(), ref.size());
      EXPECT_TRUE(bitwise_equal(got.data(), ref.data(), ref.size()))
          << "len " << len << " window " << window;
    }
  }
}

// Token-by-token decode reproduces every row of a full prefill; in particular
// the last prefill row equals a decode step over the same cache contents.
TEST_P(AttentionHeads, DecodeEqualsPrefillRows) {
  const Heads h = GetParam();
  const int64_t row = h.nq * h.hd;
  for (int64_t len : kContexts) {
    auto s = make_seq(h, len, 500 + len);
    PagedCache prefill(h, kBlock, 40, 3), decode(h, kBlock, 40, 4);
    const int a = prefill.add_seq(len), b = decode.add_seq(len);
    prefill.write(a, s, 0, len);
    auto full = prefill.attend({{a, &s, len, len}}, 0);
    auto last = prefill.attend({{a, &s, len, 1}}, 0);
    EXPECT_TRUE(bitwise_equal(last.data(), full.data() + (len - 1) * row, row)) << "len " << len;
    for (int64_t p = 0; p < len; ++p) {
      decode.write(b, s, p, p + 1);
      auto step = decode.attend({{b, &s, p + 1, 1}}, 0);
      ASSERT_TRUE(bitwise_equal(step.data(), full.data() + p * row, row)) << "len " << len << " pos " << p;
    }
  }
}

// A sequence's rows are bitwise the same alone and inside different batches.
TEST_P(AttentionHeads, BatchInvariantBitwise) {
  const Heads h = GetParam();
  PagedCache cache(h, kBlock, 60, 5);
  auto s0 = make_seq(h, 33, 700), s1 = make_seq(h, 200, 701), s2 = make_seq(h, 17, 702);
  const int a = cache.add_seq(33), b = cache.add_seq(200), c = cache.add_seq(17);
  cache.write(a, s0, 0, 33);
  cache.write(b, s1, 0, 200);
  cache.write(c, s2, 0, 17);
  const int64_t row = h.nq * h.hd;
  for (int64_t q_len : {1, 7, 33}) {
    auto alone = cache.attend({{a, &s0, 33, q_len}}, 0);
    auto first = cache.attend({{a, &s0, 33, q_len}, {b, &s1, 200, 1}, {c, &s2, 17, 17}}, 0);
    auto middle = cache.attend({{c, &s2, 17, 3}, {a, &s0, 33, q_len}, {b, &s1, 200, 50}}, 0);
    EXPECT_TRUE(bitwise_equal(alone.data(), first.data(), q_len * row)) << "q_len " << q_len;
    EXPECT_TRUE(bitwise_equal(alone.data(), middle.data() + 3 * row, q_len * row)) << "q_len " << q_len;
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, AttentionHeads,
                         ::testing::Values(Heads{6, 3, 40}, Heads{5, 1, 64}, Heads{4, 4, 128},
                                           Heads{8, 2, 64}, Heads{1, 1, 7}),
                         [](const auto& info) {
                           return "q" + std::to_string(info.param.nq) + "_kv" +
                                  std::to_string(info.param.nkv) + "_d" +
                                  std::to_string(info.param.hd);
                         });

TEST(KvWrite, WritesSlotsAndSkipsNegative) {
  const int64_t nkv = 3, hd = 5, bs = 4, blocks = 3, row = nkv * hd;
  std::vector<float> kc(blocks * bs * row, -7.0f), vc(blocks * bs * row, -8.0f);
  const std::vector<int32_t> slots = {9, -1, 0, 11, 4};
  auto k = random_vec(slots.size() * row, 1), v = random_vec(slots.size() * row, 2);
  kv_write(k.data(), v.data(), kc.data(), vc.data(), slots.data(), slots.size(), nkv, hd, bs);
  std::vector<float> want_k(kc.size(), -7.0f), want_v(vc.size(), -8.0f);
  // Head-major blocks: element (slot, g, d) sits at ((block·nkv + g)·bs + offset)·hd + d.
  for (size_t t = 0; t < slots.size(); ++t) {
    if (slots[t] < 0) continue;
    const int64_t block = slots[t] / bs, offset = slots[t] % bs;
    for (int64_t g = 0; g < nkv; ++g)
      for (int64_t d = 0; d < hd; ++d) {
        const int64_t at = ((block * nkv + g) * bs + offset) * hd + d;
        want_k[at] = k[t * row + g * hd + d];
        want_v[at] = v[t * row + g * hd + d];
      }
  }
  EXPECT_EQ(kc, want_k);
  EXPECT_EQ(vc, want_v);
}

}  // namespace
}  // namespace shardlm::kernels::cpu
