// Packed sequences: attention with a per-query lower bound on the keys (kv_start, the
// block-diagonal causal mask) against an explicit double-precision softmax with the mask, its
// gradients, bit-identity with no kv_start when every bound is 0, and the GPT with segments:
// examples packed into one row give the losses and gradients of the same examples run alone.
//
// Tolerances: fused float attention vs the double reference 1e-5 relative to the largest
// reference value (float roundings of sums over <= 150 keys); gradcheck in double at its defaults
// (atol 1e-6, rtol 1e-4); the GPT packed vs alone 1e-5 absolute on losses and 1e-5 relative to
// the largest gradient (two float computations of the same math, tiles cut differently).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include <loom/loom.hpp>
#include <loom/nn/gpt.hpp>

#include "../attention_helpers.hpp"
#include "catch.hpp"

using namespace loom;
using loom_test::starts_of;

namespace {


// The unfused reference in double: softmax(q k^T / sqrt(HS) + mask) v, where query i of row b
// sees keys kv_start[b, i] <= j <= i + Tk - Tq (an additive 0 / -inf mask, (B, 1, Tq, Tk)).
Tensor<double> masked_reference(const Tensor<double>& q, const Tensor<double>& k, const Tensor<double>& v,
                                 const Tensor<int32_t>& kv_start) {
  const int64_t B = q.size(0), Tq = q.size(2), Tk = k.size(2), HS = q.size(3);
  std::vector<double> mask(size_t(B * Tq * Tk));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < Tq; ++i)
      for (int64_t j = 0; j < Tk; ++j) {
        const int64_t first = kv_start.defined() ? kv_start.at({b, i}) : 0;
        mask[size_t((b * Tq + i) * Tk + j)] = (j >= first && j <= i + Tk - Tq) ? 0.0 : -INFINITY;
      }
  auto s = matmul(q, k.transpose(-2, -1)) / std::sqrt(double(HS)) + from_vector<double>(mask, {B, 1, Tq, Tk});
  return matmul(softmax(s, -1), v);
}

// max |a - b| / max(max |b|, floor).
template <class A>
double max_rel(const Tensor<A>& a, const Tensor<double>& b, double floor = 0) {
  auto x = a.template to<double>().to_vector(), y = b.to_vector();
  REQUIRE(x.size() == y.size());
  double num = 0, den = 0;
  for (size_t i = 0; i < x.size(); ++i) num = std::max(num, std::abs(x[i] - y[i])), den = std::max(den, std::abs(y[i]));
  den = std::max(den, floor);
  return den == 0 ? num : num / den;
}

template <class T>
std::vector<T> vec(const Tensor<T>& t) {
  return t.contiguous().to_vector();
}

nn::GPTConfig small_config() {
  nn::GPTConfig c;
  c.vocab_size = 50, c.block_size = 32, c.n_layer = 2, c.n_embd = 32, c.n_head = 2, c.dropout = 0.0;
  return c;
}

}  // namespace

TEST_CASE("attention with kv_start matches a masked double softmax forward and backward") {
  struct Layout {
    const char* name;
    int64_t Tq, Tk;
    std::vector<std::vector<int64_t>> rows;  // run lengths per row, over Tq queries
  };
  // 150 queries cross two tile edges (64 per tile): runs that end inside, before and across a tile
  std::vector<Layout> layouts = {
      {"one segment (plain causal)", 150, 150, {{150}, {150}}},
      {"many short", 150, 150, {{3, 17, 1, 40, 9, 64, 16}, {70, 2, 2, 5, 30, 41}}},
      {"lengths 1", 150, 150, {std::vector<int64_t>(150, 1), std::vector<int64_t>(150, 1)}},
      {"long across tiles", 150, 150, {{100, 50}, {1, 149}}},
      {"odd T", 37, 37, {{5, 32}, {36, 1}}},
  };
  Generator g(7);
  for (const auto& lay : layouts) {
    CAPTURE(lay.name);
    const int64_t B = 2, NH = 3, HS = 16;
    auto q = rand<float>({B, NH, lay.Tq, HS}, g, -1.5, 1.5), k = rand<float>({B, NH, lay.Tk, HS}, g, -1.5, 1.5),
         v = rand<float>({B, NH, lay.Tk, HS}, g, -2, 2), w = randn<float>({B, NH, lay.Tq, HS}, g);
    Tensor<int32_t> ks = starts_of(lay.rows);
    // float fused op
    auto qf = q.detach().requires_grad_(), kf = k.detach().requires_grad_(), vf = v.detach().requires_grad_();
    auto y = causal_attention(qf, kf, vf, ks);
    sum(y * w).backward();
    // double reference, unfused, with its own autograd
    auto qd = q.to<double>().requires_grad_(), kd = k.to<double>().requires_grad_(), vd = v.to<double>().requires_grad_();
    auto yd = masked_reference(qd, kd, vd, ks);
    sum(yd * w.to<double>()).backward();
    CHECK(max_rel(y, yd) <= 1e-5);
    // (with runs of length 1 every query sees one key: dq and dk are 0 up to rounding, so their
    // error is taken relative to the scale of dv instead)
    const double floor = max(abs(vd.grad())).item();
    CHECK(max_rel(qf.grad(), qd.grad(), floor) <= 1e-5);
    CHECK(max_rel(kf.grad(), kd.grad(), floor) <= 1e-5);
    CHECK(max_rel(vf.grad(), vd.grad()) <= 1e-5);
    // the fused op in double agrees with the reference to double rounding
    auto yd2 = causal_attention(q.to<double>(), k.to<double>(), v.to<double>(), ks);
    CHECK(max_rel(yd2, yd) <= 1e-12);
  }
}

