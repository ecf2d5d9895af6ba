#pragma once
/// @file layer_norm.hpp
/// LayerNorm on the CPU: each row of C values is normalised to zero mean and unit variance,
/// then scaled and shifted: out = (x - mean) * rstd * weight + bias.
///
/// Contract (shared with backend/cuda/layer_norm.cuh): rows are contiguous; the forward writes
/// out, mean and rstd (none may be null); weight and bias may be null (1 and 0). The backward
/// writes dx and, when not null, dweight and dbias (overwritten, not added to).
///
/// The residual form (add_layer_norm, a pre-norm block's `h = x + r; y = LN(h)`): with a
/// residual, the forward first writes sum = inp + residual and normalises that, row by row while
/// the row is in cache; the backward is then given sum as its inp and, with dsum (the gradient
/// that reaches h from its other uses), writes dx = dsum + LN's own dx.

#include <algorithm>
#include <cmath>
#include <vector>

#include "loom/eigen.hpp"

#include "loom/core/parallel.hpp"

namespace loom::cpu {

/// For N contiguous rows of length C: out = (inp - mean) * rstd * weight + bias, with
/// rstd = 1 / sqrt(var + eps) (biased variance). mean and rstd (N each) are saved for the
/// backward pass; weight and bias (C each) may be null (then 1 and 0). With a residual (N, C),
/// sum (N, C) = inp + residual is written and normalised instead of inp.
template <class T>
void layer_norm_forward(T* out, T* mean, T* rstd, const T* inp, const T* weight, const T* bias, int64_t N, int64_t C,
                        double eps, const T* residual = nullptr, T* sum = nullptr) {
  using Arr = Eigen::Array<T, Eigen::Dynamic, 1>;
  for_each_row(N, C, [&](int64_t n) {
    if (residual)
      Eigen::Map<Arr>(sum + n * C, C) = Eigen::Map<const Arr>(inp + n * C, C) +
                                        Eigen::Map<const Arr>(residual + n * C, C);
    Eigen::Map<const Arr> x((residual ? sum : inp) + n * C, C);
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
  });
}

/// LayerNorm backward, fused: from dout (N, C) and the forward's inp, weight, mean and rstd,
/// writes dinp (N, C), dweight and dbias (C each; either may be null).
///   norm = (x - mean) * rstd,  dnorm = dout * weight
///   dx   = rstd * (dnorm - mean(dnorm) - norm * mean(dnorm * norm))   (+ dsum, when given)
///   dweight = sum over rows of dout * norm,  dbias = sum over rows of dout
/// Rows are split into fixed blocks whose dweight/dbias partials are added in block order, so
/// the result does not depend on the thread count.
template <class T>
void layer_norm_backward(T* dinp, T* dweight, T* dbias, const T* dout, const T* inp, const T* weight, const T* mean,
                         const T* rstd, int64_t N, int64_t C, const T* dsum = nullptr) {
  using Arr = Eigen::Array<T, Eigen::Dynamic, 1>;
  constexpr int64_t block = 64;
  int64_t nblocks = (N + block - 1) / block;
  bool params = dweight || dbias;
  std::vector<T> partial(params ? size_t(nblocks * 2 * C) : 0, T(0));
  parallel_for(0, nblocks, std::max<int64_t>(1, parallel_grain / std::max<int64_t>(block * C, 1)), [&](int64_t lo, int64_t hi) {
    Arr norm(C), dnorm(C);
    for (int64_t b = lo; b < hi; ++b) {
      T* pw = params ? partial.data() + b * 2 * C : nullptr;
      for (int64_t n = b * block; n < std::min(N, (b + 1) * block); ++n) {
        Eigen::Map<const Arr> x(inp + n * C, C), dy(dout + n * C, C);
        Eigen::Map<Arr> dx(dinp + n * C, C);
        norm = (x - mean[n]) * rstd[n];
        if (weight) dnorm = dy * Eigen::Map<const Arr>(weight, C); else dnorm = dy;
        T m1 = dnorm.mean(), m2 = (dnorm * norm).mean();
        dx = rstd[n] * (dnorm - m1 - norm * m2);
        if (dsum) dx += Eigen::Map<const Arr>(dsum + n * C, C);
        if (params) {
          Eigen::Map<Arr>(pw, C) += dy * norm;
          Eigen::Map<Arr>(pw + C, C) += dy;
        }
      }
    }
  });
  if (dweight) std::fill(dweight, dweight + C, T(0));
  if (dbias) std::fill(dbias, dbias + C, T(0));
  for (int64_t b = 0; b < nblocks && params; ++b) {
    const T* pw = partial.data() + b * 2 * C;
    for (int64_t c = 0; c < C; ++c) {
      if (dweight) dweight[c] += pw[c];
      if (dbias) dbias[c] += pw[C + c];
    }
  }
}

}  // namespace loom::cpu
