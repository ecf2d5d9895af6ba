// Rotary position embedding and grouped-query attention.
//
// rope: the fused op against a naive double loop (both layouts, positions per row, strided
// inputs), the relative-position property of rotated dot products, gradcheck, the permutation
// that turns Meta's interleaved layout into HF's half layout, and the composed path (the one
// CUDA runs) against the fused op. GQA: attention with NKV < NH key/value heads against the same
// attention on keys and values repeated to NH heads, forward and gradients, with packed rows
// and a KV cache, and gradcheck.
//
// Tolerances: float rope 1e-6 relative to the largest reference value (a few roundings per
// element); rotated dot products 1e-5 (float) and 1e-12 (double) relative to |q| |k|; GQA vs
// repeated heads in double 1e-12 relative (the same tiles, summed in another order for dk, dv);
// gradcheck at its defaults (atol 1e-6, rtol 1e-4).
// Index lists are built with push_back, not braced integer lists (which GCC 12 with
// -march=native miscompiles in places).
#include <chrono>
#include <cmath>
#include <cstdio>
#include <utility>
#include <vector>

#include <loom/loom.hpp>

#include "../attention_helpers.hpp"
#include "catch.hpp"

using namespace loom;
using loom_test::starts_of;
using loom_test::repeat_heads;

namespace {

// max |a - b| / max(max |b|, floor), in double.
template <class A, class B>
double max_rel(const Tensor<A>& a, const Tensor<B>& b, double floor = 0) {
  auto x = a.template to<double>().contiguous().to_vector(), y = b.template to<double>().contiguous().to_vector();
  REQUIRE(x.size() == y.size());
  double num = 0, den = 0;
  for (size_t i = 0; i < x.size(); ++i) num = std::max(num, std::abs(x[i] - y[i])), den = std::max(den, std::abs(y[i]));
  den = std::max(den, floor);
  return den == 0 ? num : num / den;
}

// (B, T) positions that differ per row and do not start at 0.
Tensor<int64_t> scattered_positions(int64_t B, int64_t T) {
  std::vector<int64_t> p;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t) p.push_back(b == 0 ? 7 + t : (b % 2 ? 1000 - 13 * t : 3 * t * t + b));
  return from_vector<int64_t>(p, {B, T});
}

// The naive reference in double: loops, std::cos / std::sin, angle n * theta^(-2p/HS).
Tensor<double> rope_reference(const Tensor<double>& x, const Tensor<int64_t>& pos, double theta, RopeLayout layout) {
  const int64_t B = x.size(0), T = x.size(1), H = x.size(2), HS = x.size(3);
  Tensor<double> out = zeros<double>({B, T, H, HS});
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t p = 0; p < HS / 2; ++p) {
          const double a = double(pos.at({b, t})) * std::pow(theta, -2.0 * double(p) / double(HS));
          const int64_t i = layout == RopeLayout::half ? p : 2 * p, j = layout == RopeLayout::half ? p + HS / 2 : 2 * p + 1;
          const double xi = x.at({b, t, h, i}), xj = x.at({b, t, h, j});
          out.at({b, t, h, i}) = xi * std::cos(a) - xj * std::sin(a);
          out.at({b, t, h, j}) = xj * std::cos(a) + xi * std::sin(a);
        }
  return out;
}

// x with its last dimension reordered: out[..., f] = x[..., perm[f]].
template <class T>
Tensor<T> permute_features(const Tensor<T>& x, const std::vector<int64_t>& perm) {
  Tensor<T> xc = x.contiguous(), out = Tensor<T>::empty(x.shape());
  const int64_t HS = x.size(-1), rows = x.numel() / HS;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t f = 0; f < HS; ++f) out.data()[r * HS + f] = xc.data()[r * HS + perm[size_t(f)]];
  return out;
}

const char* name_of(RopeLayout l) { return l == RopeLayout::half ? "half" : "interleaved"; }

