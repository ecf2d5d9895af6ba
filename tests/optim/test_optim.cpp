// Optimizers, schedules, clipping and gradient accumulation.
// - Hand-computed single steps of SGD (momentum, dampening, Nesterov, weight decay), Adam and AdamW.
// - PyTorch parity: tests/fixtures/optim.txt (written by make_optim_fixtures.py with PyTorch 1.13)
//   holds a few steps of each optimizer on a 2-layer tanh MLP; loom must match every parameter
//   after every step to 1e-6, normwise: max|loom - torch| / max|torch|.
// - Schedules against nanoGPT's get_lr, clipping against a hand computation, a bit-exact state
//   round trip, errors, and the training loop of docs/11-optimizers.md.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <sstream>
#include <string>

#include <loom/loom.hpp>
#include <loom/optim/optim.hpp>

#include "catch.hpp"
#include "fixtures.hpp"

using namespace loom;
using TF = Tensor<float>;
using Named = std::vector<std::pair<std::string, TF>>;

namespace {

// Fixtures (tests/fixtures.hpp): float32 tensors by name.
std::map<std::string, TF> load_fixture(const std::string& name) { return loom_test::load_fixture(name).f; }
using loom_test::rel_error;

bool verbose() { return std::getenv("LOOM_TEST_VERBOSE") != nullptr; }

bool same_bits(const TF& a, const TF& b) {
  return a.shape() == b.shape() && std::memcmp(a.data(), b.data(), size_t(a.numel()) * sizeof(float)) == 0;
}

TF param(std::vector<float> v) { return from_vector(v).requires_grad_(); }

// --- The fixtures' model: pred = tanh(x @ w1 + b1) @ w2 + b2, loss = mean((pred - y)^2) ---------
struct Mlp {
  TF x, y;
  std::map<std::string, TF> p;  // w1, b1, w2, b2
  explicit Mlp(const std::map<std::string, TF>& fx) : x(fx.at("x")), y(fx.at("y")) {
    for (const char* n : {"w1", "b1", "w2", "b2"}) p[n] = fx.at(n).clone().requires_grad_();
  }
  TF loss() const {
    TF d = matmul(tanh(matmul(x, p.at("w1")) + p.at("b1")), p.at("w2")) + p.at("b2") - y;
    return mean(d * d);
  }
  Named named() const { return {{"w1", p.at("w1")}, {"b1", p.at("b1")}, {"w2", p.at("w2")}, {"b2", p.at("b2")}}; }
  std::vector<TF> list() const { return {p.at("w1"), p.at("b1"), p.at("w2"), p.at("b2")}; }
};

// Runs `steps` steps of the fixture trajectory `run` and returns the worst error over every
// parameter and step (and checks the losses on the way).
double follow(const std::map<std::string, TF>& fx, const std::string& run, Mlp& m, Optimizer& opt,
              const std::function<void(int)>& before_step = {}) {
  double worst = 0;
  for (int k = 1; k <= 5; ++k) {
    opt.zero_grad();
    TF loss = m.loss();
    loss.backward();
    std::string pre = run + ".step" + std::to_string(k) + ".";
    CHECK(rel_error(loss.detach().reshape({}), fx.at(pre + "loss")) <= 1e-6);
    if (before_step) before_step(k - 1);
    opt.step();
    for (auto& [name, t] : m.p) {
      double e = rel_error(t.detach(), fx.at(pre + name));
      INFO(run << " step " << k << " " << name << ": relative error " << e);
      CHECK(e <= 1e-6);
      worst = std::max(worst, e);
    }
  }
  if (verbose()) std::printf("[optim parity] %-14s max relative error %.3g\n", run.c_str(), worst);
  return worst;
}

}  // namespace

// --- Hand-computed steps ------------------------------------------------------------------------

