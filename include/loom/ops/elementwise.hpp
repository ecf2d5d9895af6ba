#pragma once
/// @file elementwise.hpp
/// Elementwise ops with NumPy broadcasting: arithmetic, math functions, activations,
/// comparisons, where and masked_fill, and the arithmetic operators.

#include <cmath>
#include <type_traits>
#include <vector>

#include "loom/backend/cpu/elementwise.hpp"
#include "loom/core/math.hpp"
#include "loom/ops/common.hpp"
#include "loom/ops/gpu.hpp"
#include "loom/ops/reduce.hpp"

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

/// True for the element type the GPU computes in (float): ops try their CUDA path only then.
template <class T>
inline constexpr bool gpu_type = std::is_same_v<T, float>;

}  // namespace detail

// Each op below keeps its forward and its backward together: the forward computes `out`, then
// detail::record(...) registers the backward closure, which receives dL/dout (`g`) and returns
// dL/dinput for each input. Gradients of broadcast inputs are summed back to their shapes.

template <class T> using Grads = std::vector<Tensor<T>>;

namespace detail {
// g * f(a, b), with a and b broadcast to g's shape, summed back to `shape`.
template <class T, class F>
Tensor<T> grad_of(const char* op, const Tensor<T>& g, const Tensor<T>& a, const Tensor<T>& b, const Shape& shape, F f) {
  Shape s = g.shape();
  Tensor<T> out = Tensor<T>::empty(s);
  StridedLayout<4> L(s, {out.strides(), g.strides(), broadcast_strides(a.shape(), a.strides(), s),
                         broadcast_strides(b.shape(), b.strides(), s)});
  (void)op;
  cpu::map_ternary(out.data(), g.data(), a.data(), b.data(), L, f);
  return sum_to_shape(out, shape);
}
}  // namespace detail

namespace detail {
// A binary op on the GPU: forward out = f(a, b), backward through the gradient maps ga and gb
// (each then summed back to its input's shape). Add and sub save nothing; the rest save a and b.
inline Tensor<float> gpu_binary(const char* name, cuda::Binary op, const Tensor<float>& a, const Tensor<float>& b) {
  Tensor<float> out = gpu::binary(op, a, b, name);
  using G = cuda::BinaryGrad;
  if (op == cuda::Binary::add || op == cuda::Binary::sub) {
    record<float>(name, out, {&a, &b}, [sa = a.shape(), sb = b.shape(), op](const Tensor<float>& g) {
      Tensor<float> db = sum_to_shape(g, sb);
      return Grads<float>{sum_to_shape(g, sa), op == cuda::Binary::add ? db : gpu::unary(cuda::Unary::neg, 0, db)};
    });
    return out;
  }
  G ga = op == cuda::Binary::mul ? G::g_times_b : op == cuda::Binary::div ? G::g_over_b : op == cuda::Binary::pow ? G::pow_da
       : op == cuda::Binary::maximum ? G::max_da : G::min_da;
  G gb = op == cuda::Binary::mul ? G::g_times_a : op == cuda::Binary::div ? G::div_db : op == cuda::Binary::pow ? G::pow_db
       : op == cuda::Binary::maximum ? G::max_db : G::min_db;
  record<float>(name, out, {&a, &b}, [name, ga, gb, sa = SavedTensor<float>(a), sb = SavedTensor<float>(b)](const Tensor<float>& g) {
    const Tensor<float>&x = sa.get(name), &y = sb.get(name);
    return Grads<float>{sum_to_shape(gpu::binary_backward(ga, g, x, y), x.shape()),
                        sum_to_shape(gpu::binary_backward(gb, g, x, y), y.shape())};
  });
  return out;
}
}  // namespace detail

// --- Binary arithmetic (broadcasting) ---------------------------------------------------------

