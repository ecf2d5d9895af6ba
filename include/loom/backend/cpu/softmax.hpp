#pragma once
/// @file softmax.hpp
/// Row-wise softmax and log-softmax on the CPU, with the max trick: softmax(x) = softmax(x - max x),
/// so exp never overflows however large the logits are.
///
/// Contract (shared with backend/cuda/softmax.cuh): N contiguous rows of C; out is written.

#include <cmath>

#include "loom/eigen.hpp"

#include "loom/core/parallel.hpp"

namespace loom::cpu {

/// out[n, :] = softmax(inp[n, :]) for N contiguous rows of length C; with `log`, log_softmax,
/// computed as (x - max) - log(sum(exp(x - max))).
template <class T>
void softmax_rows(T* out, const T* inp, int64_t N, int64_t C, bool log) {
  using Arr = Eigen::Array<T, Eigen::Dynamic, 1>;
  for_each_row(N, C, [&](int64_t n) {
    Eigen::Map<const Arr> x(inp + n * C, C);
    Eigen::Map<Arr> y(out + n * C, C);
    T m = x.maxCoeff();
    if (log) {
      T log_z = std::log((x - m).exp().sum());
      y = (x - m) - log_z;  // not x - (m + log_z): that would round m + log_z at the scale of m
    } else {
      y = (x - m).exp();
      y *= T(1) / y.sum();
    }
  });
}

/// out[n, :] = softmax(inp[n, :]) for N contiguous rows of length C.
template <class T>
void softmax_forward(T* out, const T* inp, int64_t N, int64_t C) { softmax_rows(out, inp, N, C, false); }

/// out[n, :] = log_softmax(inp[n, :]), N contiguous rows of length C.
template <class T>
void log_softmax_forward(T* out, const T* inp, int64_t N, int64_t C) { softmax_rows(out, inp, N, C, true); }

}  // namespace loom::cpu
