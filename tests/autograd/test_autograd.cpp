// Autograd: a gradcheck (double precision, central differences) for every differentiable op on
// random shapes, broadcasting, non-contiguous inputs and views of views; then the engine's
// behaviour: fan-out accumulation, NoGradGuard, retain_graph, in-place detection, graph freeing.
#include <cmath>
#include <functional>
#include <vector>

#include <loom/loom.hpp>

#include "catch.hpp"
#include "op_helpers.hpp"

using namespace loom;
using loom_test::check_grad;
using loom_test::Fn;
using loom_test::leaf;
using loom_test::leaf_away_from_zero;
using loom_test::TD;

TEST_CASE("gradcheck: binary ops with broadcasting and strided inputs") {
  std::vector<std::pair<Shape, Shape>> shapes = {{{3, 4}, {3, 4}}, {{3, 4}, {4}}, {{2, 1, 3}, {4, 1}}, {{}, {2, 3}}, {{5}, {}}};
  for (auto& [sa, sb] : shapes) {
    CAPTURE(sa, sb);
    auto a = leaf(sa, 1), b = leaf(sb, 2, 0.5, 2.0);
    check_grad("add", [](auto& in) { return in[0] + in[1]; }, {a, b});
    check_grad("sub", [](auto& in) { return in[0] - in[1]; }, {a, b});
    check_grad("mul", [](auto& in) { return in[0] * in[1]; }, {a, b});
    check_grad("div", [](auto& in) { return in[0] / in[1]; }, {a, b});
    check_grad("pow", [](auto& in) { return pow(in[1], in[0]); }, {a, b});
    check_grad("maximum", [](auto& in) { return maximum(in[0], in[1]); }, {a, b});
    check_grad("minimum", [](auto& in) { return minimum(in[0], in[1]); }, {a, b});
  }
  // Non-contiguous operands: a transposed view and a strided slice, built inside f.
  auto a = leaf({4, 3}, 3), b = leaf({3, 8}, 4);
  check_grad("mul of views", [](auto& in) { return in[0].t() * in[1].slice(1, 0, 8, 2); }, {a, b});
  check_grad("add of views of views", [](auto& in) { return in[0].t().slice(0, 1, 3).select(1, 2) + in[1].select(1, 5).slice(0, 0, 2); },
        {a, b});
  // The same tensor on both sides (fan-out inside one op).
  check_grad("x * x", [](auto& in) { return in[0] * in[0]; }, {a});
}

TEST_CASE("gradcheck: unary math, activations and scalar operators") {
  auto x = leaf_away_from_zero({3, 5}, 5), pos = leaf({3, 5}, 6, 0.2, 3.0), wide = leaf({4, 6}, 7, -4, 4);
  check_grad("neg", [](auto& in) { return -in[0]; }, {x});
  check_grad("abs", [](auto& in) { return abs(in[0]); }, {x});
  check_grad("exp", [](auto& in) { return exp(in[0]); }, {x});
  check_grad("log", [](auto& in) { return log(in[0]); }, {pos});
  check_grad("sqrt", [](auto& in) { return sqrt(in[0]); }, {pos});
  check_grad("rsqrt", [](auto& in) { return rsqrt(in[0]); }, {pos});
  check_grad("tanh", [](auto& in) { return tanh(in[0]); }, {wide});
  check_grad("relu", [](auto& in) { return relu(in[0]); }, {x});
  check_grad("sigmoid", [](auto& in) { return sigmoid(in[0]); }, {wide});
  check_grad("gelu", [](auto& in) { return gelu(in[0]); }, {wide});
  check_grad("gelu tanh", [](auto& in) { return gelu(in[0], GeluApprox::tanh); }, {wide});
  check_grad("pow 3", [](auto& in) { return pow(in[0], 3.0); }, {x});
  check_grad("pow 2", [](auto& in) { return pow(in[0], 2.0); }, {x});
  check_grad("pow 0.5", [](auto& in) { return pow(in[0], 0.5); }, {pos});
  check_grad("x + c", [](auto& in) { return in[0] + 2.0; }, {x});
  check_grad("c - x", [](auto& in) { return 2.0 - in[0]; }, {x});
  check_grad("x * c", [](auto& in) { return in[0] * 3.0; }, {x});
  check_grad("c / x", [](auto& in) { return 3.0 / in[0]; }, {x});
  check_grad("x / c", [](auto& in) { return in[0] / 4.0; }, {x});
  check_grad("strided tanh", [](auto& in) { return tanh(in[0].t().slice(0, 0, 6, 2)); }, {wide});
}

