// Every CPU op against a naive double-precision reference loop: random shapes, broadcasting
// corner cases, non-contiguous inputs (transposed and sliced views), empty and size-1 dims.
//
// Tolerance: float32 results are compared with double references at 1e-5 relative (plus a
// 1e-6 absolute floor for values near zero): the ops round once per element, or accumulate
// in double / in short float rows, so they sit well inside it.
#include <cmath>
#include <functional>
#include <limits>
#include <random>
#include <vector>

#include <loom/loom.hpp>

#include "catch.hpp"
#include "op_helpers.hpp"

using namespace loom;
using loom_test::close;
using loom_test::for_each_index;
using loom_test::get;
using loom_test::make;

namespace {

// Checks out == f(a, b) elementwise against the double reference.
template <class F>
void check_binary(const Tensor<float>& out, const Tensor<float>& a, const Tensor<float>& b, F f, double rel = 1e-5) {
  REQUIRE(out.shape() == broadcast_shapes(a.shape(), b.shape(), "ref"));
  REQUIRE(out.is_contiguous());
  int64_t k = 0;
  for_each_index(out.shape(), [&](const std::vector<int64_t>& i) {
    double want = f(get(a, i), get(b, i));
    double got = out.data()[k++];
    if (!close(got, want, rel)) FAIL("got " << got << " want " << want << " at flat index " << k - 1);
  });
}

}  // namespace

TEST_CASE("Binary ops broadcast like NumPy on any layout") {
  std::vector<std::pair<Shape, Shape>> cases = {
      {{3, 4}, {3, 4}}, {{3, 4}, {4}},       {{3, 1}, {1, 4}},     {{2, 1, 4}, {3, 1}}, {{}, {2, 3}},
      {{5}, {}},         {{1}, {1}},          {{0, 3}, {3}},        {{2, 0}, {1, 1}},    {{4, 1, 3, 1}, {2, 1, 5}},
      {{7, 33}, {7, 1}}, {{1, 6}, {5, 6}},    {{300, 257}, {257}},  {{2, 3, 4}, {2, 1, 4}}};
  auto [sa, sb] = GENERATE_COPY(from_range(cases));
  int la = GENERATE(0, 1, 2), lb = GENERATE(0, 1, 2);
  Generator g(uint64_t(sa.size() * 100 + sb.size() * 10 + la * 3 + lb));
  auto a = make(sa, la, g), b = make(sb, lb, g, 0.5, 2.0);  // b > 0: safe for div and pow
  CAPTURE(sa, sb, la, lb);
  check_binary(a + b, a, b, [](double x, double y) { return x + y; });
  check_binary(a - b, a, b, [](double x, double y) { return x - y; });
  check_binary(a * b, a, b, [](double x, double y) { return x * y; });
  check_binary(a / b, a, b, [](double x, double y) { return x / y; });
  check_binary(pow(b, a), b, a, [](double x, double y) { return std::pow(x, y); });
  check_binary(maximum(a, b), a, b, [](double x, double y) { return std::max(x, y); });
  check_binary(minimum(a, b), a, b, [](double x, double y) { return std::min(x, y); });
}

TEST_CASE("Scalar operators, integer and reduced-precision arithmetic") {
  auto x = from_vector<float>({1, 2, 3});
  CHECK((x + 1).to_vector() == std::vector<float>{2, 3, 4});
  CHECK((2.0 * x).to_vector() == std::vector<float>{2, 4, 6});
  CHECK((1.0f - x).to_vector() == std::vector<float>{0, -1, -2});
  CHECK((6 / x).to_vector() == std::vector<float>{6, 3, 2});
  CHECK((x / 2).to_vector() == std::vector<float>{0.5, 1, 1.5});
  CHECK((-x).to_vector() == std::vector<float>{-1, -2, -3});
  CHECK(pow(x, 2.0).to_vector() == std::vector<float>{1, 4, 9});
  auto i = from_vector<int64_t>({7, -7, 9});
  CHECK((i / from_vector<int64_t>({2, 2, 3})).to_vector() == std::vector<int64_t>{3, -3, 3});  // C++ division
  CHECK((i * 2).to_vector() == std::vector<int64_t>{14, -14, 18});
  // bf16 / half compute in float and round the result once.
  auto hb = from_vector<float>({1.0f, 1.0f}).to<bf16>() + from_vector<float>({std::ldexp(1.0f, -8), 3e-3f}).to<bf16>();
  CHECK(hb.to<float>().to_vector() == std::vector<float>{float(bf16(1.0f + std::ldexp(1.0f, -8))),
                                                       float(bf16(1.0f + float(bf16(3e-3f))))});
  auto hh = exp(from_vector<float>({0.5f, -1.0f}).to<half>());
  CHECK(float(hh.to_vector()[0]) == float(half(std::exp(0.5f))));
  CHECK(float(hh.to_vector()[1]) == float(half(std::exp(-1.0f))));
}

