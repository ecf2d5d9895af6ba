// add_layer_norm (the residual add and a pre-norm block's LayerNorm as one op with two outputs)
// against the two ops; RMSNorm, SiLU and SwiGLU (the LLaMA-style block's ops) and their nn modules: forward against
// naive double-precision loops on contiguous and strided inputs, gradcheck in double, extremes,
// error messages, bf16 inputs, the weight gradient's accumulation and its thread-count determinism.
//
// Tolerance: float32 results are compared with double references at 1e-5 relative (plus a 1e-6
// absolute floor for values near zero). silu rounds a few times per element (exp, the division,
// the product: ~1e-7 each). rms_norm's rstd comes from a float sum of C squares, whose relative
// error is ~sqrt(C) * 6e-8 in practice and at most C * 6e-8 (8e-6 for C = 130); the product
// x * rstd * weight adds two roundings. Both sit inside 1e-5. Double results are held to 1e-12.
#include <cmath>
#include <cstring>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include <loom/loom.hpp>

#include "catch.hpp"
#include "op_helpers.hpp"

using namespace loom;
using loom_test::check_grad;
using loom_test::close;
using loom_test::Fn;
using loom_test::for_each_index;
using loom_test::get;
using loom_test::leaf;
using loom_test::leaf_away_from_zero;
using loom_test::make;
using loom_test::TD;

namespace {

double silu_ref(double v) { return v / (1 + std::exp(-v)); }

// rms_norm of the last dimension of x (any layout) in double: out[..., c] = x * rstd * w[c].
template <class T>
std::vector<double> rms_norm_ref(const Tensor<T>& x, const Tensor<T>& w, double eps) {
  const int64_t C = x.size(-1), N = x.numel() / std::max<int64_t>(C, 1);
  std::vector<double> xs;
  for_each_index(x.shape(), [&](const std::vector<int64_t>& i) { xs.push_back(get(x, i)); });
  std::vector<double> out(xs.size());
  for (int64_t n = 0; n < N; ++n) {
    double ss = 0;
    for (int64_t c = 0; c < C; ++c) ss += xs[size_t(n * C + c)] * xs[size_t(n * C + c)];
    double r = 1 / std::sqrt(ss / double(C) + eps);
    for (int64_t c = 0; c < C; ++c) out[size_t(n * C + c)] = xs[size_t(n * C + c)] * r * (w.defined() ? get(w, {c}) : 1.0);
  }
  return out;
}

// Compares a contiguous result with a reference vector element by element; reports the worst one.
template <class T>
void check_against(const Tensor<T>& y, const std::vector<double>& want, double rel, double abs_tol = 1e-6) {
  REQUIRE(y.is_contiguous());
  REQUIRE(size_t(y.numel()) == want.size());
  int64_t bad = -1;
  for (int64_t k = 0; k < y.numel() && bad < 0; ++k)
    if (!close(double(static_cast<compute_t<T>>(y.data()[k])), want[size_t(k)], rel, abs_tol)) bad = k;
  if (bad >= 0) FAIL("got " << double(static_cast<compute_t<T>>(y.data()[bad])) << " want " << want[size_t(bad)]
                            << " at flat index " << bad);
}


std::map<std::string, Tensor<float>> params_by_name(const nn::Module& m) {
  std::map<std::string, Tensor<float>> out;
  for (auto& [name, p] : m.named_parameters()) out[name] = p;
  return out;
}

}  // namespace

// --- add_layer_norm: one op with two outputs ---------------------------------------------------

namespace {
// The same bits: two float tensors of one shape, compared element by element in memory.
bool same_bits(const Tensor<float>& a, const Tensor<float>& b) {
  if (a.shape() != b.shape()) return false;
  Tensor<float> ac = a.contiguous(), bc = b.contiguous();
  return std::memcmp(ac.data(), bc.data(), size_t(ac.numel()) * sizeof(float)) == 0;
}
}  // namespace

