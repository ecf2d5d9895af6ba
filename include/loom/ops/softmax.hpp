#pragma once
/// @file softmax.hpp
/// softmax and log_softmax along any axis (numerically stable for large logits).

#include "loom/ops/elementwise.hpp"
#include "loom/ops/reduce.hpp"

namespace loom {

namespace detail {
// softmax (or log_softmax) along `axis`: moves the axis last, runs the row kernel on contiguous
// rows (the CPU computes reduced floats in float), and moves it back.
template <class T>
Tensor<T> softmax_along(const char* op, const Tensor<T>& x, int64_t axis, bool log) {
  const Device d = op_device<T>(op, x);
  if constexpr (is_reduced_float_v<T>) {
    return softmax_along<float>(op, x.template to<float>(), axis, log).template to<T>();
  } else {
    if (x.dim() == 0) return softmax_along(op, x.reshape({1}), 0, log).reshape({});
    const int a = wrap_axis(axis, x.dim(), op);
    const bool last = a == x.dim() - 1;
    Tensor<T> in = (last ? x : x.transpose(a, -1)).contiguous();
    Tensor<T> out = Tensor<T>::empty(in.shape(), d);
    const int64_t C = in.size(-1);
    if (in.numel() > 0) kernel::softmax(d, out.data(), in.data(), in.numel() / C, C, log);
    return last ? out : out.transpose(a, -1).contiguous();
  }
}
}  // namespace detail

/// exp(x) / sum(exp(x)) along `axis` (default: the last).
template <class T>
Tensor<T> softmax(const Tensor<T>& x, int64_t axis = -1) {
  static_assert(is_floating_v<T>, "softmax: needs a floating element type");
  Tensor<T> y = detail::softmax_along("softmax", x.detach(), axis, false);
  // backward: dx = y * (g - sum(g * y)) along the axis
  detail::record<T>("softmax", y, {&x}, [sy = SavedTensor<T>(y), axis](const Tensor<T>& g) {
    const Tensor<T>& yv = sy.get("softmax");
    Tensor<T> gy = g * yv;
    return std::vector<Tensor<T>>{gy - yv * sum(gy, axis, true)};
  });
  return y;
}

/// log(softmax(x)) along `axis`, computed as x - logsumexp(x) (no log of tiny numbers).
template <class T>
Tensor<T> log_softmax(const Tensor<T>& x, int64_t axis = -1) {
  static_assert(is_floating_v<T>, "log_softmax: needs a floating element type");
  Tensor<T> y = detail::softmax_along("log_softmax", x.detach(), axis, true);
  // backward: dx = g - exp(y) * sum(g) along the axis
  detail::record<T>("log_softmax", y, {&x}, [sy = SavedTensor<T>(y), axis](const Tensor<T>& g) {
    return std::vector<Tensor<T>>{g - exp(sy.get("log_softmax")) * sum(g, axis, true)};
  });
  return y;
}

}  // namespace loom