TEST_CASE("Unary math and activations match double references") {
  struct U {
    const char* name;
    std::function<Tensor<float>(const Tensor<float>&)> op;
    std::function<double(double)> ref;
    double lo, hi;
  };
  const double s2p = std::sqrt(2.0 / M_PI);
  std::vector<U> ops = {
      {"neg", [](auto& x) { return neg(x); }, [](double v) { return -v; }, -3, 3},
      {"abs", [](auto& x) { return abs(x); }, [](double v) { return std::fabs(v); }, -3, 3},
      {"exp", [](auto& x) { return exp(x); }, [](double v) { return std::exp(v); }, -20, 20},
      {"log", [](auto& x) { return log(x); }, [](double v) { return std::log(v); }, 1e-3, 100},
      {"sqrt", [](auto& x) { return sqrt(x); }, [](double v) { return std::sqrt(v); }, 0, 100},
      {"rsqrt", [](auto& x) { return rsqrt(x); }, [](double v) { return 1 / std::sqrt(v); }, 1e-3, 100},
      {"tanh", [](auto& x) { return tanh(x); }, [](double v) { return std::tanh(v); }, -10, 10},
      {"relu", [](auto& x) { return relu(x); }, [](double v) { return v > 0 ? v : 0; }, -3, 3},
      {"sigmoid", [](auto& x) { return sigmoid(x); }, [](double v) { return 1 / (1 + std::exp(-v)); }, -30, 30},
      {"gelu", [](auto& x) { return gelu(x); }, [](double v) { return 0.5 * v * (1 + std::erf(v / std::sqrt(2.0))); }, -6, 6},
      {"gelu_tanh", [](auto& x) { return gelu(x, GeluApprox::tanh); },
       [s2p](double v) { return 0.5 * v * (1 + std::tanh(s2p * (v + 0.044715 * v * v * v))); }, -6, 6},
  };
  for (const U& u : ops) {
    for (int layout : {0, 1, 2}) {
      for (Shape shape : {Shape{}, Shape{0, 4}, Shape{1, 7}, Shape{13, 17}, Shape{3, 200, 129}}) {
        if (layout && shape.size() == 0) continue;
        Generator g(11);
        auto x = make(shape, layout, g, u.lo, u.hi);
        auto y = u.op(x);
        CAPTURE(u.name, layout, shape);
        REQUIRE(y.shape() == x.shape());
        int64_t k = 0;
        bool ok = true;
        double worst_got = 0, worst_want = 0;
        for_each_index(shape, [&](const std::vector<int64_t>& i) {
          double want = u.ref(get(x, i)), got = y.data()[k++];
          if (ok && !close(got, want, 2e-6, 1e-6)) ok = false, worst_got = got, worst_want = want;
        });
        CAPTURE(worst_got, worst_want);
        CHECK(ok);
      }
    }
  }
  // Extremes: large logits do not overflow the sigmoid; gelu of large negatives is 0.
  auto s = sigmoid(from_vector<float>({-1000.0f, 1000.0f}));
  CHECK(s.to_vector() == std::vector<float>{0.0f, 1.0f});
  CHECK(gelu(from_vector<float>({-100.0f})).item() == Approx(0.0f).margin(1e-30));
}

TEST_CASE("Comparisons, where and masked_fill") {
  auto a = from_vector<float>({1, 2, 3, 4}, {2, 2});
  auto b = from_vector<float>({2, 2});
  CHECK(eq(a, b).to_vector() == std::vector<bool>{false, true, false, false});
  CHECK(ne(a, b).to_vector() == std::vector<bool>{true, false, true, true});
  CHECK(lt(a, b).to_vector() == std::vector<bool>{true, false, false, false});
  CHECK(le(a, b).to_vector() == std::vector<bool>{true, true, false, false});
  CHECK(gt(a, b).to_vector() == std::vector<bool>{false, false, true, true});
  CHECK(ge(a, b).to_vector() == std::vector<bool>{false, true, true, true});
  CHECK(gt(a, b).dtype() == DType::boolean);
  auto w = where(gt(a, b), a, full<float>({}, -1.0f));
  CHECK(w.to_vector() == std::vector<float>{-1, -1, 3, 4});
  auto cond = from_vector<float>({1, 0}).to<bool>().reshape({2, 1});  // broadcast condition
  CHECK(where(cond, a, -a).to_vector() == std::vector<float>{1, 2, -3, -4});
  // A causal mask: position i may not see j > i.
  auto future = lt(arange<int64_t>(0, 3).reshape({3, 1}), arange<int64_t>(0, 3));
  auto m = masked_fill(zeros<float>({2, 3, 3}), future, -INFINITY);
  CHECK(m.shape() == Shape{2, 3, 3});
  CHECK(m.at({1, 0, 1}) == -INFINITY);
  CHECK(m.at({1, 1, 0}) == 0.0f);
  CHECK(m.at({0, 2, 2}) == 0.0f);
  CHECK_THROWS_AS(masked_fill(zeros<float>({3}), future, 1.0), shape_error);
}