TEST_CASE("add_layer_norm equals x + residual, then layer_norm: values and every gradient") {
  Generator g(71);
  // one row, an odd width, and enough rows for several 64-row backward blocks on both threads
  for (Shape shape : {Shape{1, 7}, Shape{3, 5, 37}, Shape{300, 48}}) {
    for (int params = 0; params < 3; ++params) {  // weight and bias, weight only, neither
      CAPTURE(shape, params);
      const int64_t C = shape.back();
      auto leaf_f = [&](const Shape& s) { return randn<float>(s, g).requires_grad_(); };
      Tensor<float> x = leaf_f(shape), r = leaf_f(shape);
      Tensor<float> w = params < 2 ? rand<float>({C}, g, 0.5, 1.5).requires_grad_() : Tensor<float>();
      Tensor<float> b = params < 1 ? randn<float>({C}, g).requires_grad_() : Tensor<float>();
      auto copy = [](const Tensor<float>& t) { return t.defined() ? t.detach().clone().requires_grad_() : t; };
      Tensor<float> x2 = copy(x), r2 = copy(r), w2 = copy(w), b2 = copy(b);
      Tensor<float> c1 = randn<float>(shape, g), c2 = randn<float>(shape, g);

      auto [h, y] = add_layer_norm(x, r, w, b);
      Tensor<float> h2 = x2 + r2, y2 = layer_norm(h2, w2, b2);
      CHECK(same_bits(h, h2));
      CHECK(same_bits(y, y2));
      // a block's use: h goes on in the residual stream and y into the next layer
      sum((h + y * y) * c1 + h * c2).backward();
      sum((h2 + y2 * y2) * c1 + h2 * c2).backward();
      // the fused pass adds h's own gradient to LayerNorm's dx (possibly as one FMA): 1e-6 of the scale
      auto near = [](const Tensor<float>& a, const Tensor<float>& want) {
        return max(abs(a - want)).item() <= 1e-6f * std::max(1.0f, max(abs(want)).item());
      };
      CHECK(near(x.grad(), x2.grad()));
      CHECK(near(r.grad(), r2.grad()));
      CHECK(same_bits(x.grad(), r.grad()));
      if (w.defined()) CHECK(same_bits(w.grad(), w2.grad()));
      if (b.defined()) CHECK(same_bits(b.grad(), b2.grad()));
    }
  }
}

TEST_CASE("add_layer_norm: a gradient that reaches only one of its two outputs") {
  Generator g(72);
  auto fresh = [&] {
    Generator gg(73);
    Tensor<float> x = randn<float>({4, 9}, gg), r = randn<float>({4, 9}, gg);
    Tensor<float> w = rand<float>({9}, gg, 0.5, 1.5), b = randn<float>({9}, gg);
    return std::vector<Tensor<float>>{x.requires_grad_(), r.requires_grad_(), w.requires_grad_(), b.requires_grad_()};
  };
  Tensor<float> c = randn<float>({4, 9}, g);
  SECTION("only y: the residual's gradient is LayerNorm's alone") {
    auto in = fresh(), ref = fresh();
    sum(add_layer_norm(in[0], in[1], in[2], in[3]).second * c).backward();
    sum(layer_norm(ref[0] + ref[1], ref[2], ref[3]) * c).backward();
    CHECK(same_bits(in[0].grad(), ref[0].grad()));
    CHECK(same_bits(in[1].grad(), ref[1].grad()));
    CHECK(same_bits(in[2].grad(), ref[2].grad()));
    CHECK(same_bits(in[3].grad(), ref[3].grad()));
  }
  SECTION("only h: x and residual get h's gradient; weight and bias get none") {
    auto in = fresh();
    auto [h, y] = add_layer_norm(in[0], in[1], in[2], in[3]);
    sum(h * c).backward();
    CHECK(same_bits(in[0].grad(), c));
    CHECK(same_bits(in[1].grad(), c));
    CHECK_FALSE(in[2].grad().defined());
    CHECK_FALSE(in[3].grad().defined());
  }
  SECTION("backward from each output in turn, keeping the graph; then the freed graph is refused") {
    auto in = fresh(), ref = fresh();
    auto [h, y] = add_layer_norm(in[0], in[1], in[2], in[3]);
    h.backward(c, /*retain_graph=*/true);
    y.backward(c);
    Tensor<float> h2 = ref[0] + ref[1];
    h2.backward(c, true);
    layer_norm(h2, ref[2], ref[3]).backward(c);
    CHECK(same_bits(in[0].grad(), ref[0].grad()));
    CHECK(same_bits(in[2].grad(), ref[2].grad()));
    CHECK_THROWS_WITH(y.backward(c), LOOM_CONTAINS("add_layer_norm' was already freed"));
  }
  SECTION("chained, as consecutive blocks: one op's h is the next one's x") {
    auto in = fresh(), ref = fresh();
    auto [h1, y1] = add_layer_norm(in[0], in[1], in[2], in[3]);
    auto [h2, y2] = add_layer_norm(h1, y1 * 0.5f, in[2], in[3]);
    sum((h2 + y2) * c).backward();
    Tensor<float> k1 = ref[0] + ref[1], z1 = layer_norm(k1, ref[2], ref[3]);
    Tensor<float> k2 = k1 + z1 * 0.5f, z2 = layer_norm(k2, ref[2], ref[3]);
    sum((k2 + z2) * c).backward();
    for (size_t k = 0; k < 4; ++k) {
      CAPTURE(k);
      CHECK(max(abs(in[k].grad() - ref[k].grad())).item() <= 1e-5f * std::max(1.0f, max(abs(ref[k].grad())).item()));
    }
  }
}

