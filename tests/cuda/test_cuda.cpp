// CUDA backend: every op the GPU runs, forward and backward, against the CPU in double (the
// reference), on random inputs with odd sizes that fill no tile; the runtime (allocator, copies,
// errors); AdamW and gradient clipping; the whole GPT forward/backward, with each block recomputed in
// backward too, and a few training steps.
// Without a GPU the binary prints why and exits 77, which ctest reports as skipped.
//
// Tolerances (normwise relative error ||dev_gpu - ref|| / ||ref||):
//   fp32 kernels            1e-5  (float rounding over sums of up to ~1e4 terms; TF32 is off)
//   GPT in fp32 vs CPU fp32 1e-4  (two float computations of a 2-layer model, each ~1e-6 off)
//   bf16 autocast           2e-2  (bf16 keeps 8 bits of mantissa: ~4e-3 per rounding)
#if defined(LOOM_CATCH2_MAJOR) && LOOM_CATCH2_MAJOR >= 3
#include <catch2/catch_session.hpp>
#else
#define CATCH_CONFIG_RUNNER
#endif
#include "catch.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include <loom/loom.hpp>

using namespace loom;

int main(int argc, char** argv) {
  if (!cuda_is_available()) {
    std::printf("no CUDA device: skipped\n");
    return 77;
  }
  std::printf("CUDA device 0: %s\n", cuda::device_name(0).c_str());
  return Catch::Session().run(argc, argv);
}

namespace {

const Device dev_gpu = Device::cuda(0);  // the GPU every test runs on

// ||a - b|| / ||b|| in double, on the CPU; NaN anywhere counts as an infinite error.
template <class A, class B>
double rel_err(const Tensor<A>& a, const Tensor<B>& b) {
  auto x = a.to(Device::cpu()).template to<double>().to_vector();
  auto y = b.to(Device::cpu()).template to<double>().to_vector();
  if (x.size() != y.size()) return INFINITY;
  double num = 0, den = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    if (!std::isfinite(x[i]) && !(std::isinf(x[i]) && x[i] == y[i])) return INFINITY;
    if (std::isinf(y[i])) continue;
    num += (x[i] - y[i]) * (x[i] - y[i]);
    den += y[i] * y[i];
  }
  return den == 0 ? std::sqrt(num) : std::sqrt(num / den);
}

// Runs f on double copies of the inputs on the CPU and on float copies on the GPU, back-propagates
// sum(f(x) * w) for a random w on both, and checks the output and every input's gradient.
// f receives the inputs and the device (for index tensors it captures).
template <class F>
void check_op(const std::string& name, const std::vector<Tensor<float>>& inputs, F f, double tol = 1e-5,
              bool grads = true) {
  std::vector<Tensor<double>> xd;
  std::vector<Tensor<float>> xg;
  for (const auto& x : inputs) {
    xd.push_back(x.to<double>().requires_grad_(grads));
    xg.push_back(x.to(dev_gpu).detach().requires_grad_(grads));
  }
  Tensor<double> yd = f(xd, Device::cpu());
  Tensor<float> yg = f(xg, dev_gpu);
  REQUIRE(yg.device() == dev_gpu);
  REQUIRE(yg.shape() == yd.shape());
  double e_out = rel_err(yg, yd);
  std::printf("parity %-28s out %.2e", name.c_str(), e_out);
  CHECK(e_out <= tol);
  if (grads) {
    Generator gen(99);
    Tensor<float> w = randn<float>(yd.shape(), gen);
    sum(yd * w.to<double>()).backward();
    sum(yg * w.to(dev_gpu)).backward();
    for (size_t i = 0; i < inputs.size(); ++i) {
      REQUIRE(xg[i].grad().defined());
      REQUIRE(xg[i].grad().device() == dev_gpu);
      double e = rel_err(xg[i].grad(), xd[i].grad());
      std::printf("  d%zu %.2e", i, e);
      CHECK(e <= tol);
    }
  }
  std::printf("\n");
}

Tensor<float> rnd(const Shape& s, uint64_t seed, double lo = -2, double hi = 2) {
  Generator g(seed);
  return rand<float>(s, g, lo, hi);
}

}  // namespace

// --- Runtime ------------------------------------------------------------------------------------

TEST_CASE("Tensors move to the GPU and back unchanged: copies fills and casts run there") {
  Generator g(1);
  auto x = randn<float>({37, 129}, g);
  auto d = x.to(dev_gpu);
  CHECK(d.device() == dev_gpu);
  CHECK(d.to(Device::cpu()).to_vector() == x.to_vector());
  auto t = x.t().to(dev_gpu);  // non-contiguous source
  CHECK(t.to(Device::cpu()).to_vector() == x.t().contiguous().to_vector());
  CHECK(d.t().contiguous().to(Device::cpu()).to_vector() == x.t().contiguous().to_vector());  // strided copy kernel
  CHECK(full<float>({3}, 2.0f, dev_gpu).to(Device::cpu()).to_vector() == std::vector<float>{2, 2, 2});
  CHECK(d.slice(0, 0, 1).select(1, 5).item() == x.at({0, 5}));
  auto z = zeros<float>({5, 6}, dev_gpu);
  z.slice(1, 1, 3).copy_(x.slice(0, 0, 5).slice(1, 0, 2));  // CPU -> strided GPU view
  CHECK(z.to(Device::cpu()).at({2, 1}) == x.at({2, 0}));
  CHECK(z.to(Device::cpu()).at({2, 0}) == 0.0f);
  auto b16 = d.to<bf16>();  // converted on the GPU
  CHECK(b16.device() == dev_gpu);
  CHECK(b16.to(Device::cpu()).to_vector() == x.to<bf16>().to_vector());
  CHECK(b16.to<float>().to(Device::cpu()).to_vector() == x.to<bf16>().to<float>().to_vector());
  auto i64 = from_vector<int64_t>({3, -1, 7}).to(dev_gpu);
  CHECK(i64.to(Device::cpu()).to_vector() == std::vector<int64_t>{3, -1, 7});
}