TEST_CASE("attention with kv_start and a KV-cache offset (Tq < Tk)") {
  // 5 queries at positions 60..64 over 65 keys; bounds anywhere in [0, own position]
  Generator g(8);
  auto q = rand<float>({2, 2, 5, 8}, g, -1, 1), k = rand<float>({2, 2, 65, 8}, g, -1, 1),
       v = rand<float>({2, 2, 65, 8}, g, -1, 1);
  auto ks = from_vector<int32_t>({0, 61, 61, 63, 64, 10, 10, 62, 40, 0}, {2, 5});
  auto y = causal_attention(q, k, v, ks);
  auto yd = masked_reference(q.to<double>(), k.to<double>(), v.to<double>(), ks);
  CHECK(max_rel(y, yd) <= 1e-5);
}

TEST_CASE("gradcheck: attention and packed attention with kv_start in double") {
  Generator g(9);
  auto ks = starts_of({{2, 5, 1}, {1, 1, 6}});  // (2, 8)
  auto q = rand<double>({2, 2, 8, 3}, g, -1, 1).requires_grad_(), k = rand<double>({2, 2, 8, 3}, g, -1, 1).requires_grad_(),
       v = rand<double>({2, 2, 8, 3}, g, -1, 1).requires_grad_();
  auto r = gradcheck([&](const auto& in) { return causal_attention(in[0], in[1], in[2], ks); }, {q, k, v});
  INFO(r.report);
  CHECK(r.ok);
  auto qkv = rand<double>({2, 8, 3 * 4}, g, -1, 1).requires_grad_();
  auto r2 = gradcheck([&](const auto& in) { return causal_attention_packed(in[0], 2, ks); }, {qkv});
  INFO(r2.report);
  CHECK(r2.ok);
}

TEST_CASE("packed attention with kv_start equals attention on its head views") {
  Generator g(10);
  const int64_t B = 2, T = 90, C = 48, NH = 3, HS = C / NH;
  auto ks = starts_of({{30, 30, 30}, {7, 83}});
  auto qkv = rand<float>({B, T, 3 * C}, g, -1.5, 1.5);
  auto y = causal_attention_packed(qkv, NH, ks);  // (B, T, C)
  auto view = [&](int64_t i) { return qkv.slice(-1, i * C, (i + 1) * C).reshape({B, T, NH, HS}).transpose(1, 2); };
  auto y2 = causal_attention(view(0), view(1), view(2), ks).transpose(1, 2).reshape({B, T, C});
  CHECK(vec(y) == vec(y2));  // the same kernel on the same strided views: the same bits
}

TEST_CASE("kv_start all zero gives the bits of no kv_start") {
  Generator g(11);
  const int64_t B = 2, T = 130, C = 32, NH = 2;
  auto x = rand<float>({B, T, 3 * C}, g, -1.5, 1.5), w = randn<float>({B, T, C}, g);
  auto zero = zeros<int32_t>({B, T});
  auto run = [&](const Tensor<int32_t>& ks, std::vector<float>& out, std::vector<float>& grad) {
    auto qkv = x.detach().requires_grad_();
    auto y = causal_attention_packed(qkv, NH, ks);
    sum(y * w).backward();
    out = vec(y), grad = vec(qkv.grad());
  };
  std::vector<float> y0, g0, y1, g1;
  run(Tensor<int32_t>(), y0, g0);
  run(zero, y1, g1);
  CHECK(y0 == y1);
  CHECK(g0 == g1);
  // the four-argument op as well
  auto q = rand<float>({B, NH, T, 16}, g), k = rand<float>({B, NH, T, 16}, g), v = rand<float>({B, NH, T, 16}, g);
  CHECK(vec(causal_attention(q, k, v)) == vec(causal_attention(q, k, v, zero)));
}