TEST_CASE("SGD: hand-computed steps (plain, momentum + weight decay, Nesterov, dampening)") {
  SECTION("plain: p -= lr * g") {
    TF p = param({1.0f, -2.0f});
    SGD opt({p}, {0.1});
    p.set_grad(from_vector<float>({0.5f, 0.25f}));
    opt.step();
    CHECK(p.at({0}) == Approx(0.95f).epsilon(1e-6));
    CHECK(p.at({1}) == Approx(-2.025f).epsilon(1e-6));
  }
  SECTION("momentum 0.9, weight decay 0.1, two steps") {
    TF p = param({1.0f, -2.0f});
    SGDOptions o;
    o.lr = 0.1, o.momentum = 0.9, o.weight_decay = 0.1;
    SGD opt({p}, o);
    // step 1: d = g + 0.1 p = [0.6, 0.05]; b = d; p = [0.94, -2.005]
    p.set_grad(from_vector<float>({0.5f, 0.25f}));
    opt.step();
    CHECK(p.at({0}) == Approx(0.94f).epsilon(1e-6));
    CHECK(p.at({1}) == Approx(-2.005f).epsilon(1e-6));
    // step 2: d = [0.594, 0.0495]; b = 0.9 b + d = [1.134, 0.0945]; p = [0.8266, -2.01445]
    p.set_grad(from_vector<float>({0.5f, 0.25f}));
    opt.step();
    CHECK(p.at({0}) == Approx(0.8266f).epsilon(1e-6));
    CHECK(p.at({1}) == Approx(-2.01445f).epsilon(1e-6));
    auto st = opt.state_tensors();
    REQUIRE(st.size() == 1);
    CHECK(st[0].first == "0.momentum_buffer");
    CHECK(st[0].second.at({0}) == Approx(1.134f).epsilon(1e-6));
    CHECK(st[0].second.at({1}) == Approx(0.0945f).epsilon(1e-6));
  }
  SECTION("Nesterov: d = g + mu * b") {
    TF p = param({1.0f, -1.0f});
    SGDOptions o;
    o.lr = 0.1, o.momentum = 0.9, o.nesterov = true;
    SGD opt({p}, o);
    // step 1: b = g = 1, d = 1 + 0.9 = 1.9; step 2: b = 1.9, d = 1 + 0.9 * 1.9 = 2.71
    p.set_grad(from_vector<float>({1.0f, -1.0f}));
    opt.step();
    CHECK(p.at({0}) == Approx(0.81f).epsilon(1e-6));
    p.set_grad(from_vector<float>({1.0f, -1.0f}));
    opt.step();
    CHECK(p.at({0}) == Approx(0.539f).epsilon(1e-6));
    CHECK(p.at({1}) == Approx(-0.539f).epsilon(1e-6));
  }
  SECTION("dampening 0.5: the first step takes the whole gradient") {
    TF p = param({1.0f});
    SGDOptions o;
    o.lr = 0.1, o.momentum = 0.9, o.dampening = 0.5;
    SGD opt({p}, o);
    p.set_grad(from_vector<float>({1.0f}));
    opt.step();  // b = 1
    CHECK(p.at({0}) == Approx(0.9f).epsilon(1e-6));
    p.set_grad(from_vector<float>({1.0f}));
    opt.step();  // b = 0.9 + 0.5 = 1.4
    CHECK(p.at({0}) == Approx(0.76f).epsilon(1e-6));
  }
}

TEST_CASE("Adam and AdamW: hand-computed steps") {
  // With a constant gradient the bias-corrected moments are exactly g and g^2, so every step
  // moves each element by lr * g / (|g| + eps) = lr * sign(g) (up to eps).
  SECTION("Adam, no weight decay: two steps of lr * sign(g); the state after one") {
    TF p = param({1.0f, -2.0f});
    Adam opt({p}, {0.1});
    p.set_grad(from_vector<float>({0.5f, -0.25f}));
    opt.step();
    CHECK(p.at({0}) == Approx(0.9f).epsilon(1e-6));
    CHECK(p.at({1}) == Approx(-1.9f).epsilon(1e-6));
    auto st = opt.state_tensors();
    REQUIRE(st.size() == 2);
    CHECK(st[0].first == "0.exp_avg");
    CHECK(st[1].first == "0.exp_avg_sq");
    CHECK(st[0].second.at({0}) == Approx(0.05f).epsilon(1e-6));        // (1 - 0.9) g
    CHECK(st[1].second.at({1}) == Approx(0.0000625f).epsilon(1e-6));   // (1 - 0.999) g^2
    CHECK(opt.state_scalars().at("0.step") == "1");
    p.set_grad(from_vector<float>({0.5f, -0.25f}));
    opt.step();
    CHECK(p.at({0}) == Approx(0.8f).epsilon(1e-6));
    CHECK(p.at({1}) == Approx(-1.8f).epsilon(1e-6));
    CHECK(opt.param_step(0) == 2);
  }
  SECTION("Adam, L2 weight decay: the decay enters the gradient (and here flips its sign)") {
    TF p = param({1.0f, -2.0f});
    AdamOptions o;
    o.lr = 0.1, o.weight_decay = 0.1;
    Adam opt({p}, o);
    p.set_grad(from_vector<float>({-0.05f, 0.1f}));  // g + 0.1 p = [0.05, -0.1]
    opt.step();
    CHECK(p.at({0}) == Approx(0.9f).epsilon(1e-6));
    CHECK(p.at({1}) == Approx(-1.9f).epsilon(1e-6));
  }
  SECTION("AdamW: p * (1 - lr * wd), then the Adam step") {
    TF p = param({1.0f, -2.0f});
    AdamWOptions o;
    o.lr = 0.1, o.weight_decay = 0.5;
    AdamW opt({p}, o);
    p.set_grad(from_vector<float>({0.5f, -0.25f}));
    opt.step();  // [0.95, -1.9] - 0.1 * [1, -1]
    CHECK(p.at({0}) == Approx(0.85f).epsilon(1e-6));
    CHECK(p.at({1}) == Approx(-1.8f).epsilon(1e-6));
  }
  SECTION("AdamW: bias correction at step 2 with a changing gradient") {
    TF p = param({0.0f});
    AdamWOptions o;
    o.lr = 0.01, o.beta1 = 0.5, o.beta2 = 0.75, o.eps = 0.0, o.weight_decay = 0.0;
    AdamW opt({p}, o);
    p.set_grad(from_vector<float>({1.0f}));
    opt.step();  // p = -0.01
    p.set_grad(from_vector<float>({3.0f}));
    opt.step();
    // m = 0.5 * 0.5 + 0.5 * 3 = 1.75, v = 0.75 * 0.25 + 0.25 * 9 = 2.4375
    // p = -0.01 - 0.01 / (1 - 0.25) * 1.75 / (sqrt(2.4375) / sqrt(1 - 0.5625))
    double want = -0.01 - 0.01 / 0.75 * 1.75 / (std::sqrt(2.4375) / std::sqrt(0.4375));
    CHECK(p.at({0}) == Approx(want).epsilon(1e-6));
  }
}