TEST_CASE("The caching allocator reuses freed blocks and counts bytes") {
  cuda::synchronize(0);
  auto before = cuda_memory_stats(0);
  {
    auto a = empty<float>({1 << 20}, dev_gpu);  // 4 MiB
    auto during = cuda_memory_stats(0);
    CHECK(during.in_use >= before.in_use + (size_t(4) << 20));
    CHECK(during.peak >= during.in_use);
  }
  auto after = cuda_memory_stats(0);
  CHECK(after.in_use == before.in_use);
  CHECK(after.cached >= (size_t(4) << 20));
  auto b = empty<float>({1 << 20}, dev_gpu);  // the same size class: served from the cache
  auto again = cuda_memory_stats(0);
  CHECK(again.cache_hits == after.cache_hits + 1);
}

TEST_CASE("CUDA errors are clear exceptions") {
  Generator g(1);
  auto x = randn<float>({4, 4}, g);
  auto d = x.to(dev_gpu);
  CHECK_THROWS_AS(add(d, x), device_error);  // mixed devices
  CHECK_THROWS_AS(x.to(Device::cuda(cuda::device_count() + 3)), device_error);
  CHECK_THROWS_AS(empty<float>({int64_t(1) << 45}, dev_gpu), cuda_error);  // 128 TiB: out of memory, said so
  try {
    empty<float>({int64_t(1) << 45}, dev_gpu);
  } catch (const cuda_error& e) {
    std::printf("out-of-memory message: %s\n", e.what());
    CHECK(std::string(e.what()).find("cannot allocate") != std::string::npos);
  }
  CHECK_THROWS_AS(argmax(d), device_error);      // an op without a GPU kernel says so
  CHECK_THROWS_AS(d.at({0, 0}), device_error);
  auto after = d.to(Device::cpu());  // the device still works after the errors
  CHECK(after.to_vector() == x.to_vector());
}

// --- Elementwise --------------------------------------------------------------------------------

TEST_CASE("Unary ops and activations match the CPU forward and backward") {
  auto x = rnd({37, 129}, 2);
  auto pos = rnd({37, 129}, 3, 0.1, 3.0);
  auto F = [](auto fn) { return [fn](auto& xs, Device) { return fn(xs[0]); }; };
  check_op("neg", {x}, F([](auto& a) { return -a; }));
  check_op("exp", {x}, F([](auto& a) { return exp(a); }));
  check_op("log", {pos}, F([](auto& a) { return log(a); }));
  check_op("sqrt", {pos}, F([](auto& a) { return sqrt(a); }));
  check_op("rsqrt", {pos}, F([](auto& a) { return rsqrt(a); }));
  check_op("tanh", {x}, F([](auto& a) { return tanh(a); }));
  check_op("abs", {x}, F([](auto& a) { return abs(a); }));
  check_op("relu", {x}, F([](auto& a) { return relu(a); }));
  check_op("sigmoid", {x}, F([](auto& a) { return sigmoid(a); }));
  check_op("gelu (tanh)", {x}, F([](auto& a) { return gelu(a, GeluApprox::tanh); }));
  check_op("gelu (erf)", {x}, F([](auto& a) { return gelu(a); }));
  check_op("pow 3", {pos}, F([](auto& a) { return pow(a, 3.0); }));
  check_op("pow 2", {x}, F([](auto& a) { return pow(a, 2.0); }));
  check_op("x + 1.5, 2 - x", {x}, F([](auto& a) { return (a + 1.5) * (2.0 - a); }));
  check_op("x * 3, x / 7, 5 / x", {pos}, F([](auto& a) { return a * 3.0 + a / 7.0 + 5.0 / a; }));
  check_op("exp of a transposed view", {x}, F([](auto& a) { return exp(a.t()); }));
}

TEST_CASE("Broadcasting binary ops match the CPU gradients summed back to each shape") {
  auto a = rnd({5, 1, 67}, 4), b = rnd({3, 67}, 5), bpos = rnd({3, 67}, 6, 0.5, 2.0);
  auto apos = rnd({5, 1, 67}, 7, 0.5, 2.0);
  check_op("add", {a, b}, [](auto& x, Device) { return x[0] + x[1]; });
  check_op("sub", {a, b}, [](auto& x, Device) { return x[0] - x[1]; });
  check_op("mul", {a, b}, [](auto& x, Device) { return x[0] * x[1]; });
  check_op("div", {a, bpos}, [](auto& x, Device) { return x[0] / x[1]; });
  check_op("pow", {apos, b}, [](auto& x, Device) { return pow(x[0], x[1]); });
  check_op("maximum", {a, b}, [](auto& x, Device) { return maximum(x[0], x[1]); });
  check_op("minimum", {a, b}, [](auto& x, Device) { return minimum(x[0], x[1]); });
  auto bias = rnd({96}, 35), act = rnd({45, 96}, 36);  // a bias add: the row-broadcast float4 path
  check_op("add (45x96) + (96)", {act, bias}, [](auto& x, Device) { return x[0] + x[1]; });
  check_op("mul (45x96) * (96)", {act, bias}, [](auto& x, Device) { return x[0] * x[1]; });
  auto big = rnd({1000, 1001}, 8), row = rnd({1001}, 9);  // vector path and a long broadcast
  check_op("add (1000x1001) + (1001)", {big, row}, [](auto& x, Device) { return x[0] + x[1]; });
  check_op("mul same shape (float4)", {big, big * 0.5f}, [](auto& x, Device) { return x[0] * x[1]; });
}