TEST_CASE("gradcheck: add_layer_norm's two outputs, with and without parameters, views") {
  auto x = leaf({3, 11}, 81), r = leaf({3, 11}, 82), w = leaf({11}, 83, 0.5, 1.5), b = leaf({11}, 84);
  // gradcheck weighs one output: h * y mixes both, and + y makes y's own gradient count
  Fn both = [](auto& in) {
    auto [h, y] = add_layer_norm(in[0], in[1], in[2], in[3]);
    return h * y + y;
  };
  Fn bare = [](auto& in) {
    auto [h, y] = add_layer_norm(in[0], in[1], TD(), TD(), 0.1);
    return h * y;
  };
  Fn views = [](auto& in) {  // a transposed view, used as x and as the residual
    auto [h, y] = add_layer_norm(in[0].t(), in[0].t(), in[1], TD());
    return h + y * y;
  };
  check_grad("add_layer_norm", both, {x, r, w, b});
  check_grad("add_layer_norm without parameters", bare, {x, r});
  check_grad("add_layer_norm of views, x as its own residual", views, {leaf({11, 3}, 85), w});
}

TEST_CASE("add_rms_norm equals x + residual, then rms_norm: values, gradients, gradcheck") {
  Generator g(74);
  for (Shape shape : {Shape{1, 7}, Shape{3, 5, 37}, Shape{300, 48}}) {
    for (bool with_w : {true, false}) {
      CAPTURE(shape, with_w);
      const int64_t C = shape.back();
      Tensor<float> x = randn<float>(shape, g).requires_grad_(), r = randn<float>(shape, g).requires_grad_();
      Tensor<float> w = with_w ? rand<float>({C}, g, 0.5, 1.5).requires_grad_() : Tensor<float>();
      auto copy = [](const Tensor<float>& t) { return t.defined() ? t.detach().clone().requires_grad_() : t; };
      Tensor<float> x2 = copy(x), r2 = copy(r), w2 = copy(w), c = randn<float>(shape, g);
      auto [h, y] = add_rms_norm(x, r, w);
      Tensor<float> h2 = x2 + r2, y2 = rms_norm(h2, w2);
      CHECK(same_bits(h, h2));
      CHECK(same_bits(y, y2));
      sum((h + y * y) * c).backward();
      sum((h2 + y2 * y2) * c).backward();
      CHECK(max(abs(x.grad() - x2.grad())).item() <= 1e-6f * std::max(1.0f, max(abs(x2.grad())).item()));
      CHECK(same_bits(x.grad(), r.grad()));
      if (with_w) CHECK(same_bits(w.grad(), w2.grad()));
    }
  }
  Fn both = [](auto& in) {
    auto [h, y] = add_rms_norm(in[0], in[1], in[2]);
    return h * y + y;
  };
  check_grad("add_rms_norm", both, {leaf({3, 11}, 86), leaf({3, 11}, 87), leaf({11}, 88, 0.5, 1.5)});
  CHECK_THROWS_WITH(add_rms_norm(zeros<float>({2, 4}), zeros<float>({4, 2}), Tensor<float>()),
                    LOOM_CONTAINS("add_rms_norm: x [2, 4] and residual [4, 2] must have the same shape"));
}

