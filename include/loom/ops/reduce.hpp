#pragma once
/// @file reduce.hpp
/// Reductions over one axis or over all elements: sum, mean, max, min, argmax, argmin, var.

#include <cmath>
#include <limits>
#include <utility>
#include <vector>

#include "loom/backend/cpu/reduce.hpp"
#include "loom/ops/common.hpp"
#include "loom/ops/gpu.hpp"

namespace loom {

namespace gpu {
// Defined in ops/gpu.hpp (declared here too: that header may be read after this one).
inline Tensor<float> reduce(cuda::Reduce op, const Tensor<float>& x, int64_t axis, bool all, bool keepdim,
                            const char* name);
}  // namespace gpu

namespace detail {

/// The accumulator type of a sum: double for float/double/bf16/half, int64 for integers.
template <class T>
using sum_acc_t = std::conditional_t<is_floating_v<T>, double, int64_t>;

// Runs a reduction of `x` over `axis` (all elements when all == true) and writes one value per
// output element through finalize(acc) into a tensor of element type TO.
template <class TO, class T, class Acc, class Step, class Merge, class Fin>
Tensor<TO> reduce(const char* op, const Tensor<T>& x, int64_t axis, bool all, bool keepdim, Acc init, Step step,
                  Merge merge, Fin finalize) {
  check_cpu(op, x);
  Tensor<T> c = x.contiguous();
  const ReduceGeometry geo = reduce_geometry(x.shape(), axis, all, keepdim, op);
  const int64_t outer = geo.outer, R = geo.R, inner = geo.inner;
  const Shape& out_shape = geo.out_shape;
  Tensor<TO> out = Tensor<TO>::empty(out_shape);
  TO* o = out.data();
  cpu::reduce_axis<Acc>(c.data(), outer, R, inner, init, step, merge,
                        [&](int64_t i, const Acc& acc) { o[i] = convert<TO>(finalize(acc, R)); });
  return out;
}

template <class TO, class T, class Acc, class Step, class Merge, class Fin>
Tensor<TO> reduce_any(const char* op, const Tensor<T>& x, const int64_t* axis, bool keepdim, Acc init, Step step,
                      Merge merge, Fin finalize) {
  return reduce<TO>(op, x, axis ? *axis : 0, axis == nullptr, keepdim, init, step, merge, finalize);
}

// The gradient of a reduction, broadcast back over the reduced axis (or all axes): a view.
template <class T>
Tensor<T> expand_back(const Tensor<T>& g, const Shape& in, const int64_t* axis, bool keepdim) {
  Tensor<T> gg = g;
  if (in.size() > 0 && !keepdim) {
    if (axis) {
      gg = g.unsqueeze(wrap_axis(*axis, in.size(), "reduce"));
    } else {
      Shape ones = in;
      for (int64_t& d : ones) d = 1;
      gg = g.reshape(ones);
    }
  }
  return gg.expand(in);
}

template <class T>
Tensor<T> sum_impl(const Tensor<T>& x, const int64_t* axis, bool keepdim) {
  using A = sum_acc_t<T>;
  Tensor<T> out;
  if constexpr (std::is_same_v<T, float>) {
    if (on_cuda<T>("sum", x)) out = gpu::reduce(cuda::Reduce::sum, x, axis ? *axis : 0, axis == nullptr, keepdim, "sum");
  }
  if (!out.defined())
    out = reduce_any<T>("sum", x, axis, keepdim, A(0), [](A a, T v, int64_t) { return a + A(compute_t<T>(v)); },
                           [](A a, A b) { return a + b; }, [](A a, int64_t) { return a; });
  // backward: dx = g broadcast over the summed axes
  bool all = axis == nullptr;
  int64_t ax = all ? 0 : *axis;
  record<T>("sum", out, {&x}, [in = x.shape(), all, ax, keepdim](const Tensor<T>& g) {
    return std::vector<Tensor<T>>{expand_back(g, in, all ? nullptr : &ax, keepdim)};
  });
  return out;
}

template <class T>
Tensor<T> mean_impl(const Tensor<T>& x, const int64_t* axis, bool keepdim) {
  static_assert(is_floating_v<T>, "mean: needs a floating element type");
  Tensor<T> out;
  if constexpr (std::is_same_v<T, float>) {
    if (on_cuda<T>("mean", x)) out = gpu::reduce(cuda::Reduce::mean, x, axis ? *axis : 0, axis == nullptr, keepdim, "mean");
  }
  if (!out.defined())
    out = reduce_any<T>("mean", x, axis, keepdim, 0.0,
                           [](double a, T v, int64_t) { return a + double(compute_t<T>(v)); },
                           [](double a, double b) { return a + b; }, [](double a, int64_t n) { return a / double(n); });
  // backward: dx = g / N broadcast over the averaged axes
  bool all = axis == nullptr;
  int64_t ax = all ? 0 : *axis;
  int64_t n = all ? x.numel() : (x.dim() ? x.size(ax) : 1);
  record<T>("mean", out, {&x}, [in = x.shape(), all, ax, keepdim, n](const Tensor<T>& g) {
    return std::vector<Tensor<T>>{expand_back(g, in, all ? nullptr : &ax, keepdim) / double(n)};
  });
  return out;
}

// (value, index) pairs; NaN wins over everything, the first of equal values wins.
template <class T, bool Max>
struct ArgExtreme {
  using C = compute_t<T>;
  using Acc = std::pair<C, int64_t>;
  static bool better(C v, C best) {
    if (v != v) return !(best != best);  // the first NaN wins
    if (best != best) return false;
    return Max ? v > best : v < best;
  }
  static Acc init() { return {C(0), -1}; }
  static Acc step(Acc a, T v, int64_t r) {
    C cv = C(v);
    return (a.second < 0 || better(cv, a.first)) ? Acc{cv, r} : a;
  }
  static Acc merge(Acc a, Acc b) {  // partials may come in any order: ties go to the lower index
    if (a.second < 0) return b;
    if (b.second < 0) return a;
    if (better(b.first, a.first)) return b;
    if (better(a.first, b.first)) return a;
    return b.second < a.second ? b : a;
  }
};

template <class T, bool Max>
Tensor<T> extreme_impl(const char* op, const Tensor<T>& x, const int64_t* axis, bool keepdim) {
  using E = ArgExtreme<T, Max>;
  int64_t n = axis ? (x.dim() ? x.size(*axis) : 1) : x.numel();
  LOOM_CHECK(n > 0, value_error, op, ": cannot reduce over an empty dimension (shape ", x.shape(), ")");
  auto out = reduce_any<T>(op, x, axis, keepdim, E::init(), E::step, E::merge,
                           [](typename E::Acc a, int64_t) { return a.first; });
  if (!GradMode::is_enabled() || !x.requires_grad()) return out;
  // backward: g goes to the position that won (the first one on ties), zeros elsewhere
  Tensor<int64_t> idx = reduce_any<int64_t>(op, x, axis, true, E::init(), E::step, E::merge,
                                            [](typename E::Acc a, int64_t) { return a.second; });
  bool all = axis == nullptr;
  int64_t ax = all ? 0 : wrap_axis(*axis, x.dim(), op);
  record<T>(op, out, {&x}, [in = x.shape(), idx, all, ax, keepdim](const Tensor<T>& g) {
    Tensor<T> dx = zeros<T>(in);
    Tensor<T> gc = g.contiguous();  // one value per idx entry, in the same order
    int64_t R = all ? numel_of(in) : (in.size() ? in[ax] : 1), inner = 1;
    if (!all)
      for (int d = ax + 1; d < in.size(); ++d) inner *= in[d];
    for (int64_t k = 0; k < idx.numel(); ++k) {
      int64_t o = k / inner, i = k % inner;
      dx.data()[(o * R + idx.data()[k]) * inner + i] = gc.data()[k];
    }
    return std::vector<Tensor<T>>{dx};
  });
  (void)keepdim;
  return out;
}

template <class T, bool Max>
Tensor<int64_t> arg_impl(const char* op, const Tensor<T>& x, const int64_t* axis, bool keepdim) {
  using E = ArgExtreme<T, Max>;
  int64_t n = axis ? (x.dim() ? x.size(*axis) : 1) : x.numel();
  LOOM_CHECK(n > 0, value_error, op, ": cannot reduce over an empty dimension (shape ", x.shape(), ")");
  return reduce_any<int64_t>(op, x, axis, keepdim, E::init(), E::step, E::merge,
                             [](typename E::Acc a, int64_t) { return a.second; });
}

}  // namespace detail

/// Sum of all elements (a 0-d tensor).
template <class T> Tensor<T> sum(const Tensor<T>& x) { return detail::sum_impl(x, nullptr, false); }
/// Sum over `axis`; keepdim keeps it as size 1.
template <class T> Tensor<T> sum(const Tensor<T>& x, int64_t axis, bool keepdim = false) {
  return detail::sum_impl(x, &axis, keepdim);
}
/// Mean of all elements (NaN for an empty tensor).
template <class T> Tensor<T> mean(const Tensor<T>& x) { return detail::mean_impl(x, nullptr, false); }
/// Mean over `axis`.
template <class T> Tensor<T> mean(const Tensor<T>& x, int64_t axis, bool keepdim = false) {
  return detail::mean_impl(x, &axis, keepdim);
}
/// Largest element (NaN if any is NaN); throws for an empty tensor.
template <class T> Tensor<T> max(const Tensor<T>& x) { return detail::extreme_impl<T, true>("max", x, nullptr, false); }
/// Largest element along `axis`.
template <class T> Tensor<T> max(const Tensor<T>& x, int64_t axis, bool keepdim = false) {
  return detail::extreme_impl<T, true>("max", x, &axis, keepdim);
}
/// Smallest element (NaN if any is NaN); throws for an empty tensor.
template <class T> Tensor<T> min(const Tensor<T>& x) { return detail::extreme_impl<T, false>("min", x, nullptr, false); }
/// Smallest element along `axis`.
template <class T> Tensor<T> min(const Tensor<T>& x, int64_t axis, bool keepdim = false) {
  return detail::extreme_impl<T, false>("min", x, &axis, keepdim);
}
/// Flat index of the largest element (the first one on ties).
template <class T> Tensor<int64_t> argmax(const Tensor<T>& x) { return detail::arg_impl<T, true>("argmax", x, nullptr, false); }
/// Index of the largest element along `axis` (the first one on ties).
template <class T> Tensor<int64_t> argmax(const Tensor<T>& x, int64_t axis, bool keepdim = false) {
  return detail::arg_impl<T, true>("argmax", x, &axis, keepdim);
}
/// Flat index of the smallest element (the first one on ties).
template <class T> Tensor<int64_t> argmin(const Tensor<T>& x) { return detail::arg_impl<T, false>("argmin", x, nullptr, false); }
/// Index of the smallest element along `axis` (the first one on ties).
template <class T> Tensor<int64_t> argmin(const Tensor<T>& x, int64_t axis, bool keepdim = false) {
  return detail::arg_impl<T, false>("argmin", x, &axis, keepdim);
}

/// Variance over `axis`: sum((x - mean)^2) / (N - correction); correction 1 is the unbiased estimate.
template <class T>
Tensor<T> var(const Tensor<T>& x, int64_t axis, bool keepdim = false, int64_t correction = 1) {
  static_assert(is_floating_v<T>, "var: needs a floating element type");
  Tensor<T> d, out;
  int64_t n = x.dim() ? x.size(axis) : 1;
  double denom = double(std::max<int64_t>(n - correction, 0));
  {
    NoGradGuard no_grad;  // the backward below is the whole op's
    d = x - mean(x, axis, true);
    out = detail::reduce<T>("var", d * d, axis, false, keepdim, 0.0,
                            [](double a, T v, int64_t) { return a + double(compute_t<T>(v)); },
                            [](double a, double b) { return a + b; }, [denom](double a, int64_t) { return a / denom; });
  }
  // backward: dx = g * 2 (x - mean) / (N - correction)
  detail::record<T>("var", out, {&x}, [in = x.shape(), axis, keepdim, denom, sd = SavedTensor<T>(d)](const Tensor<T>& g) {
    return std::vector<Tensor<T>>{detail::expand_back(g, in, &axis, keepdim) * sd.get("var") * (2.0 / denom)};
  });
  return out;
}
/// Variance of all elements.
template <class T>
Tensor<T> var(const Tensor<T>& x) {
  return var(x.reshape({-1}), 0, false, 1);
}

namespace detail {
template <class T>
Tensor<T> sum_to_shape(const Tensor<T>& grad, const Shape& shape) {
  if (grad.shape() == shape) return grad;
  Tensor<T> r = grad;
  if (grad.device().is_cuda() && grad.dim() > shape.size() + 1) {  // one reduction over all the leading dimensions
    Shape flat{-1};
    for (int d = grad.dim() - shape.size(); d < grad.dim(); ++d) flat.push_back(grad.size(d));
    if (grad.is_contiguous()) r = sum(grad.view(flat), 0);
  }
  while (r.dim() > shape.size()) r = sum(r, 0);  // leading dimensions that broadcasting added
  for (int d = 0; d < shape.size(); ++d)
    if (shape[d] == 1 && r.size(d) != 1) r = sum(r, d, true);  // dimensions stretched from 1
  return r;
}
}  // namespace detail

}  // namespace loom