// --- Reductions, softmax, LayerNorm ------------------------------------------------------------

TEST_CASE("sum and mean match the CPU over every axis") {
  auto x = rnd({7, 33, 65}, 10);
  check_op("sum all", {x}, [](auto& a, Device) { return sum(a[0]); });
  check_op("mean all", {x}, [](auto& a, Device) { return mean(a[0]); });
  for (int64_t ax : {0, 1, 2}) {
    check_op("sum axis " + std::to_string(ax), {x}, [ax](auto& a, Device) { return sum(a[0], ax); });
    check_op("mean axis " + std::to_string(ax) + " keepdim", {x}, [ax](auto& a, Device) { return mean(a[0], ax, true); });
  }
  auto tall = rnd({20000, 37}, 11);  // many rows into few columns: the chunked column reduction
  check_op("sum axis 0 of 20000x37", {tall}, [](auto& a, Device) { return sum(a[0], 0); });
}

TEST_CASE("softmax and log_softmax match the CPU") {
  auto x = rnd({13, 1000}, 12, -8, 8);
  check_op("softmax", {x}, [](auto& a, Device) { return softmax(a[0]); });
  check_op("log_softmax", {x}, [](auto& a, Device) { return log_softmax(a[0]); });
  check_op("softmax axis 0", {x}, [](auto& a, Device) { return softmax(a[0], 0); });
  auto wide = rnd({3, 50257}, 13, -8, 8);
  check_op("log_softmax V=50257", {wide}, [](auto& a, Device) { return log_softmax(a[0]); });
}

TEST_CASE("LayerNorm matches the CPU with and without weight and bias") {
  for (int64_t C : {768, 384, 130, 1280}) {  // float4 paths (<= 1024) and the general one
    auto x = rnd({3, 111, C}, 14, -3, 3), w = rnd({C}, 15, 0.5, 1.5), b = rnd({C}, 16);
    check_op("layer_norm C=" + std::to_string(C), {x, w, b},
             [](auto& a, Device) { return layer_norm(a[0], a[1], a[2]); });
  }
  auto x = rnd({50, 64}, 17, -3, 3);
  check_op("layer_norm, no affine", {x}, [](auto& a, Device) {
    using T = typename std::decay_t<decltype(a[0])>::value_type;
    return layer_norm(a[0], Tensor<T>(), Tensor<T>());
  });
}

TEST_CASE("add_layer_norm and add_rms_norm (one op, two outputs) match the CPU forward and backward") {
  for (int64_t C : {768, 130}) {
    auto x = rnd({3, 37, C}, 18, -3, 3), r = rnd({3, 37, C}, 19), w = rnd({C}, 20, 0.5, 1.5), b = rnd({C}, 21);
    // h * y + y: a gradient reaches both outputs, and the engine sums them into x and residual
    check_op("add_layer_norm C=" + std::to_string(C), {x, r, w, b}, [](auto& a, Device) {
      auto [h, y] = add_layer_norm(a[0], a[1], a[2], a[3]);
      return h * y + y;
    });
    check_op("add_rms_norm C=" + std::to_string(C), {x, r, w}, [](auto& a, Device) {
      auto [h, y] = add_rms_norm(a[0], a[1], a[2]);
      return h * y + y;
    });
  }
}

// --- RMSNorm, SiLU, SwiGLU ------------------------------------------------------------------------

TEST_CASE("RMSNorm matches the CPU with and without weight") {
  // C = 768: the float4 register path (C % 4 == 0, C <= 1024); 1, 7, 130: scalar loads and the
  // general backward (C % 4 != 0); 1280, 5000: wider than the register path. N = 3 * 37 rows (odd).
  for (int64_t C : {1, 7, 130, 768, 1280, 5000}) {
    // With C == 1 a row is x / sqrt(x^2 + eps): dx is eps / (x^2 + eps) times the scale of dout,
    // i.e. ~1e-6 of it at the default eps, where a float dx is only cancellation noise. eps = 1
    // keeps dx O(1) there, so the comparison means something; other widths use the default.
    const double eps = C == 1 ? 1.0 : 1e-6;
    auto x = rnd({3, 37, C}, 70, -3, 3), w = rnd({C}, 71, 0.5, 1.5);
    check_op("rms_norm C=" + std::to_string(C), {x, w}, [eps](auto& a, Device) { return rms_norm(a[0], a[1], eps); });
    check_op("rms_norm C=" + std::to_string(C) + " no weight", {x}, [eps](auto& a, Device) {
      using T = typename std::decay_t<decltype(a[0])>::value_type;
      return rms_norm(a[0], Tensor<T>(), eps);
    });
  }
  // Many rows: every warp of the register path visits several rows before its partial dweight
  // row is written, and the partials of ~2000 warps are added in order.
  auto many = rnd({4999, 256}, 72, -3, 3), w = rnd({256}, 73, 0.5, 1.5);
  check_op("rms_norm 4999 rows C=256", {many, w}, [](auto& a, Device) { return rms_norm(a[0], a[1]); });
  // A transposed (non-contiguous) input; a contiguous view 4 bytes off alignment (C % 4 == 0 but
  // no float4 loads); a forward without autograd (rstd need not be kept).
  check_op("rms_norm of a transposed view", {rnd({96, 45}, 74, -3, 3), rnd({96}, 75, 0.5, 1.5)},
           [](auto& a, Device) { return rms_norm(a[0].t(), a[1]); });
  check_op("rms_norm of a misaligned view", {rnd({33 * 768 + 1}, 76, -3, 3), rnd({768}, 73, 0.5, 1.5)},
           [](auto& a, Device) { return rms_norm(a[0].slice(0, 1, 33 * 768 + 1).reshape({33, 768}), a[1]); });
  check_op("rms_norm without grad", {rnd({33, 768}, 77, -3, 3), rnd({768}, 78, 0.5, 1.5)},
           [](auto& a, Device) { return rms_norm(a[0], a[1]); }, 1e-5, false);
  // Repeated runs give the same bits (no atomics in the weight gradient).
  auto xg = many.to(dev_gpu).requires_grad_(), wg = w.to(dev_gpu).requires_grad_();
  auto r = rnd({4999, 256}, 79).to(dev_gpu);
  sum(rms_norm(xg, wg) * r).backward();
  auto first = wg.grad().to(Device::cpu()).to_vector();
  wg.zero_grad();
  sum(rms_norm(xg, wg) * r).backward();
  CHECK(wg.grad().to(Device::cpu()).to_vector() == first);
}

