#pragma once
/// @file elementwise.hpp
/// CPU elementwise kernels over strided operands (broadcasting is a stride of 0).
///
/// Each kernel walks a StridedLayout in runs along the innermost dimension. A run where every
/// operand is contiguous becomes a plain loop the compiler vectorises; a functor that provides
/// an Eigen array form (`vectorized`) gets Eigen's SIMD exp/tanh/log on contiguous data.

#include <cmath>
#include <type_traits>

#include "loom/eigen.hpp"

#include "loom/backend/op_codes.hpp"
#include "loom/core/dtype.hpp"
#include "loom/core/error.hpp"
#include "loom/core/math.hpp"
#include "loom/core/parallel.hpp"

namespace loom::cpu {

namespace detail {
// Array forms run over runs of this many elements: their temporaries (.eval()) then stay small,
// in cache and in malloc's heap (a temporary the size of a thread's whole share, ~1 MiB, was
// mapped and unmapped by glibc on every call: a page fault per 4 KiB).
inline constexpr int64_t array_run = 4096;
template <class F, class = void> struct has_array_form : std::false_type {};
template <class F> struct has_array_form<F, std::void_t<decltype(F::vectorized)>> : std::true_type {};
}  // namespace detail

/// out = f(a) elementwise. Operand 0 of L is out, operand 1 is a. f takes and returns compute_t.
template <class TO, class TA, class F>
void map_unary(TO* out, const TA* a, const StridedLayout<2>& L, F f) {
  using C = compute_t<TA>;
  if constexpr (detail::has_array_form<F>::value && std::is_same_v<TO, TA> &&
                (std::is_same_v<TA, float> || std::is_same_v<TA, double>)) {
    if (L.ndim == 1 && L.stride[0][0] == 1 && L.stride[1][0] == 1) {
      using Arr = Eigen::Array<TA, Eigen::Dynamic, 1>;
      parallel_for(0, L.size[0], parallel_grain, [&](int64_t lo, int64_t hi) {
        for (int64_t i = lo; i < hi; i += detail::array_run) {  // see array_run
          const int64_t n = std::min(detail::array_run, hi - i);
          Eigen::Map<Arr>(out + i, n) = f.array(Eigen::Map<const Arr>(a + i, n));
        }
      });
      return;
    }
  }
  strided_for(L, [&](const int64_t* off, int64_t n, const int64_t* st) {
    TO* o = out + off[0];
    const TA* x = a + off[1];
    if (st[0] == 1 && st[1] == 1) {
      for (int64_t i = 0; i < n; ++i) o[i] = loom::detail::convert<TO>(f(C(x[i])));
    } else {
      for (int64_t i = 0; i < n; ++i) o[i * st[0]] = loom::detail::convert<TO>(f(C(x[i * st[1]])));
    }
  });
}

/// out = f(a, b) elementwise. Operands of L: out, a, b.
template <class TO, class TA, class TB, class F>
void map_binary(TO* out, const TA* a, const TB* b, const StridedLayout<3>& L, F f) {
  using CA = compute_t<TA>;
  using CB = compute_t<TB>;
  strided_for(L, [&](const int64_t* off, int64_t n, const int64_t* st) {
    TO* o = out + off[0];
    const TA* x = a + off[1];
    const TB* y = b + off[2];
    if (st[0] == 1 && st[1] == 1 && st[2] == 1) {
      for (int64_t i = 0; i < n; ++i) o[i] = loom::detail::convert<TO>(f(CA(x[i]), CB(y[i])));
    } else if (st[0] == 1 && st[1] == 1 && st[2] == 0) {  // b broadcast along the run (a row + a bias)
      const CB yv = CB(*y);
      for (int64_t i = 0; i < n; ++i) o[i] = loom::detail::convert<TO>(f(CA(x[i]), yv));
    } else if (st[0] == 1 && st[1] == 0 && st[2] == 1) {
      const CA xv = CA(*x);
      for (int64_t i = 0; i < n; ++i) o[i] = loom::detail::convert<TO>(f(xv, CB(y[i])));
    } else {
      for (int64_t i = 0; i < n; ++i)
        o[i * st[0]] = loom::detail::convert<TO>(f(CA(x[i * st[1]]), CB(y[i * st[2]])));
    }
  });
}

/// out = f(a, b, c) elementwise. Operands of L: out, a, b, c.
template <class TO, class TA, class TB, class TC, class F>
void map_ternary(TO* out, const TA* a, const TB* b, const TC* c, const StridedLayout<4>& L, F f) {
  strided_for(L, [&](const int64_t* off, int64_t n, const int64_t* st) {
    for (int64_t i = 0; i < n; ++i) {
      out[off[0] + i * st[0]] = loom::detail::convert<TO>(
          f(compute_t<TA>(a[off[1] + i * st[1]]), compute_t<TB>(b[off[2] + i * st[2]]),
            compute_t<TC>(c[off[3] + i * st[3]])));
    }
  });
}

// --- The op codes of backend/op_codes.hpp, one formula each (the same as elementwise.cuh) ------
//
// Contract (shared with the CUDA kernels): out, dx and the inputs are strided operands of one
// StridedLayout; every output element is written (never added to). The floating element types
// run every code; integer types run the arithmetic ones (copy, neg, abs, relu, the *_scalar
// maps but pow, and add, sub, mul, div, maximum, minimum).

namespace detail {
// Unary maps with an Eigen array form (`vectorized`): SIMD exp/tanh/log on contiguous data.
#define LOOM_UNARY_FUNCTOR(Name, scalar_expr, array_expr)                \
  struct Name {                                                          \
    static constexpr bool vectorized = true;                             \
    template <class X> X operator()(X x) const { return scalar_expr; }   \
    template <class A> auto array(const A& x) const { return array_expr; } \
  };
LOOM_UNARY_FUNCTOR(NegFn, -x, -x)
LOOM_UNARY_FUNCTOR(ExpFn, std::exp(x), x.exp())
LOOM_UNARY_FUNCTOR(LogFn, std::log(x), x.log())
LOOM_UNARY_FUNCTOR(SqrtFn, std::sqrt(x), x.sqrt())
LOOM_UNARY_FUNCTOR(RsqrtFn, X(1) / std::sqrt(x), x.rsqrt())
LOOM_UNARY_FUNCTOR(TanhFn, std::tanh(x), x.tanh())
LOOM_UNARY_FUNCTOR(AbsFn, std::abs(x), x.abs())
LOOM_UNARY_FUNCTOR(ReluFn, x > X(0) ? x : X(0), x.max(typename A::Scalar(0)))
LOOM_UNARY_FUNCTOR(SigmoidFn, math::sigmoid(x), (typename A::Scalar(1) + (-x).exp()).inverse())
LOOM_UNARY_FUNCTOR(SiluFn, math::silu(x), x * (typename A::Scalar(1) + (-x).exp()).inverse())
LOOM_UNARY_FUNCTOR(GeluTanhFn, math::gelu_tanh(x),
                   typename A::Scalar(0.5) * x *
                       (typename A::Scalar(1) +
                        (typename A::Scalar(math::sqrt_2_over_pi) * (x + typename A::Scalar(0.044715) * x.cube())).tanh()))
#undef LOOM_UNARY_FUNCTOR

// Derivatives g * f'(s) with an Eigen array form, where s is the tensor the backward keeps
// (y for the codes of grad_needs_output, else x).
struct ExpGrad {  // f' = y
  static constexpr bool vectorized = true;
  template <class C> C operator()(C y) const { return y; }
  template <class A> auto array(const A& y) const { return y; }
};
struct TanhGrad {  // f' = 1 - y^2
  static constexpr bool vectorized = true;
  template <class C> C operator()(C y) const { return C(1) - y * y; }
  template <class A> auto array(const A& y) const { return 1 - y.square(); }
};
struct SigmoidGrad {  // f' = y (1 - y)
  static constexpr bool vectorized = true;
  template <class C> C operator()(C y) const { return y * (C(1) - y); }
  template <class A> auto array(const A& y) const { return y * (1 - y); }
};
struct ReluGrad {  // f' = [x > 0]
  static constexpr bool vectorized = true;
  template <class C> C operator()(C x) const { return C(x > C(0)); }
  template <class A> auto array(const A& x) const { return (x > typename A::Scalar(0)).template cast<typename A::Scalar>(); }
};
// d/dx 0.5 x (1 + tanh u), u = k (x + c x^3):  0.5 (1 + tanh u) + 0.5 x (1 - tanh^2 u) k (1 + 3 c x^2)
struct GeluTanhGrad {
  static constexpr bool vectorized = true;
  template <class C> C operator()(C v) const {
    const C k = C(math::sqrt_2_over_pi), c = C(0.044715);
    C t = std::tanh(k * (v + c * v * v * v));
    return C(0.5) * (C(1) + t) + C(0.5) * v * (C(1) - t * t) * k * (C(1) + C(3) * c * v * v);
  }
  template <class A> auto array(const A& x) const {
    using S = typename A::Scalar;
    const S k = S(math::sqrt_2_over_pi), c = S(0.044715);
    auto t = (k * (x + c * x.cube())).tanh().eval();
    return (S(0.5) * (1 + t) + S(0.5) * x * (1 - t.square()) * k * (1 + S(3) * c * x.square())).eval();
  }
};
struct SiluGrad {  // f' = s (1 + x (1 - s)), s = sigmoid(x)
  static constexpr bool vectorized = true;
  template <class C> C operator()(C x) const { return math::silu_grad(x); }
  template <class A> auto array(const A& x) const {
    auto s = (typename A::Scalar(1) + (-x).exp()).inverse().eval();
    return (s * (1 + x * (1 - s))).eval();
  }
};

// dx = g * d(s): one Eigen pass when everything is contiguous float/double and d has an array
// form, else the strided loop.
template <class T, class D>
void grad_map(T* dx, const T* g, const T* s, const StridedLayout<3>& L, D d) {
  if constexpr (has_array_form<D>::value && (std::is_same_v<T, float> || std::is_same_v<T, double>)) {
    if (L.ndim == 1 && L.stride[0][0] == 1 && L.stride[1][0] == 1 && L.stride[2][0] == 1) {
      using Arr = Eigen::Array<T, Eigen::Dynamic, 1>;
      parallel_for(0, L.size[0], parallel_grain, [&](int64_t lo, int64_t hi) {
        for (int64_t i = lo; i < hi; i += array_run) {  // see array_run
          const int64_t n = std::min(array_run, hi - i);
          Eigen::Map<Arr>(dx + i, n) = Eigen::Map<const Arr>(g + i, n) * d.array(Eigen::Map<const Arr>(s + i, n));
        }
      });
      return;
    }
  }
  map_binary(dx, g, s, L, [d](auto gv, auto sv) { return gv * d(sv); });
}
}  // namespace detail

/// out = f(x; alpha) for the unary map `op`; L holds (out, x).
template <class T>
void unary(UnaryOp op, double alpha, T* out, const T* x, const StridedLayout<2>& L) {
  using C = compute_t<T>;
  const C a = C(alpha);
  using U = UnaryOp;
  switch (op) {  // the maps integers have too
    case U::copy: return map_unary(out, x, L, [](C v) { return v; });
    case U::neg: return map_unary(out, x, L, detail::NegFn{});
    case U::abs: return map_unary(out, x, L, detail::AbsFn{});
    case U::relu: return map_unary(out, x, L, detail::ReluFn{});
    case U::add_scalar: return map_unary(out, x, L, [a](C v) { return v + a; });
    case U::mul_scalar: return map_unary(out, x, L, [a](C v) { return v * a; });
    case U::div_scalar: return map_unary(out, x, L, [a](C v) { return v / a; });
    case U::rsub_scalar: return map_unary(out, x, L, [a](C v) { return a - v; });
    case U::rdiv_scalar: return map_unary(out, x, L, [a](C v) { return a / v; });
    default: break;
  }
  if constexpr (is_floating_v<T>) {
    switch (op) {
      case U::exp: return map_unary(out, x, L, detail::ExpFn{});
      case U::log: return map_unary(out, x, L, detail::LogFn{});
      case U::sqrt: return map_unary(out, x, L, detail::SqrtFn{});
      case U::rsqrt: return map_unary(out, x, L, detail::RsqrtFn{});
      case U::tanh: return map_unary(out, x, L, detail::TanhFn{});
      case U::sigmoid: return map_unary(out, x, L, detail::SigmoidFn{});
      case U::silu: return map_unary(out, x, L, detail::SiluFn{});
      case U::gelu_tanh: return map_unary(out, x, L, detail::GeluTanhFn{});
      case U::gelu_erf: return map_unary(out, x, L, [](C v) { return math::gelu_erf(v); });
      case U::log_sigmoid: return map_unary(out, x, L, [](C v) { return math::log_sigmoid(v); });
      case U::pow_scalar:
        if (alpha == 2.0) return map_unary(out, x, L, [](C v) { return v * v; });
        return map_unary(out, x, L, [a](C v) { return C(std::pow(v, a)); });
      default: break;
    }
  }
  throw dtype_error(::loom::detail::concat("unary op ", int(op), " needs a floating element type"));
}

/// dx = g * f'(s; alpha) for the unary map `op`, where s is y = f(x) for the codes of
/// grad_needs_output and x for the others; L holds (dx, g, s).
template <class T>
void unary_backward(UnaryOp op, double alpha, T* dx, const T* g, const T* s, const StridedLayout<3>& L) {
  if constexpr (is_floating_v<T>) {
    using C = compute_t<T>;
    const C a = C(alpha);
    using U = UnaryOp;
    auto d = [&](auto f) { detail::grad_map(dx, g, s, L, f); };
    switch (op) {
      case U::copy: case U::add_scalar: return d([](C) { return C(1); });
      case U::neg: case U::rsub_scalar: return d([](C) { return C(-1); });
      case U::mul_scalar: return d([a](C) { return a; });
      case U::div_scalar: return d([a](C) { return C(1) / a; });
      case U::exp: return d(detail::ExpGrad{});
      case U::log: return d([](C x) { return C(1) / x; });
      case U::sqrt: return d([](C y) { return C(0.5) / y; });
      case U::rsqrt: return d([](C y) { return C(-0.5) * y * y * y; });
      case U::tanh: return d(detail::TanhGrad{});
      case U::abs: return d([](C x) { return C(x > C(0)) - C(x < C(0)); });
      case U::relu: return d(detail::ReluGrad{});
      case U::sigmoid: return d(detail::SigmoidGrad{});
      case U::silu: return d(detail::SiluGrad{});
      case U::gelu_tanh: return d(detail::GeluTanhGrad{});
      case U::gelu_erf:  // Phi(x) + x phi(x)
        return d([](C x) {
          C cdf = C(0.5) * (C(1) + std::erf(x * C(math::inv_sqrt_2)));
          C pdf = std::exp(C(-0.5) * x * x) * C(0.3989422804014327);  // 1 / sqrt(2 pi)
          return cdf + x * pdf;
        });
      case U::log_sigmoid: return d([](C x) { return math::sigmoid(-x); });  // 1 - sigmoid(x)
      case U::rdiv_scalar: return d([a](C x) { return -a / (x * x); });
      case U::pow_scalar:
        if (alpha == 2.0) return d([](C x) { return C(2) * x; });
        return d([a](C x) { return a * C(std::pow(x, a - C(1))); });
    }
  }
  throw dtype_error(::loom::detail::concat("the backward of unary op ", int(op), " needs a floating element type"));
}

/// out = f(a, b) for the binary map `op`; L holds (out, a, b) with broadcast strides.
template <class T>
void binary(BinaryOp op, T* out, const T* a, const T* b, const StridedLayout<3>& L) {
  using B = BinaryOp;
  switch (op) {
    case B::add: return map_binary(out, a, b, L, [](auto x, auto y) { return x + y; });
    case B::sub: return map_binary(out, a, b, L, [](auto x, auto y) { return x - y; });
    case B::mul: return map_binary(out, a, b, L, [](auto x, auto y) { return x * y; });
    case B::div: return map_binary(out, a, b, L, [](auto x, auto y) { return x / y; });
    case B::maximum: return map_binary(out, a, b, L, [](auto x, auto y) { return (x != x || x > y) ? x : y; });
    case B::minimum: return map_binary(out, a, b, L, [](auto x, auto y) { return (x != x || x < y) ? x : y; });
    case B::pow:
      if constexpr (is_floating_v<T>) {
        return map_binary(out, a, b, L, [](auto x, auto y) { return decltype(x)(std::pow(x, y)); });
      }
      break;
  }
  throw dtype_error("pow needs a floating element type");
}

/// out = f(g, a, b) for the binary gradient map `op`; L holds (out, g, a, b), a and b broadcast.
template <class T>
void binary_backward(BinaryGradOp op, T* out, const T* g, const T* a, const T* b, const StridedLayout<4>& L) {
  if constexpr (is_floating_v<T>) {
    using G = BinaryGradOp;
    auto share = [](auto gv, auto mine, auto other) {  // max/min: to the winner, split on ties
      using C = decltype(gv);
      return mine > other ? gv : (mine == other ? gv / C(2) : C(0));
    };
    auto m = [&](auto f) { map_ternary(out, g, a, b, L, f); };
    switch (op) {
      case G::g_times_b: return m([](auto gv, auto, auto y) { return gv * y; });
      case G::g_times_a: return m([](auto gv, auto x, auto) { return gv * x; });
      case G::g_over_b: return m([](auto gv, auto, auto y) { return gv / y; });
      case G::div_db: return m([](auto gv, auto x, auto y) { return -gv * x / (y * y); });
      case G::pow_da: return m([](auto gv, auto x, auto y) { return gv * y * std::pow(x, y - decltype(y)(1)); });
      case G::pow_db: return m([](auto gv, auto x, auto y) { return gv * std::pow(x, y) * std::log(x); });
      case G::max_da: return m([share](auto gv, auto x, auto y) { return share(gv, x, y); });
      case G::max_db: return m([share](auto gv, auto x, auto y) { return share(gv, y, x); });
      case G::min_da: return m([share](auto gv, auto x, auto y) { return share(gv, -x, -y); });
      case G::min_db: return m([share](auto gv, auto x, auto y) { return share(gv, -y, -x); });
    }
  }
  throw dtype_error("binary op gradients need a floating element type");
}

/// SwiGLU forward over n contiguous elements: out = silu(gate) * up, one pass.
template <class T>
void swiglu_forward(T* out, const T* gate, const T* up, int64_t n) {
  using Arr = Eigen::Array<T, Eigen::Dynamic, 1>;
  parallel_for(0, n, parallel_grain, [&](int64_t lo, int64_t hi) {
    Eigen::Map<const Arr> g(gate + lo, hi - lo), u(up + lo, hi - lo);
    Eigen::Map<Arr>(out + lo, hi - lo) = g * (T(1) + (-g).exp()).inverse() * u;
  });
}

/// SwiGLU backward over n contiguous elements, one pass: with s = sigmoid(gate),
/// dgate = dout * up * s (1 + gate (1 - s)) and dup = dout * gate * s (written, not added to).
template <class T>
void swiglu_backward(T* dgate, T* dup, const T* dout, const T* gate, const T* up, int64_t n) {
  using Arr = Eigen::Array<T, Eigen::Dynamic, 1>;
  parallel_for(0, n, parallel_grain, [&](int64_t lo, int64_t hi) {
    Eigen::Map<const Arr> d(dout + lo, hi - lo), g(gate + lo, hi - lo), u(up + lo, hi - lo);
    const Arr s = (T(1) + (-g).exp()).inverse();
    Eigen::Map<Arr>(dgate + lo, hi - lo) = d * u * s * (T(1) + g * (T(1) - s));
    Eigen::Map<Arr>(dup + lo, hi - lo) = d * g * s;
  });
}

}  // namespace loom::cpu