TEST_CASE("segment_layout restarts positions at each change of id") {
  // ids need not be sorted nor distinct: 4 4 1 1 1 4 is three examples; row 2 is one example
  auto seg = from_vector<int64_t>({4, 4, 1, 1, 1, 4, 9, 9, 9, 9, 9, 9}, {2, 6});
  auto lay = nn::segment_layout(seg);
  CHECK(vec(lay.pos) == std::vector<int64_t>{0, 1, 0, 1, 2, 0, 0, 1, 2, 3, 4, 5});
  CHECK(vec(lay.kv_start) == std::vector<int32_t>{0, 0, 2, 2, 2, 5, 0, 0, 0, 0, 0, 0});
}

TEST_CASE("GPT on packed examples gives the losses and gradients of the examples run alone") {
  nn::GPT model(small_config(), 42);
  std::mt19937_64 g(3);
  const std::vector<int64_t> lens = {7, 11, 5};
  const std::vector<int64_t> ids = {3, 1, 3};  // segment ids: only their changes matter
  std::vector<std::vector<int64_t>> toks, tgts;
  for (int64_t n : lens) {
    std::vector<int64_t> t(static_cast<size_t>(n)), y(static_cast<size_t>(n));
    for (auto& v : t) v = int64_t(g() % 50);
    for (auto& v : y) v = g() % 4 == 0 ? -1 : int64_t(g() % 50);  // about 1 in 4 ignored
    toks.push_back(t), tgts.push_back(y);
  }
  tgts[1][0] = -1, tgts[2][4] = -1;
  // alone: batch 1, each its own length; the gradient of the sum of the examples' summed losses
  model.zero_grad();
  std::vector<std::vector<float>> alone;
  double total = 0;
  int64_t count = 0;
  for (size_t e = 0; e < lens.size(); ++e) {
    auto idx = from_vector<int64_t>(toks[e], {1, lens[e]}), tgt = from_vector<int64_t>(tgts[e], {1, lens[e]});
    auto l = model.token_losses(idx, tgt);  // (1, n)
    REQUIRE(l.shape() == Shape({1, lens[e]}));
    sum(l).backward();
    alone.push_back(vec(l));
    for (size_t t = 0; t < tgts[e].size(); ++t) {
      if (tgts[e][t] == -1) {
        CHECK(alone.back()[t] == 0.0f);  // ignored targets give 0
      } else {
        total += alone.back()[t], ++count;
      }
    }
  }
  std::vector<std::vector<float>> grad_alone;
  for (auto& p : model.parameters()) grad_alone.push_back(vec(p.grad()));
  // packed: one row of 23 positions with segments
  std::vector<int64_t> all_t, all_y, seg;
  for (size_t e = 0; e < lens.size(); ++e) {
    all_t.insert(all_t.end(), toks[e].begin(), toks[e].end());
    all_y.insert(all_y.end(), tgts[e].begin(), tgts[e].end());
    seg.insert(seg.end(), size_t(lens[e]), ids[e]);
  }
  const int64_t T = int64_t(all_t.size());
  REQUIRE(T == 23);
  auto idx = from_vector<int64_t>(all_t, {1, T}), tgt = from_vector<int64_t>(all_y, {1, T});
  auto segments = from_vector<int64_t>(seg, {1, T});
  model.zero_grad();
  auto packed = model.token_losses(idx, tgt, segments);  // (1, 23)
  sum(packed).backward();
  auto pl = vec(packed);
  double worst = 0;
  size_t at = 0;
  for (size_t e = 0; e < lens.size(); ++e)
    for (size_t t = 0; t < alone[e].size(); ++t, ++at) worst = std::max(worst, double(std::abs(pl[at] - alone[e][t])));
  CAPTURE(worst);
  CHECK(worst <= 1e-5);
  // the mean loss over the tokens not ignored
  auto out = model.forward(idx, tgt, nullptr, segments);
  CHECK(std::abs(out.loss.item() - total / double(count)) <= 1e-5);
  REQUIRE(out.logits.shape() == Shape({1, T, 50}));
  // every parameter's gradient, relative to the largest gradient of that parameter
  auto params = model.named_parameters();
  for (size_t i = 0; i < params.size(); ++i) {
    auto gp = vec(params[i].second.grad());
    double diff = 0, big = 0;
    for (size_t j = 0; j < gp.size(); ++j)
      diff = std::max(diff, double(std::abs(gp[j] - grad_alone[i][j]))), big = std::max(big, double(std::abs(grad_alone[i][j])));
    CAPTURE(params[i].first, diff, big);
    CHECK(diff <= 1e-5 * std::max(big, 1e-30));
  }
  // without segments the same row mixes the examples: the losses differ (the test can fail)
  auto unpacked = vec(model.token_losses(idx, tgt));
  double mixed = 0;
  for (size_t t = 7; t < pl.size(); ++t) mixed = std::max(mixed, double(std::abs(unpacked[t] - pl[t])));
  CHECK(mixed > 1e-3);

  SECTION("two rows in other orders, with a padded tail") {
    // row 0: examples 2, 0 and padding (ignored targets); row 1: examples 1, 2, 0 cut to fit 23
    std::vector<int64_t> t2, y2, s2;
    auto put = [&](size_t e, int64_t id) {
      t2.insert(t2.end(), toks[e].begin(), toks[e].end());
      y2.insert(y2.end(), tgts[e].begin(), tgts[e].end());
      s2.insert(s2.end(), size_t(lens[e]), id);
    };
    put(2, 0), put(0, 1);
    for (int i = 0; i < 11; ++i) t2.push_back(0), y2.push_back(-1), s2.push_back(-1);
    put(1, 0), put(2, 1), put(0, 2);
    auto l2 = vec(model.token_losses(from_vector<int64_t>(t2, {2, 23}), from_vector<int64_t>(y2, {2, 23}),
                                     from_vector<int64_t>(s2, {2, 23})));
    std::vector<std::pair<size_t, size_t>> where = {{2, 0}, {0, 5}, {1, 23}, {2, 34}, {0, 39}};  // (example, offset)
    double w2 = 0;
    for (auto [e, o] : where)
      for (size_t t = 0; t < alone[e].size(); ++t) w2 = std::max(w2, double(std::abs(l2[o + t] - alone[e][t])));
    CAPTURE(w2);
    CHECK(w2 <= 1e-5);
    for (size_t t = 12; t < 23; ++t) CHECK(l2[t] == 0.0f);  // the padding's ignored targets
  }
}