TEST_CASE("add_layer_norm says what is wrong with its inputs") {
  CHECK_THROWS_WITH(add_layer_norm(zeros<float>({2, 4}), zeros<float>({2, 5}), Tensor<float>(), Tensor<float>()),
                    LOOM_CONTAINS("add_layer_norm: x [2, 4] and residual [2, 5] must have the same shape"));
  CHECK_THROWS_WITH(add_layer_norm(zeros<float>({2, 4}), zeros<float>({2, 4}), zeros<float>({5}), Tensor<float>()),
                    LOOM_CONTAINS("add_layer_norm: weight has shape [5], expected [4]"));
  auto [h, y] = add_layer_norm(zeros<float>({0, 4}), zeros<float>({0, 4}), ones<float>({4}), Tensor<float>());
  CHECK(h.shape() == Shape{0, 4});
  CHECK(y.shape() == Shape{0, 4});
}

// --- rms_norm ------------------------------------------------------------------------------------

TEST_CASE("rms_norm forward against a double reference, with and without weight, any layout") {
  Generator g(21);
  for (int64_t C : {1, 7, 33, 130}) {
    for (int layout : {0, 1, 2}) {
      auto x = make({2, 5, C}, layout, g, -3, 7);  // a non-zero mean: nothing is subtracted
      auto w = rand<float>({C}, g, 0.5, 1.5);
      for (bool with_w : {false, true}) {
        for (double eps : {1e-6, 1e-2}) {
          Tensor<float> wt = with_w ? w : Tensor<float>();
          auto y = rms_norm(x, wt, eps);
          CAPTURE(C, layout, with_w, eps);
          REQUIRE(y.shape() == x.shape());
          REQUIRE(y.dtype() == DType::float32);
          check_against(y, rms_norm_ref(x, wt, eps), 1e-5);
        }
      }
    }
  }
  // Double runs in double.
  auto xd = rand<double>({4, 130}, g, -2, 2), wd = rand<double>({130}, g, 0.5, 1.5);
  check_against(rms_norm(xd, wd), rms_norm_ref(xd, wd, 1e-6), 1e-12, 1e-14);
  check_against(rms_norm(xd.t().contiguous().t(), TD(), 1e-3), rms_norm_ref(xd, TD(), 1e-3), 1e-12, 1e-14);
  // The default eps is 1e-6.
  CHECK(std::fabs(rms_norm(xd, wd).at({0, 0}) - rms_norm(xd, wd, 1e-6).at({0, 0})) == 0.0);
}

TEST_CASE("rms_norm: unit root mean square, scale invariance, zero rows, empty inputs") {
  Generator g(22);
  // Without weight and with eps = 0 every row has mean(y^2) = 1, whatever the scale of x.
  auto x = randn<double>({3, 64}, g, 0.0, 5.0);
  auto y = rms_norm(x, TD(), 0.0);
  for (int64_t n = 0; n < 3; ++n) {
    double ss = 0;
    for (int64_t c = 0; c < 64; ++c) ss += y.at({n, c}) * y.at({n, c});
    CHECK(ss / 64 == Approx(1.0).epsilon(1e-12));
  }
  auto y1000 = rms_norm(x * 1000.0, TD(), 0.0);
  CHECK(max(abs(y1000 - y)).item() < 1e-12);
  // Large magnitudes do not overflow the float sum of squares below ~1e19.
  auto yb = rms_norm(from_vector<float>({1e15f, -1e15f, 1e15f, -1e15f}), Tensor<float>()).to_vector();
  CHECK(yb[0] == Approx(1.0f).epsilon(1e-6));
  CHECK(yb[3] == Approx(-1.0f).epsilon(1e-6));
  // A zero row stays zero (eps > 0), its gradient finite.
  auto z = zeros<float>({2, 5}).requires_grad_();
  auto yz = rms_norm(z, Tensor<float>());
  CHECK(max(abs(yz)).item() == 0.0f);
  sum(yz * 2.0f).backward();
  CHECK(std::isfinite(max(abs(z.grad())).item()));
  // Empty: no rows, and a weight gradient of zeros (written, not left uninitialised).
  auto e = zeros<float>({0, 4}).requires_grad_();
  auto we = ones<float>({4}).requires_grad_();
  auto ye = rms_norm(e, we);
  CHECK(ye.shape() == Shape{0, 4});
  sum(ye).backward();
  if (we.grad().defined()) CHECK(we.grad().to_vector() == std::vector<float>{0, 0, 0, 0});
}

