#pragma once
/// @file embedding.hpp
/// Embedding lookup on the CPU: copy row idx[n] of the (V, C) table into row n of the output.

#include <cstring>

#include "loom/core/parallel.hpp"

namespace loom::cpu {

/// out[n, :] = weight[idx[n], :] for n < N. Indices must already be checked to lie in [0, V).
template <class T, class I>
void embedding_forward(T* out, const I* idx, const T* weight, int64_t N, int64_t C) {
  parallel_for(0, N, std::max<int64_t>(1, parallel_grain / std::max<int64_t>(C, 1)), [&](int64_t lo, int64_t hi) {
    for (int64_t n = lo; n < hi; ++n) std::memcpy(out + n * C, weight + int64_t(idx[n]) * C, size_t(C) * sizeof(T));
  });
}

}  // namespace loom::cpu
