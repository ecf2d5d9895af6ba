#pragma once
/// @file embedding.hpp
/// Embedding lookup: rows of a (V, C) table gathered by integer indices.

#include <type_traits>

#include "loom/backend/cpu/embedding.hpp"
#include "loom/ops/common.hpp"

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
  detail::check_cpu("embedding", weight, idx);
  LOOM_CHECK(weight.dim() == 2, shape_error, "embedding: weight must be 2-D (V, C), got shape ", weight.shape());
  Tensor<I> ix = idx.contiguous();
  detail::check_indices("embedding", ix, weight.size(0), "index");
  Tensor<T> w = weight.contiguous();
  Shape s = idx.shape();
  s.push_back(weight.size(1));
  Tensor<T> out = Tensor<T>::empty(s);
  cpu::embedding_forward(out.data(), ix.data(), w.data(), ix.numel(), weight.size(1));
  return out;
}

}  // namespace loom
