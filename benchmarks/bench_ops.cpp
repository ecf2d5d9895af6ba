// Memory-bound ops on large tensors, reported in GB/s: the bytes each op must read and write
// once (the same convention as the PyTorch script), to compare with bench_peak's bandwidth.
#include <benchmark/benchmark.h>

#include <cmath>

#include <loom/loom.hpp>

namespace {

using loom::Tensor;

constexpr int64_t rows = 16384, cols = 1024;  // 16M floats = 64 MiB per tensor

Tensor<float> input(int64_t r = rows, int64_t c = cols) {
  loom::Generator g(3);
  return loom::randn<float>({r, c}, g);
}

void report(benchmark::State& state, double bytes_per_iter) {
  state.counters["GB/s"] = benchmark::Counter(bytes_per_iter * double(state.iterations()) / 1e9, benchmark::Counter::kIsRate);
}

void BM_add(benchmark::State& state) {
  auto a = input(), b = input();
  for (auto _ : state) benchmark::DoNotOptimize((a + b).data());
  report(state, 3.0 * a.numel() * 4);
}
BENCHMARK(BM_add)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_add_bias_broadcast(benchmark::State& state) {
  auto a = input(), b = input(1, cols).reshape({cols});
  for (auto _ : state) benchmark::DoNotOptimize((a + b).data());
  report(state, 2.0 * a.numel() * 4);
}
BENCHMARK(BM_add_bias_broadcast)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_gelu_tanh(benchmark::State& state) {
  auto a = input();
  auto y = loom::gelu(a, loom::GeluApprox::tanh);
  double want = 0.5 * 1.0 * (1 + std::tanh(0.7978845608 * (1.0 + 0.044715)));
  if (std::fabs(loom::gelu(loom::full<float>({1}, 1.0f), loom::GeluApprox::tanh).item() - want) > 1e-5)
    state.SkipWithError("gelu is wrong");
  for (auto _ : state) benchmark::DoNotOptimize(loom::gelu(a, loom::GeluApprox::tanh).data());
  report(state, 2.0 * a.numel() * 4);
}
BENCHMARK(BM_gelu_tanh)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_softmax(benchmark::State& state) {
  auto a = input();
  float row = loom::sum(loom::softmax(a).select(0, 0)).item();
  if (std::fabs(row - 1.0f) > 1e-4f) state.SkipWithError("softmax rows do not sum to 1");
  for (auto _ : state) benchmark::DoNotOptimize(loom::softmax(a).data());
  report(state, 2.0 * a.numel() * 4);
}
BENCHMARK(BM_softmax)->Unit(benchmark::kMillisecond)->UseRealTime();

/// LayerNorm's inputs at GPT-2's width: x and r (rows, 768), the residual step's two terms (the
/// same 64 MiB each), and the weight and bias.
struct NormInputs {
  Tensor<float> x = input(rows * cols / 768, 768), r = input(rows * cols / 768, 768), w, b;
  NormInputs() {
    loom::Generator g(5);
    w = loom::randn<float>({768}, g);
    b = loom::randn<float>({768}, g);
  }
};

void BM_layer_norm(benchmark::State& state) {
  NormInputs in;
  auto y = loom::layer_norm(in.x, Tensor<float>(), Tensor<float>());
  if (std::fabs(loom::mean(y.select(0, 0)).item()) > 1e-4f) state.SkipWithError("layer_norm rows are not centred");
  for (auto _ : state) benchmark::DoNotOptimize(loom::layer_norm(in.x, in.w, in.b).data());
  report(state, 2.0 * in.x.numel() * 4);
}
BENCHMARK(BM_layer_norm)->Unit(benchmark::kMillisecond)->UseRealTime();

// A pre-norm block's residual step: h = x + r and y = layer_norm(h), one op (x and r read, h and
// y written once: 4 tensors' bytes); BM_add_then_layer_norm is the same work as the two ops.
void BM_add_layer_norm(benchmark::State& state) {
  NormInputs in;
  for (auto _ : state) benchmark::DoNotOptimize(loom::add_layer_norm(in.x, in.r, in.w, in.b).second.data());
  report(state, 4.0 * in.x.numel() * 4);
}
BENCHMARK(BM_add_layer_norm)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_add_then_layer_norm(benchmark::State& state) {
  NormInputs in;
  for (auto _ : state) {
    Tensor<float> h = in.x + in.r;
    benchmark::DoNotOptimize(loom::layer_norm(h, in.w, in.b).data());
  }
  report(state, 4.0 * in.x.numel() * 4);
}
BENCHMARK(BM_add_then_layer_norm)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_sum_rows(benchmark::State& state) {
  auto a = input();
  for (auto _ : state) benchmark::DoNotOptimize(loom::sum(a, 1).data());
  report(state, 1.0 * a.numel() * 4);
}
BENCHMARK(BM_sum_rows)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
