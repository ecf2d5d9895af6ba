#pragma once
/// @file elementwise.hpp
/// Elementwise ops with NumPy broadcasting: arithmetic, math functions, activations,
/// comparisons, where and masked_fill, and the arithmetic operators.
///
/// The arithmetic ops and activations are written once, for every device: each names a map of
/// backend/op_codes.hpp, and the seam (backend/kernels.hpp) runs that map's CPU or CUDA kernel.
/// The comparisons, where and masked_fill run on the CPU only (device_error elsewhere).

#include <cmath>
#include <type_traits>
#include <vector>

#include "loom/core/tensor.hpp"

namespace loom {

/// Which GELU formula to use (PyTorch's `approximate` argument).
enum class GeluApprox { none, tanh };

/// The gradients a backward function returns, one per input.
template <class T> using Grads = std::vector<Tensor<T>>;

namespace detail {

template <class T>
void require_floating(const char*) {
  static_assert(is_floating_v<T>, "this op needs a floating element type (float, double, bf16, half)");
}

// --- CPU-only maps with a lambda (masks, comparisons) ---------------------------------------------

// out(shape of x) = f(x), on the CPU.
template <class TO, class T, class F>
Tensor<TO> unary_op(const char* op, const Tensor<T>& x, F f) {
  check_cpu(op, x);
  Tensor<TO> out = Tensor<TO>::empty(x.shape());
  cpu::map_unary(out.data(), x.data(), StridedLayout<2>(x.shape(), {out.strides(), x.strides()}), f);
  return out;
}

// out(broadcast shape) = f(a, b), on the CPU.
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

// --- The maps of op_codes.hpp, on any device ------------------------------------------------------

// out = f(x; alpha) for the unary map `code` (no autograd).
template <class T>
Tensor<T> map(const char* op, UnaryOp code, double alpha, const Tensor<T>& x) {
  const Device d = op_device<T>(op, x);
  Tensor<T> out = Tensor<T>::empty(x.shape(), d);
  kernel::unary(d, code, alpha, out.data(), x.data(), x.shape(), {out.strides(), x.strides()});
  return out;
}

// out = f(x; alpha), with the backward dx = g * f'(s): s is the one tensor kept, y = out for the
// maps whose derivative is written in y (exp, tanh, ...), else x.
template <class T>
Tensor<T> map_with_grad(const char* op, UnaryOp code, double alpha, const Tensor<T>& x) {
  Tensor<T> out = map(op, code, alpha, x);
  record<T>(op, out, {&x}, [op, code, alpha, sk = SavedTensor<T>(grad_needs_output(code) ? out : x)](const Tensor<T>& g) {
    const Tensor<T>& s = sk.get(op);
    Tensor<T> dx = Tensor<T>::empty(s.shape(), s.device());
    kernel::unary_backward(s.device(), code, alpha, dx.data(), g.data(), s.data(), s.shape(),
                           {dx.strides(), broadcast_strides(g.shape(), g.strides(), s.shape()), s.strides()});
    return Grads<T>{dx};
  });
  return out;
}

// out = f(x; alpha) whose derivative is the constant k: the backward dx = k g keeps nothing.
template <class T>
Tensor<T> map_const_grad(const char* op, UnaryOp code, double alpha, const Tensor<T>& x, double k) {
  Tensor<T> out = map(op, code, alpha, x);
  record<T>(op, out, {&x}, [op, k](const Tensor<T>& g) {
    return Grads<T>{k == 1.0 ? g : map(op, UnaryOp::mul_scalar, k, g)};
  });
  return out;
}

// out (broadcast shape) = f(a, b) for the binary map `code` (no autograd).
template <class T>
Tensor<T> map2(const char* op, BinaryOp code, const Tensor<T>& a, const Tensor<T>& b) {
  const Device d = op_device<T>(op, a, b);
  Shape s = broadcast_shapes(a.shape(), b.shape(), op);
  Tensor<T> out = Tensor<T>::empty(s, d);
  kernel::binary(d, code, out.data(), a.data(), b.data(), s,
                 {out.strides(), broadcast_strides(a.shape(), a.strides(), s), broadcast_strides(b.shape(), b.strides(), s)});
  return out;
}

// f(g, a, b) for the gradient map `code`, with a and b broadcast to g's shape, summed back to `shape`.
template <class T>
Tensor<T> grad_map(BinaryGradOp code, const Tensor<T>& g, const Tensor<T>& a, const Tensor<T>& b, const Shape& shape) {
  const Shape& s = g.shape();
  Tensor<T> out = Tensor<T>::empty(s, g.device());
  kernel::binary_backward(g.device(), code, out.data(), g.data(), a.data(), b.data(), s,
                          {out.strides(), g.strides(), broadcast_strides(a.shape(), a.strides(), s),
                           broadcast_strides(b.shape(), b.strides(), s)});
  return sum_to_shape(out, shape);
}

// out = f(a, b) with the backward da = ga(g, a, b), db = gb(g, a, b) (a and b kept).
template <class T>
Tensor<T> map2_with_grad(const char* op, BinaryOp code, BinaryGradOp ga, BinaryGradOp gb, const Tensor<T>& a,
                         const Tensor<T>& b) {
  Tensor<T> out = map2(op, code, a, b);
  record<T>(op, out, {&a, &b}, [op, ga, gb, sa = SavedTensor<T>(a), sb = SavedTensor<T>(b)](const Tensor<T>& g) {
    const Tensor<T>&x = sa.get(op), &y = sb.get(op);
    return Grads<T>{grad_map(ga, g, x, y, x.shape()), grad_map(gb, g, x, y, y.shape())};
  });
  return out;
}

}  // namespace detail

// Each op below keeps its forward and its backward together: the forward computes `out`, then
// detail::record(...) registers the backward closure, which receives dL/dout (`g`) and returns
// dL/dinput for each input. Gradients of broadcast inputs are summed back to their shapes.

// --- Binary arithmetic (broadcasting) ---------------------------------------------------------

/// a + b, broadcast.
template <class T>
Tensor<T> add(const Tensor<T>& a, const Tensor<T>& b) {
  Tensor<T> out = detail::map2("add", BinaryOp::add, a, b);
  // backward: da = g, db = g
  detail::record<T>("add", out, {&a, &b}, [sa = a.shape(), sb = b.shape()](const Tensor<T>& g) {
    return Grads<T>{detail::sum_to_shape(g, sa), detail::sum_to_shape(g, sb)};
  });
  return out;
}
/// a - b, broadcast.
template <class T>
Tensor<T> sub(const Tensor<T>& a, const Tensor<T>& b) {
  Tensor<T> out = detail::map2("sub", BinaryOp::sub, a, b);
  // backward: da = g, db = -g
  detail::record<T>("sub", out, {&a, &b}, [sa = a.shape(), sb = b.shape()](const Tensor<T>& g) {
    return Grads<T>{detail::sum_to_shape(g, sa), detail::map("sub", UnaryOp::neg, 0, detail::sum_to_shape(g, sb))};
  });
  return out;
}
/// a * b, broadcast. Backward: da = g * b, db = g * a.
template <class T>
Tensor<T> mul(const Tensor<T>& a, const Tensor<T>& b) {
  return detail::map2_with_grad("mul", BinaryOp::mul, BinaryGradOp::g_times_b, BinaryGradOp::g_times_a, a, b);
}
/// a / b, broadcast (C++ integer division for integer types). Backward: da = g / b, db = -g a / b^2.
template <class T>
Tensor<T> div(const Tensor<T>& a, const Tensor<T>& b) {
  return detail::map2_with_grad("div", BinaryOp::div, BinaryGradOp::g_over_b, BinaryGradOp::div_db, a, b);
}
/// a ^ b elementwise, broadcast. Backward: da = g b a^(b-1), db = g a^b log(a).
template <class T>
Tensor<T> pow(const Tensor<T>& a, const Tensor<T>& b) {
  detail::require_floating<T>("pow");
  return detail::map2_with_grad("pow", BinaryOp::pow, BinaryGradOp::pow_da, BinaryGradOp::pow_db, a, b);
}
/// The larger of a and b elementwise, broadcast (NaN if either is NaN).
/// Gradient: to the larger input; split evenly on ties.
template <class T>
Tensor<T> maximum(const Tensor<T>& a, const Tensor<T>& b) {
  return detail::map2_with_grad("maximum", BinaryOp::maximum, BinaryGradOp::max_da, BinaryGradOp::max_db, a, b);
}
/// The smaller of a and b elementwise, broadcast (NaN if either is NaN).
/// Gradient: to the smaller input; split evenly on ties.
template <class T>
Tensor<T> minimum(const Tensor<T>& a, const Tensor<T>& b) {
  return detail::map2_with_grad("minimum", BinaryOp::minimum, BinaryGradOp::min_da, BinaryGradOp::min_db, a, b);
}

// --- Unary math and activations -----------------------------------------------------------
// The derivative of each map is written next to its formula, in backend/cpu/elementwise.hpp
// (and the same in backend/cuda/elementwise.cuh).

/// x ^ exponent elementwise (gradient exponent x^(exponent-1)).
template <class T>
Tensor<T> pow(const Tensor<T>& x, double exponent) {
  detail::require_floating<T>("pow");
  return detail::map_with_grad("pow", UnaryOp::pow_scalar, double(compute_t<T>(exponent)), x);
}
/// -x (gradient -1).
template <class T> Tensor<T> neg(const Tensor<T>& x) { return detail::map_const_grad("neg", UnaryOp::neg, 0, x, -1.0); }
/// |x| (gradient sign(x), 0 at 0).
template <class T> Tensor<T> abs(const Tensor<T>& x) { return detail::map_with_grad("abs", UnaryOp::abs, 0, x); }
/// e^x (gradient e^x).
template <class T> Tensor<T> exp(const Tensor<T>& x) {
  detail::require_floating<T>("exp");
  return detail::map_with_grad("exp", UnaryOp::exp, 0, x);
}
/// Natural logarithm (gradient 1/x).
template <class T> Tensor<T> log(const Tensor<T>& x) {
  detail::require_floating<T>("log");
  return detail::map_with_grad("log", UnaryOp::log, 0, x);
}
/// Square root (gradient 1 / (2 sqrt(x))).
template <class T> Tensor<T> sqrt(const Tensor<T>& x) {
  detail::require_floating<T>("sqrt");
  return detail::map_with_grad("sqrt", UnaryOp::sqrt, 0, x);
}
/// 1 / sqrt(x) (gradient -x^(-3/2) / 2).
template <class T> Tensor<T> rsqrt(const Tensor<T>& x) {
  detail::require_floating<T>("rsqrt");
  return detail::map_with_grad("rsqrt", UnaryOp::rsqrt, 0, x);
}
/// Hyperbolic tangent (gradient 1 - tanh^2).
template <class T> Tensor<T> tanh(const Tensor<T>& x) {
  detail::require_floating<T>("tanh");
  return detail::map_with_grad("tanh", UnaryOp::tanh, 0, x);
}
/// max(x, 0) (gradient 1 where x > 0).
template <class T> Tensor<T> relu(const Tensor<T>& x) { return detail::map_with_grad("relu", UnaryOp::relu, 0, x); }
/// 1 / (1 + e^-x) (gradient s (1 - s)).
template <class T> Tensor<T> sigmoid(const Tensor<T>& x) {
  detail::require_floating<T>("sigmoid");
  return detail::map_with_grad("sigmoid", UnaryOp::sigmoid, 0, x);
}
/// log sigmoid(x), without overflow for large |x| (gradient sigmoid(-x)); -log_sigmoid(m) is
/// the logistic loss of a margin m (the reward model's and DPO's).
template <class T> Tensor<T> log_sigmoid(const Tensor<T>& x) {
  detail::require_floating<T>("log_sigmoid");
  return detail::map_with_grad("log_sigmoid", UnaryOp::log_sigmoid, 0, x);
}
/// GELU: exact (erf) by default, or the tanh approximation GPT-2 uses.
template <class T> Tensor<T> gelu(const Tensor<T>& x, GeluApprox approx = GeluApprox::none) {
  detail::require_floating<T>("gelu");
  return detail::map_with_grad("gelu", approx == GeluApprox::tanh ? UnaryOp::gelu_tanh : UnaryOp::gelu_erf, 0, x);
}
/// SiLU (swish): x * sigmoid(x), in one pass (gradient s (1 + x (1 - s)), s = sigmoid(x)).
template <class T> Tensor<T> silu(const Tensor<T>& x) {
  detail::require_floating<T>("silu");
  return detail::map_with_grad("silu", UnaryOp::silu, 0, x);
}
/// SwiGLU, the gated unit of Llama's MLP: silu(gate) * up, broadcast. On the CPU, for float or
/// double operands of one shape, one fused pass each way (nothing but gate and up is saved):
///   forward   out   = silu(gate) * up
///   backward  dgate = g * up * silu'(gate),  dup = g * silu(gate)
/// Otherwise (broadcasting, other types, CUDA) the composition mul(silu(gate), up), same values.
template <class T> Tensor<T> swiglu(const Tensor<T>& gate, const Tensor<T>& up) {
  detail::require_floating<T>("swiglu");
  constexpr bool fused_type = std::is_same_v<T, float> || std::is_same_v<T, double>;
  if (!fused_type || !gate.device().is_cpu() || !up.device().is_cpu() || gate.shape() != up.shape())
    return mul(silu(gate), up);
  const Device d = detail::op_device<T>("swiglu", gate, up);
  const Tensor<T> g_in = gate.contiguous(), u_in = up.contiguous();
  Tensor<T> out = Tensor<T>::empty(gate.shape(), d);
  kernel::swiglu_forward(d, out.data(), g_in.data(), u_in.data(), out.numel());
  detail::record<T>("swiglu", out, {&gate, &up},
                    [sg = SavedTensor<T>(g_in), su = SavedTensor<T>(u_in)](const Tensor<T>& g) -> Grads<T> {
    const Tensor<T>&gv = sg.get("swiglu"), &uv = su.get("swiglu");
    const Tensor<T> gc = g.contiguous();
    Tensor<T> dgate = Tensor<T>::empty(gv.shape(), gv.device()), dup = Tensor<T>::empty(uv.shape(), uv.device());
    kernel::swiglu_backward(gv.device(), dgate.data(), dup.data(), gc.data(), gv.data(), uv.data(), gc.numel());
    return {dgate, dup};
  });
  return out;
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

// Tensor-scalar operators: the scalar is first rounded to the tensor's compute type (so 2.5
// becomes 2 for an integer tensor), then applied by one unary map. A constant derivative keeps
// nothing for backward; only c / x keeps x.
#define LOOM_SCALAR_OPERATOR(op, name, ts_code, ts_alpha, ts_k, st_code, st_alpha, st_k)         \
  /** Tensor op scalar, elementwise. */                                                          \
  template <class T, class S, class = std::enable_if_t<std::is_arithmetic_v<S>>>                \
  Tensor<T> operator op(const Tensor<T>& x, S s) {                                               \
    const double c = double(compute_t<T>(s));                                                    \
    return detail::map_const_grad(name, ts_code, ts_alpha, x, ts_k);                             \
  }                                                                                              \
  /** Scalar op tensor, elementwise. */                                                          \
  template <class T, class S, class = std::enable_if_t<std::is_arithmetic_v<S>>>                \
  Tensor<T> operator op(S s, const Tensor<T>& x) {                                               \
    const double c = double(compute_t<T>(s));                                                    \
    return detail::map_const_grad(name, st_code, st_alpha, x, st_k);                             \
  }
LOOM_SCALAR_OPERATOR(+, "add", UnaryOp::add_scalar, c, 1.0, UnaryOp::add_scalar, c, 1.0)
LOOM_SCALAR_OPERATOR(-, "sub", UnaryOp::add_scalar, -c, 1.0, UnaryOp::rsub_scalar, c, -1.0)
LOOM_SCALAR_OPERATOR(*, "mul", UnaryOp::mul_scalar, c, c, UnaryOp::mul_scalar, c, c)
#undef LOOM_SCALAR_OPERATOR

/// Tensor / scalar, elementwise (gradient 1 / c).
template <class T, class S, class = std::enable_if_t<std::is_arithmetic_v<S>>>
Tensor<T> operator/(const Tensor<T>& x, S s) {
  const double c = double(compute_t<T>(s));
  return detail::map_const_grad("div", UnaryOp::div_scalar, c, x, 1.0 / c);
}
/// Scalar / tensor, elementwise (gradient -c / x^2; keeps x).
template <class T, class S, class = std::enable_if_t<std::is_arithmetic_v<S>>>
Tensor<T> operator/(S s, const Tensor<T>& x) {
  return detail::map_with_grad("div", UnaryOp::rdiv_scalar, double(compute_t<T>(s)), x);
}

}  // namespace loom