TEST_CASE("Reductions over every axis, keepdim, non-contiguous inputs") {
  Shape shape{4, 5, 6};
  int layout = GENERATE(0, 1, 2);
  Generator g(21);
  auto x = make(shape, layout, g);
  for (int axis = -3; axis < 3; ++axis) {
    for (bool keep : {false, true}) {
      CAPTURE(layout, axis, keep);
      int a = axis < 0 ? axis + 3 : axis;
      auto s = sum(x, axis, keep), mn = mean(x, axis, keep), mx = max(x, axis, keep), mi = min(x, axis, keep);
      auto am = argmax(x, axis, keep), ami = argmin(x, axis, keep);
      auto v = var(x, axis, keep), v0 = var(x, axis, keep, 0);
      Shape os = shape;
      if (keep) os[a] = 1; else os.erase(a);
      REQUIRE(s.shape() == os);
      REQUIRE(am.shape() == os);
      Shape red = shape;
      red[a] = 1;  // iterate over the reduced positions
      int64_t k = 0;
      for_each_index(red, [&](const std::vector<int64_t>& i) {
        std::vector<int64_t> j = i;
        double tot = 0, hi = -1e300, lo = 1e300, sq = 0;
        int64_t ahi = 0, alo = 0;
        for (int64_t r = 0; r < shape[a]; ++r) {
          j[size_t(a)] = r;
          double e = get(x, j);
          tot += e;
          if (e > hi) hi = e, ahi = r;
          if (e < lo) lo = e, alo = r;
        }
        double m = tot / double(shape[a]);
        for (int64_t r = 0; r < shape[a]; ++r) {
          j[size_t(a)] = r;
          sq += (get(x, j) - m) * (get(x, j) - m);
        }
        REQUIRE(close(s.data()[k], tot));
        REQUIRE(close(mn.data()[k], m));
        REQUIRE(mx.data()[k] == float(hi));
        REQUIRE(mi.data()[k] == float(lo));
        REQUIRE(am.data()[k] == ahi);
        REQUIRE(ami.data()[k] == alo);
        REQUIRE(close(v.data()[k], sq / double(shape[a] - 1)));
        REQUIRE(close(v0.data()[k], sq / double(shape[a])));
        ++k;
      });
    }
  }
  double tot = 0;
  for_each_index(shape, [&](const std::vector<int64_t>& i) { tot += get(x, i); });
  CHECK(close(sum(x).item(), tot));
  CHECK(sum(x).dim() == 0);
  CHECK(close(mean(x).item(), tot / 120));
  CHECK(sum(x, 1, true).shape() == Shape{4, 1, 6});
  CHECK(argmax(x).item() == argmax(x.reshape({-1}), 0).item());
}

