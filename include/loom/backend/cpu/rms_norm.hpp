#pragma once
/// @file rms_norm.hpp
/// RMSNorm on the CPU: each row of C values is divided by its root mean square, then scaled:
/// out = x * rstd * weight with rstd = 1 / sqrt(mean(x^2) + eps). No mean is subtracted.
///
/// Contract (the same as backend/cuda/rms_norm.cuh):
///   forward:  out (N, C) written; rstd (N) written when not null (the backward needs it);
///             weight (C) may be null (then 1).
///   backward: dx (N, C) written; dweight (C) WRITTEN (overwritten, not added) when not null,
///             and zero-filled when N == 0; weight may be null (then 1); rstd is the forward's.
///   All arrays are contiguous, row-major; N >= 0, C >= 0 (C == 0 writes nothing).
///   The result does not depend on the thread count (fixed row blocks, partials added in order).
///   The residual form (add_rms_norm), as in backend/cpu/layer_norm.hpp: the forward writes
///   sum = x + residual and normalises it; the backward, given sum as x, adds dsum to dx.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "loom/eigen.hpp"

#include "loom/core/parallel.hpp"

namespace loom::cpu {

/// RMSNorm forward over N contiguous rows of C:
///   ms (N)     = mean over c of x[n, c]^2
///   rstd (N)   = 1 / sqrt(ms + eps)                 (saved when `rstd` is not null)
///   out (N, C) = x * rstd[n] * weight[c]            (weight null: 1)
/// With a residual (N, C), sum (N, C) = x + residual is written and normalised instead of x.
template <class T>
void rms_norm_forward(T* out, T* rstd, const T* x, const T* weight, int64_t N, int64_t C, double eps,
                      const T* residual = nullptr, T* sum = nullptr) {
  using Arr = Eigen::Array<T, Eigen::Dynamic, 1>;
  if (C == 0) return;
  for_each_row(N, C, [&](int64_t n) {
    if (residual)
      Eigen::Map<Arr>(sum + n * C, C) = Eigen::Map<const Arr>(x + n * C, C) +
                                        Eigen::Map<const Arr>(residual + n * C, C);
    Eigen::Map<const Arr> xr((residual ? sum : x) + n * C, C);
    Eigen::Map<Arr> y(out + n * C, C);
    T s = T(1) / std::sqrt(xr.square().sum() / T(C) + T(eps));
    if (weight) {
      y = xr * s * Eigen::Map<const Arr>(weight, C);
    } else {
      y = xr * s;
    }
    if (rstd) rstd[n] = s;
  });
}

/// RMSNorm backward, fused: from dout (N, C) and the forward's x, weight and rstd, computes
/// dx (N, C, written) and, when not null, dweight (C, written):
///   xhat (C)  = x[n] * rstd[n],   dxhat (C) = dout[n] * weight   (weight null: dout[n])
///   dx[n]     = rstd[n] * (dxhat - xhat * mean(dxhat * xhat))     (+ dsum[n], when given)
///   dweight   = sum over rows n of dout[n] * xhat
/// Rows are split into fixed blocks of 64 whose dweight partials are added in block order, so
/// the result does not depend on the thread count.
template <class T>
void rms_norm_backward(T* dx, T* dweight, const T* dout, const T* x, const T* weight, const T* rstd, int64_t N,
                       int64_t C, const T* dsum = nullptr) {
  using Arr = Eigen::Array<T, Eigen::Dynamic, 1>;
  if (C == 0) return;
  constexpr int64_t block = 64;
  const int64_t nblocks = (N + block - 1) / block;
  std::vector<T> partial(dweight ? size_t(nblocks * C) : 0, T(0));  // (nblocks, C)
  parallel_for(0, nblocks, std::max<int64_t>(1, parallel_grain / std::max<int64_t>(block * C, 1)),
               [&](int64_t lo, int64_t hi) {
    Arr xhat(C), dxhat(C);
    for (int64_t b = lo; b < hi; ++b) {
      for (int64_t n = b * block; n < std::min(N, (b + 1) * block); ++n) {
        Eigen::Map<const Arr> xr(x + n * C, C), dy(dout + n * C, C);
        Eigen::Map<Arr> dxr(dx + n * C, C);
        const T r = rstd[n];
        xhat = xr * r;
        if (weight) dxhat = dy * Eigen::Map<const Arr>(weight, C); else dxhat = dy;
        const T m = (dxhat * xhat).mean();
        dxr = r * (dxhat - xhat * m);
        if (dsum) dxr += Eigen::Map<const Arr>(dsum + n * C, C);
        if (dweight) Eigen::Map<Arr>(partial.data() + b * C, C) += dy * xhat;
      }
    }
  });
  if (!dweight) return;
  std::fill(dweight, dweight + C, T(0));  // written, not added: also the answer for N == 0
  for (int64_t b = 0; b < nblocks; ++b) {
    const T* p = partial.data() + b * C;
    for (int64_t c = 0; c < C; ++c) dweight[c] += p[c];
  }
}

}  // namespace loom::cpu