TEST_CASE("SiLU and SwiGLU match the CPU forward and backward with broadcasting") {
  auto x = rnd({37, 129}, 80, -8, 8);
  check_op("silu", {x}, [](auto& a, Device) { return silu(a[0]); });
  check_op("silu of a transposed view", {x}, [](auto& a, Device) { return silu(a[0].t()); });
  check_op("silu at +-100", {from_vector<float>({-100.0f, -30.0f, 0.0f, 30.0f, 100.0f})},
           [](auto& a, Device) { return silu(a[0]); });
  auto gate = rnd({45, 96}, 81, -6, 6), up = rnd({45, 96}, 82);
  check_op("swiglu same shape", {gate, up}, [](auto& a, Device) { return swiglu(a[0], a[1]); });
  check_op("swiglu (45x96) up (96)", {gate, rnd({96}, 83)}, [](auto& a, Device) { return swiglu(a[0], a[1]); });
  check_op("swiglu (5x1x67) up (3x67)", {rnd({5, 1, 67}, 84, -6, 6), rnd({3, 67}, 85)},
           [](auto& a, Device) { return swiglu(a[0], a[1]); });
  check_op("swiglu gate (67) up (5x3x67)", {rnd({67}, 86, -6, 6), rnd({5, 3, 67}, 87)},
           [](auto& a, Device) { return swiglu(a[0], a[1]); });
  check_op("swiglu of column views", {rnd({40, 2 * 96}, 88, -6, 6)}, [](auto& a, Device) {
    return swiglu(a[0].slice(-1, 0, 96), a[0].slice(-1, 96, 2 * 96));  // a fused gate/up projection, split
  });
}

// --- Embedding, dropout, cross-entropy, matmul ---------------------------------------------------

TEST_CASE("Embedding gathers rows and its backward adds repeated indices deterministically") {
  auto w = rnd({50, 36}, 18);
  auto idx = from_vector<int64_t>({3, 7, 3, 49, 0, 3, 7, 12, 3}, {3, 3});
  check_op("embedding", {w}, [idx](auto& a, Device d) { return embedding(a[0], idx.to(d)); });
  auto w2 = rnd({50, 37}, 19);  // C % 4 != 0: the scalar gather
  check_op("embedding C=37", {w2}, [idx](auto& a, Device d) { return embedding(a[0], idx.to(d)); });
  auto bad = from_vector<int64_t>({1, 50}).to(dev_gpu);
  CHECK_THROWS_AS(embedding(w.to(dev_gpu), bad), index_error);
  // GPT-2's table, with long runs of repeated tokens (a sort on the GPU, one block per run), the
  // highest row, and the same bits on a second run.
  Generator g(20);
  auto big = rnd({50304, 64}, 21);
  auto ids = randint<int64_t>({4, 1000}, 0, 300, g);
  ids.data()[17] = 50303, ids.data()[3999] = 50303, ids.data()[0] = 0;
  check_op("embedding V=50304", {big}, [ids](auto& a, Device d) { return embedding(a[0], ids.to(d)); }, 1e-6);
  auto wg = big.to(dev_gpu).requires_grad_();
  auto dy = rnd({4, 1000, 64}, 22).to(dev_gpu);
  std::vector<float> first;
  for (int run = 0; run < 2; ++run) {
    wg.zero_grad();
    embedding(wg, ids.to(dev_gpu)).backward(dy);
    auto dw = wg.grad().to(Device::cpu()).to_vector();
    if (run == 0) first = dw;
    else CHECK(dw == first);
  }
}

TEST_CASE("Dropout draws the same mask on the GPU as on the CPU") {
  auto x = rnd({1001, 7}, 23);  // an odd count: the last Philox block serves one element
  for (double p : {0.1, 0.5, 1.0}) {
    Generator gc(24), gg(24);
    auto xc = x.detach().requires_grad_(), xg = x.to(dev_gpu).requires_grad_();
    auto yc = dropout(xc, p, gc), yg = dropout(xg, p, gg);
    CHECK(gc.offset() == gg.offset());
    CHECK(yg.to(Device::cpu()).to_vector() == yc.to_vector());  // the same bits
    auto g = rnd({1001, 7}, 25);
    yc.backward(g);
    yg.backward(g.to(dev_gpu));
    CHECK(xg.grad().to(Device::cpu()).to_vector() == xc.grad().to_vector());
    int64_t kept = 0;
    for (float v : yc.to_vector()) kept += v != 0.0f;
    std::printf("dropout p=%.1f: %ld of 7007 kept on both devices\n", p, long(kept));
  }
}