TEST_CASE("Reduction edge cases: empty, NaN, ties, integers, determinism") {
  CHECK(sum(zeros<float>({0})).item() == 0.0f);
  CHECK(sum(zeros<float>({2, 0}), 1).to_vector() == std::vector<float>{0, 0});
  CHECK(sum(zeros<float>({0, 3}), 0).to_vector() == std::vector<float>{0, 0, 0});
  CHECK(std::isnan(mean(zeros<float>({0})).item()));
  CHECK_THROWS_AS(max(zeros<float>({0})), value_error);
  CHECK_THROWS_WITH(argmax(zeros<float>({3, 0}), 1), LOOM_CONTAINS("argmax: cannot reduce over an empty dimension"));
  CHECK_THROWS_AS(sum(zeros<float>({3}), 1), index_error);
  auto n = from_vector<float>({1, NAN, 5, NAN});
  CHECK(std::isnan(max(n).item()));
  CHECK(std::isnan(min(n).item()));
  CHECK(argmax(n).item() == 1);  // the first NaN, as in PyTorch
  CHECK(argmax(from_vector<float>({3, 7, 7, 1})).item() == 1);  // the first of ties
  auto ties = zeros<float>({100});
  ties.at({61}) = 5.0f, ties.at({13}) = 5.0f, ties.at({90}) = 5.0f;  // in different accumulator lanes
  CHECK(argmax(ties).item() == 13);
  CHECK(argmin(-ties).item() == 13);
  ties.at({77}) = NAN, ties.at({45}) = NAN;
  CHECK(argmax(ties).item() == 45);
  CHECK(sum(from_vector<int32_t>({1, 2, 3})).item() == 6);
  CHECK(max(from_vector<int64_t>({-5, 9, 2})).item() == 9);
  CHECK(sum(full<float>({}, 2.5f)).item() == 2.5f);  // 0-d input
  CHECK(sum(full<float>({}, 2.5f), 0).item() == 2.5f);
  // Long rows are cut into fixed blocks: the same bits for any thread count.
  Generator g(3);
  auto big = randn<float>({3, 1000003}, g);
  int saved = get_num_threads();
  set_num_threads(1);
  auto s1 = sum(big, 1), a1 = sum(big);
  set_num_threads(2);
  auto s2 = sum(big, 1), a2 = sum(big);
  set_num_threads(saved);
  CHECK(s1.to_vector() == s2.to_vector());
  CHECK(a1.item() == a2.item());
  double ref = 0;
  for (float v : big.to_vector()) ref += v;
  CHECK(close(a1.item(), ref, 1e-6));
}

TEST_CASE("matmul of one row (the matrix-vector path): both layouts of b, strided a, gradients") {
  // M = 1 runs a matrix-vector product instead of the GEMM: checked against a double reference
  // for a Linear's x W^T (b column-major), a row-major b, and a row of a transposed matrix as a.
  Generator g(71);
  for (auto [K, N] : std::vector<std::pair<int64_t, int64_t>>{{1, 1}, {7, 5}, {128, 384}, {768, 2304}, {33, 50257}}) {
    CAPTURE(K, N);
    Tensor<float> x = randn<float>({1, K}, g), W = randn<float>({N, K}, g), Bm = randn<float>({K, N}, g);
    Tensor<float> xt = randn<float>({K, 3}, g);  // column 1 of xt is a strided row
    auto close = [](const Tensor<float>& got, const Tensor<double>& want) {
      return max(abs(got.to<double>() - want)).item() <= 1e-5 * std::max(1.0, max(abs(want)).item());
    };
    CHECK(close(matmul(x, W.t()), matmul(x.to<double>(), W.to<double>().t())));
    CHECK(close(matmul(x, Bm), matmul(x.to<double>(), Bm.to<double>())));
    Tensor<float> row = xt.t().slice(0, 1, 2);  // (1, K), elements 3 apart
    CHECK(close(matmul(row, W.t()), matmul(row.to<double>(), W.to<double>().t())));
  }
  auto x = randn<double>({1, 6}, g).requires_grad_(), w = randn<double>({4, 6}, g).requires_grad_();
  auto r = gradcheck([](auto& in) { return matmul(in[0], in[1].t()); }, {x, w});
  INFO(r.report);
  CHECK(r.ok);
}

TEST_CASE("cpu::gemm's blocked paths: packed and in-place operands, partial tiles, few rows, long K, accumulate") {
  // Shapes chosen to reach each path of the AVX-512 kernel (Eigen elsewhere): rows that leave a
  // partial sliver of 14, columns that leave a partial panel of 32 or one of at most 16, whole
  // panels read in place, a row-major B of whole panels too large to be read in place (over 2^20
  // floats), fewer rows than the threads' blocks, K over one cache block (512), N over one
  // column block (3072), padded leading dimensions, and accumulation into C.
  struct Case { int64_t M, N, K; };
  std::vector<Case> cases = {{5, 64, 40},    {13, 96, 600},   {65, 128, 768}, {140, 33, 17},
                             {300, 64, 1100}, {41, 3100, 9},   {768, 65, 128}, {29, 32, 513},
                             {386, 160, 130}, {20, 1056, 1000}};
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> U(-1.0f, 1.0f);
  for (const Case& s : cases)
    for (bool arow : {true, false})
      for (bool brow : {true, false})
        for (bool accumulate : {false, true}) {
          CAPTURE(s.M, s.N, s.K, arow, brow, accumulate);
          const int64_t lda = (arow ? s.K : s.M) + 3, ldb = (brow ? s.N : s.K) + 5, ldc = s.N + 2;
          std::vector<float> a((arow ? s.M : s.K) * lda), b((brow ? s.K : s.N) * ldb), c(s.M * ldc);
          for (float& v : a) v = U(rng);
          for (float& v : b) v = U(rng);
          for (float& v : c) v = U(rng);
          const std::vector<float> c0 = c;
          cpu::gemm<float>(c.data(), ldc, a.data(), arow, lda, b.data(), brow, ldb, s.M, s.N, s.K, accumulate);
          double worst = 0;
          for (int64_t i = 0; i < s.M; ++i)
            for (int64_t j = 0; j < s.N; ++j) {
              double want = accumulate ? c0[i * ldc + j] : 0.0, mag = std::fabs(want);
              for (int64_t k = 0; k < s.K; ++k) {
                double p = double(arow ? a[i * lda + k] : a[k * lda + i]) * double(brow ? b[k * ldb + j] : b[j * ldb + k]);
                want += p, mag += std::fabs(p);
              }
              // float accumulation over K terms: well within 1e-6 of the sum of |terms|
              worst = std::max(worst, std::fabs(c[i * ldc + j] - want) / (mag + 1e-30));
            }
          CHECK(worst < 1e-6);
          bool pad_kept = true;  // the padding columns of C are never written
          for (int64_t i = 0; i < s.M; ++i)
            for (int64_t j = s.N; j < ldc; ++j) pad_kept = pad_kept && c[i * ldc + j] == c0[i * ldc + j];
          CHECK(pad_kept);
        }
}

