#pragma once
/// @file embedding.hpp
/// Embedding lookup: rows of a (V, C) table gathered by integer indices.

#include <algorithm>
#include <type_traits>
#include <vector>

#include "loom/core/tensor.hpp"

namespace loom {

namespace detail {
// Throws index_error naming the op when an index lies outside [0, n) (ignore is allowed).
template <class I>
void check_indices(const char* op, const Tensor<I>& idx, int64_t n, const char* what, bool has_ignore = false,
                   int64_t ignore = 0) {
  static_assert(std::is_same_v<I, int32_t> || std::is_same_v<I, int64_t>, "indices must be int32 or int64");
  const I* p = idx.data();
  for (int64_t i = 0; i < idx.numel(); ++i) {
    int64_t v = int64_t(p[i]);
    if (has_ignore && v == ignore) continue;
    LOOM_CHECK(v >= 0 && v < n, index_error, op, ": ", what, " ", v, " at position ", i, " is out of range [0, ", n,
               ")");
  }
}
}  // namespace detail

/// out (..., C) = weight[idx] for a (V, C) weight and integer indices of any shape.
template <class T, class I>
Tensor<T> embedding(const Tensor<T>& weight, const Tensor<I>& idx) {
  static_assert(std::is_same_v<I, int32_t> || std::is_same_v<I, int64_t>, "embedding: int32 or int64 indices");
  const Device d = detail::op_device<T>("embedding", weight, idx);
  LOOM_CHECK(weight.dim() == 2, shape_error, "embedding: weight must be 2-D (V, C), got shape ", weight.shape());
  const int64_t V = weight.size(0), C = weight.size(1);
  Tensor<int64_t> ix = idx.template to<int64_t>().contiguous();  // (N) flat; the kernel checks each is in [0, V)
  Tensor<T> w = weight.contiguous();
  Shape s = idx.shape();
  s.push_back(C);
  Tensor<T> out = Tensor<T>::empty(s, d);  // (..., C)
  kernel::embedding_forward(d, out.data(), ix.data(), w.data(), ix.numel(), C, V);
  // backward: dweight[idx[n]] += g[n] (a scatter-add; repeated indices add up in order of n)
  detail::record<T>("embedding", out, {&weight}, [ix, V, C](const Tensor<T>& g) {
    Tensor<T> dw = Tensor<T>::empty({V, C}, g.device()), gc = g.contiguous();
    kernel::embedding_backward(g.device(), dw.data(), gc.data(), ix.data(), ix.numel(), C, V);
    return std::vector<Tensor<T>>{dw};
  });
  return out;
}

/// The entries idx[0], idx[1], ... of dimension `dim` of x, in that order (indices may repeat).
/// idx is 1-D; the result has x's shape with size idx.numel() along `dim`.
template <class T, class I>
Tensor<T> index_select(const Tensor<T>& x, int64_t dim, const Tensor<I>& idx) {
  detail::check_cpu("index_select", x, idx);
  LOOM_CHECK(idx.dim() == 1, shape_error, "index_select: indices must be 1-D, got shape ", idx.shape());
  int a = wrap_axis(dim, x.dim(), "index_select");
  Tensor<I> ix = idx.contiguous();
  int64_t D = x.dim() ? x.size(a) : 1, K = ix.numel(), outer = 1, inner = 1;
  detail::check_indices("index_select", ix, D, "index");
  for (int d = 0; d < a; ++d) outer *= x.size(d);
  for (int d = a + 1; d < x.dim(); ++d) inner *= x.size(d);
  Shape s = x.shape();
  if (x.dim()) s[a] = K;
  Tensor<T> xc = x.contiguous(), out = Tensor<T>::empty(s);
  const T* src = xc.data();
  T* dst = out.data();
  parallel_for(0, outer * K, std::max<int64_t>(1, parallel_grain / std::max<int64_t>(inner, 1)), [&](int64_t lo, int64_t hi) {
    for (int64_t r = lo; r < hi; ++r) {
      int64_t o = r / K, k = r % K;
      std::copy(src + (o * D + int64_t(ix.data()[k])) * inner, src + (o * D + int64_t(ix.data()[k]) + 1) * inner,
                dst + r * inner);
    }
  });
  // backward: dx[.., idx[k], ..] += g[.., k, ..] (repeated indices accumulate, in order of k)
  detail::record<T>("index_select", out, {&x}, [ix, in = x.shape(), outer, D, K, inner](const Tensor<T>& g) {
    Tensor<T> dx = zeros<T>(in), gc = g.contiguous();
    parallel_for(0, outer, 1, [&](int64_t lo, int64_t hi) {
      for (int64_t o = lo; o < hi; ++o)
        for (int64_t k = 0; k < K; ++k) {
          T* d = dx.data() + (o * D + int64_t(ix.data()[k])) * inner;
          const T* s = gc.data() + (o * K + k) * inner;
          for (int64_t i = 0; i < inner; ++i) d[i] += s[i];
        }
    });
    return std::vector<Tensor<T>>{dx};
  });
  return out;
}

}  // namespace loom
