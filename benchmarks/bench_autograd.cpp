// Autograd overhead: a chain of 1000 adds on 16-element tensors, forward and backward. The
// arithmetic is negligible, so the time is the bookkeeping of recording and walking the graph.
// Reported as ops per second (forward + backward); benchmarks/compare.py turns it into
// microseconds per op next to PyTorch eager's.
#include <benchmark/benchmark.h>

#include <loom/loom.hpp>

namespace {

constexpr int chain = 1000;

void BM_autograd_chain_add(benchmark::State& state) {
  loom::Generator g(1);
  auto x = loom::randn<float>({16}, g).requires_grad_();
  auto c = loom::randn<float>({16}, g);
  for (auto _ : state) {
    auto h = x;
    for (int i = 0; i < chain; ++i) h = h + c;
    loom::sum(h).backward();
    x.zero_grad();
  }
  // Check: d sum(x + 1000 c) / dx = 1 everywhere.
  auto h = x;
  for (int i = 0; i < chain; ++i) h = h + c;
  loom::sum(h).backward();
  if (loom::max(loom::abs(x.grad() - 1.0f)).item() != 0.0f) state.SkipWithError("wrong gradient");
  // ops/s; its inverse is the time per op (compare.py prints microseconds per op).
  state.counters["ops/s"] = benchmark::Counter(double(chain), benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_autograd_chain_add)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_forward_only_chain_add(benchmark::State& state) {
  loom::Generator g(1);
  auto x = loom::randn<float>({16}, g), c = loom::randn<float>({16}, g);
  for (auto _ : state) {
    auto h = x;
    for (int i = 0; i < chain; ++i) h = h + c;
    benchmark::DoNotOptimize(h.data());
  }
  // ops/s; its inverse is the time per op (compare.py prints microseconds per op).
  state.counters["ops/s"] = benchmark::Counter(double(chain), benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_forward_only_chain_add)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
