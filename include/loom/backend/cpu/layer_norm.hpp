#pragma once
/// @file layer_norm.hpp
/// LayerNorm forward on the CPU: each row of C values is normalised to zero mean and unit
/// variance, then scaled and shifted: out = (x - mean) * rstd * weight + bias.

#include <cmath>

#include <Eigen/Core>

#include "loom/core/parallel.hpp"

namespace loom::cpu {

/// For N contiguous rows of length C: out = (inp - mean) * rstd * weight + bias, with
/// rstd = 1 / sqrt(var + eps) (biased variance). mean and rstd (N each) are saved for the
/// backward pass when not null; weight and bias (C each) may be null (then 1 and 0).
template <class T>
void layer_norm_forward(T* out, T* mean, T* rstd, const T* inp, const T* weight, const T* bias, int64_t N,
                        int64_t C, double eps) {
  using Arr = Eigen::Array<T, Eigen::Dynamic, 1>;
  parallel_for(0, N, std::max<int64_t>(1, parallel_grain / std::max<int64_t>(C, 1)), [&](int64_t lo, int64_t hi) {
    for (int64_t n = lo; n < hi; ++n) {
      Eigen::Map<const Arr> x(inp + n * C, C);
      Eigen::Map<Arr> y(out + n * C, C);
      T m = x.sum() / T(C);                                  // two passes: exact even for large means
      T v = (x - m).square().sum() / T(C);
      T s = T(1) / std::sqrt(v + T(eps));
      if (weight && bias) {
        y = (x - m) * s * Eigen::Map<const Arr>(weight, C) + Eigen::Map<const Arr>(bias, C);
      } else if (weight) {
        y = (x - m) * s * Eigen::Map<const Arr>(weight, C);
      } else if (bias) {
        y = (x - m) * s + Eigen::Map<const Arr>(bias, C);
      } else {
        y = (x - m) * s;
      }
      if (mean) mean[n] = m;
      if (rstd) rstd[n] = s;
    }
  });
}

}  // namespace loom::cpu