TEST_CASE("Cross-entropy matches the CPU for every reduction with ignore_index") {
  const int64_t N = 97, V = 1031;
  auto logits = rnd({N, V}, 20, -6, 6);
  std::vector<int64_t> t(N);
  for (int64_t n = 0; n < N; ++n) t[n] = n % 11 == 0 ? -100 : (n * 7919) % V;
  auto targets = from_vector<int64_t>(t, {N});
  check_op("cross_entropy mean", {logits}, [targets](auto& a, Device d) { return cross_entropy(a[0], targets.to(d)); });
  check_op("cross_entropy sum", {logits},
           [targets](auto& a, Device d) { return cross_entropy(a[0], targets.to(d), -100, Reduction::sum); });
  check_op("cross_entropy none", {logits},
           [targets](auto& a, Device d) { return cross_entropy(a[0], targets.to(d), -100, Reduction::none); });
  auto bad = from_vector<int64_t>(std::vector<int64_t>(N, V)).to(dev_gpu);
  CHECK_THROWS_AS(cross_entropy(logits.to(dev_gpu), bad), index_error);
}

TEST_CASE("matmul matches the CPU: 2-D batched with broadcasting transposed views vectors") {
  cuda::set_allow_tf32(false);
  auto a = rnd({67, 129}, 21), b = rnd({129, 33}, 22);
  check_op("matmul 67x129 @ 129x33", {a, b}, [](auto& x, Device) { return matmul(x[0], x[1]); });
  auto ab = rnd({3, 4, 17, 29}, 23), bb = rnd({4, 29, 19}, 24);
  check_op("matmul batched broadcast", {ab, bb}, [](auto& x, Device) { return matmul(x[0], x[1]); });
  auto at = rnd({129, 67}, 25);
  check_op("matmul a^T @ b^T", {at, rnd({33, 129}, 26)},
           [](auto& x, Device) { return matmul(x[0].t(), x[1].t()); });
  auto lin = rnd({2, 45, 96}, 27), W = rnd({80, 96}, 28);
  check_op("linear (B,T,C) @ W^T", {lin, W}, [](auto& x, Device) { return matmul(x[0], x[1].t()); });
  check_op("vector @ matrix", {rnd({129}, 29), b}, [](auto& x, Device) { return matmul(x[0], x[1]); });
  {
    AutocastGuard bf16;
    check_op("matmul bf16 autocast", {a, b}, [](auto& x, Device) { return matmul(x[0], x[1]); }, 2e-2);
    check_op("linear bf16 autocast", {lin, W}, [](auto& x, Device) { return matmul(x[0], x[1].t()); }, 2e-2);
  }
}

// --- Attention ----------------------------------------------------------------------------------

TEST_CASE("linear (its bias in cuBLASLt's epilogue) matches the CPU in fp32 and bf16") {
  auto x = rnd({3, 37, 48}, 26), w = rnd({40, 48}, 27), b = rnd({40}, 28);
  auto w2 = rnd({36, 48}, 29), b2 = rnd({36}, 30);  // an output width that is not a multiple of 8
  auto xl = rnd({4, 128, 768}, 31, -1, 1), wl = rnd({2304, 768}, 32, -0.05, 0.05), bl = rnd({2304}, 33);
  auto f = [](auto& a, Device) { return linear(a[0], a[1], a[2]); };
  check_op("linear", {x, w, b}, f);
  check_op("linear out=36", {x, w2, b2}, f);
  check_op("linear 512x768 @ 768x2304", {xl, wl, bl}, f);
  AutocastGuard guard(true);
  check_op("linear bf16", {x, w, b}, f, 1e-2);
  check_op("linear bf16 out=36", {x, w2, b2}, f, 1e-2);
  check_op("linear bf16 512x768 @ 768x2304", {xl, wl, bl}, f, 1e-2);
}

TEST_CASE("linear_cross_entropy (bf16 logit gradients, padded) matches the CPU; GPT loss() matches forward's") {
  const int64_t N = 300, C = 64, V = 1031;  // V is not a multiple of 8: the padded path
  auto x = rnd({N, C}, 34, -1, 1), w = rnd({V, C}, 35, -0.2, 0.2);
  Generator g(36);
  auto t = randint<int64_t>({N}, 0, V, g);
  for (int64_t i = 0; i < N; i += 7) t.data()[i] = -100;  // ignored rows
  auto f = [t](auto& a, Device d) { return linear_cross_entropy(a[0], a[1], t.to(d)); };
  check_op("linear_cross_entropy fp32", {x, w}, f);
  {
    AutocastGuard bf16;
    check_op("linear_cross_entropy bf16", {x, w}, f, 1e-2);
  }
  nn::GPTConfig c;
  c.vocab_size = 97, c.block_size = 64, c.n_layer = 2, c.n_head = 2, c.n_embd = 64, c.dropout = 0.0;
  nn::GPT a(c), b(c);
  a.to(dev_gpu), b.to(dev_gpu);
  auto idx = randint<int64_t>({4, 64}, 0, 97, g).to(dev_gpu), tgt = randint<int64_t>({4, 64}, 0, 97, g).to(dev_gpu);
  AutocastGuard bf16;
  Tensor<float> la = a.forward(idx, tgt).loss, lb = b.loss(idx, tgt);
  la.backward(), lb.backward();
  double worst = 0;
  auto pa = a.named_parameters(), pb = b.named_parameters();
  for (size_t i = 0; i < pa.size(); ++i) worst = std::max(worst, rel_err(pb[i].second.grad(), pa[i].second.grad()));
  std::printf("parity GPT loss() vs forward (bf16) loss %.6f vs %.6f, gradients %.2e\n", lb.item(), la.item(), worst);
  CHECK(std::fabs(la.item() - lb.item()) < 1e-4);
  CHECK(worst < 1e-2);
}

