#pragma once
/// @file softmax.hpp
/// Row-wise softmax and log-softmax on the CPU, with the max trick: softmax(x) = softmax(x - max x),
/// so exp never overflows however large the logits are.

#include <cmath>

#include <Eigen/Core>

#include "loom/core/parallel.hpp"

namespace loom::cpu {

/// out[n, :] = softmax(inp[n, :]) for N contiguous rows of length C.
template <class T>
void softmax_forward(T* out, const T* inp, int64_t N, int64_t C) {
  using Arr = Eigen::Array<T, Eigen::Dynamic, 1>;
  parallel_for(0, N, std::max<int64_t>(1, parallel_grain / std::max<int64_t>(C, 1)), [&](int64_t lo, int64_t hi) {
    for (int64_t n = lo; n < hi; ++n) {
      Eigen::Map<const Arr> x(inp + n * C, C);
      Eigen::Map<Arr> y(out + n * C, C);
      T m = x.maxCoeff();
      y = (x - m).exp();
      y *= T(1) / y.sum();
    }
  });
}

/// out[n, :] = log_softmax(inp[n, :]) = (x - max) - log(sum(exp(x - max))), N rows of length C.
template <class T>
void log_softmax_forward(T* out, const T* inp, int64_t N, int64_t C) {
  using Arr = Eigen::Array<T, Eigen::Dynamic, 1>;
  parallel_for(0, N, std::max<int64_t>(1, parallel_grain / std::max<int64_t>(C, 1)), [&](int64_t lo, int64_t hi) {
    for (int64_t n = lo; n < hi; ++n) {
      Eigen::Map<const Arr> x(inp + n * C, C);
      Eigen::Map<Arr> y(out + n * C, C);
      T m = x.maxCoeff();
      T log_z = std::log((x - m).exp().sum());
      y = (x - m) - log_z;  // not x - (m + log_z): that would round m + log_z at the scale of m
    }
  });
}

}  // namespace loom::cpu