TEST_CASE("rms_norm rejects a weight of the wrong shape and says so") {
  CHECK_THROWS_AS(rms_norm(zeros<float>({2, 4}), zeros<float>({5})), shape_error);
  CHECK_THROWS_WITH(rms_norm(zeros<float>({2, 4}), zeros<float>({5})), LOOM_CONTAINS("rms_norm"));
  CHECK_THROWS_AS(rms_norm(zeros<float>({2, 4}), zeros<float>({2, 4})), shape_error);
  CHECK_THROWS_WITH(rms_norm(zeros<double>({3, 7}), zeros<double>({6})), LOOM_CONTAINS("rms_norm"));
  CHECK_THROWS_AS(rms_norm(Tensor<float>(), Tensor<float>()), Error);
}

TEST_CASE("gradcheck: rms_norm with and without weight, odd C, views, eps") {
  for (int64_t C : {7, 130}) {
    CAPTURE(C);
    auto x = leaf({2, 3, C}, 31), w = leaf({C}, 32, 0.5, 1.5);
    check_grad("rms_norm", [](auto& in) { return rms_norm(in[0], in[1]); }, {x, w});
    check_grad("rms_norm without weight", [](auto& in) { return rms_norm(in[0], TD()); }, {x});
    check_grad("rms_norm eps 0.1", [](auto& in) { return rms_norm(in[0], in[1], 0.1); }, {x, w});
  }
  // C == 1: y = x / sqrt(x^2 + eps) * w. With eps = 1e-6 dy/dx is ~eps-small (the row's scale
  // cancels); eps = 0.5 makes it O(1) so that a wrong dx cannot hide under gradcheck's atol.
  auto x1 = leaf_away_from_zero({5, 1}, 33), w1 = leaf({1}, 34, 0.5, 1.5);
  check_grad("rms_norm C=1", [](auto& in) { return rms_norm(in[0], in[1]); }, {x1, w1});
  check_grad("rms_norm C=1 eps 0.5", [](auto& in) { return rms_norm(in[0], in[1], 0.5); }, {x1, w1});
  check_grad("rms_norm C=1 without weight, eps 0.5", [](auto& in) { return rms_norm(in[0], TD(), 0.5); }, {x1});
  // Views: a transposed input, a strided slice of the weight, one row.
  auto h = leaf({4, 3, 7}, 35), w14 = leaf({14}, 36, 0.5, 1.5);
  check_grad("rms_norm of a view", [](auto& in) { return rms_norm(in[0].transpose(0, 1), in[1].slice(0, 0, 14, 2)); },
             {h, w14});
  check_grad("rms_norm of a 1-D row", [](auto& in) { return rms_norm(in[0].select(0, 1).select(0, 2), TD()); }, {h});
}

TEST_CASE("rms_norm: the weight gradient accumulates over backward calls and is thread-count independent") {
  Generator g(37);
  auto x = randn<float>({6, 33}, g).requires_grad_();
  auto w = rand<float>({33}, g, 0.5, 1.5).requires_grad_();
  auto r = randn<float>({6, 33}, g);
  sum(rms_norm(x, w) * r).backward();
  auto gw1 = w.grad().clone(), gx1 = x.grad().clone();
  sum(rms_norm(x, w) * r).backward();  // a second graph: gradients add up
  CHECK(max(abs(w.grad() - gw1 * 2.0f)).item() <= 1e-6f * max(abs(gw1)).item());
  CHECK(max(abs(x.grad() - gx1 * 2.0f)).item() <= 1e-6f * max(abs(gx1)).item());

  // Many rows (split across threads): the same bits for 1 and 4 threads.
  const int threads = get_num_threads();
  auto xl = randn<float>({3000, 130}, g), wl = rand<float>({130}, g, 0.5, 1.5), rl = randn<float>({3000, 130}, g);
  auto run = [&](int nt) {
    set_num_threads(nt);
    auto xi = xl.clone().requires_grad_(), wi = wl.clone().requires_grad_();
    auto y = rms_norm(xi, wi);
    sum(y * rl).backward();
    return std::vector<std::vector<float>>{y.detach().to_vector(), xi.grad().to_vector(), wi.grad().to_vector()};
  };
  auto one = run(1), four = run(4);
  set_num_threads(threads);
  for (size_t k = 0; k < 3; ++k) {
    CAPTURE(k);
    REQUIRE(one[k].size() == four[k].size());
    CHECK(std::memcmp(one[k].data(), four[k].data(), one[k].size() * sizeof(float)) == 0);
  }
}

