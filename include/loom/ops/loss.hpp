#pragma once
/// @file loss.hpp
/// Cross-entropy loss on logits (the softmax is inside), with ignore_index.

#include <vector>

#include "loom/core/tensor.hpp"

namespace loom {

/// How per-element losses are combined.
enum class Reduction { mean, sum, none };

/// Cross-entropy of logits (..., V) against integer targets (...): -log softmax(logits)[target].
/// Targets equal to ignore_index contribute nothing; `mean` divides by the number of the others
/// (NaN when every target is ignored, as in PyTorch). `none` returns the per-position losses.
/// Fused: the forward keeps each row's log-sum-exp, and the backward recomputes the softmax
/// from it. The mean and the count of rows not ignored stay on the device (no host round trip).
template <class T, class I>
Tensor<T> cross_entropy(const Tensor<T>& logits, const Tensor<I>& targets, int64_t ignore_index = -100,
                        Reduction reduction = Reduction::mean) {
  static_assert(is_floating_v<T>, "cross_entropy: needs floating logits");
  static_assert(std::is_same_v<I, int32_t> || std::is_same_v<I, int64_t>, "cross_entropy: int32 or int64 targets");
  if constexpr (is_reduced_float_v<T>) {
    return cross_entropy(logits.template to<float>(), targets, ignore_index, reduction).template to<T>();
  } else {
    const Device d = detail::op_device<T>("cross_entropy", logits, targets);
    LOOM_CHECK(logits.dim() >= 1, shape_error, "cross_entropy: logits need at least 1 dimension, got ", logits.shape());
    Shape expect = logits.shape();
    expect.erase(expect.size() - 1);
    LOOM_CHECK(targets.shape() == expect, shape_error, "cross_entropy: logits ", logits.shape(),
               " need targets of shape ", expect, ", got ", targets.shape());
    const int64_t V = logits.size(-1), N = targets.numel();
    Tensor<int64_t> t = targets.template to<int64_t>().contiguous();
    // logits as N rows of V with any row stride (a matmul's output may pad its rows for alignment)
    Shape rows_st;
    Tensor<T> x = logits;
    if (!(logits.stride(-1) == 1 && detail::view_strides(logits.shape(), logits.strides(), Shape{N, V}, rows_st) &&
          (N <= 1 || rows_st[0] >= V)))
      x = logits.contiguous(), rows_st = Shape{V, 1};
    const int64_t ld = N > 0 ? rows_st[0] : V;
    // losses (N) and the log-sum-exp of each row (N); then the reduction and the count kept
    Tensor<T> losses = Tensor<T>::empty(expect, d), lse = Tensor<T>::empty({N}, d), count = Tensor<T>::empty({}, d);
    kernel::cross_entropy_forward(d, losses.data(), lse.data(), x.data(), ld, t.data(), N, V, ignore_index);
    Tensor<T> out = losses;
    if (reduction != Reduction::none) {
      out = Tensor<T>::empty({}, d);
      kernel::cross_entropy_reduce(d, out.data(), count.data(), losses.data(), t.data(), N, ignore_index,
                                   reduction == Reduction::mean);
    }
    // backward: dlogits = (softmax(logits) - onehot(target)) * dloss, where dloss = g / count
    // (mean), g (sum) or g[n] (none); ignored rows get 0. dlogits has the logits' row stride.
    detail::record<T>("cross_entropy", out, {&logits},
                      [sx = SavedTensor<T>(x), lse, count, t, N, V, ld, ignore_index, reduction](const Tensor<T>& g) {
      const Tensor<T>& xv = sx.get("cross_entropy");
      const Device d = xv.device();
      Tensor<T> gc = g.contiguous(), rows = Tensor<T>::empty({N, ld}, d);
      kernel::cross_entropy_backward(d, rows.data(), gc.data(), reduction == Reduction::none,
                                     reduction == Reduction::mean ? count.data() : nullptr, xv.data(), lse.data(), ld,
                                     t.data(), N, V, ignore_index);
      return std::vector<Tensor<T>>{rows.slice(1, 0, V).view(xv.shape())};
    });
    return out;
  }
}

}  // namespace loom