// --- PyTorch parity -----------------------------------------------------------------------------

TEST_CASE("PyTorch parity: SGD with momentum, Nesterov and weight decay; a parameter without grad") {
  auto fx = load_fixture("optim.txt");
  Mlp m(fx);
  TF unused = ones<float>({2}).requires_grad_();  // outside the graph: never gets a gradient
  auto params = m.list();
  params.push_back(unused);
  SGDOptions o;
  o.lr = 0.1, o.momentum = 0.9, o.nesterov = true, o.weight_decay = 0.01;
  SGD opt(params, o);
  follow(fx, "sgd_nesterov", m, opt);
  CHECK(unused.to_vector() == std::vector<float>{1.0f, 1.0f});
  CHECK(opt.param_step(4) == 0);
  CHECK(opt.state_tensors().size() == 4);  // no momentum buffer for the unused parameter
}

TEST_CASE("PyTorch parity: SGD with momentum and dampening") {
  auto fx = load_fixture("optim.txt");
  Mlp m(fx);
  SGDOptions o;
  o.lr = 0.05, o.momentum = 0.9, o.dampening = 0.1;
  SGD opt(m.list(), o);
  follow(fx, "sgd_dampening", m, opt);
}

TEST_CASE("PyTorch parity: Adam with L2 weight decay and a group with its own lr") {
  auto fx = load_fixture("optim.txt");
  Mlp m(fx);
  AdamOptions o;
  o.lr = 0.01, o.beta2 = 0.99, o.weight_decay = 0.05;
  ParamGroup weights{{m.p["w1"], m.p["w2"]}}, biases{{m.p["b1"], m.p["b2"]}};
  biases.lr = 0.02;
  Adam opt({weights, biases}, o);
  CHECK(*opt.param_groups()[0].lr == 0.01);
  CHECK(*opt.param_groups()[1].lr == 0.02);
  CHECK(*opt.param_groups()[1].weight_decay == 0.05);
  follow(fx, "adam", m, opt);
}

TEST_CASE("PyTorch parity: AdamW with decay groups, warmup + cosine schedule and clipping") {
  auto fx = load_fixture("optim.txt");
  Mlp m(fx);
  AdamWOptions o;
  o.lr = 0.02, o.beta2 = 0.95;
  AdamW opt(decay_groups(m.named(), 0.1), o);
  LrSchedule schedule = LrSchedule::cosine(0.02, 0.002, 2, 4);
  double worst_norm = 0;
  follow(fx, "adamw", m, opt, [&](int it) {
    opt.set_lr(schedule(it));
    std::string pre = "adamw.step" + std::to_string(it + 1) + ".";
    CHECK(float(opt.lr()) == fx.at(pre + "lr").item());
    double norm = clip_grad_norm(opt.params(), 0.5);
    double want = fx.at(pre + "norm").item();
    worst_norm = std::max(worst_norm, std::abs(norm - want) / want);
    CHECK(norm == Approx(want).epsilon(1e-6));
  });
  if (verbose()) std::printf("[optim parity] adamw clip norm max relative error %.3g\n", worst_norm);
}

// --- Parameter groups ---------------------------------------------------------------------------