TEST_CASE("rms_norm on bf16 inputs computes in float") {
  Generator g(38);
  auto x = rand<float>({3, 40}, g, -3, 3).to<bf16>(), w = rand<float>({40}, g, 0.5, 1.5).to<bf16>();
  auto y = rms_norm(x, w);
  REQUIRE(y.dtype() == DType::bfloat16);
  REQUIRE(y.shape() == x.shape());
  // Within one bf16 rounding (2^-8 relative) of the float result on the same (rounded) inputs.
  auto want = rms_norm(x.to<float>(), w.to<float>());
  auto got = y.to<float>();
  for (int64_t k = 0; k < want.numel(); ++k)
    CHECK(std::fabs(got.data()[k] - want.data()[k]) <= std::ldexp(1.0, -8) * std::fabs(want.data()[k]) + 1e-30);
  CHECK(rms_norm(x, Tensor<bf16>()).dtype() == DType::bfloat16);
}

// --- silu and swiglu ------------------------------------------------------------------------------

TEST_CASE("silu and swiglu forward against double references, with broadcasting and views") {
  Generator g(41);
  for (int layout : {0, 1, 2}) {
    for (Shape shape : {Shape{}, Shape{0, 4}, Shape{1, 7}, Shape{13, 17}, Shape{3, 20, 129}}) {
      if (layout && shape.size() == 0) continue;
      auto x = make(shape, layout, g, -8, 8);
      auto y = silu(x);
      CAPTURE(layout, shape);
      REQUIRE(y.shape() == x.shape());
      std::vector<double> want;
      for_each_index(shape, [&](const std::vector<int64_t>& i) { want.push_back(silu_ref(get(x, i))); });
      check_against(y, want, 1e-5);
    }
  }
  // swiglu(gate, up) = silu(gate) * up, broadcasting like a binary op.
  std::vector<std::pair<Shape, Shape>> cases = {
      {{3, 8}, {3, 8}}, {{3, 1, 8}, {4, 8}}, {{4, 8}, {8}}, {{2, 1}, {1, 5}}, {{}, {2, 3}}, {{0, 3}, {3}}};
  for (auto& [sg, su] : cases) {
    for (int layout : {0, 1, 2}) {
      auto gate = make(sg, layout, g, -6, 6), up = make(su, 2 - layout, g);
      auto y = swiglu(gate, up);
      Shape out = broadcast_shapes(sg, su, "ref");
      CAPTURE(sg, su, layout);
      REQUIRE(y.shape() == out);
      std::vector<double> want;
      for_each_index(out, [&](const std::vector<int64_t>& i) { want.push_back(silu_ref(get(gate, i)) * get(up, i)); });
      check_against(y, want, 1e-5);
    }
  }
  // Double in double.
  auto xd = rand<double>({5, 9}, g, -10, 10);
  std::vector<double> want;
  for (int64_t k = 0; k < xd.numel(); ++k) want.push_back(silu_ref(xd.data()[k]));
  check_against(silu(xd), want, 1e-14, 1e-300);
  CHECK_THROWS_AS(swiglu(zeros<float>({3, 4}), zeros<float>({3, 5})), shape_error);
}