/// a + b, broadcast.
template <class T>
Tensor<T> add(const Tensor<T>& a, const Tensor<T>& b) {
  if constexpr (detail::gpu_type<T>) if (detail::on_cuda<T>("add", a, b)) return detail::gpu_binary("add", cuda::Binary::add, a, b);
  auto out = detail::binary_op<T>("add", a, b, [](auto x, auto y) { return x + y; });
  // backward: da = g, db = g
  detail::record<T>("add", out, {&a, &b}, [sa = a.shape(), sb = b.shape()](const Tensor<T>& g) {
    return Grads<T>{detail::sum_to_shape(g, sa), detail::sum_to_shape(g, sb)};
  });
  return out;
}
/// a - b, broadcast.
template <class T>
Tensor<T> sub(const Tensor<T>& a, const Tensor<T>& b) {
  if constexpr (detail::gpu_type<T>) if (detail::on_cuda<T>("sub", a, b)) return detail::gpu_binary("sub", cuda::Binary::sub, a, b);
  auto out = detail::binary_op<T>("sub", a, b, [](auto x, auto y) { return x - y; });
  // backward: da = g, db = -g
  detail::record<T>("sub", out, {&a, &b}, [sa = a.shape(), sb = b.shape()](const Tensor<T>& g) {
    return Grads<T>{detail::sum_to_shape(g, sa), neg(detail::sum_to_shape(g, sb))};
  });
  return out;
}
/// a * b, broadcast.
template <class T>
Tensor<T> mul(const Tensor<T>& a, const Tensor<T>& b) {
  if constexpr (detail::gpu_type<T>) if (detail::on_cuda<T>("mul", a, b)) return detail::gpu_binary("mul", cuda::Binary::mul, a, b);
  auto out = detail::binary_op<T>("mul", a, b, [](auto x, auto y) { return x * y; });
  // backward: da = g * b, db = g * a
  detail::record<T>("mul", out, {&a, &b}, [sa = SavedTensor<T>(a), sb = SavedTensor<T>(b)](const Tensor<T>& g) {
    const Tensor<T>&x = sa.get("mul"), &y = sb.get("mul");
    auto da = detail::grad_of("mul", g, x, y, x.shape(), [](auto gv, auto, auto yv) { return gv * yv; });
    auto db = detail::grad_of("mul", g, x, y, y.shape(), [](auto gv, auto xv, auto) { return gv * xv; });
    return Grads<T>{da, db};
  });
  return out;
}
/// a / b, broadcast (C++ integer division for integer types).
template <class T>
Tensor<T> div(const Tensor<T>& a, const Tensor<T>& b) {
  if constexpr (detail::gpu_type<T>) if (detail::on_cuda<T>("div", a, b)) return detail::gpu_binary("div", cuda::Binary::div, a, b);
  auto out = detail::binary_op<T>("div", a, b, [](auto x, auto y) { return x / y; });
  // backward: da = g / b, db = -g a / b^2
  detail::record<T>("div", out, {&a, &b}, [sa = SavedTensor<T>(a), sb = SavedTensor<T>(b)](const Tensor<T>& g) {
    const Tensor<T>&x = sa.get("div"), &y = sb.get("div");
    auto da = detail::grad_of("div", g, x, y, x.shape(), [](auto gv, auto, auto yv) { return gv / yv; });
    auto db = detail::grad_of("div", g, x, y, y.shape(), [](auto gv, auto xv, auto yv) { return -gv * xv / (yv * yv); });
    return Grads<T>{da, db};
  });
  return out;
}
/// a ^ b elementwise, broadcast.
template <class T>
Tensor<T> pow(const Tensor<T>& a, const Tensor<T>& b) {
  detail::require_floating<T>("pow");
  if constexpr (detail::gpu_type<T>) if (detail::on_cuda<T>("pow", a, b)) return detail::gpu_binary("pow", cuda::Binary::pow, a, b);
  auto out = detail::binary_op<T>("pow", a, b, [](auto x, auto y) { return std::pow(x, y); });
  // backward: da = g b a^(b-1), db = g a^b log(a)
  detail::record<T>("pow", out, {&a, &b}, [sa = SavedTensor<T>(a), sb = SavedTensor<T>(b)](const Tensor<T>& g) {
    const Tensor<T>&x = sa.get("pow"), &y = sb.get("pow");
    auto da = detail::grad_of("pow", g, x, y, x.shape(),
                              [](auto gv, auto xv, auto yv) { return gv * yv * std::pow(xv, yv - decltype(yv)(1)); });
    auto db = detail::grad_of("pow", g, x, y, y.shape(),
                              [](auto gv, auto xv, auto yv) { return gv * std::pow(xv, yv) * std::log(xv); });
    return Grads<T>{da, db};
  });
  return out;
}
/// The larger of a and b elementwise, broadcast (NaN if either is NaN).
/// Gradient: to the larger input; split evenly on ties.
template <class T>
Tensor<T> maximum(const Tensor<T>& a, const Tensor<T>& b) {
  if constexpr (detail::gpu_type<T>) if (detail::on_cuda<T>("maximum", a, b)) return detail::gpu_binary("maximum", cuda::Binary::maximum, a, b);
  auto out = detail::binary_op<T>("maximum", a, b, [](auto x, auto y) { return (x != x || x > y) ? x : y; });
  detail::record<T>("maximum", out, {&a, &b}, [sa = SavedTensor<T>(a), sb = SavedTensor<T>(b)](const Tensor<T>& g) {
    const Tensor<T>&x = sa.get("maximum"), &y = sb.get("maximum");
    auto share = [](auto gv, auto mine, auto other) {
      return mine > other ? gv : (mine == other ? gv / decltype(gv)(2) : decltype(gv)(0));
    };
    auto da = detail::grad_of("maximum", g, x, y, x.shape(), share);
    auto db = detail::grad_of("maximum", g, x, y, y.shape(), [share](auto gv, auto xv, auto yv) { return share(gv, yv, xv); });
    return Grads<T>{da, db};
  });
  return out;
}
/// The smaller of a and b elementwise, broadcast (NaN if either is NaN).
/// Gradient: to the smaller input; split evenly on ties.
template <class T>
Tensor<T> minimum(const Tensor<T>& a, const Tensor<T>& b) {
  if constexpr (detail::gpu_type<T>) if (detail::on_cuda<T>("minimum", a, b)) return detail::gpu_binary("minimum", cuda::Binary::minimum, a, b);
  auto out = detail::binary_op<T>("minimum", a, b, [](auto x, auto y) { return (x != x || x < y) ? x : y; });
  detail::record<T>("minimum", out, {&a, &b}, [sa = SavedTensor<T>(a), sb = SavedTensor<T>(b)](const Tensor<T>& g) {
    const Tensor<T>&x = sa.get("minimum"), &y = sb.get("minimum");
    auto share = [](auto gv, auto mine, auto other) {
      return mine < other ? gv : (mine == other ? gv / decltype(gv)(2) : decltype(gv)(0));
    };
    auto da = detail::grad_of("minimum", g, x, y, x.shape(), share);
    auto db = detail::grad_of("minimum", g, x, y, y.shape(), [share](auto gv, auto xv, auto yv) { return share(gv, yv, xv); });
    return Grads<T>{da, db};
  });
  return out;
}