TEST_CASE("matmul: 2-D, batched with broadcasting, transposed views, 1-D promotion") {
  auto ref_mm = [](const Tensor<float>& a, const Tensor<float>& b, const Tensor<float>& c) {
    // c (..., M, N) against loops over broadcast batch entries, in double.
    int64_t M = a.size(-2), K = a.size(-1), N = b.size(-1);
    Shape batch = c.shape();
    batch.erase(batch.size() - 1), batch.erase(batch.size() - 1);
    int64_t k0 = 0;
    bool ok = true;
    for_each_index(batch, [&](const std::vector<int64_t>& bi) {
      for (int64_t m = 0; m < M; ++m)
        for (int64_t n = 0; n < N; ++n) {
          double acc = 0, mag = 0;
          for (int64_t k = 0; k < K; ++k) {
            std::vector<int64_t> ia = bi, ib = bi;
            ia.push_back(m), ia.push_back(k), ib.push_back(k), ib.push_back(n);
            // get() right-aligns: a's batch dims may be fewer than c's.
            acc += get(a, ia) * get(b, ib);
            mag += std::fabs(get(a, ia) * get(b, ib));
          }
          // A float dot product of length K is off by at most ~K * 2^-24 * sum|a_k b_k|; blocked
          // GEMMs do far better in practice, so 1e-6 * sum|a_k b_k| is a strict bound here.
          if (!close(c.data()[k0 + m * N + n], acc, 1e-5, 1e-6 * mag + 1e-6)) ok = false;
        }
      k0 += M * N;
    });
    return ok;
  };
  Generator g(5);
  struct Case { Shape a, b, out; };
  std::vector<Case> cases = {
      {{3, 4}, {4, 5}, {3, 5}},           {{1, 1}, {1, 1}, {1, 1}},       {{7, 33}, {33, 2}, {7, 2}},
      {{2, 3, 4}, {2, 4, 5}, {2, 3, 5}},  {{2, 3, 4}, {4, 5}, {2, 3, 5}}, {{3, 4}, {6, 4, 2}, {6, 3, 2}},
      {{2, 1, 3, 4}, {5, 4, 2}, {2, 5, 3, 2}}, {{64, 8, 16}, {64, 16, 8}, {64, 8, 8}},
      {{65, 130}, {130, 67}, {65, 67}}};
  for (const Case& c : cases) {
    for (int la : {0, 1, 2}) {
      for (int lb : {0, 1, 2}) {
        CAPTURE(c.a, c.b, la, lb);
        auto a = make(c.a, la, g), b = make(c.b, lb, g);
        auto out = matmul(a, b);
        REQUIRE(out.shape() == c.out);
        CHECK(ref_mm(a, b, out));
      }
    }
  }
  // Transposed operands through views: x @ w.T with w stored (N, K), as a Linear layer does.
  auto x = randn<float>({6, 10}, g), w = randn<float>({4, 10}, g);
  CHECK(ref_mm(x, w.t(), matmul(x, w.t())));
  CHECK(ref_mm(x.t(), x, matmul(x.t(), x)));
  // A large product exercises Eigen's blocked multithreaded path.
  auto a = randn<float>({200, 300}, g), b = randn<float>({300, 150}, g);
  CHECK(ref_mm(a, b, matmul(a, b)));
  // 1-D promotion.
  auto v = randn<float>({4}, g), m = randn<float>({4, 3}, g);
  CHECK(matmul(v, m).shape() == Shape{3});
  CHECK(matmul(m.t(), v).shape() == Shape{3});
  CHECK(matmul(v, v).dim() == 0);
  CHECK(close(matmul(v, v).item(), sum(v * v).item()));
  // K = 0 gives zeros; empty batches give empty results.
  CHECK(matmul(zeros<float>({2, 0}), zeros<float>({0, 3})).to_vector() == std::vector<float>(6, 0.0f));
  CHECK(matmul(zeros<float>({0, 2, 3}), zeros<float>({3, 4})).shape() == Shape{0, 2, 4});
  // Doubles and bf16.
  auto ad = randn<double>({5, 6}, g), bd = randn<double>({6, 2}, g);
  CHECK(std::fabs(matmul(ad, bd).at({1, 1}) - sum(ad.select(0, 1) * bd.select(1, 1)).item()) < 1e-12);
  CHECK(matmul(a.to<bf16>(), b.to<bf16>()).dtype() == DType::bfloat16);
  // out= variant writes into existing storage.
  auto out = empty<float>({200, 150});
  matmul_out(out, a, b);
  CHECK(out.to_vector() == matmul(a, b).to_vector());
  CHECK_THROWS_AS(matmul_out(empty<float>({3, 3}), a, b), shape_error);
  // Errors name the shapes.
  CHECK_THROWS_AS(matmul(zeros<float>({2, 3}), zeros<float>({4, 5})), shape_error);
  CHECK_THROWS_WITH(matmul(zeros<float>({4, 64, 768}), zeros<float>({512, 3072})),
                    LOOM_CONTAINS("matmul: inner dimensions differ: a[4, 64, 768] @ b[512, 3072] (768 != 512)"));
  CHECK_THROWS_WITH(matmul(zeros<float>({2, 3, 4}), zeros<float>({5, 4, 2})), LOOM_CONTAINS("cannot be broadcast"));
  CHECK_THROWS_AS(matmul(full<float>({}, 1.0f), zeros<float>({3})), shape_error);
}