std::vector<RopeLayout> both_layouts() {
  std::vector<RopeLayout> v;
  v.push_back(RopeLayout::half);
  v.push_back(RopeLayout::interleaved);
  return v;
}

}  // namespace

// --- rope ----------------------------------------------------------------------------------------

TEST_CASE("rope against a double reference: both layouts, positions per row, strided inputs") {
  Generator g(1);
  const int64_t B = 3, T = 5, H = 4, HS = 16;
  auto pos = scattered_positions(B, T);
  for (RopeLayout layout : both_layouts()) {
    CAPTURE(name_of(layout));
    std::vector<double> thetas;
    thetas.push_back(10000.0), thetas.push_back(500000.0), thetas.push_back(3.5);
    for (double theta : thetas) {
      CAPTURE(theta);
      auto x = rand<float>({B, T, H, HS}, g, -2, 2);
      auto y = rope(x, pos, theta, layout);
      REQUIRE(y.shape() == Shape({B, T, H, HS}));
      CHECK(y.is_contiguous());
      auto ref = rope_reference(x.to<double>(), pos, theta, layout);
      CHECK(max_rel(y, ref) <= 1e-6);
      CHECK(max_rel(rope(x.to<double>(), pos, theta, layout), ref) <= 1e-14);
    }
    // strided: a (B, H, T, HS) buffer seen as (B, T, H, HS), and a last stride that is not 1
    auto xbh = rand<float>({B, H, T, HS}, g, -2, 2);
    auto xt = xbh.transpose(1, 2);
    CHECK(max_rel(rope(xt, pos, 10000.0, layout), rope_reference(xt.to<double>(), pos, 10000.0, layout)) <= 1e-6);
    auto xf = rand<float>({B, T, HS, H}, g, -2, 2).transpose(2, 3);
    REQUIRE(xf.stride(-1) != 1);
    CHECK(max_rel(rope(xf, pos, 10000.0, layout), rope_reference(xf.to<double>(), pos, 10000.0, layout)) <= 1e-6);
  }
  // position 0 is the identity; rope_positions counts from start in every row
  auto x = rand<float>({2, 1, 3, 8}, g);
  CHECK(max_rel(rope(x, rope_positions(2, 1)), x) == 0);
  auto p = rope_positions(2, 4, 5);
  REQUIRE(p.shape() == Shape({2, 4}));
  CHECK(p.at({0, 0}) == 5);
  CHECK(p.at({1, 3}) == 8);
}

TEST_CASE("rope reuses its last table of angles only where it holds the positions, theta and head size asked for") {
  // The CPU kernel keeps the cosines and sines of its last call. A sequence of calls that reuse
  // it (same positions), read inside it (fewer positions), move past it, change the head size
  // or theta, and rotate backward (the gradient), each checked against the double reference.
  Generator g(4);
  const int64_t B = 2, H = 3;
  struct Call { int64_t T, start, HS; double theta; };
  std::vector<Call> calls = {{6, 0, 16, 10000.0}, {6, 0, 16, 10000.0}, {3, 2, 16, 10000.0}, {4, 40, 16, 10000.0},
                             {4, 40, 8, 10000.0}, {4, 40, 8, 500.0},    {6, 0, 16, 10000.0}};
  for (const Call& c : calls) {
    CAPTURE(c.T, c.start, c.HS, c.theta);
    auto pos = rope_positions(B, c.T, c.start);
    auto x = rand<float>({B, c.T, H, c.HS}, g, -2, 2).requires_grad_();
    auto y = rope(x, pos, c.theta);
    CHECK(max_rel(y, rope_reference(x.detach().to<double>(), pos, c.theta, RopeLayout::half)) <= 1e-6);
    // the gradient of sum(y * w) is w rotated backward: the reference at the negated positions
    auto w = rand<float>({B, c.T, H, c.HS}, g, -2, 2);
    sum(y * w).backward();
    auto neg = Tensor<int64_t>::empty({B, c.T});
    for (int64_t i = 0; i < B * c.T; ++i) neg.data()[i] = -pos.data()[i];
    CHECK(max_rel(x.grad(), rope_reference(w.to<double>(), neg, c.theta, RopeLayout::half)) <= 1e-6);
  }
}

