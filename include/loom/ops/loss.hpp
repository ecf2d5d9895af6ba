#pragma once
/// @file loss.hpp
/// Cross-entropy loss on logits (the softmax is inside), with ignore_index.

#include "loom/backend/cpu/loss.hpp"
#include <vector>

#include "loom/ops/embedding.hpp"

namespace loom {

/// How per-element losses are combined.
enum class Reduction { mean, sum, none };

/// Cross-entropy of logits (..., V) against integer targets (...): -log softmax(logits)[target].
/// Targets equal to ignore_index contribute nothing; `mean` divides by the number of the others
/// (NaN when every target is ignored, as in PyTorch). `none` returns the per-position losses.
template <class T, class I>
Tensor<T> cross_entropy(const Tensor<T>& logits, const Tensor<I>& targets, int64_t ignore_index = -100,
                        Reduction reduction = Reduction::mean) {
  static_assert(is_floating_v<T>, "cross_entropy: needs floating logits");
  if constexpr (is_reduced_float_v<T>) {
    return cross_entropy(logits.template to<float>(), targets, ignore_index, reduction).template to<T>();
  } else {
    detail::check_cpu("cross_entropy", logits, targets);
    LOOM_CHECK(logits.dim() >= 1, shape_error, "cross_entropy: logits need at least 1 dimension, got ", logits.shape());
    Shape expect = logits.shape();
    expect.erase(expect.size() - 1);
    LOOM_CHECK(targets.shape() == expect, shape_error, "cross_entropy: logits ", logits.shape(),
               " need targets of shape ", expect, ", got ", targets.shape());
    int64_t V = logits.size(-1), N = targets.numel();
    Tensor<I> t = targets.contiguous();
    detail::check_indices("cross_entropy", t, V, "target", true, ignore_index);
    Tensor<T> x = logits.contiguous();
    Tensor<T> losses = Tensor<T>::empty(expect);
    if (N > 0) cpu::cross_entropy_forward(losses.data(), x.data(), t.data(), N, V, ignore_index);
    int64_t count = 0;
    Tensor<T> out;
    if (reduction == Reduction::none) {
      out = losses;
    } else {
      double total = 0;
      for (int64_t n = 0; n < N; ++n) {  // in order: the same sum for any thread count
        total += double(losses.data()[n]);
        count += int64_t(t.data()[n]) != ignore_index;
      }
      out = full<T>({}, T(reduction == Reduction::sum ? total : total / double(count)));
    }
    // backward, fused with the softmax: dlogits = (softmax(logits) - onehot(target)) * dloss,
    // where dloss = g / count (mean), g (sum) or g[n] (none); ignored rows get 0.
    detail::record<T>("cross_entropy", out, {&logits},
                      [sx = SavedTensor<T>(x), t, N, V, ignore_index, reduction, count](const Tensor<T>& g) {
      const Tensor<T>& xv = sx.get("cross_entropy");
      Tensor<T> dloss = reduction == Reduction::none
                            ? g.contiguous()
                            : full<T>({N}, T(double(g.item()) / (reduction == Reduction::mean ? double(count) : 1.0)));
      Tensor<T> dx = Tensor<T>::empty(xv.shape());
      if (N > 0) cpu::cross_entropy_backward(dx.data(), xv.data(), t.data(), dloss.data(), N, V, ignore_index);
      return std::vector<Tensor<T>>{dx};
    });
    return out;
  }
}

}  // namespace loom
