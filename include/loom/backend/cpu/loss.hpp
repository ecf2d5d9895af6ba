#pragma once
/// @file loss.hpp
/// Cross-entropy on the CPU, fused with the log-softmax:
///   loss[n] = logsumexp(logits[n, :]) - logits[n, target[n]]
///
/// Contract (shared with backend/cuda/loss.cuh): row n of the logits (and of dlogits) starts at
/// n * ld; targets are int64. The forward writes losses (0 on ignored rows) and the log-sum-exp
/// of each row, and throws index_error naming the position of a target outside [0, V) other than
/// ignore_index. The reduction writes the sum (or the mean over the rows not ignored) and that
/// count as scalars, summed in double in row order. The backward writes dlogits from the saved
/// log-sum-exp; nothing is added to.

#include <cmath>

#include "loom/eigen.hpp"

#include "loom/core/error.hpp"
#include "loom/core/parallel.hpp"

namespace loom::cpu {

/// losses (N) and lse (N) for N rows of V logits (row stride ld) against int64 targets.
template <class T>
void cross_entropy_forward(T* losses, T* lse, const T* logits, int64_t ld, const int64_t* targets, int64_t N,
                           int64_t V, int64_t ignore_index) {
  for (int64_t n = 0; n < N; ++n)
    LOOM_CHECK(targets[n] == ignore_index || (targets[n] >= 0 && targets[n] < V), index_error, "cross_entropy: target ",
               targets[n], " at position ", n, " is out of range for ", V, " classes (ignore_index ", ignore_index, ")");
  using Arr = Eigen::Array<T, Eigen::Dynamic, 1>;
  for_each_row(N, V, [&](int64_t n) {
    Eigen::Map<const Arr> x(logits + n * ld, V);
    const T m = x.maxCoeff();
    const T log_z = std::log((x - m).exp().sum());
    lse[n] = m + log_z;
    const int64_t t = targets[n];
    losses[n] = t == ignore_index ? T(0) : (m - x[t]) + log_z;  // small terms first
  });
}

/// out = sum of losses, or their mean over the rows not ignored (mean); count = those rows.
template <class T>
void cross_entropy_reduce(T* out, T* count, const T* losses, const int64_t* targets, int64_t N, int64_t ignore_index,
                          bool mean) {
  double total = 0;
  int64_t kept = 0;
  for (int64_t n = 0; n < N; ++n) {  // in order: the same sum for any thread count
    total += double(losses[n]);
    kept += targets[n] != ignore_index;
  }
  *out = T(mean ? total / double(kept) : total);
  *count = T(double(kept));
}

/// dlogits[n, :] = (softmax(logits[n, :]) - onehot(target[n])) * dloss_n, with the softmax
/// recomputed from lse; dloss_n = dloss[n] (per_row) or dloss[0], divided by *count when count is
/// not null (mean). Ignored rows get 0.
template <class T>
void cross_entropy_backward(T* dlogits, const T* dloss, bool per_row, const T* count, const T* logits, const T* lse,
                            int64_t ld, const int64_t* targets, int64_t N, int64_t V, int64_t ignore_index) {
  using Arr = Eigen::Array<T, Eigen::Dynamic, 1>;
  for_each_row(N, V, [&](int64_t n) {
    Eigen::Map<Arr> dx(dlogits + n * ld, V);
    const int64_t t = targets[n];
    if (t == ignore_index) {
      dx.setZero();
      return;
    }
    T d = per_row ? dloss[n] : dloss[0];
    if (count) d = T(double(d) / double(*count));
    dx = (Eigen::Map<const Arr>(logits + n * ld, V) - lse[n]).exp() * d;
    dx[t] -= d;
  });
}

}  // namespace loom::cpu