TEST_CASE("silu at large |x|: no NaN, no overflow, forward or backward") {
  auto x = from_vector<float>({-1000.0f, -100.0f, -20.0f, 0.0f, 20.0f, 100.0f, 1000.0f}).requires_grad_();
  auto y = silu(x);
  auto v = y.to_vector();
  for (float f : v) CHECK(std::isfinite(f));
  CHECK(v[0] == Approx(0.0f).margin(1e-30));
  CHECK(v[1] == Approx(0.0f).margin(1e-30));
  CHECK(v[3] == 0.0f);
  CHECK(v[5] == 100.0f);
  CHECK(v[6] == 1000.0f);
  CHECK(v[4] == Approx(20.0f).epsilon(1e-6));
  sum(y).backward();
  auto d = x.grad().to_vector();  // silu'(x) = s + x s (1 - s), s = sigmoid(x): 0 far left, 1 far right
  for (float f : d) CHECK(std::isfinite(f));
  CHECK(d[0] == Approx(0.0f).margin(1e-30));
  CHECK(d[1] == Approx(0.0f).margin(1e-30));
  CHECK(d[3] == Approx(0.5f));
  CHECK(d[5] == Approx(1.0f));
  CHECK(d[6] == Approx(1.0f));
  // Double, and swiglu at the extremes.
  auto xd = from_vector<double>({-1000.0, -100.0, 100.0, 1000.0}).requires_grad_();
  auto yd = swiglu(xd, full<double>({4}, 3.0));
  for (double f : yd.to_vector()) CHECK(std::isfinite(f));
  sum(yd).backward();
  for (double f : xd.grad().to_vector()) CHECK(std::isfinite(f));
  CHECK(yd.at({3}) == 3000.0);
}

TEST_CASE("swiglu's fused CPU pass equals the composition mul(silu(gate), up), forward and gradients") {
  Generator g(55);
  for (int64_t n : {int64_t(1), int64_t(37), int64_t(70000)}) {  // one chunk, and many (parallel_for)
    CAPTURE(n);
    Tensor<float> gate = randn<float>({n}, g).requires_grad_(), up = randn<float>({n}, g).requires_grad_();
    Tensor<float> gate2 = gate.detach().clone().requires_grad_(), up2 = up.detach().clone().requires_grad_();
    Tensor<float> r = randn<float>({n}, g);
    Tensor<float> fused = swiglu(gate, up), composed = mul(silu(gate2), up2);
    CHECK(max(abs(fused - composed)).item() <= 1e-6f * std::max(1.0f, max(abs(composed)).item()));
    sum(fused * r).backward();
    sum(composed * r).backward();
    CHECK(max(abs(gate.grad() - gate2.grad())).item() <= 1e-5f);
    CHECK(max(abs(up.grad() - up2.grad())).item() <= 1e-5f);
  }
}

TEST_CASE("gradcheck: silu and swiglu, with broadcasting, views and fan-out") {
  auto x = leaf({3, 5}, 51, -6, 6);
  check_grad("silu", [](auto& in) { return silu(in[0]); }, {x});
  check_grad("silu of a view", [](auto& in) { return silu(in[0].t().slice(0, 1, 5, 2)); }, {x});
  std::vector<std::pair<Shape, Shape>> shapes = {{{3, 4}, {3, 4}}, {{2, 1, 4}, {3, 4}}, {{4}, {3, 4}}, {{}, {2, 3}}};
  for (auto& [sg, su] : shapes) {
    CAPTURE(sg, su);
    auto gate = leaf(sg, 52, -5, 5), up = leaf(su, 53);
    check_grad("swiglu", [](auto& in) { return swiglu(in[0], in[1]); }, {gate, up});
  }
  auto a = leaf({4, 6}, 54, -5, 5);
  check_grad("swiglu(x, x)", [](auto& in) { return swiglu(in[0], in[0]); }, {a});
  check_grad("swiglu of views", [](auto& in) { return swiglu(in[0].t(), in[0].t().slice(1, 3, 4)); },
             {a});
}

TEST_CASE("silu on bf16 inputs computes in float; swiglu rounds twice") {
  Generator g(55);
  auto gate = rand<float>({4, 33}, g, -6, 6).to<bf16>(), up = rand<float>({33}, g).to<bf16>();
  auto s = silu(gate);
  auto y = swiglu(gate, up);
  REQUIRE(s.dtype() == DType::bfloat16);
  REQUIRE(y.dtype() == DType::bfloat16);
  REQUIRE(y.shape() == Shape{4, 33});
  auto ws = silu(gate.to<float>()), wy = swiglu(gate.to<float>(), up.to<float>());
  auto gs = s.to<float>(), gy = y.to<float>();
  for (int64_t k = 0; k < ws.numel(); ++k) {
    CHECK(std::fabs(gs.data()[k] - ws.data()[k]) <= std::ldexp(1.0, -8) * std::fabs(ws.data()[k]) + 1e-30);
    // swiglu is a composition: silu's bf16 result is rounded once more by the product (two roundings)
    CHECK(std::fabs(gy.data()[k] - wy.data()[k]) <= std::ldexp(1.0, -7) * std::fabs(wy.data()[k]) + 1e-30);
  }
}

