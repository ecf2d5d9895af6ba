// matmul at GPT-2-small MLP shapes (B*T = 4096 rows, C = 768, 4C = 3072): the forward product
// and the two backward products, through loom and through Eigen called directly on the same
// buffers. The difference between the two is loom's own overhead (the target is < 5%).
#include <benchmark/benchmark.h>

#include <loom/eigen.hpp>  // <Eigen/Core>, included as loom includes it
#include <loom/loom.hpp>

namespace {

using RowMat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using RowMap = Eigen::Map<RowMat>;
using ConstRowMap = Eigen::Map<const RowMat>;

// The three products of a Linear layer y = x @ W, x (M, K), W (K, N):
//   0 forward   y  = x  @ W     (M, K) @ (K, N)
//   1 grad x    dx = dy @ W^T   (M, N) @ (N, K)   W^T is a transposed view
//   2 grad W    dW = x^T @ dy   (K, M) @ (M, N)   x^T is a transposed view
struct Problem {
  int64_t M = 4096, K = 768, N = 3072;
  loom::Tensor<float> a, b, out;
  Problem(int which) {
    loom::Generator g(1);
    auto x = loom::randn<float>({M, K}, g), W = loom::randn<float>({K, N}, g), dy = loom::randn<float>({M, N}, g);
    if (which == 0) a = x, b = W;
    if (which == 1) a = dy, b = W.t();
    if (which == 2) a = x.t(), b = dy;
    out = loom::empty<float>({a.size(0), b.size(1)});
  }
  double flops() const { return 2.0 * double(a.size(0)) * double(a.size(1)) * double(b.size(1)); }
};

// Eigen directly: the operands mapped in their natural (row-major or transposed) layouts.
void eigen_direct(const Problem& p, int which, float* out) {
  int64_t m = p.a.size(0), k = p.a.size(1), n = p.b.size(1);
  RowMap C(out, m, n);
  if (which == 0) C.noalias() = ConstRowMap(p.a.data(), m, k) * ConstRowMap(p.b.data(), k, n);
  if (which == 1) C.noalias() = ConstRowMap(p.a.data(), m, k) * ConstRowMap(p.b.data(), n, k).transpose();
  if (which == 2) C.noalias() = ConstRowMap(p.a.data(), k, m).transpose() * ConstRowMap(p.b.data(), m, n);
}

void check_same(const Problem& p, int which, benchmark::State& state) {
  auto ref = loom::empty<float>(p.out.shape());
  eigen_direct(p, which, ref.data());
  loom::matmul_out(p.out, p.a, p.b);
  float diff = loom::max(loom::abs(ref - p.out)).item();
  if (diff > 1e-3f) state.SkipWithError("loom and Eigen disagree");
}

void BM_matmul_loom(benchmark::State& state) {
  int which = int(state.range(0));
  Problem p(which);
  check_same(p, which, state);
  for (auto _ : state) loom::matmul_out(p.out, p.a, p.b);
  state.counters["GFLOP/s"] = benchmark::Counter(p.flops() * double(state.iterations()) / 1e9, benchmark::Counter::kIsRate);
}

void BM_matmul_loom_alloc(benchmark::State& state) {
  int which = int(state.range(0));
  Problem p(which);
  for (auto _ : state) benchmark::DoNotOptimize(loom::matmul(p.a, p.b).data());
  state.counters["GFLOP/s"] = benchmark::Counter(p.flops() * double(state.iterations()) / 1e9, benchmark::Counter::kIsRate);
}

void BM_matmul_eigen(benchmark::State& state) {
  int which = int(state.range(0));
  Problem p(which);
  for (auto _ : state) eigen_direct(p, which, p.out.data());
  state.counters["GFLOP/s"] = benchmark::Counter(p.flops() * double(state.iterations()) / 1e9, benchmark::Counter::kIsRate);
}

#define LOOM_MM_ARGS ->ArgName("fwd0_dx1_dW2")->Arg(0)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(2.0)
BENCHMARK(BM_matmul_eigen) LOOM_MM_ARGS;
BENCHMARK(BM_matmul_loom) LOOM_MM_ARGS;
BENCHMARK(BM_matmul_loom_alloc) LOOM_MM_ARGS;

// Attention-shaped batched products: (B*NH, T, HS) @ (B*NH, HS, T), B 8, NH 12, T 256, HS 64.
void BM_matmul_batched_attention(benchmark::State& state) {
  loom::Generator g(2);
  auto q = loom::randn<float>({96, 256, 64}, g), k = loom::randn<float>({96, 256, 64}, g);
  auto kt = k.transpose(-1, -2);
  auto out = loom::empty<float>({96, 256, 256});
  for (auto _ : state) loom::matmul_out(out, q, kt);
  double flops = 2.0 * 96 * 256 * 256 * 64;
  state.counters["GFLOP/s"] = benchmark::Counter(flops * double(state.iterations()) / 1e9, benchmark::Counter::kIsRate);
}
BENCHMARK(BM_matmul_batched_attention)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