TEST_CASE("decay_groups: matrices and embeddings decay, vectors do not; frozen and tied skipped") {
  Generator g(1);
  TF wte = randn<float>({10, 4}, g).requires_grad_();       // embedding: 2-D, decays
  TF w = randn<float>({4, 4}, g).requires_grad_();          // linear weight
  TF b = zeros<float>({4}).requires_grad_();                // bias
  TF ln = ones<float>({4}).requires_grad_();                // LayerNorm weight
  TF frozen = randn<float>({4, 4}, g);                      // does not require grad
  Named named{{"wte.weight", wte}, {"h.0.fc.weight", w}, {"h.0.fc.bias", b}, {"ln_f.weight", ln},
              {"frozen", frozen}, {"lm_head.weight", wte}};  // lm_head tied to wte
  auto groups = decay_groups(named, 0.1);
  REQUIRE(groups.size() == 2);
  CHECK(groups[0].names == std::vector<std::string>{"wte.weight", "h.0.fc.weight"});
  CHECK(groups[1].names == std::vector<std::string>{"h.0.fc.bias", "ln_f.weight"});
  CHECK(*groups[0].weight_decay == 0.1);
  CHECK(*groups[1].weight_decay == 0.0);
  CHECK_FALSE(groups[0].lr.has_value());
  AdamW opt(groups);
  CHECK(*opt.param_groups()[0].lr == 1e-3);
  CHECK(opt.params().size() == 4);
  // State tensors are named after the parameters.
  wte.set_grad(ones<float>({10, 4}));
  opt.step();
  auto st = opt.state_tensors();
  REQUIRE(st.size() == 2);
  CHECK(st[0].first == "wte.weight.exp_avg");
  CHECK(st[1].first == "wte.weight.exp_avg_sq");
  CHECK(opt.state_scalars().at("wte.weight.step") == "1");
  CHECK(opt.state_scalars().count("h.0.fc.weight.step") == 0);  // no gradient yet: no state
}

TEST_CASE("set_lr sets every group; zero_grad drops gradients") {
  TF a = param({1.0f}), b = param({2.0f});
  ParamGroup ga{{a}}, gb{{b}};
  gb.lr = 0.5;
  SGD opt({ga, gb}, {0.1});
  CHECK(opt.lr() == 0.1);
  opt.set_lr(0.25);
  CHECK(*opt.param_groups()[0].lr == 0.25);
  CHECK(*opt.param_groups()[1].lr == 0.25);
  a.set_grad(ones<float>({1}));
  b.set_grad(ones<float>({1}));
  opt.zero_grad();
  CHECK_FALSE(a.grad().defined());
  CHECK_FALSE(b.grad().defined());
  opt.step();  // no gradients: nothing moves
  CHECK(a.item() == 1.0f);
  CHECK(b.item() == 2.0f);
}

TEST_CASE("step() modifies parameters in place: a graph that saved them can no longer run backward") {
  TF p = param({1.0f, 2.0f});
  TF y = sum(p * p);  // saves p
  SGD opt({p}, {0.1});
  p.set_grad(ones<float>({2}));
  opt.step();
  CHECK_THROWS_WITH(y.backward(), LOOM_CONTAINS("modified in place"));
}

// --- Schedules ------------------------------------------------------------------------------------

namespace {
// nanoGPT's get_lr (train.py), transcribed.
double nanogpt_get_lr(int64_t it, double learning_rate, double min_lr, int64_t warmup_iters, int64_t lr_decay_iters) {
  if (it < warmup_iters) return learning_rate * double(it + 1) / double(warmup_iters + 1);
  if (it > lr_decay_iters) return min_lr;
  double decay_ratio = double(it - warmup_iters) / double(lr_decay_iters - warmup_iters);
  double coeff = 0.5 * (1.0 + std::cos(M_PI * decay_ratio));
  return min_lr + coeff * (learning_rate - min_lr);
}
}  // namespace

TEST_CASE("Schedules: cosine matches nanoGPT's get_lr; linear and constant; errors") {
  for (int64_t it : {0, 1, 50, 99, 100, 101, 500, 1050, 1999, 2000, 2001, 5000}) {
    CAPTURE(it);
    CHECK(lr_cosine(it, 1e-3, 1e-4, 100, 2000) == Approx(nanogpt_get_lr(it, 1e-3, 1e-4, 100, 2000)).epsilon(1e-14));
  }
  CHECK(lr_cosine(0, 1e-3, 1e-4, 100, 2000) == Approx(1e-3 / 101).epsilon(1e-14));
  CHECK(lr_cosine(100, 1e-3, 1e-4, 100, 2000) == Approx(1e-3).epsilon(1e-14));
  CHECK(lr_cosine(1050, 1e-3, 1e-4, 100, 2000) == Approx(5.5e-4).epsilon(1e-12));  // half way
  CHECK(lr_cosine(2000, 1e-3, 1e-4, 100, 2000) == Approx(1e-4).epsilon(1e-14));
  CHECK(lr_cosine(9999, 1e-3, 1e-4, 100, 2000) == 1e-4);
  CHECK(lr_cosine(5, 1e-3, 1e-4, 0, 0) == 1e-4);  // no warmup, no decay: the floor

  CHECK(lr_linear(0, 1e-3, 1e-4, 100, 2000) == Approx(1e-3 / 101).epsilon(1e-14));
  CHECK(lr_linear(100, 1e-3, 1e-4, 100, 2000) == Approx(1e-3).epsilon(1e-14));
  CHECK(lr_linear(1050, 1e-3, 1e-4, 100, 2000) == Approx(5.5e-4).epsilon(1e-12));
  CHECK(lr_linear(1525, 1e-3, 1e-4, 100, 2000) == Approx(3.25e-4).epsilon(1e-12));
  CHECK(lr_linear(3000, 1e-3, 1e-4, 100, 2000) == 1e-4);
  CHECK(lr_constant(123, 3e-4) == 3e-4);

  LrSchedule cos = LrSchedule::cosine(1e-3, 1e-4, 100, 2000), lin = LrSchedule::linear(1e-3, 0.0, 10, 20);
  LrSchedule con = LrSchedule::constant(0.5);
  CHECK(cos(777) == lr_cosine(777, 1e-3, 1e-4, 100, 2000));
  CHECK(lin(15) == lr_linear(15, 1e-3, 0.0, 10, 20));
  CHECK(con(0) == 0.5);
  CHECK(con(1000000) == 0.5);
  CHECK(cos.kind() == LrSchedule::Kind::cosine);
  CHECK(cos.warmup_steps() == 100);

  CHECK_THROWS_AS(lr_cosine(0, 1e-3, 1e-4, 200, 100), value_error);
  CHECK_THROWS_WITH(LrSchedule::cosine(1e-3, 1e-4, 200, 100), LOOM_CONTAINS("warmup_steps <= decay_steps"));
  CHECK_THROWS_WITH(LrSchedule::linear(-1e-3, 0, 0, 10), LOOM_CONTAINS("learning rates must be finite and >= 0"));
  CHECK_THROWS_WITH(lr_cosine(-1, 1e-3, 1e-4, 10, 100), LOOM_CONTAINS("negative step -1"));
}