TEST_CASE("gradcheck: where and masked_fill") {
  auto a = leaf({3, 4}, 8), b = leaf({4}, 9);
  auto cond = gt(arange<double>(0, 12).reshape({3, 4}), full<double>({}, 5.5));
  check_grad("where", [cond](auto& in) { return where(cond, in[0], in[1]); }, {a, b});
  auto future = lt(arange<int64_t>(0, 4).reshape({4, 1}), arange<int64_t>(0, 4));
  auto s = leaf({2, 4, 4}, 10);
  check_grad("masked_fill", [future](auto& in) { return masked_fill(in[0], future, -3.0); }, {s});
}

TEST_CASE("gradcheck: reductions") {
  auto x = leaf({3, 4, 5}, 11);
  check_grad("sum", [](auto& in) { return sum(in[0]); }, {x});
  for (int axis : {0, 1, -1})
    for (bool keep : {false, true}) {
      CAPTURE(axis, keep);
      check_grad("sum axis", [axis, keep](auto& in) { return sum(in[0], axis, keep); }, {x});
      check_grad("mean axis", [axis, keep](auto& in) { return mean(in[0], axis, keep); }, {x});
      check_grad("max axis", [axis, keep](auto& in) { return max(in[0], axis, keep); }, {x});
      check_grad("min axis", [axis, keep](auto& in) { return min(in[0], axis, keep); }, {x});
      check_grad("var axis", [axis, keep](auto& in) { return var(in[0], axis, keep); }, {x});
      check_grad("var biased", [axis, keep](auto& in) { return var(in[0], axis, keep, 0); }, {x});
    }
  check_grad("mean", [](auto& in) { return mean(in[0]); }, {x});
  check_grad("max", [](auto& in) { return max(in[0]); }, {x});
  check_grad("min", [](auto& in) { return min(in[0]); }, {x});
  check_grad("var", [](auto& in) { return var(in[0]); }, {x});
  check_grad("sum of a transposed view", [](auto& in) { return sum(in[0].transpose(0, 2), 1); }, {x});
}

TEST_CASE("gradcheck: views") {
  auto x = leaf({2, 3, 4}, 12);
  check_grad("reshape", [](auto& in) { return in[0].reshape({4, -1}) * 2.0; }, {x});
  check_grad("view", [](auto& in) { return in[0].view({6, 4}); }, {x});
  check_grad("flatten", [](auto& in) { return in[0].flatten(1); }, {x});
  check_grad("permute", [](auto& in) { return in[0].permute({2, 0, 1}); }, {x});
  check_grad("transpose", [](auto& in) { return in[0].transpose(0, 2); }, {x});
  check_grad("slice", [](auto& in) { return in[0].slice(2, 1, 4, 2); }, {x});
  check_grad("narrow", [](auto& in) { return in[0].narrow(1, 1, 2); }, {x});
  check_grad("select", [](auto& in) { return in[0].select(1, -1); }, {x});
  check_grad("unsqueeze", [](auto& in) { return in[0].unsqueeze(1); }, {x});
  check_grad("squeeze", [](auto& in) { return in[0].slice(0, 0, 1).squeeze(); }, {x});
  check_grad("squeeze dim", [](auto& in) { return in[0].slice(1, 2, 3).squeeze(1); }, {x});
  check_grad("expand", [](auto& in) { return in[0].slice(1, 0, 1).expand({5, 2, 3, 4}); }, {x});
  check_grad("contiguous", [](auto& in) { return in[0].transpose(1, 2).contiguous(); }, {x});
  check_grad("clone", [](auto& in) { return in[0].clone(); }, {x});
  check_grad("reshape of a transposed view (copy)", [](auto& in) { return in[0].transpose(0, 1).reshape({-1}); }, {x});
  check_grad("views of views", [](auto& in) { return in[0].permute({1, 2, 0}).slice(1, 0, 4, 3).select(0, 1).unsqueeze(0); }, {x});
  auto idx = from_vector<int64_t>({2, 0, 2, 1});
  check_grad("index_select", [idx](auto& in) { return index_select(in[0], 1, idx); }, {x});
  check_grad("index_select dim 0", [idx](auto& in) { return index_select(in[0].reshape({6, 4}), 0, idx); }, {x});
}