TEST_CASE("GPT without segments is unchanged by the segments path") {
  // one segment per row is plain causal attention with positions 0..T-1: the same bits
  nn::GPT model(small_config(), 5);
  std::mt19937_64 g(4);
  std::vector<int64_t> t(2 * 20);
  for (auto& v : t) v = int64_t(g() % 50);
  auto idx = from_vector<int64_t>(t, {2, 20});
  auto seg = from_vector<int64_t>(std::vector<int64_t>(40, 7), {2, 20});
  CHECK(vec(model.forward(idx).logits) == vec(model.forward(idx, {}, nullptr, seg).logits));
}

TEST_CASE("bad packing input gives clear errors") {
  Generator g(12);
  auto q = rand<float>({2, 2, 6, 4}, g), k = rand<float>({2, 2, 6, 4}, g), v = rand<float>({2, 2, 6, 4}, g);
  CHECK_THROWS_AS(causal_attention(q, k, v, zeros<int32_t>({2, 5})), shape_error);
  CHECK_THROWS_WITH(causal_attention(q, k, v, zeros<int32_t>({6})), Catch::Contains("kv_start must be (B, Tq)"));
  auto qkv = rand<float>({2, 6, 24}, g);
  CHECK_THROWS_AS(causal_attention_packed(qkv, 2, zeros<int32_t>({1, 6})), shape_error);
  // a bound past the query's own position would leave it nothing to attend to
  auto bad = zeros<int32_t>({2, 6});
  bad.data()[3] = 4;
  CHECK_THROWS_WITH(causal_attention(q, k, v, bad), Catch::Contains("kv_start[0, 3] = 4 must lie in [0, 3]"));
  bad.data()[3] = -1;
  CHECK_THROWS_AS(causal_attention(q, k, v, bad), value_error);

  nn::GPT model(small_config(), 1);
  auto idx = zeros<int64_t>({1, 4});
  auto seg = zeros<int64_t>({1, 4});
  auto caches = model.make_kv_cache(1, 8);
  CHECK_THROWS_WITH(model.forward(idx, {}, &caches, seg), Catch::Contains("cannot be used with KV caches"));
  CHECK_THROWS_AS(model.forward(idx, {}, nullptr, zeros<int64_t>({1, 5})), shape_error);
  CHECK_THROWS_AS(model.token_losses(idx, Tensor<int64_t>()), value_error);
}

