#pragma once
/// @file reduce.hpp
/// Reductions over one axis or over all elements: sum, mean, max, min, argmax, argmin, var.

#include <cmath>
#include <limits>
#include <utility>

#include "loom/backend/cpu/reduce.hpp"
#include "loom/ops/common.hpp"

namespace loom {

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
  int64_t outer = 1, R = c.numel(), inner = 1;
  Shape out_shape;
  if (!all) {
    int a = wrap_axis(axis, x.dim(), op);
    if (x.dim() > 0) {
      outer = 1, inner = 1, R = x.shape()[a];
      for (int d = 0; d < a; ++d) outer *= x.shape()[d];
      for (int d = a + 1; d < x.dim(); ++d) inner *= x.shape()[d];
      out_shape = x.shape();
      if (keepdim) out_shape[a] = 1; else out_shape.erase(a);
    }
  } else if (keepdim) {
    out_shape = x.shape();
    for (int64_t& d : out_shape) d = 1;
  }
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

template <class T>
Tensor<T> sum_impl(const Tensor<T>& x, const int64_t* axis, bool keepdim) {
  using A = sum_acc_t<T>;
  return reduce_any<T>("sum", x, axis, keepdim, A(0), [](A a, T v, int64_t) { return a + A(compute_t<T>(v)); },
                       [](A a, A b) { return a + b; }, [](A a, int64_t) { return a; });
}

template <class T>
Tensor<T> mean_impl(const Tensor<T>& x, const int64_t* axis, bool keepdim) {
  static_assert(is_floating_v<T>, "mean: needs a floating element type");
  return reduce_any<T>("mean", x, axis, keepdim, 0.0, [](double a, T v, int64_t) { return a + double(compute_t<T>(v)); },
                       [](double a, double b) { return a + b; }, [](double a, int64_t n) { return a / double(n); });
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
  return reduce_any<T>(op, x, axis, keepdim, E::init(), E::step, E::merge,
                       [](typename E::Acc a, int64_t) { return a.first; });
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
  Tensor<T> m = mean(x, axis, true);
  Tensor<T> d = x - m;
  int64_t n = x.dim() ? x.size(axis) : 1;
  double denom = double(std::max<int64_t>(n - correction, 0));
  return detail::reduce<T>("var", d * d, axis, false, keepdim, 0.0,
                           [](double a, T v, int64_t) { return a + double(compute_t<T>(v)); },
                           [](double a, double b) { return a + b; }, [denom](double a, int64_t) { return a / denom; });
}
/// Variance of all elements.
template <class T>
Tensor<T> var(const Tensor<T>& x) {
  return var(x.reshape({-1}), 0, false, 1);
}

}  // namespace loom