TEST_CASE("rope: rotated dot products depend only on the distance") {
  const int64_t HS = 32;
  auto check = [&](auto zero, double tol) {
    using T = decltype(zero);
    Generator g(2);
    for (RopeLayout layout : both_layouts()) {
      CAPTURE(name_of(layout));
      auto q = randn<T>({1, 1, 1, HS}, g), k = randn<T>({1, 1, 1, HS}, g);
      const double scale = std::sqrt(sum(q * q).item() * sum(k * k).item());
      auto dot = [&](int64_t i, int64_t j) {
        auto at = [](int64_t n) { return rope_positions(1, 1, n); };
        return double(sum(rope(q, at(i), 10000.0, layout) * rope(k, at(j), 10000.0, layout)).item());
      };
      std::vector<std::pair<int64_t, int64_t>> pairs;
      pairs.push_back(std::make_pair(3, 0)), pairs.push_back(std::make_pair(0, 3));
      pairs.push_back(std::make_pair(17, 9)), pairs.push_back(std::make_pair(5, 5));
      for (auto [i, j] : pairs) {
        const double d0 = dot(i, j);
        for (int64_t s = 1; s < 5000; s = 9 * s + 4) {  // shifts 1, 13, 121, 1093
          CAPTURE(i, j, s);
          CHECK(std::abs(dot(i + s, j + s) - d0) <= tol * scale);
        }
      }
      // and it does change with the distance (the property is not trivially true)
      CHECK(std::abs(dot(3, 0) - dot(4, 0)) > 1e-3 * scale);
    }
  };
  check(float(0), 1e-5);
  check(double(0), 1e-12);
}

TEST_CASE("gradcheck: rope in double, both layouts, strided input and gradient") {
  Generator g(3);
  auto pos = scattered_positions(2, 3);
  for (RopeLayout layout : both_layouts()) {
    CAPTURE(name_of(layout));
    auto x = rand<double>({2, 3, 2, 6}, g, -1, 1).requires_grad_();
    auto r = gradcheck([&](const auto& in) { return rope(in[0], pos, 10000.0, layout); }, {x});
    INFO(r.report);
    CHECK(r.ok);
    // x a transposed view, the output used through a transposed view (a strided gradient)
    auto xb = rand<double>({2, 2, 3, 6}, g, -1, 1).requires_grad_();
    auto r2 = gradcheck([&](const auto& in) { return rope(in[0].transpose(1, 2), pos, 100.0, layout).transpose(1, 2); },
                        {xb});
    INFO(r2.report);
    CHECK(r2.ok);
  }
}

TEST_CASE("rope layouts: half of the permuted features is the permuted interleaved") {
  // HF's conversion of Meta's checkpoints permutes the features of each q and k head: half
  // position p takes interleaved feature 2p and half position p + HS/2 takes feature 2p + 1.
  Generator g(4);
  const int64_t B = 2, T = 6, H = 3, HS = 12;
  std::vector<int64_t> perm(HS);
  for (int64_t p = 0; p < HS / 2; ++p) perm[size_t(p)] = 2 * p, perm[size_t(p + HS / 2)] = 2 * p + 1;
  auto x = rand<float>({B, T, H, HS}, g, -1, 1);
  auto pos = scattered_positions(B, T);
  auto half_of_permuted = rope(permute_features(x, perm), pos, 10000.0, RopeLayout::half);
  auto permuted_interleaved = permute_features(rope(x, pos, 10000.0, RopeLayout::interleaved), perm);
  CHECK(half_of_permuted.to_vector() == permuted_interleaved.to_vector());  // the same products: the same bits
  // the trap: without the permutation the two layouts disagree
  CHECK(max_rel(rope(x, pos, 10000.0, RopeLayout::half), rope(x, pos, 10000.0, RopeLayout::interleaved)) > 0.1);
}