// --- Clipping -----------------------------------------------------------------------------------

TEST_CASE("clip_grad_norm: total norm, PyTorch's factor, no change below max_norm") {
  TF a = param({0.0f, 0.0f}), b = zeros<float>({1, 1}).requires_grad_(), c = param({5.0f});  // c: no grad
  a.set_grad(from_vector<float>({3.0f, 4.0f}));
  b.set_grad(from_vector<float>({12.0f}, {1, 1}));
  CHECK(grad_norm({a, b, c}) == 13.0);

  SECTION("above max_norm: scaled by max_norm / (norm + 1e-6)") {
    double norm = clip_grad_norm({a, b, c}, 6.5);
    CHECK(norm == 13.0);
    float f = float(6.5 / (13.0 + 1e-6));
    CHECK(a.grad().to_vector() == std::vector<float>{3.0f * f, 4.0f * f});
    CHECK(b.grad().at({0, 0}) == 12.0f * f);
    CHECK(grad_norm({a, b}) == Approx(6.5).epsilon(1e-6));
    CHECK_FALSE(c.grad().defined());
  }
  SECTION("below max_norm: unchanged") {
    CHECK(clip_grad_norm({a, b, c}, 100.0) == 13.0);
    CHECK(a.grad().to_vector() == std::vector<float>{3.0f, 4.0f});
  }
  SECTION("inside a NoGradGuard") {
    NoGradGuard no_grad;
    CHECK(clip_grad_norm({a, b}, 1.3) == 13.0);
    CHECK(a.grad().at({0}) == Approx(0.3f).epsilon(1e-6));
  }
  SECTION("a strided gradient (set_grad with a transposed view)") {
    TF m = zeros<float>({2, 2}).requires_grad_();
    m.set_grad(from_vector<float>({0.0f, 3.0f, 4.0f, 0.0f}, {2, 2}).t());
    CHECK(clip_grad_norm({m}, 2.5) == 5.0);
    CHECK(m.grad().at({1, 0}) == Approx(1.5f).epsilon(1e-6));
  }
  CHECK_THROWS_WITH(clip_grad_norm({a}, -1.0), LOOM_CONTAINS("clip_grad_norm: invalid max_norm -1"));
}

TEST_CASE("clip_grad_norm: a large gradient gives the same norm on 1 and 2 threads") {
  Generator g(7);
  TF big = zeros<float>({300001}).requires_grad_(), small = zeros<float>({3}).requires_grad_();
  big.set_grad(randn<float>({300001}, g));
  small.set_grad(randn<float>({3}, g));
  double want = 0;
  for (float v : big.grad().to_vector()) want += double(v) * double(v);
  for (float v : small.grad().to_vector()) want += double(v) * double(v);
  int threads = get_num_threads();
  set_num_threads(1);
  double n1 = grad_norm({big, small});
  set_num_threads(2);
  double n2 = grad_norm({big, small});
  set_num_threads(threads);
  CHECK(n1 == n2);
  CHECK(n1 == Approx(std::sqrt(want)).epsilon(1e-12));
}

TEST_CASE("AdamW: a large parameter updates identically on 1 and 2 threads") {
  Generator g(3);
  TF init = randn<float>({100000}, g), grad = randn<float>({100000}, g);
  auto run = [&](int threads) {
    int before = get_num_threads();
    set_num_threads(threads);
    TF p = init.clone().requires_grad_();
    AdamW opt({p}, {0.01});
    for (int i = 0; i < 3; ++i) {
      p.set_grad(grad);
      opt.step();
    }
    set_num_threads(before);
    return p.detach();
  };
  TF a = run(1), b = run(2);
  CHECK(same_bits(a, b));
  CHECK_FALSE(same_bits(a, init));
}