TEST_CASE("gradcheck: matmul, softmax, layer_norm, embedding, cross_entropy, dropout") {
  auto a = leaf({3, 4}, 13), b = leaf({4, 5}, 14);
  check_grad("matmul", [](auto& in) { return matmul(in[0], in[1]); }, {a, b});
  check_grad("matmul transposed operand", [](auto& in) { return matmul(in[1].t(), in[0].t()); }, {a, b});
  auto ba = leaf({2, 1, 3, 4}, 15), bb = leaf({5, 4, 2}, 16);
  check_grad("batched matmul with broadcasting", [](auto& in) { return matmul(in[0], in[1]); }, {ba, bb});
  auto v = leaf({4}, 17);
  check_grad("vector @ matrix", [](auto& in) { return matmul(in[0], in[1]); }, {v, b});
  check_grad("matrix @ vector", [](auto& in) { return matmul(in[1], in[0]); }, {v, a});

  auto x = leaf({3, 6}, 18, -3, 3);
  for (int axis : {0, -1}) {
    check_grad("softmax", [axis](auto& in) { return softmax(in[0], axis); }, {x});
    check_grad("log_softmax", [axis](auto& in) { return log_softmax(in[0], axis); }, {x});
  }
  check_grad("softmax of a view", [](auto& in) { return softmax(in[0].t(), -1); }, {x});

  auto h = leaf({2, 3, 7}, 19), w = leaf({7}, 20), bias = leaf({7}, 21);
  check_grad("layer_norm", [](auto& in) { return layer_norm(in[0], in[1], in[2]); }, {h, w, bias});
  check_grad("layer_norm without affine", [](auto& in) { return layer_norm(in[0], TD(), TD()); }, {h});
  check_grad("layer_norm of a view", [](auto& in) { return layer_norm(in[0].transpose(0, 1), in[1], TD()); }, {h, w});

  auto table = leaf({6, 4}, 22);
  auto ids = from_vector<int64_t>({5, 0, 5, 2, 5, 1}, {2, 3});  // repeats accumulate
  check_grad("embedding", [ids](auto& in) { return embedding(in[0], ids); }, {table});

  auto logits = leaf({2, 4, 5}, 23, -3, 3);
  auto targets = from_vector<int64_t>({1, 4, -100, 0, 2, 2, 3, -100}, {2, 4});
  check_grad("cross_entropy mean", [targets](auto& in) { return cross_entropy(in[0], targets); }, {logits});
  check_grad("cross_entropy sum", [targets](auto& in) { return cross_entropy(in[0], targets, -100, Reduction::sum); }, {logits});
  check_grad("cross_entropy none", [targets](auto& in) { return cross_entropy(in[0], targets, -100, Reduction::none); }, {logits});
  check_grad("cross_entropy of a view", [targets](auto& in) { return cross_entropy(in[0].transpose(0, 1), targets.t()); }, {logits});

  // linear: the bias added inside the GEMM; 3-D, 2-D and 1-D inputs (the last composed)
  auto lx = leaf({2, 3, 4}, 25), lw = leaf({5, 4}, 26), lb = leaf({5}, 27);
  check_grad("linear", [](auto& in) { return linear(in[0], in[1], in[2]); }, {lx, lw, lb});
  check_grad("linear 2-D", [](auto& in) { return linear(in[0].reshape({6, 4}), in[1], in[2]); }, {lx, lw, lb});
  check_grad("linear 1-D", [](auto& in) { return linear(in[0].reshape({24}).slice(0, 0, 4), in[1], in[2]); },
             {lx, lw, lb});
  check_grad("linear of a transposed view", [](auto& in) { return linear(in[0].transpose(0, 1), in[1], in[2]); },
             {lx, lw, lb});

  auto hx = leaf({5, 4}, 28), hw = leaf({7, 4}, 29);
  auto ht = from_vector<int64_t>({0, 6, -100, 3, 3});
  check_grad("linear_cross_entropy", [ht](auto& in) { return linear_cross_entropy(in[0], in[1], ht); }, {hx, hw});

  auto d = leaf({4, 8}, 24);
  check_grad("dropout", [](auto& in) { Generator g(7); return dropout(in[0], 0.3, g); }, {d});
}

