#pragma once
/// @file loss.hpp
/// Cross-entropy loss on logits (the softmax is inside), with ignore_index.

#include "loom/backend/cpu/loss.hpp"
#include <vector>

#include "loom/ops/embedding.hpp"
#include "loom/ops/gpu.hpp"

namespace loom {

/// How per-element losses are combined.
enum class Reduction { mean, sum, none };

namespace detail {
// Cross-entropy on the GPU: the fused kernels of backend/cuda/loss.cuh. The forward keeps the
// log-sum-exp of each row; the backward recomputes the softmax from it. The mean and the count
// of rows not ignored stay on the GPU (no host round trip).
inline Tensor<float> gpu_cross_entropy(const Tensor<float>& logits, const Tensor<int64_t>& targets, int64_t ignore_index,
                                       Reduction reduction) {
  using TF = Tensor<float>;
  LOOM_CHECK(logits.dim() >= 1, shape_error, "cross_entropy: logits need at least 1 dimension, got ", logits.shape());
  Shape expect = logits.shape();
  expect.erase(expect.size() - 1);
  LOOM_CHECK(targets.shape() == expect, shape_error, "cross_entropy: logits ", logits.shape(), " need targets of shape ",
             expect, ", got ", targets.shape());
  const Device d = logits.device();
  const int64_t V = logits.size(-1), N = targets.numel();
  Tensor<int64_t> t = targets.contiguous();
  // (N, V) rows with any row stride (a matmul's output may pad its rows for alignment)
  Shape rows_st;
  TF x = logits;
  if (!(logits.stride(-1) == 1 && view_strides(logits.shape(), logits.strides(), Shape{N, V}, rows_st) &&
        (N <= 1 || rows_st[0] >= V)))
    x = logits.contiguous(), rows_st = Shape{V, 1};
  const int64_t ld = N > 0 ? rows_st[0] : V;
  TF losses = TF::empty(expect, d), lse = TF::empty({N}, d), count = TF::empty({}, d);
  LOOM_GPU_ONLY(cuda::cross_entropy_forward_f32(losses.data(), lse.data(), x.data(), ld, t.data(), N, V, ignore_index,
                                                d.index));
  TF out = losses;
  if (reduction != Reduction::none) {
    out = TF::empty({}, d);
    LOOM_GPU_ONLY(cuda::cross_entropy_reduce_f32(out.data(), count.data(), losses.data(), t.data(), N, ignore_index,
                                                 reduction == Reduction::mean, d.index));
  }
  // backward: dlogits = (softmax(logits) - onehot(target)) * dloss, 0 on ignored rows
  record<float>("cross_entropy", out, {&logits},
                [sx = SavedTensor<float>(x), lse, count, t, N, V, ld, ignore_index, reduction](const TF& g) {
    const TF& xv = sx.get("cross_entropy");
    // dlogits with the logits' row stride: a padded matmul output gets a padded gradient
    TF gc = g.contiguous(), rows = TF::empty({N, ld}, xv.device());
    LOOM_GPU_ONLY(cuda::cross_entropy_backward_f32(rows.data(), gc.data(), reduction == Reduction::none,
                                                   reduction == Reduction::mean ? count.data() : nullptr, xv.data(),
                                                   lse.data(), ld, t.data(), N, V, ignore_index, xv.device().index));
    return std::vector<TF>{rows.slice(1, 0, V).view(xv.shape())};
  });
  return out;
}
}  // namespace detail

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
    if constexpr (std::is_same_v<T, float>)
      if (detail::on_cuda<T>("cross_entropy", logits, targets))
        return detail::gpu_cross_entropy(logits, targets.template to<int64_t>(), ignore_index, reduction);
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