// --- Unary math and activations -----------------------------------------------------------

namespace detail {
template <class D, class = void> struct has_array_grad : std::false_type {};
template <class D> struct has_array_grad<D, std::void_t<decltype(D::vectorized)>> : std::true_type {};

// dx = g * dfdx(x, y) elementwise. When everything is contiguous float/double and the derivative
// has an Eigen array form, one vectorised pass; otherwise the strided scalar loop.
template <class T, class D>
Tensor<T> unary_grad(const char* op, const Tensor<T>& g, const Tensor<T>& x, const Tensor<T>& y, D dfdx) {
  if constexpr (has_array_grad<D>::value && (std::is_same_v<T, float> || std::is_same_v<T, double>)) {
    if (g.shape() == x.shape() && g.is_contiguous() && x.is_contiguous() && y.is_contiguous()) {
      using Arr = Eigen::Array<T, Eigen::Dynamic, 1>;
      Tensor<T> dx = Tensor<T>::empty(x.shape());
      parallel_for(0, x.numel(), parallel_grain, [&](int64_t lo, int64_t hi) {
        Eigen::Map<const Arr> gv(g.data() + lo, hi - lo), xv(x.data() + lo, hi - lo), yv(y.data() + lo, hi - lo);
        Eigen::Map<Arr>(dx.data() + lo, hi - lo) = gv * dfdx.array(xv, yv);
      });
      return dx;
    }
  }
  return grad_of(op, g, x, y, x.shape(), [dfdx](auto gv, auto a, auto b) { return gv * dfdx(a, b); });
}

// A unary op on the GPU: out = f(x; alpha), backward dx = g * f'(x, out; alpha) in one kernel.
// True when the derivative of the unary op is written in terms of its output y (exp, sqrt,
// rsqrt, tanh, sigmoid); the others need only the input x. Backward saves just that one.
inline bool grad_needs_output(cuda::Unary code) {
  using U = cuda::Unary;
  return code == U::exp || code == U::sqrt || code == U::rsqrt || code == U::tanh || code == U::sigmoid;
}

inline Tensor<float> gpu_unary(const char* name, cuda::Unary code, double alpha, const Tensor<float>& x) {
  Tensor<float> out = gpu::unary(code, alpha, x);
  const bool needs_y = grad_needs_output(code);
  const Tensor<float>& keep = needs_y ? out : x;
  record<float>(name, out, {&x}, [name, code, alpha, needs_y, sk = SavedTensor<float>(keep)](const Tensor<float>& g) {
    const Tensor<float>& k = sk.get(name);
    return Grads<float>{needs_y ? gpu::unary_backward(code, alpha, g, k, k) : gpu::unary_backward_x(code, alpha, g, k)};
  });
  return out;
}

// out = f(x) with backward dx = g * dfdx(x, out), computed in one pass over (g, x, out). On the
// GPU the same op runs as the kernel `code` (with its scalar alpha).
template <class T, class F, class D>
Tensor<T> unary_with_grad(const char* op, const Tensor<T>& x, F f, D dfdx, cuda::Unary code, double alpha = 0) {
  if constexpr (gpu_type<T>) if (on_cuda<T>(op, x)) return gpu_unary(op, code, alpha, x);
  auto out = unary_op<T>(op, x, f);
  // Save one tensor: y when dfdx reads y, else x. It is passed as both arguments; dfdx reads
  // only the one it needs (exp's uses y, gelu's uses x, ...).
  record<T>(op, out, {&x}, [op, sk = SavedTensor<T>(grad_needs_output(code) ? out : x), dfdx](const Tensor<T>& g) {
    const Tensor<T>& k = sk.get(op);
    return Grads<T>{unary_grad(op, g, k, k, dfdx)};
  });
  return out;
}

// Derivatives with an Eigen array form (x: input, y: output).
struct ExpGrad {
  static constexpr bool vectorized = true;
  template <class C> C operator()(C, C y) const { return y; }
  template <class A, class B> auto array(const A&, const B& y) const { return y; }
};
struct TanhGrad {
  static constexpr bool vectorized = true;
  template <class C> C operator()(C, C y) const { return C(1) - y * y; }
  template <class A, class B> auto array(const A&, const B& y) const { return 1 - y.square(); }
};
struct SigmoidGrad {
  static constexpr bool vectorized = true;
  template <class C> C operator()(C, C y) const { return y * (C(1) - y); }
  template <class A, class B> auto array(const A&, const B& y) const { return y * (1 - y); }
};
struct ReluGrad {
  static constexpr bool vectorized = true;
  template <class C> C operator()(C x, C) const { return C(x > C(0)); }
  template <class A, class B> auto array(const A& x, const B&) const {
    using S = typename A::Scalar;
    return (x > S(0)).template cast<S>();
  }
};
// d/dx 0.5 x (1 + tanh u), u = k (x + c x^3):  0.5 (1 + tanh u) + 0.5 x (1 - tanh^2 u) k (1 + 3 c x^2)
struct GeluTanhGrad {
  static constexpr bool vectorized = true;
  template <class C> C operator()(C v, C) const {
    const C k = C(math::sqrt_2_over_pi), c = C(0.044715);
    C t = std::tanh(k * (v + c * v * v * v));
    return C(0.5) * (C(1) + t) + C(0.5) * v * (C(1) - t * t) * k * (C(1) + C(3) * c * v * v);
  }
  template <class A, class B> auto array(const A& x, const B&) const {
    using S = typename A::Scalar;
    const S k = S(math::sqrt_2_over_pi), c = S(0.044715);
    auto t = (k * (x + c * x.cube())).tanh().eval();
    return (S(0.5) * (1 + t) + S(0.5) * x * (1 - t.square()) * k * (1 + S(3) * c * x.square())).eval();
  }
};

// out = f(x) with backward dx = g * k for a constant k (nothing saved); on the GPU the kernel
// `code` with its scalar alpha.
template <class T, class F>
Tensor<T> unary_const_grad(const char* op, const Tensor<T>& x, F f, double k, cuda::Unary code, double alpha) {
  if constexpr (gpu_type<T>) {
    if (on_cuda<T>(op, x)) {
      Tensor<float> out = gpu::unary(code, alpha, x);
      record<float>(op, out, {&x}, [k](const Tensor<float>& g) {
        return Grads<float>{k == 1.0 ? g : gpu::unary(cuda::Unary::mul_scalar, k, g)};
      });
      return out;
    }
  }
  auto out = unary_op<T>(op, x, f);
  record<T>(op, out, {&x}, [k](const Tensor<T>& g) {
    using C = compute_t<T>;
    C kc = C(k);
    return Grads<T>{k == 1.0 ? g : unary_op<T>("mul", g, [kc](C v) { return v * kc; })};
  });
  return out;
}
}  // namespace detail