// Timing, not run by default (ctest skips hidden tags): test_packing "[.bench]"
TEST_CASE("packed rows against padded rows: forward and backward time", "[.bench]") {
  nn::GPTConfig c;
  c.vocab_size = 512, c.block_size = 256, c.n_layer = 4, c.n_embd = 128, c.n_head = 4, c.dropout = 0.0;
  nn::GPT model(c, 1);
  std::mt19937_64 g(5);
  std::vector<int64_t> lens;
  for (int i = 0; i < 64; ++i) lens.push_back(20 + int64_t(g() % 41));
  // padded: 64 rows of 64; packed: greedy rows of 256 (first fit in order), tails padded
  std::vector<int64_t> pt(64 * 64, 0), py(64 * 64, -1);
  for (int i = 0; i < 64; ++i)
    for (int64_t t = 0; t < lens[size_t(i)]; ++t) pt[size_t(i * 64 + t)] = 1 + (i + t) % 500, py[size_t(i * 64 + t)] = 1 + (i + t + 1) % 500;
  std::vector<std::vector<int64_t>> rows_t, rows_y, rows_s;
  for (int i = 0; i < 64; ++i) {
    if (rows_t.empty() || int64_t(rows_t.back().size()) + lens[size_t(i)] > 256) rows_t.push_back({}), rows_y.push_back({}), rows_s.push_back({});
    for (int64_t t = 0; t < lens[size_t(i)]; ++t)
      rows_t.back().push_back(1 + (i + t) % 500), rows_y.back().push_back(1 + (i + t + 1) % 500), rows_s.back().push_back(i);
  }
  std::vector<int64_t> kt, ky, kseg;
  for (size_t r = 0; r < rows_t.size(); ++r) {
    rows_t[r].resize(256, 0), rows_y[r].resize(256, -1), rows_s[r].resize(256, -1);
    kt.insert(kt.end(), rows_t[r].begin(), rows_t[r].end());
    ky.insert(ky.end(), rows_y[r].begin(), rows_y[r].end());
    kseg.insert(kseg.end(), rows_s[r].begin(), rows_s[r].end());
  }
  const int64_t R = int64_t(rows_t.size());
  auto time = [&](auto&& step) {
    step();  // warm up
    auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < 3; ++i) step();
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / 3 * 1e3;
  };
  auto pi = from_vector<int64_t>(pt, {64, 64}), pyt = from_vector<int64_t>(py, {64, 64});
  auto ki = from_vector<int64_t>(kt, {R, 256}), kyt = from_vector<int64_t>(ky, {R, 256}), ks = from_vector<int64_t>(kseg, {R, 256});
  double padded = time([&] { model.zero_grad(); model.forward(pi, pyt).loss.backward(); });
  double packed = time([&] { model.zero_grad(); model.forward(ki, kyt, nullptr, ks).loss.backward(); });
  double packed_full = time([&] { model.zero_grad(); model.forward(ki, kyt).loss.backward(); });  // no block mask
  std::printf("64 examples (20-60 tokens): padded 64x64 %.1f ms, packed %ldx256 %.1f ms (plain causal on the same rows %.1f ms)\n",
              padded, long(R), packed, packed_full);
  // the attention op alone on the packed rows (C 128, 4 heads): block-diagonal vs plain causal
  auto lay = nn::segment_layout(ks);
  Generator gq(6);
  auto qkv = rand<float>({R, 256, 3 * 128}, gq, -1, 1), w = randn<float>({R, 256, 128}, gq);
  auto attn = [&](const Tensor<int32_t>& kv) {
    auto x = qkv.detach().requires_grad_();
    sum(causal_attention_packed(x, 4, kv) * w).backward();
  };
  double a_block = time([&] { attn(lay.kv_start); }), a_causal = time([&] { attn(Tensor<int32_t>()); });
  std::printf("attention forward+backward on %ldx256: block-diagonal %.2f ms, plain causal %.2f ms\n", long(R), a_block,
              a_causal);
  CHECK(packed > 0);
}