TEST_CASE("A small network end to end") {
  // Linear -> GELU -> Linear -> cross-entropy, all parameters at once.
  auto x = leaf({5, 3}, 30), w1 = leaf({3, 6}, 31), b1 = leaf({6}, 32), w2 = leaf({6, 4}, 33), b2 = leaf({4}, 34);
  auto y = from_vector<int64_t>({0, 3, 1, -100, 2});
  check_grad("mlp", [y](auto& in) {
    auto h = gelu(matmul(in[0], in[1]) + in[2], GeluApprox::tanh);
    return cross_entropy(matmul(h, in[3]) + in[4], y);
  }, {x, w1, b1, w2, b2});
}

TEST_CASE("gradcheck reports the worst element when a gradient is wrong") {
  // A deliberately wrong backward: an op whose recorded gradient is twice the true one.
  auto x = leaf({3}, 40);
  Fn wrong = [](const std::vector<TD>& in) {
    TD out = in[0] * 1.0;
    TD src = in[0];
    detail::record<double>("wrong", out, {&src}, [](const TD& g) { return std::vector<TD>{g * 2.0}; });
    return out;
  };
  auto r = gradcheck(wrong, {x});
  CHECK_FALSE(r.ok);
  CHECK(r.report.find("analytic") != std::string::npos);
  CHECK(r.worst_ratio > 1.0);
}

TEST_CASE("Engine: fan-out, accumulation, zero_grad, detach") {
  auto x = from_vector<double>({1, 2, 3}).requires_grad_();
  auto y = sum(x * x + x);  // dy/dx = 2x + 1, x used three times
  y.backward();
  CHECK(x.grad().to_vector() == std::vector<double>{3, 5, 7});
  sum(x * 2.0).backward();  // a second backward accumulates
  CHECK(x.grad().to_vector() == std::vector<double>{5, 7, 9});
  x.zero_grad();
  CHECK_FALSE(x.grad().defined());
  sum(x.detach() * x).backward();  // the detached factor is a constant
  CHECK(x.grad().to_vector() == std::vector<double>{1, 2, 3});
  CHECK(x.is_leaf());
  CHECK_FALSE((x * 2.0).is_leaf());
  CHECK(std::string((x * 2.0).grad_fn()->name) == "mul");
  // An explicit gradient for a non-scalar output.
  x.zero_grad();
  auto z = x * 3.0;
  z.backward(from_vector<double>({1, 0, 2}));
  CHECK(x.grad().to_vector() == std::vector<double>{3, 0, 6});
  // Inputs that do not require grad get nothing.
  auto c = from_vector<double>({1, 1, 1});
  sum(x * c).backward();
  CHECK_FALSE(c.grad().defined());
  // A leaf that is the root itself.
  auto s = full<double>({}, 2.0).requires_grad_();
  s.backward();
  CHECK(s.grad().item() == 1.0);
}