TEST_CASE("softmax and log_softmax: any axis, stable for large logits") {
  Generator g(8);
  for (int layout : {0, 1, 2}) {
    for (int axis : {-1, 0, 1}) {
      auto x = make({6, 9}, layout, g, -5, 5);
      auto s = softmax(x, axis), ls = log_softmax(x, axis);
      CAPTURE(layout, axis);
      int a = axis < 0 ? 1 : axis;
      Shape red = x.shape();
      red[a] = 1;
      bool ok = true;
      for_each_index(red, [&](const std::vector<int64_t>& i) {
        std::vector<int64_t> j = i;
        double m = -1e300, z = 0;
        for (int64_t r = 0; r < x.size(a); ++r) j[size_t(a)] = r, m = std::max(m, get(x, j));
        for (int64_t r = 0; r < x.size(a); ++r) j[size_t(a)] = r, z += std::exp(get(x, j) - m);
        for (int64_t r = 0; r < x.size(a); ++r) {
          j[size_t(a)] = r;
          double want_log = get(x, j) - m - std::log(z);
          ok = ok && close(get(s, j), std::exp(want_log)) && close(get(ls, j), want_log);
        }
      });
      CHECK(ok);
    }
  }
  auto big = from_vector<float>({1000.0f, 1001.0f, 1002.0f});
  auto s = softmax(big);
  CHECK(s.at({2}) == Approx(0.66524096f).epsilon(1e-6));
  CHECK(log_softmax(big).at({0}) == Approx(-2.40760596f).epsilon(1e-6));
  CHECK(std::isfinite(log_softmax(from_vector<float>({-1e30f, 0.0f})).at({0})));
  CHECK(softmax(zeros<float>({3, 0})).shape() == Shape{3, 0});
  CHECK(softmax(full<float>({}, 3.0f)).item() == 1.0f);
  CHECK(softmax(randn<double>({4, 5}, g), 0).dtype() == DType::float64);
  CHECK_THROWS_AS(softmax(zeros<float>({3}), 1), index_error);
}