/// x ^ exponent elementwise.
template <class T>
Tensor<T> pow(const Tensor<T>& x, double exponent) {
  detail::require_floating<T>("pow");
  using C = compute_t<T>;
  C e = C(exponent);
  if (exponent == 2.0) {
    return detail::unary_with_grad("pow", x, [](C v) { return v * v; }, [](C v, C) { return C(2) * v; },
                                   cuda::Unary::pow_scalar, 2.0);
  }
  return detail::unary_with_grad("pow", x, [e](C v) { return std::pow(v, e); },
                                 [e](C v, C) { return e * std::pow(v, e - C(1)); }, cuda::Unary::pow_scalar, exponent);
}

/// -x.
template <class T> Tensor<T> neg(const Tensor<T>& x) {
  if constexpr (detail::gpu_type<T>)
    if (detail::on_cuda<T>("neg", x)) return detail::unary_const_grad<T>("neg", x, detail::NegFn{}, -1.0, cuda::Unary::neg, 0);
  auto out = detail::unary_op<T>("neg", x, detail::NegFn{});
  detail::record<T>("neg", out, {&x}, [](const Tensor<T>& g) { return Grads<T>{neg(g)}; });  // dx = -g
  return out;
}
/// |x| (gradient sign(x), 0 at 0).
template <class T> Tensor<T> abs(const Tensor<T>& x) {
  using C = compute_t<T>;
  return detail::unary_with_grad("abs", x, detail::AbsFn{}, [](C v, C) { return C(v > C(0)) - C(v < C(0)); }, cuda::Unary::abs);
}
/// e^x (gradient e^x).
template <class T> Tensor<T> exp(const Tensor<T>& x) {
  detail::require_floating<T>("exp");
  using C = compute_t<T>;
  (void)sizeof(C);
  return detail::unary_with_grad("exp", x, detail::ExpFn{}, detail::ExpGrad{}, cuda::Unary::exp);
}
/// Natural logarithm (gradient 1/x).
template <class T> Tensor<T> log(const Tensor<T>& x) {
  detail::require_floating<T>("log");
  using C = compute_t<T>;
  return detail::unary_with_grad("log", x, detail::LogFn{}, [](C v, C) { return C(1) / v; }, cuda::Unary::log);
}
/// Square root (gradient 1 / (2 sqrt(x))).
template <class T> Tensor<T> sqrt(const Tensor<T>& x) {
  detail::require_floating<T>("sqrt");
  using C = compute_t<T>;
  return detail::unary_with_grad("sqrt", x, detail::SqrtFn{}, [](C, C y) { return C(0.5) / y; }, cuda::Unary::sqrt);
}
/// 1 / sqrt(x) (gradient -x^(-3/2) / 2).
template <class T> Tensor<T> rsqrt(const Tensor<T>& x) {
  detail::require_floating<T>("rsqrt");
  using C = compute_t<T>;
  return detail::unary_with_grad("rsqrt", x, detail::RsqrtFn{}, [](C, C y) { return C(-0.5) * y * y * y; }, cuda::Unary::rsqrt);
}
/// Hyperbolic tangent (gradient 1 - tanh^2).
template <class T> Tensor<T> tanh(const Tensor<T>& x) {
  detail::require_floating<T>("tanh");
  using C = compute_t<T>;
  (void)sizeof(C);
  return detail::unary_with_grad("tanh", x, detail::TanhFn{}, detail::TanhGrad{}, cuda::Unary::tanh);
}
/// max(x, 0) (gradient 1 where x > 0).
template <class T> Tensor<T> relu(const Tensor<T>& x) {
  using C = compute_t<T>;
  (void)sizeof(C);
  return detail::unary_with_grad("relu", x, detail::ReluFn{}, detail::ReluGrad{}, cuda::Unary::relu);
}
/// 1 / (1 + e^-x) (gradient s (1 - s)).
template <class T> Tensor<T> sigmoid(const Tensor<T>& x) {
  detail::require_floating<T>("sigmoid");
  using C = compute_t<T>;
  (void)sizeof(C);
  return detail::unary_with_grad("sigmoid", x, detail::SigmoidFn{}, detail::SigmoidGrad{}, cuda::Unary::sigmoid);
}
/// GELU: exact (erf) by default, or the tanh approximation GPT-2 uses.
template <class T> Tensor<T> gelu(const Tensor<T>& x, GeluApprox approx = GeluApprox::none) {
  detail::require_floating<T>("gelu");
  using C = compute_t<T>;
  if (approx == GeluApprox::tanh) return detail::unary_with_grad("gelu", x, detail::GeluTanhFn{}, detail::GeluTanhGrad{}, cuda::Unary::gelu_tanh);
  // d/dx x Phi(x) = Phi(x) + x phi(x)
  return detail::unary_with_grad("gelu", x, detail::GeluErfFn{}, [](C v, C) {
    C cdf = C(0.5) * (C(1) + std::erf(v * C(math::inv_sqrt_2)));
    C pdf = std::exp(C(-0.5) * v * v) * C(0.3989422804014327);  // 1 / sqrt(2 pi)
    return cdf + v * pdf;
  }, cuda::Unary::gelu_erf);
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
  // backward: da = g where cond, db = g elsewhere
  detail::record<T>("where", out, {&a, &b}, [cond, sa = a.shape(), sb = b.shape()](const Tensor<T>& g) {
    auto zero = zeros<T>({});
    return Grads<T>{detail::sum_to_shape(where(cond, g, zero), sa), detail::sum_to_shape(where(cond, zero, g), sb)};
  });
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
  auto out = detail::binary_op<T>("masked_fill", x, mask, [v](C a, bool m) { return m ? v : a; });
  // backward: dx = g, zeroed where the mask replaced x
  detail::record<T>("masked_fill", out, {&x}, [mask](const Tensor<T>& g) {
    return Grads<T>{detail::binary_op<T>("masked_fill", g, mask, [](C a, bool m) { return m ? C(0) : a; })};
  });
  return out;
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

#define LOOM_SCALAR_OPERATOR(op, name, expr_ts, expr_st, grad_ts, grad_st)                      \
  /** Tensor op scalar, elementwise. */                                                             \
  template <class T, class S, class = std::enable_if_t<std::is_arithmetic_v<S>>>                   \
  Tensor<T> operator op(const Tensor<T>& x, S s) {                                                  \
    using C = compute_t<T>;                                                                         \
    C c = C(s);                                                                                     \
    return grad_ts;                                                                                 \
  }                                                                                                 \
  /** Scalar op tensor, elementwise. */                                                             \
  template <class T, class S, class = std::enable_if_t<std::is_arithmetic_v<S>>>                   \
  Tensor<T> operator op(S s, const Tensor<T>& x) {                                                  \
    using C = compute_t<T>;                                                                         \
    C c = C(s);                                                                                     \
    return grad_st;                                                                                 \
  }
// Constant derivatives save nothing for backward; only c / x keeps x.
LOOM_SCALAR_OPERATOR(+, "add", v + c, c + v,
                     detail::unary_const_grad<T>("add", x, [c](C v) { return v + c; }, 1.0, cuda::Unary::add_scalar, double(c)),
                     detail::unary_const_grad<T>("add", x, [c](C v) { return c + v; }, 1.0, cuda::Unary::add_scalar, double(c)))
LOOM_SCALAR_OPERATOR(-, "sub", v - c, c - v,
                     detail::unary_const_grad<T>("sub", x, [c](C v) { return v - c; }, 1.0, cuda::Unary::add_scalar, -double(c)),
                     detail::unary_const_grad<T>("sub", x, [c](C v) { return c - v; }, -1.0, cuda::Unary::rsub_scalar, double(c)))
LOOM_SCALAR_OPERATOR(*, "mul", v * c, c * v,
                     detail::unary_const_grad<T>("mul", x, [c](C v) { return v * c; }, double(c), cuda::Unary::mul_scalar, double(c)),
                     detail::unary_const_grad<T>("mul", x, [c](C v) { return c * v; }, double(c), cuda::Unary::mul_scalar, double(c)))
LOOM_SCALAR_OPERATOR(/, "div", v / c, c / v,
                     detail::unary_const_grad<T>("div", x, [c](C v) { return v / c; }, 1.0 / double(c), cuda::Unary::div_scalar, double(c)),
                     detail::unary_with_grad("div", x, [c](C v) { return c / v; }, [c](C v, C) { return -c / (v * v); },
                                             cuda::Unary::rdiv_scalar, double(c)))
#undef LOOM_SCALAR_OPERATOR

}  // namespace loom