// --- Gradient accumulation ----------------------------------------------------------------------

TEST_CASE("Gradient accumulation: two half-batches (loss / 2 each) equal one full batch") {
  Generator g(11);
  TF x = randn<float>({4, 3}, g), y = randn<float>({4, 2}, g);
  TF w0 = randn<float>({3, 2}, g), b0 = randn<float>({2}, g);
  auto mse = [](const TF& pred, const TF& target) {
    TF d = pred - target;
    return mean(d * d);
  };
  auto one_step = [&](int micro_batches) {
    TF w = w0.clone().requires_grad_(), b = b0.clone().requires_grad_();
    AdamW opt({w, b}, {0.01});
    opt.zero_grad();
    int64_t rows = 4 / micro_batches;
    for (int k = 0; k < micro_batches; ++k) {
      TF xb = x.slice(0, k * rows, (k + 1) * rows), yb = y.slice(0, k * rows, (k + 1) * rows);
      TF loss = mse(matmul(xb, w) + b, yb) / float(micro_batches);  // each micro-batch: 1/n of the mean
      loss.backward();                                               // grads accumulate (+=)
    }
    std::vector<TF> grads{w.grad(), b.grad()};
    opt.step();
    return std::make_pair(std::vector<TF>{w.detach(), b.detach()}, grads);
  };
  auto [full, full_grads] = one_step(1);
  auto [accum, accum_grads] = one_step(2);
  for (size_t i = 0; i < 2; ++i) {
    CHECK(rel_error(accum_grads[i], full_grads[i]) <= 1e-6);
    CHECK(max(abs(accum[i] - full[i])).item() <= 1e-6f);
  }
}

// --- State round trip ---------------------------------------------------------------------------

namespace {
// Runs 5 steps uninterrupted, and 3 steps + save + restore into a fresh optimizer (built with
// other hyper-parameters, which load_state must overwrite) + 2 steps; the parameters and the
// state must agree bit for bit.
template <class Make>
void check_round_trip(Make make) {
  auto fx = load_fixture("optim.txt");
  auto train = [&](Mlp& m, Optimizer& opt, int from, int to) {
    for (int k = from; k < to; ++k) {
      opt.set_lr(lr_cosine(k, 0.02, 0.002, 1, 4));
      opt.zero_grad();
      m.loss().backward();
      clip_grad_norm(opt.params(), 1.0);
      opt.step();
    }
  };
  Mlp a(fx);
  auto opt_a = make(a, false);
  train(a, *opt_a, 0, 5);

  Mlp b(fx);
  auto opt_b = make(b, false);
  train(b, *opt_b, 0, 3);
  // What a checkpoint would store: parameters, state tensors (copied), scalars.
  std::map<std::string, TF> saved_params;
  for (auto& [n, t] : b.p) saved_params[n] = t.detach().clone();
  Named saved_state;
  for (auto& [n, t] : opt_b->state_tensors()) saved_state.emplace_back(n, t.clone());
  auto saved_scalars = opt_b->state_scalars();
  opt_b.reset();

  Mlp c(fx);
  for (auto& [n, t] : c.p) {
    NoGradGuard no_grad;
    t.copy_(saved_params.at(n));
  }
  auto opt_c = make(c, true);
  opt_c->load_state(saved_state, saved_scalars);
  CHECK(opt_c->state_scalars() == saved_scalars);
  train(c, *opt_c, 3, 5);

  for (auto& [n, t] : a.p) {
    CAPTURE(n);
    CHECK(same_bits(t, c.p.at(n)));
  }
  auto sa = opt_a->state_tensors(), sc = opt_c->state_tensors();
  REQUIRE(sa.size() == sc.size());
  for (size_t i = 0; i < sa.size(); ++i) {
    CHECK(sa[i].first == sc[i].first);
    CHECK(same_bits(sa[i].second, sc[i].second));
  }
  CHECK(opt_a->state_scalars() == opt_c->state_scalars());
}
}  // namespace

TEST_CASE("State round trip: a restored optimizer continues bit for bit") {
  SECTION("AdamW with named decay groups") {
    check_round_trip([](Mlp& m, bool other) {
      AdamWOptions o;
      o.beta2 = other ? 0.999 : 0.95;
      o.eps = other ? 1e-6 : 1e-8;
      auto groups = decay_groups(m.named(), other ? 0.5 : 0.1);
      return std::make_unique<AdamW>(groups, o);
    });
  }
  SECTION("Adam (parameters named by index)") {
    check_round_trip([](Mlp& m, bool other) {
      AdamOptions o;
      o.weight_decay = other ? 0.0 : 0.01;
      return std::make_unique<Adam>(m.list(), o);
    });
  }
  SECTION("SGD with Nesterov momentum") {
    check_round_trip([](Mlp& m, bool other) {
      SGDOptions o;
      o.momentum = other ? 0.5 : 0.9;
      o.nesterov = !other;
      o.weight_decay = 0.01;
      return std::make_unique<SGD>(m.list(), o);
    });
  }
}