// --- nn modules ---------------------------------------------------------------------------------

TEST_CASE("nn::RMSNorm has a weight of ones and normalises the last dimension") {
  nn::RMSNorm norm(48);
  auto named = norm.named_parameters();
  REQUIRE(named.size() == 1);
  CHECK(named[0].first == "weight");
  CHECK(named[0].second.shape() == Shape{48});
  CHECK(min(named[0].second).item() == 1.0f);
  CHECK(max(named[0].second).item() == 1.0f);
  CHECK(named[0].second.requires_grad());
  Generator g(61);
  auto x = randn<float>({2, 5, 48}, g);
  auto y = norm(x);
  REQUIRE(y.shape() == Shape{2, 5, 48});
  check_against(y.contiguous(), rms_norm_ref(x, Tensor<float>(), 1e-6), 1e-5);
  nn::RMSNorm loose(48, 0.5);
  check_against(loose(x).contiguous(), rms_norm_ref(x, Tensor<float>(), 0.5), 1e-5);
  sum(y).backward();
  CHECK(named[0].second.grad().defined());
  CHECK(named[0].second.grad().shape() == Shape{48});
}

TEST_CASE("nn::SwiGLU: gate_proj, up_proj, down_proj without bias, down(silu(gate(x)) * up(x))") {
  const int64_t C = 8, H = 12;
  Generator gen(5);
  nn::SwiGLU mlp(C, H, gen);
  auto p = params_by_name(mlp);
  REQUIRE(p.size() == 3);
  REQUIRE(p.count("gate_proj.weight") == 1);
  REQUIRE(p.count("up_proj.weight") == 1);
  REQUIRE(p.count("down_proj.weight") == 1);
  CHECK(p["gate_proj.weight"].shape() == Shape{H, C});  // (out, in), as nn::Linear
  CHECK(p["up_proj.weight"].shape() == Shape{H, C});
  CHECK(p["down_proj.weight"].shape() == Shape{C, H});
  CHECK(mlp.num_parameters() == 3 * C * H);

  Generator g(62);
  auto x = randn<float>({2, 3, C}, g);
  auto y = mlp(x);
  REQUIRE(y.shape() == Shape{2, 3, C});
  // Naive double reference from the module's own weights.
  const auto &Wg = p["gate_proj.weight"], &Wu = p["up_proj.weight"], &Wd = p["down_proj.weight"];
  std::vector<double> want;
  for (int64_t b = 0; b < 2; ++b)
    for (int64_t t = 0; t < 3; ++t) {
      auto h = std::vector<double>(size_t(H));
      for (int64_t j = 0; j < H; ++j) {
        double a = 0, u = 0;
        for (int64_t c = 0; c < C; ++c) {
          a += double(Wg.at({j, c})) * double(x.at({b, t, c}));
          u += double(Wu.at({j, c})) * double(x.at({b, t, c}));
        }
        h[size_t(j)] = silu_ref(a) * u;
      }
      for (int64_t c = 0; c < C; ++c) {
        double o = 0;
        for (int64_t j = 0; j < H; ++j) o += double(Wd.at({c, j})) * h[size_t(j)];
        want.push_back(o);
      }
    }
  check_against(y.contiguous(), want, 1e-5, 1e-6);
  // Every weight receives a gradient of its own shape.
  sum(y * y).backward();
  for (auto& [name, t] : mlp.named_parameters()) {
    CAPTURE(name);
    REQUIRE(t.grad().defined());
    CHECK(t.grad().shape() == t.shape());
  }
  // A 2-D input works too.
  CHECK(mlp(randn<float>({5, C}, g)).shape() == Shape{5, C});
}