TEST_CASE("rope_composed (the CUDA path) equals the fused rope, forward and gradients") {
  Generator g(5);
  const int64_t B = 2, T = 7, H = 3, HS = 10;
  auto pos = scattered_positions(B, T);
  for (RopeLayout layout : both_layouts()) {
    CAPTURE(name_of(layout));
    auto base = rand<double>({B, H, T, HS}, g, -2, 2);
    auto w = randn<double>({B, T, H, HS}, g);
    auto run = [&](bool composed, auto zero) {
      using T_ = decltype(zero);
      auto xb = base.detach().to<T_>().requires_grad_();
      auto x = xb.transpose(1, 2);
      auto y = composed ? detail::rope_composed(x, pos, 10000.0, layout) : rope(x, pos, 10000.0, layout);
      sum(y * w.to<T_>()).backward();
      return std::make_pair(y.contiguous(), xb.grad());
    };
    auto [yd, gd] = run(false, double(0));
    auto [yc, gc] = run(true, double(0));
    CHECK(max_rel(yc, yd) <= 1e-14);
    CHECK(max_rel(gc, gd) <= 1e-14);
    auto [yf, gf] = run(false, float(0));
    auto [ycf, gcf] = run(true, float(0));
    CHECK(max_rel(ycf, yf) <= 1e-6);
    CHECK(max_rel(gcf, gf) <= 1e-6);
    // and the composition itself is right: against the double reference
    CHECK(max_rel(yc, rope_reference(base.transpose(1, 2), pos, 10000.0, layout)) <= 1e-14);
  }
}

TEST_CASE("rope rejects bad shapes and arguments and says so") {
  Generator g(6);
  auto x = rand<float>({2, 3, 2, 8}, g);
  CHECK_THROWS_WITH(rope(x, rope_positions(2, 4)), LOOM_CONTAINS("rope: pos must be (B, T) = [2, 3]"));
  CHECK_THROWS_AS(rope(x, rope_positions(3, 3)), shape_error);
  CHECK_THROWS_AS(rope(x, rope_positions(2, 3).reshape({6})), shape_error);
  CHECK_THROWS_WITH(rope(rand<float>({2, 3, 2, 7}, g), rope_positions(2, 3)), LOOM_CONTAINS("HS must be even"));
  CHECK_THROWS_WITH(rope(rand<float>({2, 3, 8}, g), rope_positions(2, 3)), LOOM_CONTAINS("must be (B, T, H, HS)"));
  CHECK_THROWS_WITH(rope(x, rope_positions(2, 3), 0.0), LOOM_CONTAINS("theta must be positive"));
  CHECK_THROWS_AS(rope(x, rope_positions(2, 3), -1.0), value_error);
  CHECK_THROWS_AS(rope(x, Tensor<int64_t>()), value_error);
}

// --- grouped-query attention ---------------------------------------------------------------------

