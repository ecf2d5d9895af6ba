#pragma once
/// @file reduce.hpp
/// Reductions over one axis or over all elements: sum, mean, max, min, argmax, argmin, var.

#include <cmath>
#include <limits>
#include <utility>
#include <vector>

#include "loom/core/tensor.hpp"
#include "loom/ops/elementwise.hpp"

namespace loom {

namespace detail {

// Runs a reduction on the CPU of `x` over `axis` (all elements when all == true) and writes one value per
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

// sum or mean of x over one axis (all axes when axis is null), on any device: the kernel sums
// a contiguous (outer, R, inner) view in a fixed order (double accumulators on the CPU).
template <class T>
Tensor<T> sum_or_mean(const char* op, bool mean, const Tensor<T>& x, const int64_t* axis, bool keepdim) {
  const Device d = op_device<T>(op, x);
  const ReduceGeometry geo = reduce_geometry(x.shape(), axis ? *axis : 0, axis == nullptr, keepdim, op);
  Tensor<T> c = x.contiguous(), out = Tensor<T>::empty(geo.out_shape, d);
  kernel::sum(d, mean, out.data(), c.data(), geo.outer, geo.R, geo.inner);
  // backward: dx = g (sum) or g / N (mean), broadcast back over the reduced axes
  const bool all = axis == nullptr;
  const int64_t ax = all ? 0 : *axis, n = geo.R;
  record<T>(op, out, {&x}, [op, mean, in = x.shape(), all, ax, keepdim, n](const Tensor<T>& g) {
    Tensor<T> dx = expand_back(g, in, all ? nullptr : &ax, keepdim);
    return std::vector<Tensor<T>>{mean ? map(op, UnaryOp::div_scalar, double(n), dx) : dx};
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
template <class T> Tensor<T> sum(const Tensor<T>& x) { return detail::sum_or_mean("sum", false, x, nullptr, false); }
/// Sum over `axis`; keepdim keeps it as size 1.
template <class T> Tensor<T> sum(const Tensor<T>& x, int64_t axis, bool keepdim = false) {
  return detail::sum_or_mean("sum", false, x, &axis, keepdim);
}
/// Mean of all elements (NaN for an empty tensor).
template <class T> Tensor<T> mean(const Tensor<T>& x) {
  static_assert(is_floating_v<T>, "mean: needs a floating element type");
  return detail::sum_or_mean("mean", true, x, nullptr, false);
}
/// Mean over `axis`.
template <class T> Tensor<T> mean(const Tensor<T>& x, int64_t axis, bool keepdim = false) {
  static_assert(is_floating_v<T>, "mean: needs a floating element type");
  return detail::sum_or_mean("mean", true, x, &axis, keepdim);
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

}  // namespace loom
