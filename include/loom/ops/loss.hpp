#pragma once
/// @file loss.hpp
/// Cross-entropy loss on logits (the softmax is inside), with ignore_index; and a language
/// model's loss from its last hidden states and output matrix in one op.

#include <vector>

#include "loom/core/tensor.hpp"
#include "loom/ops/matmul.hpp"

namespace loom {

/// How per-element losses are combined.
enum class Reduction { mean, sum, none };

namespace detail {

/// Cross-entropy's forward and reduction, shared by cross_entropy and linear_cross_entropy.
template <class T>
struct CrossEntropyForward {
  Tensor<T> out;    ///< the reduced loss (a scalar), or the per-row losses for Reduction::none
  Tensor<T> lse;    ///< (N) each row's log-sum-exp, for the backward
  Tensor<T> count;  ///< () the rows not ignored (written by the mean and sum reductions)
};

/// The losses of N rows of V logits at x (rows ld apart) against targets t (N, contiguous), as a
/// tensor of `shape` (N elements), then reduced unless `reduction` is none.
template <class T>
CrossEntropyForward<T> cross_entropy_forward(Device d, const T* x, int64_t ld, const Tensor<int64_t>& t, int64_t N,
                                             int64_t V, int64_t ignore_index, const Shape& shape, Reduction reduction) {
  CrossEntropyForward<T> f{Tensor<T>::empty(shape, d), Tensor<T>::empty({N}, d), Tensor<T>::empty({}, d)};
  kernel::cross_entropy_forward(d, f.out.data(), f.lse.data(), x, ld, t.data(), N, V, ignore_index);
  if (reduction != Reduction::none) {
    Tensor<T> losses = f.out;
    f.out = Tensor<T>::empty({}, d);
    kernel::cross_entropy_reduce(d, f.out.data(), f.count.data(), losses.data(), t.data(), N, ignore_index,
                                 reduction == Reduction::mean);
  }
  return f;
}

}  // namespace detail

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
    // the losses (or their reduction), each row's log-sum-exp and the count of rows not ignored
    detail::CrossEntropyForward<T> f = detail::cross_entropy_forward(d, x.data(), ld, t, N, V, ignore_index, expect,
                                                                     reduction);
    // backward: dlogits = (softmax(logits) - onehot(target)) * dloss, where dloss = g / count
    // (mean), g (sum) or g[n] (none); ignored rows get 0. dlogits has the logits' row stride.
    detail::record<T>("cross_entropy", f.out, {&logits},
                      [sx = SavedTensor<T>(x), lse = f.lse, count = f.count, t, N, V, ld, ignore_index,
                       reduction](const Tensor<T>& g) {
      const Tensor<T>& xv = sx.get("cross_entropy");
      const Device d = xv.device();
      Tensor<T> gc = g.contiguous(), rows = Tensor<T>::empty({N, ld}, d);
      kernel::cross_entropy_backward(d, rows.data(), gc.data(), reduction == Reduction::none,
                                     reduction == Reduction::mean ? count.data() : nullptr, xv.data(), lse.data(), ld,
                                     t.data(), N, V, ignore_index);
      return std::vector<Tensor<T>>{rows.slice(1, 0, V).view(xv.shape())};
    });
    return f.out;
  }
}

/// The mean cross-entropy of the logits x @ w^T against targets: a language model's loss from its
/// last hidden states x (N, C) and its output matrix w (V, C), targets (N), ignore_index as in
/// cross_entropy. The same value as cross_entropy(matmul(x, w.t()), targets, ignore_index), and
/// so computed, except on CUDA under AutocastGuard: there the backward writes the logits'
/// gradient once, in bf16 and zero-padded to the width its two GEMMs read (a multiple of 8),
/// instead of in fp32 and then converted, and no fp32 gradient of the (N, V) logits is stored.
template <class T>
Tensor<T> linear_cross_entropy(const Tensor<T>& x, const Tensor<T>& w, const Tensor<int64_t>& targets,
                               int64_t ignore_index = -100) {
  static_assert(is_floating_v<T>, "linear_cross_entropy: needs a floating element type");
  if constexpr (!std::is_same_v<T, float>) {
    return cross_entropy(matmul(x, w.t()), targets, ignore_index);
  } else {
    const Device d = detail::op_device<float>("linear_cross_entropy", x, w, targets);
    LOOM_CHECK(x.dim() == 2 && w.dim() == 2 && x.size(1) == w.size(1) && targets.dim() == 1 &&
                   targets.size(0) == x.size(0),
               shape_error, "linear_cross_entropy: x", x.shape(), ", w", w.shape(), " and targets", targets.shape(),
               " do not fit x (N, C), w (V, C), targets (N)");
    if (!(AutocastGuard::bf16() && d.is_cuda()) || x.numel() == 0 || w.numel() == 0)
      return cross_entropy(matmul(x, w.t()), targets, ignore_index);
    const int64_t N = x.size(0), V = w.size(0), Np = (V + 7) / 8 * 8;
    const Tensor<int64_t> t = targets.contiguous();
    // x16 (N, C) and w16 (C, Np), a view of w's layout with Np - V zero columns: the operands the
    // matmul under autocast would make; logits (N, Np) fp32, of which the first V columns count
    const Tensor<bf16> x16 = detail::to_bf16(x), w16 = Np != V ? detail::to_bf16_padded(w.t(), Np) : detail::to_bf16(w.t());
    const Tensor<float> logits = detail::product(x16, w16);
    detail::CrossEntropyForward<float> f = detail::cross_entropy_forward(d, logits.data(), Np, t, N, V, ignore_index,
                                                                         Shape{N}, Reduction::mean);
    detail::record<float>("linear_cross_entropy", f.out, {&x, &w},
                          [x16, w16, logits, lse = f.lse, count = f.count, t, N, V, Np,
                           ignore_index](const Tensor<float>& g) {
      const Device d = logits.device();
      // dlogits (N, Np) bf16 = (softmax(logits) - onehot(t)) * g / count, 0 in the padding
      Tensor<bf16> dl = Tensor<bf16>::empty({N, Np}, d);
      const Tensor<float> gc = g.contiguous();
      kernel::cross_entropy_backward_bf16(d, dl.data(), Np, Np, gc.data(), false, count.data(), logits.data(),
                                          lse.data(), Np, t.data(), N, V, ignore_index);
      Tensor<float> dx = detail::product(dl, w16.transpose(0, 1));  // (N, Np) @ (Np, C)
      Tensor<float> dw = detail::product(dl.transpose(0, 1), x16);  // (Np, N) @ (N, C), then its first V rows
      return std::vector<Tensor<float>>{dx, dw.slice(0, 0, V)};
    });
    return f.out;
  }
}

}  // namespace loom