TEST_CASE("Engine: leaf gradients own their buffers, and a Linear's weight gradient is contiguous") {
  // add's backward hands the same gradient to both inputs: each leaf must get its own copy, so
  // that an in-place change of one grad() (clipping, zeroing) leaves the other alone.
  auto a = from_vector<double>({1, 2, 3}).requires_grad_(), b = from_vector<double>({4, 5, 6}).requires_grad_();
  auto w = from_vector<double>({1, 10, 100});
  sum((a + b) * w).backward();
  CHECK(a.grad().data() != b.grad().data());
  a.grad().fill_(7.0);
  CHECK(b.grad().to_vector() == std::vector<double>{1, 10, 100});
  // A gradient given for a leaf root is copied, not kept.
  auto r = from_vector<double>({1, 2}).requires_grad_();
  auto gr = from_vector<double>({3, 4});
  r.backward(gr);
  gr.fill_(0.0);
  CHECK(r.grad().to_vector() == std::vector<double>{3, 4});
  // x @ W^T (a Linear): dW = g^T x arrives contiguous, with the right values.
  Generator g(12);
  auto x = randn<double>({5, 3}, g), W = randn<double>({4, 3}, g).requires_grad_(), gy = randn<double>({5, 4}, g);
  sum(matmul(x, W.t()) * gy).backward();
  CHECK(W.grad().is_contiguous());
  CHECK(max(abs(W.grad() - matmul(gy.t(), x))).item() < 1e-12);
}

TEST_CASE("Engine: NoGradGuard records nothing") {
  auto w = ones<float>({3}).requires_grad_();
  {
    NoGradGuard no_grad;
    CHECK_FALSE(GradMode::is_enabled());
    auto y = w * 2.0f;
    CHECK_FALSE(y.requires_grad());
    CHECK(y.grad_fn() == nullptr);
    w.fill_(2.0f);  // allowed: an optimizer update
  }
  CHECK(GradMode::is_enabled());
  CHECK((w * 2.0f).requires_grad());
  CHECK(w.at({0}) == 2.0f);
}

TEST_CASE("Engine: errors say what is wrong") {
  auto x = from_vector<double>({1, 2}).requires_grad_();
  auto y = x * 2.0;
  CHECK_THROWS_WITH(y.backward(), LOOM_CONTAINS("a gradient can be implied only for a one-element output"));
  CHECK_THROWS_WITH(y.backward(zeros<double>({3})), LOOM_CONTAINS("gradient of shape [3] given for a tensor of shape [2]"));
  CHECK_THROWS_WITH(from_vector<double>({1.0}).backward(), LOOM_CONTAINS("does not require grad"));

  auto l = sum(exp(x));
  l.backward();
  CHECK_THROWS_WITH(l.backward(), LOOM_CONTAINS("retain_graph"));
  auto l2 = sum(exp(x));
  x.zero_grad();
  l2.backward({}, /*retain_graph=*/true);
  l2.backward();
  CHECK(x.grad().at({0}) == Approx(2 * std::exp(1.0)));

  CHECK_THROWS_WITH(x.fill_(0.0), LOOM_CONTAINS("cannot modify a tensor that requires grad in place"));
  CHECK_THROWS_AS(x.copy_(zeros<double>({2})), value_error);
  CHECK_THROWS_AS((x * 2.0).requires_grad_(false), value_error);

  // A tensor saved for backward and then modified in place: caught, not a silent wrong gradient.
  auto c = from_vector<double>({3, 4});
  auto m = sum(x * c);
  c.fill_(0.0);
  CHECK_THROWS_WITH(m.backward(), LOOM_CONTAINS("was modified in place after it was saved"));
  auto e = exp(x);  // saves its output
  auto r = sum(e);
  {
    NoGradGuard no_grad;
    e.fill_(1.0);
  }
  CHECK_THROWS_WITH(r.backward(), LOOM_CONTAINS("backward of exp"));
}