TEST_CASE("Causal attention (fp32 flash kernels) matches the CPU forward and backward") {
  struct Case { int64_t B, NH, Tq, Tk, HS; };
  for (Case c : {Case{2, 3, 77, 77, 64}, Case{1, 2, 130, 130, 32}, Case{2, 1, 5, 69, 64}, Case{1, 1, 64, 64, 48},
                 Case{1, 2, 40, 40, 128}}) {
    auto q = rnd({c.B, c.NH, c.Tq, c.HS}, 30, -1.5, 1.5), k = rnd({c.B, c.NH, c.Tk, c.HS}, 31, -1.5, 1.5),
         v = rnd({c.B, c.NH, c.Tk, c.HS}, 32);
    char name[96];
    std::snprintf(name, sizeof name, "attention B%ld NH%ld Tq%ld Tk%ld HS%ld", long(c.B), long(c.NH), long(c.Tq),
                  long(c.Tk), long(c.HS));
    check_op(name, {q, k, v}, [](auto& x, Device) { return causal_attention(x[0], x[1], x[2]); });
  }
  // q, k, v as strided views of one (B, T, 3C) tensor, as in the GPT
  auto qkv = rnd({2, 50, 3 * 128}, 33, -1.5, 1.5);
  check_op("attention on qkv views", {qkv}, [](auto& x, Device) {
    auto view = [&](int i) { return x[0].slice(-1, i * 128, (i + 1) * 128).reshape({2, 50, 2, 64}).transpose(1, 2); };
    return causal_attention(view(0), view(1), view(2));
  });
}

TEST_CASE("Packed attention (the GPT's op) matches the CPU in fp32 and bf16") {
  auto qkv = rnd({2, 70, 3 * 128}, 34, -1.5, 1.5);
  check_op("attention_packed HS64", {qkv}, [](auto& x, Device) { return causal_attention_packed(x[0], 2); });
  check_op("attention_packed HS32", {qkv}, [](auto& x, Device) { return causal_attention_packed(x[0], 4); });
  AutocastGuard bf16;  // the tensor-core kernels and the bf16 head split
  check_op("attention_packed bf16 HS64", {qkv}, [](auto& x, Device) { return causal_attention_packed(x[0], 2); }, 2e-2);
}

TEST_CASE("Packed-sequence attention (kv_start) matches the CPU forward and backward") {
  // kv_start (B, Tq) of rows cut into runs: query i sees keys from its run's start to itself
  auto starts = [](const std::vector<std::vector<int64_t>>& rows, int64_t off) {
    std::vector<int32_t> out;
    for (const auto& lens : rows) {
      int64_t start = 0;
      for (int64_t n : lens) {
        for (int64_t t = 0; t < n; ++t) out.push_back(int32_t(start + off));
        start += n;
      }
    }
    return from_vector<int32_t>(out, {int64_t(rows.size()), int64_t(out.size() / rows.size())});
  };
  struct Case { int64_t NH, Tq, Tk, HS; std::vector<std::vector<int64_t>> rows; };
  // runs ending inside, before and across the 64-query tiles; lengths 1; a KV-cache offset (Tq < Tk)
  for (const Case& c : {Case{3, 150, 150, 64, {{3, 17, 1, 40, 9, 64, 16}, {70, 2, 2, 5, 30, 41}}},
                        Case{2, 130, 130, 32, {std::vector<int64_t>(130, 1), {130}}},
                        Case{2, 70, 70, 128, {{20, 50}, {1, 69}}}, Case{1, 77, 77, 48, {{33, 44}, {77}}},
                        Case{2, 5, 69, 64, {{2, 3}, {5}}}}) {
    const int64_t B = 2;
    auto q = rnd({B, c.NH, c.Tq, c.HS}, 35, -1.5, 1.5), k = rnd({B, c.NH, c.Tk, c.HS}, 36, -1.5, 1.5),
         v = rnd({B, c.NH, c.Tk, c.HS}, 37);
    Tensor<int32_t> ks = starts(c.rows, c.Tk - c.Tq);
    char name[96];
    std::snprintf(name, sizeof name, "kv_start NH%ld Tq%ld Tk%ld HS%ld", long(c.NH), long(c.Tq), long(c.Tk), long(c.HS));
    check_op(name, {q, k, v}, [ks](auto& x, Device d) { return causal_attention(x[0], x[1], x[2], ks.to(d)); });
  }
  // the GPT's op; under autocast kv_start falls back to the fp32 kernels, so fp32 tolerance holds
  auto qkv = rnd({2, 100, 3 * 128}, 38, -1.5, 1.5);
  Tensor<int32_t> ks = starts({{10, 60, 30}, {1, 99}}, 0);
  check_op("attention_packed kv_start HS64", {qkv}, [ks](auto& x, Device d) { return causal_attention_packed(x[0], 2, ks.to(d)); });
  {
    AutocastGuard bf16;
    check_op("attention_packed kv_start autocast", {qkv},
             [ks](auto& x, Device d) { return causal_attention_packed(x[0], 2, ks.to(d)); });
  }
  // kv_start all zero: the bits of no kv_start
  auto xg = qkv.to(dev_gpu);
  CHECK(causal_attention_packed(xg, 2).to(Device::cpu()).to_vector() ==
        causal_attention_packed(xg, 2, zeros<int32_t>({2, 100}, dev_gpu)).to(Device::cpu()).to_vector());
  // a kv_start left on the CPU is a clear error
  CHECK_THROWS_AS(causal_attention_packed(xg, 2, zeros<int32_t>({2, 100})), device_error);
}