// --- Errors ---------------------------------------------------------------------------------------

TEST_CASE("Optimizer errors name the problem") {
  TF p = param({1.0f, 2.0f});
  SECTION("bad hyper-parameters") {
    CHECK_THROWS_WITH(SGD({p}, {-0.1}), LOOM_CONTAINS("SGD: invalid learning rate -0.1"));
    CHECK_THROWS_WITH(AdamW({p}, {-1.0}), LOOM_CONTAINS("AdamW: invalid learning rate -1"));
    AdamWOptions o;
    o.beta1 = 1.0;
    CHECK_THROWS_WITH(AdamW({p}, o), LOOM_CONTAINS("AdamW: invalid beta1 1 (must be in [0, 1))"));
    AdamOptions a;
    a.beta2 = -0.1;
    CHECK_THROWS_WITH(Adam({p}, a), LOOM_CONTAINS("Adam: invalid beta2 -0.1"));
    a = AdamOptions{};
    a.eps = -1;
    CHECK_THROWS_WITH(Adam({p}, a), LOOM_CONTAINS("invalid eps"));
    a = AdamOptions{};
    a.weight_decay = -0.5;
    CHECK_THROWS_WITH(Adam({p}, a), LOOM_CONTAINS("Adam: invalid weight_decay -0.5"));
    SGDOptions s;
    s.nesterov = true;
    CHECK_THROWS_WITH(SGD({p}, s), LOOM_CONTAINS("Nesterov momentum needs momentum > 0 and dampening 0"));
    SGD ok({p}, {0.1});
    CHECK_THROWS_WITH(ok.set_lr(-1), LOOM_CONTAINS("SGD: invalid learning rate -1"));
    ParamGroup neg{{p}};
    neg.lr = -2;
    CHECK_THROWS_WITH(SGD({neg}), LOOM_CONTAINS("invalid learning rate -2"));
  }
  SECTION("bad parameters") {
    TF frozen = from_vector<float>({1.0f});
    CHECK_THROWS_WITH(AdamW({p, frozen}),
                      LOOM_CONTAINS("AdamW: parameter 1 (shape [1]) does not require grad; call requires_grad_()"));
    ParamGroup named{{frozen}, {}, {}, {"h.0.ln_1.weight"}};
    CHECK_THROWS_WITH(AdamW({named}), LOOM_CONTAINS("parameter 0 ('h.0.ln_1.weight') (shape [1]) does not require grad"));
    CHECK_THROWS_WITH(SGD({p, p}), LOOM_CONTAINS("SGD: parameter 1 appears more than once"));
    CHECK_THROWS_WITH(SGD(std::vector<TF>{}), LOOM_CONTAINS("SGD: got an empty parameter list"));
    TF q = param({1.0f});
    CHECK_THROWS_WITH(SGD({p * 2.0f}), LOOM_CONTAINS("is not a leaf tensor"));
    ParamGroup bad_names{{p, q}, {}, {}, {"a"}};
    CHECK_THROWS_WITH(SGD({bad_names}), LOOM_CONTAINS("group 0 has 2 parameters but 1 names"));
    TF m = zeros<float>({2, 3}).requires_grad_();
    SGD opt({m}, {0.1});
    m.set_grad(zeros<float>({3, 2}));
    CHECK_THROWS_WITH(opt.step(), LOOM_CONTAINS("SGD: step: the gradient of parameter '0' has shape [3, 2]"));
  }
  SECTION("load_state mismatches") {
    TF w = zeros<float>({2, 3}).requires_grad_(), b = zeros<float>({3}).requires_grad_();
    AdamW opt(decay_groups({{"w", w}, {"b", b}}, 0.1));
    w.set_grad(ones<float>({2, 3}));
    b.set_grad(ones<float>({3}));
    opt.step();
    auto tensors = opt.state_tensors();
    auto scalars = opt.state_scalars();

    AdamW fresh(decay_groups({{"w", w}, {"b", b}}, 0.1));
    Adam other({w, b});
    CHECK_THROWS_WITH(other.load_state(tensors, scalars),
                      LOOM_CONTAINS("Adam: load_state: the state was saved by AdamW, not by Adam"));
    auto wrong_shape = tensors;
    wrong_shape[0].second = zeros<float>({3, 2});
    CHECK_THROWS_WITH(fresh.load_state(wrong_shape, scalars),
                      LOOM_CONTAINS("state tensor 'w.exp_avg' has shape [3, 2], the parameter has shape [2, 3]"));
    auto unknown = tensors;
    unknown[0].first = "h.0.w.exp_avg";
    CHECK_THROWS_WITH(fresh.load_state(unknown, scalars), LOOM_CONTAINS("unknown state tensor 'h.0.w.exp_avg'"));
    auto missing = tensors;
    missing.pop_back();
    CHECK_THROWS_WITH(fresh.load_state(missing, scalars), LOOM_CONTAINS("parameter 'b' has 1 of its 2 state tensors"));
    auto no_step = scalars;
    no_step.erase("w.step");
    CHECK_THROWS_WITH(fresh.load_state(tensors, no_step), LOOM_CONTAINS("no step count"));
    auto bad_number = scalars;
    bad_number["beta2"] = "0.9x";
    CHECK_THROWS_WITH(fresh.load_state(tensors, bad_number), LOOM_CONTAINS("scalar 'beta2' is not a number: '0.9x'"));
    auto bad_beta = scalars;
    bad_beta["beta2"] = "1.5";
    CHECK_THROWS_WITH(fresh.load_state(tensors, bad_beta), LOOM_CONTAINS("invalid beta2 1.5"));
    AdamW one_group({w, b});
    CHECK_THROWS_WITH(one_group.load_state(tensors, scalars),
                      LOOM_CONTAINS("the state has 2 parameter groups, this optimizer has 1"));
    // A failed load changes nothing.
    CHECK(fresh.state_tensors().empty());
    CHECK(fresh.param_step(0) == 0);
    fresh.load_state(tensors, scalars);
    CHECK(fresh.param_step(0) == 1);
    CHECK(fresh.state_scalars() == scalars);
  }
}