TEST_CASE("Engine: the graph is freed after backward and when tensors go") {
  int64_t base = autograd::live_nodes();
  auto w = leaf({4, 4}, 50);
  {
    auto h = w;
    for (int i = 0; i < 50; ++i) h = tanh(matmul(h, w) * 0.5 + h);
    auto loss = sum(h);
    CHECK(autograd::live_nodes() > base + 100);
    loss.backward();
  }
  CHECK(autograd::live_nodes() == base);  // no cycles: every node died with its outputs
  CHECK(w.grad().defined());
  // A long chain (deep graph) goes through the iterative engine without recursion problems.
  auto x = from_vector<double>({1.0}).requires_grad_();
  {
    auto h = x;
    for (int i = 0; i < 5000; ++i) h = h + 1.0;
    h.backward();
  }
  CHECK(x.grad().item() == 1.0);
  CHECK(autograd::live_nodes() == base);
}

TEST_CASE("Float32 gradients agree with the double-precision ones") {
  // The same small network in float and double: float gradients within 1e-5 (relative to the
  // largest gradient entry) of double ones.
  Generator g(60);
  auto xd = randn<double>({8, 16}, g), wd = randn<double>({16, 8}, g, 0, 0.3);
  auto y = from_vector<int64_t>({0, 1, 2, 3, 4, 5, 6, 7});
  auto xf = xd.to<float>().requires_grad_(), wf = wd.to<float>().requires_grad_();
  xd.requires_grad_(), wd.requires_grad_();
  cross_entropy(softmax(matmul(xd, wd), -1) * 4.0, y).backward();
  cross_entropy(softmax(matmul(xf, wf), -1) * 4.0f, y).backward();
  for (auto [gf, gd] : {std::pair{xf.grad(), xd.grad()}, std::pair{wf.grad(), wd.grad()}}) {
    double scale = max(abs(gd)).item();
    double err = max(abs(gf.to<double>() - gd)).item();
    CHECK(err <= 1e-5 * scale);
  }
}

TEST_CASE("Engine: backward from several outputs at once sums their contributions") {
  Generator g(70);
  auto w = randn<double>({3, 3}, g).requires_grad_(), x = randn<double>({2, 3}, g);
  auto gy = randn<double>({2, 3}, g), gz = randn<double>({2, 3}, g);
  auto h = tanh(matmul(x, w));  // shared by both outputs: walked once
  auto y = h * 2.0, z = exp(h);
  autograd::backward(std::vector<Tensor<double>>{y, z}, std::vector<Tensor<double>>{gy, gz}, false);
  const Tensor<double> both = w.grad().clone();
  w.zero_grad();
  auto h2 = tanh(matmul(x, w));
  sum(h2 * 2.0 * gy + exp(h2) * gz).backward();  // the same sum, as one scalar
  CHECK(max(abs(both - w.grad())).item() <= 1e-12 * max(abs(both)).item());
  // a leaf among the roots takes its gradient directly; a mismatched count is an error
  w.zero_grad();
  auto v = full<double>({3, 3}, 0.0).requires_grad_();
  autograd::backward(std::vector<Tensor<double>>{v, sum(w * v)},
                     std::vector<Tensor<double>>{w.detach(), Tensor<double>()}, false);
  CHECK(max(abs(v.grad() - 2.0 * w.detach())).item() == 0.0);  // w from the leaf root, w from sum(w * v)
  CHECK_THROWS_WITH(autograd::backward(std::vector<Tensor<double>>{y}, std::vector<Tensor<double>>{}, false),
                    LOOM_CONTAINS("1 outputs but 0 gradients"));
}