TEST_CASE("layer_norm forward against a double reference") {
  Generator g(13);
  for (int layout : {0, 1, 2}) {
    auto x = make({2, 5, 33}, layout, g, -3, 7);
    auto w = rand<float>({33}, g, 0.5, 1.5), b = rand<float>({33}, g, -1, 1);
    for (int variant = 0; variant < 4; ++variant) {
      Tensor<float> wt = (variant & 1) ? w : Tensor<float>(), bt = (variant & 2) ? b : Tensor<float>();
      auto y = layer_norm(x, wt, bt, 1e-5);
      bool ok = true;
      for (int64_t i = 0; i < 2; ++i)
        for (int64_t t = 0; t < 5; ++t) {
          double m = 0, v = 0;
          for (int64_t c = 0; c < 33; ++c) m += get(x, {i, t, c});
          m /= 33;
          for (int64_t c = 0; c < 33; ++c) v += (get(x, {i, t, c}) - m) * (get(x, {i, t, c}) - m);
          v /= 33;
          for (int64_t c = 0; c < 33; ++c) {
            double want = (get(x, {i, t, c}) - m) / std::sqrt(v + 1e-5);
            if (variant & 1) want *= w.at({c});
            if (variant & 2) want += b.at({c});
            ok = ok && close(y.at({i, t, c}), want, 1e-5, 1e-5);
          }
        }
      CAPTURE(layout, variant);
      CHECK(ok);
    }
  }
  // A large constant offset: the two-pass variance keeps full precision.
  auto x = from_vector<float>({1e4f + 1, 1e4f + 2, 1e4f + 3});
  auto y = layer_norm(x, Tensor<float>(), Tensor<float>(), 0.0);
  CHECK(y.at({0}) == Approx(-1.2247449f).epsilon(1e-5));
  CHECK_THROWS_WITH(layer_norm(zeros<float>({2, 4}), zeros<float>({5}), Tensor<float>()),
                    LOOM_CONTAINS("layer_norm: weight has shape [5], expected [4]"));
  CHECK_THROWS_AS(layer_norm(zeros<float>({2, 4}), Tensor<float>(), Tensor<float>(), -1.0), value_error);
}

TEST_CASE("embedding gathers rows and checks indices") {
  auto w = arange<float>(0, 12).reshape({4, 3});
  auto idx = from_vector<int64_t>({3, 0, 3, 1}, {2, 2});
  auto e = embedding(w, idx);
  CHECK(e.shape() == Shape{2, 2, 3});
  CHECK(e.to_vector() == std::vector<float>{9, 10, 11, 0, 1, 2, 9, 10, 11, 3, 4, 5});
  CHECK(embedding(w.t().t(), from_vector<int32_t>({2})).to_vector() == std::vector<float>{6, 7, 8});
  CHECK(embedding(w, empty<int64_t>({0})).shape() == Shape{0, 3});
  CHECK_THROWS_WITH(embedding(w, from_vector<int64_t>({1, 4})),
                    LOOM_CONTAINS("embedding: index 4 at position 1 is out of range for a table of 4 rows"));
  CHECK_THROWS_AS(embedding(w, from_vector<int32_t>({-1})), index_error);
  CHECK_THROWS_AS(embedding(arange<float>(0, 3), idx), shape_error);
}

TEST_CASE("cross_entropy with ignore_index against a double reference") {
  Generator g(17);
  auto logits = randn<float>({2, 7, 11}, g, 0.0, 3.0);
  auto targets = randint<int64_t>({2, 7}, 0, 11, g);
  targets.at({0, 3}) = -100;
  targets.at({1, 6}) = -100;
  double tot = 0;
  int count = 0;
  std::vector<double> per(14, 0.0);
  for (int64_t i = 0; i < 2; ++i)
    for (int64_t t = 0; t < 7; ++t) {
      int64_t y = targets.at({i, t});
      if (y == -100) continue;
      double m = -1e300, z = 0;
      for (int64_t v = 0; v < 11; ++v) m = std::max(m, double(logits.at({i, t, v})));
      for (int64_t v = 0; v < 11; ++v) z += std::exp(double(logits.at({i, t, v})) - m);
      per[size_t(i * 7 + t)] = m + std::log(z) - double(logits.at({i, t, y}));
      tot += per[size_t(i * 7 + t)];
      ++count;
    }
  CHECK(close(cross_entropy(logits, targets).item(), tot / count));
  CHECK(close(cross_entropy(logits, targets, -100, Reduction::sum).item(), tot));
  auto none = cross_entropy(logits, targets, -100, Reduction::none);
  REQUIRE(none.shape() == Shape{2, 7});
  for (int k = 0; k < 14; ++k) CHECK(close(none.data()[k], per[size_t(k)]));
  // Non-contiguous logits, int32 targets, a custom ignore_index.
  auto lt = logits.transpose(0, 1).contiguous().transpose(0, 1);
  CHECK(close(cross_entropy(lt, targets.to<int32_t>()).item(), tot / count));
  auto t2 = targets.clone();
  t2.at({0, 0}) = 5;
  CHECK(std::isnan(cross_entropy(logits.slice(1, 0, 1), full<int64_t>({2, 1}, 7), 7).item()));  // all ignored
  // Huge logits stay finite.
  auto huge = from_vector<float>({1e4f, 0.0f}, {1, 2});
  CHECK(cross_entropy(huge, from_vector<int64_t>({1})).item() == Approx(1e4f));
  CHECK_THROWS_WITH(cross_entropy(logits, targets.slice(1, 0, 3)), LOOM_CONTAINS("need targets of shape [2, 7]"));
  CHECK_THROWS_WITH(cross_entropy(logits.select(0, 0), from_vector<int64_t>({0, 1, 2, 3, 4, 5, 11})),
                    LOOM_CONTAINS("cross_entropy: target 11 at position 6 is out of range for 11 classes"));
}