TEST_CASE("RoPE (the composed path) and grouped-query attention match the CPU forward and backward") {
  // rope on CUDA is x * cos + matmul(x, P) * sin; positions stay on the CPU
  std::vector<int64_t> p;
  for (int64_t b = 0; b < 2; ++b)
    for (int64_t t = 0; t < 37; ++t) p.push_back(b == 0 ? 5 + t : 1000 - 7 * t);
  Tensor<int64_t> pos = from_vector<int64_t>(p, {2, 37});
  auto x = rnd({2, 37, 3, 64}, 40);
  check_op("rope half", {x}, [pos](auto& in, Device) { return rope(in[0], pos); });
  check_op("rope interleaved", {x}, [pos](auto& in, Device) {
    return rope(in[0], pos, 500000.0, RopeLayout::interleaved);
  });
  check_op("rope on a transposed view", {x}, [pos](auto& in, Device) {
    return rope(in[0].transpose(1, 2).contiguous().transpose(1, 2), pos);
  });
  // GQA: the op repeats the key/value heads on CUDA and runs the multi-head kernels
  struct Case { int64_t NH, NKV, Tq, Tk, HS; };
  for (Case c : {Case{4, 2, 77, 77, 64}, Case{4, 1, 70, 70, 32}, Case{6, 2, 5, 69, 64}}) {
    auto q = rnd({2, c.NH, c.Tq, c.HS}, 41, -1.5, 1.5), k = rnd({2, c.NKV, c.Tk, c.HS}, 42, -1.5, 1.5),
         v = rnd({2, c.NKV, c.Tk, c.HS}, 43);
    char name[96];
    std::snprintf(name, sizeof name, "gqa NH%ld NKV%ld Tq%ld Tk%ld HS%ld", long(c.NH), long(c.NKV), long(c.Tq),
                  long(c.Tk), long(c.HS));
    check_op(name, {q, k, v}, [](auto& in, Device) { return causal_attention(in[0], in[1], in[2]); });
  }
  std::vector<int32_t> ks;
  for (int64_t b = 0; b < 2; ++b)
    for (int64_t t = 0; t < 70; ++t) ks.push_back(int32_t(t < 30 ? 0 : 30));
  Tensor<int32_t> kv_start = from_vector<int32_t>(ks, {2, 70});
  auto q = rnd({2, 4, 70, 64}, 44, -1.5, 1.5), k = rnd({2, 2, 70, 64}, 45, -1.5, 1.5), v = rnd({2, 2, 70, 64}, 46);
  check_op("gqa kv_start", {q, k, v}, [kv_start](auto& in, Device d) {
    return causal_attention(in[0], in[1], in[2], kv_start.to(d));
  });
  AutocastGuard bf16;  // the repeated heads reach the bf16 tensor-core kernels
  check_op("gqa bf16", {q, k, v}, [](auto& in, Device) { return causal_attention(in[0], in[1], in[2]); }, 2e-2);
}

TEST_CASE("Causal attention on bf16 tensor cores matches the CPU within bf16 tolerance") {
  for (int64_t T : {64, 200, 1024}) {
    auto q = rnd({2, 3, T, 64}, 40, -1.5, 1.5), k = rnd({2, 3, T, 64}, 41, -1.5, 1.5), v = rnd({2, 3, T, 64}, 42);
    AutocastGuard bf16;
    check_op("attention bf16 T=" + std::to_string(T), {q, k, v},
             [](auto& x, Device) { return causal_attention(x[0], x[1], x[2]); }, 2e-2);
  }
}

// --- Optimizers ---------------------------------------------------------------------------------

TEST_CASE("AdamW and clip_grad_norm on the GPU follow the CPU") {
  Generator g(50);
  auto p0 = randn<float>({1000, 37}, g), grad0 = randn<float>({1000, 37}, g);
  auto pc = p0.clone().requires_grad_(), pg = p0.to(dev_gpu).requires_grad_();
  AdamWOptions o;
  o.lr = 1e-2, o.weight_decay = 0.1;
  AdamW oc({pc}, o), og({pg}, o);
  for (int step = 0; step < 5; ++step) {
    auto gs = grad0 * float(1 + step);
    pc.set_grad(gs.clone());
    pg.set_grad(gs.to(dev_gpu));
    double nc = clip_grad_norm({pc}, 50.0), ng = clip_grad_norm({pg}, 50.0);
    CHECK(std::abs(nc - ng) <= 1e-9 * nc);  // both sum in double
    oc.step();
    og.step();
  }
  double e = rel_err(pg.detach(), pc.detach());
  std::printf("parity %-28s out %.2e\n", "adamw 5 steps + clipping", e);
  CHECK(e <= 1e-6);
}

// --- The whole model ----------------------------------------------------------------------------

namespace {
nn::GPTConfig tiny_config() {
  nn::GPTConfig c;
  c.vocab_size = 97, c.block_size = 64, c.n_layer = 2, c.n_head = 2, c.n_embd = 64, c.dropout = 0.0;
  return c;
}
}  // namespace

