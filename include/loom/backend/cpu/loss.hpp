#pragma once
/// @file loss.hpp
/// Cross-entropy forward on the CPU: loss[n] = logsumexp(logits[n, :]) - logits[n, target[n]].

#include <cmath>

#include <Eigen/Core>

#include "loom/core/parallel.hpp"

namespace loom::cpu {

/// losses[n] for N rows of V logits; rows whose target equals ignore_index get 0. Targets other
/// than ignore_index must already be checked to lie in [0, V).
template <class T, class I>
void cross_entropy_forward(T* losses, const T* logits, const I* targets, int64_t N, int64_t V,
                           int64_t ignore_index) {
  using Arr = Eigen::Array<T, Eigen::Dynamic, 1>;
  for_each_row(N, V, [&](int64_t n) {
    int64_t t = int64_t(targets[n]);
    if (t == ignore_index) {
      losses[n] = T(0);
      return;
    }
    Eigen::Map<const Arr> x(logits + n * V, V);
    T m = x.maxCoeff();
    losses[n] = (m - x[t]) + std::log((x - m).exp().sum());  // logsumexp(x) - x[t], small terms first
  });
}

/// dlogits[n, :] = (softmax(logits[n, :]) - onehot(target[n])) * dloss[n], fused: the softmax is
/// recomputed here rather than stored by the forward. Rows whose target is ignore_index get 0.
template <class T, class I>
void cross_entropy_backward(T* dlogits, const T* logits, const I* targets, const T* dloss, int64_t N, int64_t V,
                            int64_t ignore_index) {
  using Arr = Eigen::Array<T, Eigen::Dynamic, 1>;
  for_each_row(N, V, [&](int64_t n) {
    Eigen::Map<Arr> dx(dlogits + n * V, V);
    int64_t t = int64_t(targets[n]);
    if (t == ignore_index) {
      dx.setZero();
      return;
    }
    Eigen::Map<const Arr> x(logits + n * V, V);
    T m = x.maxCoeff();
    dx = (x - m).exp();
    dx *= dloss[n] / dx.sum();
    dx[t] -= dloss[n];
  });
}

}  // namespace loom::cpu
