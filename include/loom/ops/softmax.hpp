#pragma once
/// @file softmax.hpp
/// softmax and log_softmax along any axis (numerically stable for large logits).

#include "loom/backend/cpu/softmax.hpp"
#include "loom/ops/elementwise.hpp"
#include "loom/ops/reduce.hpp"

namespace loom {

namespace detail {
// Moves `axis` last, runs a row kernel on contiguous rows, and moves it back.
template <class T, class Kernel>
Tensor<T> along_axis(const char* op, const Tensor<T>& x, int64_t axis, Kernel kernel, bool log) {
  if constexpr (std::is_same_v<T, float>) {
    if (on_cuda<T>(op, x)) {  // the same moves around one row kernel on the GPU
      if (x.dim() == 0) return along_axis(op, x.reshape({1}), 0, kernel, log).reshape({});
      int a = wrap_axis(axis, x.dim(), op);
      bool last = a == x.dim() - 1;
      Tensor<T> out = gpu::softmax_rows((last ? x : x.transpose(a, -1)).contiguous(), log);
      return last ? out : out.transpose(a, -1).contiguous();
    }
  }
  check_cpu(op, x);
  if constexpr (is_reduced_float_v<T>) {
    return along_axis<float>(op, x.template to<float>(), axis, kernel, log).template to<T>();
  } else {
    int a = wrap_axis(axis, x.dim(), op);
    if (x.dim() == 0) return along_axis(op, x.reshape({1}), 0, kernel, log).reshape({});
    bool last = a == x.dim() - 1;
    Tensor<T> in = (last ? x : x.transpose(a, -1)).contiguous();
    Tensor<T> out = Tensor<T>::empty(in.shape());
    int64_t C = in.size(-1);
    if (in.numel() > 0) kernel(out.data(), in.data(), in.numel() / C, C);
    return last ? out : out.transpose(a, -1).contiguous();
  }
}
}  // namespace detail

/// exp(x) / sum(exp(x)) along `axis` (default: the last).
template <class T>
Tensor<T> softmax(const Tensor<T>& x, int64_t axis = -1) {
  static_assert(is_floating_v<T>, "softmax: needs a floating element type");
  auto y = detail::along_axis("softmax", x, axis,
                              [](auto* o, const auto* i, int64_t N, int64_t C) { cpu::softmax_forward(o, i, N, C); }, false);
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
  auto y = detail::along_axis("log_softmax", x, axis, [](auto* o, const auto* i, int64_t N, int64_t C) {
    cpu::log_softmax_forward(o, i, N, C);
  }, true);
  // backward: dx = g - exp(y) * sum(g) along the axis
  detail::record<T>("log_softmax", y, {&x}, [sy = SavedTensor<T>(y), axis](const Tensor<T>& g) {
    return std::vector<Tensor<T>>{g - exp(sy.get("log_softmax")) * sum(g, axis, true)};
  });
  return y;
}

}  // namespace loom