TEST_CASE("recompute: the same outputs and gradients as running f, without keeping f's graph") {
  // f: a two-input, two-output piece of a network with its own parameter and a dropout
  Generator init(71);
  auto w = randn<double>({6, 6}, init, 0, 0.5).requires_grad_();
  auto x0 = randn<double>({4, 6}, init), r0 = randn<double>({4, 6}, init);
  auto run = [&](bool recomputed, int64_t* nodes_after_forward) {
    Generator drop(5);
    auto x = x0.clone().requires_grad_(), r = r0.clone().requires_grad_();
    auto a = x * 1.5;  // the inputs are made by an op, so their gradient flows on through it
    RecomputeFn<double> f = [&](const std::vector<Tensor<double>>& in) {
      auto s = in[0] + in[1];
      auto h = dropout(gelu(matmul(s, w)), 0.25, drop);
      return std::vector<Tensor<double>>{s, h};
    };
    const int64_t before = autograd::live_nodes();
    std::vector<Tensor<double>> out = recomputed ? recompute(f, {a, r}, &drop) : f({a, r});
    *nodes_after_forward = autograd::live_nodes() - before;
    const uint64_t drawn = drop.offset();
    sum(out[0] * out[1] + out[1]).backward();
    CHECK(drop.offset() == drawn);  // the second run of f draws nothing new in the end
    auto grads = std::vector<Tensor<double>>{x.grad(), r.grad(), w.grad().clone(), out[1].detach()};
    w.zero_grad();
    return grads;
  };
  int64_t nodes_plain = 0, nodes_recomputed = 0;
  const auto plain = run(false, &nodes_plain), again = run(true, &nodes_recomputed);
  for (size_t i = 0; i < plain.size(); ++i) {
    INFO("tensor " << i);
    CHECK(max(abs(plain[i] - again[i])).item() == 0.0);  // the same ops on the same numbers
  }
  CHECK(nodes_plain == 4);       // f's graph: add, matmul, gelu, dropout
  CHECK(nodes_recomputed == 1);  // one "recompute" node, which keeps only the inputs
  // the second run of f gets the autocast setting of the first, though backward runs without it
  std::vector<bool> autocast_seen;
  RecomputeFn<double> spy = [&](const std::vector<Tensor<double>>& in) {
    autocast_seen.push_back(AutocastGuard::bf16());
    return std::vector<Tensor<double>>{in[0] * 2.0};
  };
  Tensor<double> y;
  {
    AutocastGuard autocast(true);
    y = recompute(spy, {x0.clone().requires_grad_()})[0];
  }
  sum(y).backward();
  CHECK(autocast_seen == std::vector<bool>{true, true});
  // grad mode off: f itself, nothing recorded
  NoGradGuard no_grad;
  RecomputeFn<double> g = [&](const std::vector<Tensor<double>>& in) {
    return std::vector<Tensor<double>>{matmul(in[0], w)};
  };
  CHECK_FALSE(recompute(g, {x0})[0].requires_grad());
}

TEST_CASE("recompute: retain_graph runs it twice; a function that changes says so") {
  Generator init(72);
  auto w = randn<double>({3, 3}, init).requires_grad_();
  auto x = randn<double>({2, 3}, init).requires_grad_();
  RecomputeFn<double> f = [&](const std::vector<Tensor<double>>& in) {
    return std::vector<Tensor<double>>{matmul(in[0], w)};
  };
  auto loss = sum(recompute(f, {x})[0]);
  loss.backward(Tensor<double>(), /*retain_graph=*/true);
  const Tensor<double> once = w.grad().clone(), x_once = x.grad().clone();
  loss.backward();
  CHECK(max(abs(w.grad() - 2.0 * once)).item() <= 1e-12);
  CHECK(max(abs(x.grad() - 2.0 * x_once)).item() <= 1e-12);
  int calls = 0;
  RecomputeFn<double> changing = [&](const std::vector<Tensor<double>>& in) {
    return std::vector<Tensor<double>>{++calls == 1 ? in[0] * 2.0 : sum(in[0])};
  };
  CHECK_THROWS_WITH(sum(recompute(changing, {x})[0]).backward(),
                    LOOM_CONTAINS(
                        "recompute: output 0 has shape [] when run again in backward, [2, 3] in the forward"));
}
