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

// The small model's products (config A of bench_gpt: B*T = 768 rows, C = 128, 4C = 512), in the
// layouts a training step uses for its MLP's first Linear, W (512, 128) stored (out, in):
//   0 forward   y  = x @ W^T    (768, 128) @ (128, 512)   W^T a transposed view
//   1 grad x    dx = dy @ W     (768, 512) @ (512, 128)
//   2 grad W    dW = dy^T @ x   (512, 768) @ (768, 128)   dy^T a transposed view
void BM_matmul_small(benchmark::State& state) {
  const int which = int(state.range(0));
  loom::Generator g(5);
  auto x = loom::randn<float>({768, 128}, g), W = loom::randn<float>({512, 128}, g), dy = loom::randn<float>({768, 512}, g);
  loom::Tensor<float> a = which == 0 ? x : which == 1 ? dy : dy.t(), b = which == 0 ? W.t() : which == 1 ? W : x;
  auto out = loom::empty<float>({a.size(0), b.size(1)});
  loom::matmul_out(out, a, b);
  auto ref = loom::matmul(a.to<double>(), b.to<double>());
  if (loom::max(loom::abs(out.to<double>() - ref)).item() > 1e-3) state.SkipWithError("wrong product");
  for (auto _ : state) loom::matmul_out(out, a, b);
  double flops = 2.0 * double(a.size(0)) * double(a.size(1)) * double(b.size(1));
  state.counters["GFLOP/s"] = benchmark::Counter(flops * double(state.iterations()) / 1e9, benchmark::Counter::kIsRate);
}
BENCHMARK(BM_matmul_small)->ArgName("fwd0_dx1_dW2")->Arg(0)->Arg(1)->Arg(2)->Unit(benchmark::kMicrosecond)->UseRealTime();

// Fused causal attention, forward and backward (autograd), q k v (B, NH, T, HS):
//   0 config A of bench_gpt: B 12, NH 4, T 64, HS 32 (one 64 x 64 tile per head)
//   1 GPT-2 124M's heads at T 1024: B 1, NH 12, T 1024, HS 64
// GFLOP/s counts the causal half of the 7 products (2 forward, 5 backward): 7 B NH T^2 HS.
void BM_attention(benchmark::State& state) {
  const bool big = state.range(0) == 1;
  const int64_t B = big ? 1 : 12, NH = big ? 12 : 4, T = big ? 1024 : 64, HS = big ? 64 : 32;
  loom::Generator g(6);
  auto q = loom::randn<float>({B, NH, T, HS}, g).requires_grad_(), k = loom::randn<float>({B, NH, T, HS}, g).requires_grad_(),
       v = loom::randn<float>({B, NH, T, HS}, g).requires_grad_();
  auto gy = loom::randn<float>({B, NH, T, HS}, g);
  for (auto _ : state) {
    auto y = loom::causal_attention(q, k, v);
    y.backward(gy);
    benchmark::DoNotOptimize(q.grad().data());
    q.zero_grad(), k.zero_grad(), v.zero_grad();
  }
  double flops = 7.0 * double(B * NH) * double(T * T) * double(HS);
  state.counters["GFLOP/s"] = benchmark::Counter(flops * double(state.iterations()) / 1e9, benchmark::Counter::kIsRate);
}
BENCHMARK(BM_attention)->ArgName("configA0_gpt2T1024_1")->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
