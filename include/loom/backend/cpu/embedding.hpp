#pragma once
/// @file embedding.hpp
/// Embedding lookup on the CPU: copy row idx[n] of the (V, C) table into row n of the output.
///
/// Contract (shared with backend/cuda/embedding.cuh): int64 indices; the forward throws
/// index_error naming the position of an index outside [0, V); the backward writes the whole
/// (V, C) dweight (overwritten, not added to), adding repeated indices in the order of n.

#include <algorithm>
#include <cstring>

#include "loom/core/error.hpp"
#include "loom/core/parallel.hpp"

namespace loom::cpu {

/// out[n, :] = weight[idx[n], :] for n < N; throws index_error for an index outside [0, V).
template <class T>
void embedding_forward(T* out, const int64_t* idx, const T* weight, int64_t N, int64_t C, int64_t V) {
  for (int64_t n = 0; n < N; ++n)
    LOOM_CHECK(idx[n] >= 0 && idx[n] < V, index_error, "embedding: index ", idx[n], " at position ", n,
               " is out of range for a table of ", V, " rows");
  for_each_row(N, C, [&](int64_t n) { std::memcpy(out + n * C, weight + idx[n] * C, size_t(C) * sizeof(T)); });
}

/// dweight (V, C) = sum over n with idx[n] == v of dout[n, :]. Threads split the C columns, so
/// each row of dweight is summed in the order of n: deterministic.
template <class T>
void embedding_backward(T* dweight, const T* dout, const int64_t* idx, int64_t N, int64_t C, int64_t V) {
  std::fill(dweight, dweight + V * C, T(0));
  parallel_for(0, C, std::max<int64_t>(1, parallel_grain / std::max<int64_t>(N, 1)), [&](int64_t c0, int64_t c1) {
    for (int64_t n = 0; n < N; ++n) {
      T* dst = dweight + int64_t(idx[n]) * C;
      const T* src = dout + n * C;
      for (int64_t c = c0; c < c1; ++c) dst[c] += src[c];
    }
  });
}

}  // namespace loom::cpu
