#pragma once
/// @file elementwise.hpp
/// Elementwise ops with NumPy broadcasting: arithmetic, math functions, activations,
/// comparisons, where and masked_fill, and the arithmetic operators.

#include <cmath>
#include <type_traits>

#include "loom/backend/cpu/elementwise.hpp"
#include "loom/core/math.hpp"
#include "loom/ops/common.hpp"

namespace loom {

/// Which GELU formula to use (PyTorch's `approximate` argument).
enum class GeluApprox { none, tanh };

namespace detail {

// out(shape of x) = f(x)
template <class TO, class T, class F>
Tensor<TO> unary_op(const char* op, const Tensor<T>& x, F f) {
  check_cpu(op, x);
  Tensor<TO> out = Tensor<TO>::empty(x.shape());
  StridedLayout<2> L(x.shape(), {out.strides(), x.strides()});
  cpu::map_unary(out.data(), x.data(), L, f);
  return out;
}

// out(broadcast shape) = f(a, b)
template <class TO, class TA, class TB, class F>
Tensor<TO> binary_op(const char* op, const Tensor<TA>& a, const Tensor<TB>& b, F f) {
  check_cpu(op, a, b);
  Shape s = broadcast_shapes(a.shape(), b.shape(), op);
  Tensor<TO> out = Tensor<TO>::empty(s);
  StridedLayout<3> L(s, {out.strides(), broadcast_strides(a.shape(), a.strides(), s),
                         broadcast_strides(b.shape(), b.strides(), s)});
  cpu::map_binary(out.data(), a.data(), b.data(), L, f);
  return out;
}

// The unary math functors: a scalar form, and an Eigen array form for contiguous float/double.
#define LOOM_UNARY_FUNCTOR(Name, scalar_expr, array_expr)            \
  struct Name {                                                      \
    static constexpr bool vectorized = true;                         \
    template <class X> X operator()(X x) const { return scalar_expr; } \
    template <class A> auto array(const A& x) const {                \
      using S = typename A::Scalar; (void)sizeof(S);                 \
      return array_expr;                                             \
    }                                                                \
  };
LOOM_UNARY_FUNCTOR(NegFn, -x, -x)
LOOM_UNARY_FUNCTOR(ExpFn, std::exp(x), x.exp())
LOOM_UNARY_FUNCTOR(LogFn, std::log(x), x.log())
LOOM_UNARY_FUNCTOR(SqrtFn, std::sqrt(x), x.sqrt())
LOOM_UNARY_FUNCTOR(RsqrtFn, X(1) / std::sqrt(x), x.rsqrt())
LOOM_UNARY_FUNCTOR(TanhFn, std::tanh(x), x.tanh())
LOOM_UNARY_FUNCTOR(AbsFn, std::abs(x), x.abs())
LOOM_UNARY_FUNCTOR(ReluFn, x > X(0) ? x : X(0), x.max(S(0)))
LOOM_UNARY_FUNCTOR(SigmoidFn, math::sigmoid(x), (S(1) + (-x).exp()).inverse())
LOOM_UNARY_FUNCTOR(GeluTanhFn, math::gelu_tanh(x),
                   S(0.5) * x * (S(1) + (S(math::sqrt_2_over_pi) * (x + S(0.044715) * x.cube())).tanh()))
#undef LOOM_UNARY_FUNCTOR

struct GeluErfFn {
  template <class X> X operator()(X x) const { return math::gelu_erf(x); }
};

template <class T>
void require_floating(const char*) {
  static_assert(is_floating_v<T>, "this op needs a floating element type (float, double, bf16, half)");
}

}  // namespace detail

// --- Binary arithmetic (broadcasting) ---------------------------------------------------------

/// a + b, broadcast.
template <class T>
Tensor<T> add(const Tensor<T>& a, const Tensor<T>& b) {
  return detail::binary_op<T>("add", a, b, [](auto x, auto y) { return x + y; });
}
/// a - b, broadcast.
template <class T>
Tensor<T> sub(const Tensor<T>& a, const Tensor<T>& b) {
  return detail::binary_op<T>("sub", a, b, [](auto x, auto y) { return x - y; });
}
/// a * b, broadcast.
template <class T>
Tensor<T> mul(const Tensor<T>& a, const Tensor<T>& b) {
  return detail::binary_op<T>("mul", a, b, [](auto x, auto y) { return x * y; });
}
/// a / b, broadcast (C++ integer division for integer types).
template <class T>
Tensor<T> div(const Tensor<T>& a, const Tensor<T>& b) {
  return detail::binary_op<T>("div", a, b, [](auto x, auto y) { return x / y; });
}
/// a ^ b elementwise, broadcast.
template <class T>
Tensor<T> pow(const Tensor<T>& a, const Tensor<T>& b) {
  detail::require_floating<T>("pow");
  return detail::binary_op<T>("pow", a, b, [](auto x, auto y) { return std::pow(x, y); });
}
/// The larger of a and b elementwise, broadcast (NaN if either is NaN).
template <class T>
Tensor<T> maximum(const Tensor<T>& a, const Tensor<T>& b) {
  return detail::binary_op<T>("maximum", a, b, [](auto x, auto y) { return (x != x || x > y) ? x : y; });
}
/// The smaller of a and b elementwise, broadcast (NaN if either is NaN).
template <class T>
Tensor<T> minimum(const Tensor<T>& a, const Tensor<T>& b) {
  return detail::binary_op<T>("minimum", a, b, [](auto x, auto y) { return (x != x || x < y) ? x : y; });
}

/// x ^ exponent elementwise.
template <class T>
Tensor<T> pow(const Tensor<T>& x, double exponent) {
  detail::require_floating<T>("pow");
  using C = compute_t<T>;
  C e = C(exponent);
  if (exponent == 2.0) return detail::unary_op<T>("pow", x, [](C v) { return v * v; });
  return detail::unary_op<T>("pow", x, [e](C v) { return std::pow(v, e); });
}

// --- Unary math and activations -----------------------------------------------------------

/// -x.
template <class T> Tensor<T> neg(const Tensor<T>& x) { return detail::unary_op<T>("neg", x, detail::NegFn{}); }
/// |x|.
template <class T> Tensor<T> abs(const Tensor<T>& x) { return detail::unary_op<T>("abs", x, detail::AbsFn{}); }
/// e^x.
template <class T> Tensor<T> exp(const Tensor<T>& x) {
  detail::require_floating<T>("exp");
  return detail::unary_op<T>("exp", x, detail::ExpFn{});
}
/// Natural logarithm.
template <class T> Tensor<T> log(const Tensor<T>& x) {
  detail::require_floating<T>("log");
  return detail::unary_op<T>("log", x, detail::LogFn{});
}
/// Square root.
template <class T> Tensor<T> sqrt(const Tensor<T>& x) {
  detail::require_floating<T>("sqrt");
  return detail::unary_op<T>("sqrt", x, detail::SqrtFn{});
}
/// 1 / sqrt(x).
template <class T> Tensor<T> rsqrt(const Tensor<T>& x) {
  detail::require_floating<T>("rsqrt");
  return detail::unary_op<T>("rsqrt", x, detail::RsqrtFn{});
}
/// Hyperbolic tangent.
template <class T> Tensor<T> tanh(const Tensor<T>& x) {
  detail::require_floating<T>("tanh");
  return detail::unary_op<T>("tanh", x, detail::TanhFn{});
}
/// max(x, 0).
template <class T> Tensor<T> relu(const Tensor<T>& x) { return detail::unary_op<T>("relu", x, detail::ReluFn{}); }
/// 1 / (1 + e^-x).
template <class T> Tensor<T> sigmoid(const Tensor<T>& x) {
  detail::require_floating<T>("sigmoid");
  return detail::unary_op<T>("sigmoid", x, detail::SigmoidFn{});
}
/// GELU: exact (erf) by default, or the tanh approximation GPT-2 uses.
template <class T> Tensor<T> gelu(const Tensor<T>& x, GeluApprox approx = GeluApprox::none) {
  detail::require_floating<T>("gelu");
  if (approx == GeluApprox::tanh) return detail::unary_op<T>("gelu", x, detail::GeluTanhFn{});
  return detail::unary_op<T>("gelu", x, detail::GeluErfFn{});
}

// --- Comparisons and selection ------------------------------------------------------------

/// a == b elementwise, broadcast.
template <class T> Tensor<bool> eq(const Tensor<T>& a, const Tensor<T>& b) {
  return detail::binary_op<bool>("eq", a, b, [](auto x, auto y) { return x == y; });
}
/// a != b elementwise, broadcast.
template <class T> Tensor<bool> ne(const Tensor<T>& a, const Tensor<T>& b) {
  return detail::binary_op<bool>("ne", a, b, [](auto x, auto y) { return x != y; });
}
/// a < b elementwise, broadcast.
template <class T> Tensor<bool> lt(const Tensor<T>& a, const Tensor<T>& b) {
  return detail::binary_op<bool>("lt", a, b, [](auto x, auto y) { return x < y; });
}
/// a <= b elementwise, broadcast.
template <class T> Tensor<bool> le(const Tensor<T>& a, const Tensor<T>& b) {
  return detail::binary_op<bool>("le", a, b, [](auto x, auto y) { return x <= y; });
}
/// a > b elementwise, broadcast.
template <class T> Tensor<bool> gt(const Tensor<T>& a, const Tensor<T>& b) {
  return detail::binary_op<bool>("gt", a, b, [](auto x, auto y) { return x > y; });
}
/// a >= b elementwise, broadcast.
template <class T> Tensor<bool> ge(const Tensor<T>& a, const Tensor<T>& b) {
  return detail::binary_op<bool>("ge", a, b, [](auto x, auto y) { return x >= y; });
}

/// cond ? a : b elementwise, all three broadcast together.
template <class T>
Tensor<T> where(const Tensor<bool>& cond, const Tensor<T>& a, const Tensor<T>& b) {
  detail::check_cpu("where", cond, a, b);
  Shape s = broadcast_shapes(broadcast_shapes(cond.shape(), a.shape(), "where"), b.shape(), "where");
  Tensor<T> out = Tensor<T>::empty(s);
  StridedLayout<4> L(s, {out.strides(), broadcast_strides(cond.shape(), cond.strides(), s),
                         broadcast_strides(a.shape(), a.strides(), s), broadcast_strides(b.shape(), b.strides(), s)});
  cpu::map_ternary(out.data(), cond.data(), a.data(), b.data(), L,
                   [](bool c, auto x, auto y) { return c ? x : y; });
  return out;
}

/// x with `value` wherever `mask` (broadcast to x's shape) is true.
template <class T>
Tensor<T> masked_fill(const Tensor<T>& x, const Tensor<bool>& mask, double value) {
  Shape s = broadcast_shapes(x.shape(), mask.shape(), "masked_fill");
  LOOM_CHECK(s == x.shape(), shape_error, "masked_fill: mask of shape ", mask.shape(),
             " does not broadcast to the input shape ", x.shape());
  using C = compute_t<T>;
  C v = C(value);
  return detail::binary_op<T>("masked_fill", x, mask, [v](C a, bool m) { return m ? v : a; });
}

// --- Operators ------------------------------------------------------------------------------

/// Elementwise a + b with broadcasting.
template <class T> Tensor<T> operator+(const Tensor<T>& a, const Tensor<T>& b) { return add(a, b); }
/// Elementwise a - b with broadcasting.
template <class T> Tensor<T> operator-(const Tensor<T>& a, const Tensor<T>& b) { return sub(a, b); }
/// Elementwise a * b with broadcasting.
template <class T> Tensor<T> operator*(const Tensor<T>& a, const Tensor<T>& b) { return mul(a, b); }
/// Elementwise a / b with broadcasting.
template <class T> Tensor<T> operator/(const Tensor<T>& a, const Tensor<T>& b) { return div(a, b); }
/// -x.
template <class T> Tensor<T> operator-(const Tensor<T>& x) { return neg(x); }

#define LOOM_SCALAR_OPERATOR(op, name, expr_ts, expr_st)                                          \
  /** Tensor op scalar, elementwise. */                                                             \
  template <class T, class S, class = std::enable_if_t<std::is_arithmetic_v<S>>>                   \
  Tensor<T> operator op(const Tensor<T>& x, S s) {                                                  \
    using C = compute_t<T>;                                                                         \
    C c = C(s);                                                                                     \
    return detail::unary_op<T>(name, x, [c](C v) { return expr_ts; });                              \
  }                                                                                                 \
  /** Scalar op tensor, elementwise. */                                                             \
  template <class T, class S, class = std::enable_if_t<std::is_arithmetic_v<S>>>                   \
  Tensor<T> operator op(S s, const Tensor<T>& x) {                                                  \
    using C = compute_t<T>;                                                                         \
    C c = C(s);                                                                                     \
    return detail::unary_op<T>(name, x, [c](C v) { return expr_st; });                              \
  }
LOOM_SCALAR_OPERATOR(+, "add", v + c, c + v)
LOOM_SCALAR_OPERATOR(-, "sub", v - c, c - v)
LOOM_SCALAR_OPERATOR(*, "mul", v * c, c * v)
LOOM_SCALAR_OPERATOR(/, "div", v / c, c / v)
#undef LOOM_SCALAR_OPERATOR

}  // namespace loom