TEST_CASE("GQA attention equals attention on repeated key/value heads, forward and gradients") {
  struct Case {
    const char* name;
    int64_t NH, NKV, Tq, Tk;
    bool packed;
  };
  std::vector<Case> cases;
  cases.push_back({"NKV = NH/2", 4, 2, 70, 70, false});
  cases.push_back({"multi-query", 4, 1, 70, 70, false});
  cases.push_back({"NKV = NH (unchanged)", 3, 3, 20, 20, false});
  cases.push_back({"groups of 3", 6, 2, 9, 9, false});
  cases.push_back({"packed rows", 4, 2, 70, 70, true});
  cases.push_back({"packed, multi-query", 4, 1, 70, 70, true});
  cases.push_back({"KV cache Tq < Tk", 4, 2, 5, 70, false});
  cases.push_back({"KV cache, multi-query", 4, 1, 3, 130, false});
  Generator g(7);
  const int64_t B = 2, HS = 8;
  for (const auto& c : cases) {
    CAPTURE(c.name);
    const int64_t G = c.NH / c.NKV;
    Tensor<int32_t> ks;
    if (c.packed) {
      std::vector<std::vector<int64_t>> rows(2);
      rows[0].push_back(30), rows[0].push_back(1), rows[0].push_back(39);
      rows[1].push_back(5), rows[1].push_back(65);
      ks = starts_of(rows);
    }
    auto q0 = rand<double>({B, c.NH, c.Tq, HS}, g, -1.5, 1.5), k0 = rand<double>({B, c.NKV, c.Tk, HS}, g, -1.5, 1.5),
         v0 = rand<double>({B, c.NKV, c.Tk, HS}, g, -2, 2), w = randn<double>({B, c.NH, c.Tq, HS}, g);
    auto run = [&](bool repeat) {
      auto q = q0.detach().requires_grad_(), k = k0.detach().requires_grad_(), v = v0.detach().requires_grad_();
      auto y = repeat ? causal_attention(q, repeat_heads(k, G), repeat_heads(v, G), ks) : causal_attention(q, k, v, ks);
      sum(y * w).backward();
      std::vector<Tensor<double>> out;
      out.push_back(y), out.push_back(q.grad()), out.push_back(k.grad()), out.push_back(v.grad());
      return out;
    };
    auto gqa = run(false), rep = run(true);
    REQUIRE(gqa[0].shape() == Shape({B, c.NH, c.Tq, HS}));
    REQUIRE(gqa[2].shape() == Shape({B, c.NKV, c.Tk, HS}));
    CHECK(max_rel(gqa[0], rep[0]) <= 1e-12);
    CHECK(max_rel(gqa[1], rep[1]) <= 1e-12);
    CHECK(max_rel(gqa[2], rep[2]) <= 1e-12);
    CHECK(max_rel(gqa[3], rep[3]) <= 1e-12);
    if (G == 1) {  // NKV == NH runs the kernels as before: the same bits
      CHECK(gqa[0].contiguous().to_vector() == rep[0].contiguous().to_vector());
      CHECK(gqa[2].contiguous().to_vector() == rep[2].contiguous().to_vector());
    }
  }
}

TEST_CASE("GQA attention on strided head views of one projection, in float") {
  // A Llama-style fused projection (B, T, (NH + 2 NKV) HS) cut into q, k, v head views.
  Generator g(8);
  const int64_t B = 2, T = 67, NH = 4, NKV = 2, HS = 16, G = NH / NKV;
  auto x = rand<float>({B, T, (NH + 2 * NKV) * HS}, g, -1.5, 1.5);
  auto heads = [&](int64_t first, int64_t n) {
    return x.slice(-1, first * HS, (first + n) * HS).reshape({B, T, n, HS}).transpose(1, 2);
  };
  auto q = heads(0, NH), k = heads(NH, NKV), v = heads(NH + NKV, NKV);
  auto y = causal_attention(q, k, v);
  auto y_rep = causal_attention(q.contiguous(), repeat_heads(k, G), repeat_heads(v, G));
  CHECK(max_rel(y, y_rep) <= 1e-6);
}

