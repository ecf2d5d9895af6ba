#pragma once
/// @file embedding.hpp
/// Embedding lookup on the CPU: copy row idx[n] of the (V, C) table into row n of the output.

#include <cstring>

#include "loom/core/parallel.hpp"

namespace loom::cpu {

/// out[n, :] = weight[idx[n], :] for n < N. Indices must already be checked to lie in [0, V).
template <class T, class I>
void embedding_forward(T* out, const I* idx, const T* weight, int64_t N, int64_t C) {
  for_each_row(N, C, [&](int64_t n) { std::memcpy(out + n * C, weight + int64_t(idx[n]) * C, size_t(C) * sizeof(T)); });
}

/// dweight[idx[n], :] += dout[n, :] for n < N (dweight is (V, C), already initialised). Threads
/// split the C columns, so each row of dweight is summed in the order of n: deterministic.
template <class T, class I>
void embedding_backward(T* dweight, const T* dout, const I* idx, int64_t N, int64_t C) {
  parallel_for(0, C, std::max<int64_t>(1, parallel_grain / std::max<int64_t>(N, 1)), [&](int64_t c0, int64_t c1) {
    for (int64_t n = 0; n < N; ++n) {
      T* dst = dweight + int64_t(idx[n]) * C;
      const T* src = dout + n * C;
      for (int64_t c = c0; c < c1; ++c) dst[c] += src[c];
    }
  });
}

}  // namespace loom::cpu