TEST_CASE("GPT forward and backward agree on the CPU and the GPU") {
  nn::GPT cpu_model(tiny_config(), 7), gpu_model(tiny_config(), 7);
  gpu_model.to(dev_gpu);
  Generator g(60);
  auto idx = randint<int64_t>({3, 64}, 0, 97, g), tgt = randint<int64_t>({3, 64}, 0, 97, g);
  auto out_c = cpu_model(idx, tgt);
  auto out_g = gpu_model(idx.to(dev_gpu), tgt.to(dev_gpu));
  double el = std::abs(double(out_g.loss.item()) - double(out_c.loss.item())) / double(out_c.loss.item());
  std::printf("parity %-28s loss %.6f vs %.6f (rel %.1e)\n", "gpt tiny fp32", double(out_g.loss.item()),
              double(out_c.loss.item()), el);
  CHECK(el <= 1e-5);
  CHECK(rel_err(out_g.logits, out_c.logits) <= 1e-4);
  out_c.loss.backward();
  out_g.loss.backward();
  auto pc = cpu_model.named_parameters(), pg = gpu_model.named_parameters();
  REQUIRE(pc.size() == pg.size());
  double worst = 0;
  std::string worst_name;
  for (size_t i = 0; i < pc.size(); ++i) {
    double e = rel_err(pg[i].second.grad(), pc[i].second.grad());
    if (e > worst) worst = e, worst_name = pc[i].first;
  }
  std::printf("parity %-28s worst grad %.2e (%s)\n", "gpt tiny fp32", worst, worst_name.c_str());
  CHECK(worst <= 1e-4);

  gpu_model.zero_grad();
  AutocastGuard bf16;
  auto out_h = gpu_model(idx.to(dev_gpu), tgt.to(dev_gpu));
  out_h.loss.backward();
  double eh = std::abs(double(out_h.loss.item()) - double(out_c.loss.item())) / double(out_c.loss.item());
  double worst_h = 0;
  for (size_t i = 0; i < pc.size(); ++i) worst_h = std::max(worst_h, rel_err(pg[i].second.grad(), pc[i].second.grad()));
  std::printf("parity %-28s loss rel %.1e, worst grad %.2e\n", "gpt tiny bf16 autocast", eh, worst_h);
  CHECK(eh <= 1e-2);
  CHECK(worst_h <= 5e-2);
}

TEST_CASE("Recomputing each block on the GPU under bf16 autocast gives the same losses and gradients") {
  // Two copies of one model with dropout; the second recomputes each block in backward. Recomputation
  // reruns the same kernels on the same numbers with the generator set back, so the two should agree
  // to the bit; the check allows 1e-6 (loss) and 1e-5 (each gradient, normwise) in case a cuBLAS
  // algorithm is not bitwise reproducible, and prints the worst difference seen.
  nn::GPTConfig c = tiny_config();
  c.dropout = 0.1;
  nn::GPT plain(c, 9), recomputed(c, 9);
  plain.to(dev_gpu), recomputed.to(dev_gpu);
  recomputed.recompute_blocks = true;
  Generator g(62);
  auto idx = randint<int64_t>({4, 64}, 0, 97, g).to(dev_gpu), tgt = randint<int64_t>({4, 64}, 0, 97, g).to(dev_gpu);
  for (int step = 0; step < 2; ++step) {  // the second step draws its masks after the first's recomputation
    INFO("step " << step);
    plain.zero_grad(), recomputed.zero_grad();
    Tensor<float> la, lb;
    {
      AutocastGuard bf16;
      la = plain.loss(idx, tgt);
      lb = recomputed.loss(idx, tgt);
    }
    la.backward(), lb.backward();
    const double a = la.item(), b = lb.item();
    CHECK(std::abs(a - b) <= 1e-6 * std::abs(a));
    CHECK(plain.gen.offset() == recomputed.gen.offset());
    auto pa = plain.named_parameters(), pb = recomputed.named_parameters();
    REQUIRE(pa.size() == pb.size());
    double worst = 0;
    for (size_t i = 0; i < pa.size(); ++i) {
      INFO(pa[i].first);
      double e = rel_err(pb[i].second.grad(), pa[i].second.grad());
      CHECK(e <= 1e-5);
      worst = std::max(worst, e);
    }
    std::printf("parity %-28s step %d loss %.6f vs %.6f, worst grad %.2e\n", "gpt recompute bf16", step, b, a, worst);
  }
}

TEST_CASE("Training on the GPU follows the CPU step by step") {
  nn::GPT cpu_model(tiny_config(), 8), gpu_model(tiny_config(), 8);
  gpu_model.to(dev_gpu);
  AdamWOptions o;
  o.lr = 3e-3;
  AdamW oc(cpu_model.parameters(), o), og(gpu_model.parameters(), o);
  Generator g(61);
  auto idx = randint<int64_t>({4, 32}, 0, 97, g), tgt = randint<int64_t>({4, 32}, 0, 97, g);
  auto idg = idx.to(dev_gpu), tgg = tgt.to(dev_gpu);
  double first = 0, last_c = 0, last_g = 0;
  for (int step = 0; step < 10; ++step) {
    cpu_model.zero_grad();
    gpu_model.zero_grad();
    auto lc = cpu_model(idx, tgt).loss, lg = gpu_model(idg, tgg).loss;
    lc.backward();
    lg.backward();
    clip_grad_norm(cpu_model.parameters(), 1.0);
    clip_grad_norm(gpu_model.parameters(), 1.0);
    oc.step();
    og.step();
    if (step == 0) first = lc.item();
    last_c = lc.item(), last_g = lg.item();
  }
  std::printf("parity %-28s loss %.5f -> cpu %.5f gpu %.5f\n", "gpt 10 training steps", first, last_c, last_g);
  CHECK(last_g < first - 0.5);  // it learns (one batch, memorised)
  CHECK(std::abs(last_g - last_c) <= 1e-3 * last_c);
}
