// The machine's ceilings, so every other figure can be read as a fraction of them:
// FP32 FMA throughput (one thread and all threads) and memory bandwidth (STREAM-style).
#include <benchmark/benchmark.h>

#include <cstring>
#include <vector>

#include <immintrin.h>

#include <loom/loom.hpp>

namespace {

// The widest vector the compiler targets (-march=native): 16 floats with AVX-512, 8 with AVX2.
#if defined(__AVX512F__)
constexpr int lanes = 16;
#elif defined(__AVX__)
constexpr int lanes = 8;
#else
constexpr int lanes = 4;
#endif
typedef float vec __attribute__((vector_size(lanes * sizeof(float))));

// 12 independent FMA chains hide the FMA latency (4 cycles x 2-3 ports).
constexpr int chains = 12;

float fma_loop(int64_t iters) {
  vec acc[chains];
  vec a, b;
  for (int l = 0; l < lanes; ++l) a[l] = 0.999999f, b[l] = 1e-7f;
  for (int c = 0; c < chains; ++c)
    for (int l = 0; l < lanes; ++l) acc[c][l] = float(c + l);
  for (int64_t i = 0; i < iters; ++i) {
    // One FMA instruction per chain (explicit: -std=c++17 turns off GCC's FMA contraction).
#if defined(__AVX512F__)
    for (int c = 0; c < chains; ++c) acc[c] = vec(_mm512_fmadd_ps(__m512(acc[c]), __m512(a), __m512(b)));
#elif defined(__FMA__)
    for (int c = 0; c < chains; ++c) acc[c] = vec(_mm256_fmadd_ps(__m256(acc[c]), __m256(a), __m256(b)));
#else
    for (int c = 0; c < chains; ++c) acc[c] = acc[c] * a + b;
#endif
  }
  float s = 0;
  for (int c = 0; c < chains; ++c)
    for (int l = 0; l < lanes; ++l) s += acc[c][l];
  return s;
}

constexpr int64_t fma_iters = 20'000'000;

void BM_peak_fma_1thread(benchmark::State& state) {
  for (auto _ : state) {
    int64_t iters = fma_iters;
    benchmark::DoNotOptimize(iters);  // keeps the call inside the timed loop
    benchmark::DoNotOptimize(fma_loop(iters));
  }
  state.counters["GFLOP/s"] = benchmark::Counter(double(fma_iters) * chains * lanes * 2 * double(state.iterations()) / 1e9,
                                                 benchmark::Counter::kIsRate);
}
BENCHMARK(BM_peak_fma_1thread)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_peak_fma_all_threads(benchmark::State& state) {
  int nt = loom::get_num_threads();
  for (auto _ : state) {
#pragma omp parallel
    {
      int64_t iters = fma_iters;
      benchmark::DoNotOptimize(iters);
      benchmark::DoNotOptimize(fma_loop(iters));
    }
  }
  state.counters["threads"] = nt;
  state.counters["GFLOP/s"] = benchmark::Counter(double(fma_iters) * chains * lanes * 2 * nt * double(state.iterations()) / 1e9,
                                                 benchmark::Counter::kIsRate);
}
BENCHMARK(BM_peak_fma_all_threads)->Unit(benchmark::kMillisecond)->UseRealTime();

// STREAM triad a = b + s * c over arrays far larger than the caches; 3 arrays of bytes moved
// per element (STREAM's convention: the write-allocate read of `a` is not counted).
void BM_peak_memory_triad(benchmark::State& state) {
  const int64_t n = 32 << 20;  // 128 MiB per array
  auto a = loom::zeros<float>({n}), b = loom::ones<float>({n}), c = loom::ones<float>({n});
  float *pa = a.data(), *pb = b.data(), *pc = c.data();
  for (auto _ : state) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) pa[i] = pb[i] + 3.0f * pc[i];
    benchmark::ClobberMemory();
  }
  state.counters["GB/s"] = benchmark::Counter(3.0 * n * sizeof(float) * double(state.iterations()) / 1e9,
                                              benchmark::Counter::kIsRate);
}
BENCHMARK(BM_peak_memory_triad)->Unit(benchmark::kMillisecond)->UseRealTime();

// Plain copy a = b (2 arrays counted), the ceiling for a unary elementwise op.
void BM_peak_memory_copy(benchmark::State& state) {
  const int64_t n = 32 << 20;
  auto a = loom::zeros<float>({n}), b = loom::ones<float>({n});
  float *pa = a.data(), *pb = b.data();
  for (auto _ : state) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) pa[i] = pb[i];
    benchmark::ClobberMemory();
  }
  state.counters["GB/s"] = benchmark::Counter(2.0 * n * sizeof(float) * double(state.iterations()) / 1e9,
                                              benchmark::Counter::kIsRate);
}
BENCHMARK(BM_peak_memory_copy)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