TEST_CASE("Ops reject undefined tensors and say so") {
  CHECK_THROWS_WITH(add(Tensor<float>(), ones<float>({1})), LOOM_CONTAINS("add: an input tensor is undefined"));
  CHECK_THROWS_WITH(zeros<float>({2, 3}) + zeros<float>({3, 2}), LOOM_CONTAINS("add: shapes [2, 3] and [3, 2] cannot be broadcast"));
}

TEST_CASE("dropout keeps the elements whose rand() draw is at least p, forward and backward") {
  // The kernel draws the mask as it goes; it must keep element i exactly where rand() with the
  // same generator state gives element i a value >= p (24 bits for float, 53 for double).
  auto check = [](auto zero, double p) {
    using T = decltype(zero);
    Generator gx(5);
    Tensor<T> x = rand<T>(Shape{37, 3}, gx, 0.5, 1.5).requires_grad_();  // 111: an odd count
    Generator gd(9), gr(9);
    Tensor<T> y = dropout(x, p, gd);
    Tensor<T> u = rand<T>(Shape{37, 3}, gr);
    if (p > 0.0) CHECK(gd.offset() == gr.offset());  // (p = 0 draws nothing)
    const double scale = p < 1.0 ? 1.0 / (1.0 - p) : 0.0;
    Tensor<T> g = rand<T>(Shape{37, 3}, gx);
    y.backward(g);
    int64_t kept = 0;
    for (int64_t i = 0; i < 111; ++i) {
      const bool keep = double(u.data()[i]) >= p;
      kept += keep;
      const T want = keep ? T(x.data()[i] * T(scale)) : T(0);
      CHECK(y.data()[i] == want);
      CHECK(x.grad().data()[i] == (keep ? T(g.data()[i] * T(scale)) : T(0)));
    }
    return kept;
  };
  for (double p : {0.0, 0.25, 0.5, 1.0}) {
    const int64_t kf = check(0.0f, p), kd = check(0.0, p);
    if (p == 0.0) CHECK(kf == 111);
    if (p == 1.0) CHECK(kd == 0);
    if (p == 0.5) CHECK((kf > 30 && kf < 81));
  }
  // Not training, or p = 0: x itself. A strided input is read in its logical order.
  Generator g(1);
  auto x = rand<float>(Shape{4, 6}, g);
  CHECK(dropout(x, 0.5, g, /*training=*/false).data() == x.data());
  Generator ga(3), gb(3);
  auto xt = x.t();
  CHECK(dropout(xt, 0.5, ga).to_vector() == dropout(xt.contiguous(), 0.5, gb).to_vector());
  CHECK_THROWS_AS(dropout(x, 1.5, g), value_error);
}

TEST_CASE("linear adds its bias inside the product: the same bits as matmul then add") {
  Generator g(11);
  auto x = randn<float>(Shape{3, 5, 16}, g), w = randn<float>(Shape{24, 16}, g), b = randn<float>(Shape{24}, g);
  auto y = linear(x, w, b);
  CHECK(y.shape() == Shape{3, 5, 24});
  CHECK(y.to_vector() == (matmul(x, w.t()) + b).to_vector());
  CHECK(linear(x, w).to_vector() == matmul(x, w.t()).to_vector());
  CHECK(linear(empty<float>({0, 16}), w, b).shape() == Shape{0, 24});
  CHECK_THROWS_WITH(linear(x, w, randn<float>(Shape{23}, g)),
                    LOOM_CONTAINS("linear: x[3, 5, 16], weight[24, 16] and bias[23] do not fit"));
  CHECK_THROWS_AS(linear(x, w.t(), b), shape_error);
}