TEST_CASE("gradcheck: GQA attention in double, with packed rows and a KV cache") {
  Generator g(9);
  auto leaf = [&](int64_t NH, int64_t T) { return rand<double>({2, NH, T, 3}, g, -1, 1).requires_grad_(); };
  {
    auto q = leaf(4, 8), k = leaf(2, 8), v = leaf(2, 8);
    auto r = gradcheck([](const auto& in) { return causal_attention(in[0], in[1], in[2]); }, {q, k, v});
    INFO(r.report);
    CHECK(r.ok);
  }
  {
    std::vector<std::vector<int64_t>> rows(2);
    rows[0].push_back(2), rows[0].push_back(5), rows[0].push_back(1);
    rows[1].push_back(1), rows[1].push_back(1), rows[1].push_back(6);
    auto ks = starts_of(rows);
    auto q = leaf(3, 8), k = leaf(1, 8), v = leaf(1, 8);
    auto r = gradcheck([&](const auto& in) { return causal_attention(in[0], in[1], in[2], ks); }, {q, k, v});
    INFO(r.report);
    CHECK(r.ok);
  }
  {
    auto q = leaf(4, 3), k = leaf(2, 9), v = leaf(2, 9);
    auto r = gradcheck([](const auto& in) { return causal_attention(in[0], in[1], in[2]); }, {q, k, v});
    INFO(r.report);
    CHECK(r.ok);
  }
}

TEST_CASE("GQA attention rejects head counts that do not divide and says so") {
  Generator g(10);
  auto q = rand<float>({1, 3, 4, 8}, g), k = rand<float>({1, 2, 4, 8}, g), v = rand<float>({1, 2, 4, 8}, g);
  CHECK_THROWS_AS(causal_attention(q, k, v), shape_error);
  CHECK_THROWS_WITH(causal_attention(q, k, v), LOOM_CONTAINS("the 2 key/value heads must divide the 3 query heads"));
  auto q4 = rand<float>({1, 4, 4, 8}, g), v1 = rand<float>({1, 1, 4, 8}, g);
  CHECK_THROWS_WITH(causal_attention(q4, k, v1), LOOM_CONTAINS("do not match q"));
}

TEST_CASE("GQA against repeated heads and fused rope against the composition: time", "[.bench]") {
  auto time = [](auto&& step) {
    step();  // warm up
    auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < 3; ++i) step();
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / 3 * 1e3;
  };
  Generator g(11);
  const int64_t B = 4, T = 256, NH = 8, HS = 64;
  auto q0 = rand<float>({B, NH, T, HS}, g, -1, 1), w = randn<float>({B, NH, T, HS}, g);
  for (int64_t NKV = NH; NKV >= 1; NKV = NKV > 2 ? NKV / 4 : NKV / 2) {  // 8, 2, 1
    auto k0 = rand<float>({B, NKV, T, HS}, g, -1, 1), v0 = rand<float>({B, NKV, T, HS}, g, -1, 1);
    auto step = [&](bool repeat) {
      auto q = q0.detach().requires_grad_(), k = k0.detach().requires_grad_(), v = v0.detach().requires_grad_();
      auto kk = repeat ? repeat_heads(k, NH / NKV) : k, vv = repeat ? repeat_heads(v, NH / NKV) : v;
      sum(causal_attention(q, kk, vv) * w).backward();
    };
    double native = time([&] { step(false); }), repeated = time([&] { step(true); });
    std::printf("attention fwd+bwd B%ld NH%ld NKV%ld T%ld HS%ld: GQA kernel %.2f ms, repeated heads %.2f ms\n", long(B),
                long(NH), long(NKV), long(T), long(HS), native, repeated);
  }
  auto x0 = rand<float>({B, T, NH, HS}, g, -1, 1), wx = randn<float>({B, T, NH, HS}, g);
  auto pos = rope_positions(B, T);
  auto rstep = [&](bool composed) {
    auto x = x0.detach().requires_grad_();
    auto y = composed ? detail::rope_composed(x, pos, 10000.0, RopeLayout::half) : rope(x, pos);
    sum(y * wx).backward();
  };
  double fused = time([&] { rstep(false); }), composed = time([&] { rstep(true); });
  std::printf("rope fwd+bwd (%ld, %ld, %ld, %ld): fused %.2f ms, composed %.2f ms\n", long(B), long(T), long(NH), long(HS),
              fused, composed);
  CHECK(fused > 0);
}