// --- The training loop of docs/11-optimizers.md ----------------------------------------------------

TEST_CASE("docs/11-optimizers.md: the training loop compiles and learns") {
  loom::Generator gen(0);
  auto x = loom::randn<float>({64, 8}, gen), y = loom::randn<float>({64, 1}, gen);
  auto w1 = loom::randn<float>({8, 32}, gen, 0.0, 0.3).requires_grad_(), b1 = loom::zeros<float>({32}).requires_grad_();
  auto w2 = loom::randn<float>({32, 1}, gen, 0.0, 0.3).requires_grad_(), b2 = loom::zeros<float>({1}).requires_grad_();
  std::vector<std::pair<std::string, loom::Tensor<float>>> named{{"w1", w1}, {"b1", b1}, {"w2", w2}, {"b2", b2}};
  float first = 0, last = 0;
  // --- begin docs example ---
  loom::AdamWOptions opts;
  opts.lr = 1e-2, opts.beta2 = 0.99;
  loom::AdamW opt(loom::decay_groups(named, /*weight_decay=*/0.1), opts);  // matrices decay, vectors don't
  auto schedule = loom::LrSchedule::cosine(/*max_lr=*/1e-2, /*min_lr=*/1e-3, /*warmup=*/20, /*decay=*/300);
  const int steps = 300, micro_batches = 4;
  for (int step = 0; step < steps; ++step) {
    opt.set_lr(schedule(step));
    opt.zero_grad();
    for (int k = 0; k < micro_batches; ++k) {                 // 4 micro-batches of 16 rows
      auto xb = x.slice(0, 16 * k, 16 * (k + 1)), yb = y.slice(0, 16 * k, 16 * (k + 1));
      auto d = loom::matmul(loom::tanh(loom::matmul(xb, w1) + b1), w2) + b2 - yb;
      auto loss = loom::mean(d * d) / float(micro_batches);   // grads add up to the full batch's
      loss.backward();
      if (step == 0) first += loss.item();
      if (step == steps - 1) last += loss.item();
    }
    double norm = loom::clip_grad_norm(opt.params(), 1.0);
    if (!std::isfinite(norm)) continue;                       // skip a step that blew up
    opt.step();
  }
  // --- end docs example ---
  CHECK(last < 0.5f * first);
}

TEST_CASE("docs/11-optimizers.md: parameter groups and state snippets") {
  TF w1 = zeros<float>({2, 2}).requires_grad_(), w2 = zeros<float>({2, 2}).requires_grad_();
  TF b1 = zeros<float>({2}).requires_grad_(), b2 = zeros<float>({2}).requires_grad_();
  // --- begin docs example ---
  loom::ParamGroup weights({w1, w2});                 // the optimizer's lr and weight_decay
  loom::ParamGroup biases({b1, b2}, /*lr=*/0.02, /*weight_decay=*/0.0);
  loom::Adam opt({weights, biases}, loom::AdamOptions{1e-2});
  // --- end docs example ---
  CHECK(*opt.param_groups()[0].lr == 1e-2);
  CHECK(*opt.param_groups()[1].lr == 0.02);
  for (TF t : {w1, w2, b1, b2}) t.set_grad(ones<float>(t.shape()));
  opt.step();
  // --- begin docs example ---
  auto tensors = opt.state_tensors();  // {"h.0.attn.c_attn.weight.exp_avg", m}, {"....exp_avg_sq", v}, ...
  auto scalars = opt.state_scalars();  // {"optimizer": "AdamW", "group.0.lr": "...", "<name>.step": "3", ...}
  // ... later, with an optimizer built the same way over the restored parameters:
  opt.load_state(tensors, scalars);
  // --- end docs example ---
  CHECK(tensors.size() == 8);
  CHECK(scalars.at("optimizer") == "Adam");
  CHECK(scalars.at("group.1.lr") == "0.02");
  CHECK(scalars.at("3.step") == "1");
}
