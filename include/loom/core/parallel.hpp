#pragma once
/// @file parallel.hpp
/// parallel_for and the N-operand strided loop that every elementwise CPU kernel is built on.

#include <algorithm>
#include <array>
#include <cstdint>

#include "loom/config.hpp"
#include "loom/core/shape.hpp"

namespace loom {

/// Below this many elements a loop runs on the calling thread: threads cost more than they save.
inline constexpr int64_t parallel_grain = 32768;

/// Calls f(lo, hi) over [begin, end) split into one contiguous chunk per thread, or once on the
/// calling thread when the range is smaller than `grain`. Chunks never overlap.
template <class F>
void parallel_for(int64_t begin, int64_t end, int64_t grain, F&& f) {
  int64_t n = end - begin;
  if (n <= 0) return;
#ifdef _OPENMP
  if (n > grain && get_num_threads() > 1 && !omp_in_parallel()) {
    int64_t max_chunks = std::max<int64_t>(1, n / std::max<int64_t>(grain, 1));
    int nt = int(std::min<int64_t>(get_num_threads(), max_chunks));
#pragma omp parallel num_threads(nt)
    {
      int t = omp_get_thread_num(), T = omp_get_num_threads();
      int64_t lo = begin + n * t / T, hi = begin + n * (t + 1) / T;
      if (lo < hi) f(lo, hi);
    }
    return;
  }
#endif
  (void)grain;
  f(begin, end);
}

/// Calls f(n) for each of N rows of C elements, rows split across threads so that each thread
/// gets at least parallel_grain elements (the shape of every row-wise kernel).
template <class F>
void for_each_row(int64_t N, int64_t C, F&& f) {
  parallel_for(0, N, std::max<int64_t>(1, parallel_grain / std::max<int64_t>(C, 1)), [&](int64_t lo, int64_t hi) {
    for (int64_t n = lo; n < hi; ++n) f(n);
  });
}

/// The layout of N operands iterated together over one shape: sizes plus each operand's strides,
/// with size-1 dimensions dropped and dimensions merged where every operand allows it.
template <int N>
struct StridedLayout {
  int ndim = 0;
  int64_t size[max_dims] = {};
  int64_t stride[N][max_dims] = {};

  /// Builds and coalesces the layout of `shape` read through each operand's strides.
  StridedLayout(const Shape& shape, const std::array<Shape, N>& strides) {
    for (int d = 0; d < shape.size(); ++d) {
      if (shape[d] == 1) continue;
      bool merge = ndim > 0;
      for (int k = 0; k < N && merge; ++k) merge = stride[k][ndim - 1] == strides[k][d] * shape[d];
      if (merge) {
        size[ndim - 1] *= shape[d];
        for (int k = 0; k < N; ++k) stride[k][ndim - 1] = strides[k][d];
      } else {
        size[ndim] = shape[d];
        for (int k = 0; k < N; ++k) stride[k][ndim] = strides[k][d];
        ++ndim;
      }
    }
    if (ndim == 0) {  // a scalar (or all-ones shape): one element
      ndim = 1, size[0] = 1;
      for (int k = 0; k < N; ++k) stride[k][0] = 1;
    }
  }
  /// Total number of elements.
  int64_t numel() const {
    int64_t n = 1;
    for (int d = 0; d < ndim; ++d) n *= size[d];
    return n;
  }
};

/// Runs body(offsets, n, inner_strides) over every element of `layout`, in runs along the
/// innermost dimension: offsets[k] is operand k's element offset at the run's start, n the run
/// length, inner_strides[k] operand k's stride along it. Runs are split across threads when the
/// tensor has more than `grain` elements.
template <int N, class Body>
void strided_for(const StridedLayout<N>& L, Body&& body, int64_t grain = parallel_grain) {
  const int last = L.ndim - 1;
  int64_t inner[N];
  for (int k = 0; k < N; ++k) inner[k] = L.stride[k][last];
  parallel_for(0, L.numel(), grain, [&](int64_t lo, int64_t hi) {
    // Unravel `lo` into a multi-index and the operands' offsets.
    int64_t idx[max_dims], off[N] = {};
    int64_t rem = lo;
    for (int d = last; d >= 0; --d) {
      idx[d] = rem % L.size[d];
      rem /= L.size[d];
      for (int k = 0; k < N; ++k) off[k] += idx[d] * L.stride[k][d];
    }
    for (int64_t pos = lo; pos < hi;) {
      int64_t n = std::min(L.size[last] - idx[last], hi - pos);
      body(static_cast<const int64_t*>(off), n, static_cast<const int64_t*>(inner));
      pos += n;
      idx[last] += n;
      for (int k = 0; k < N; ++k) off[k] += n * inner[k];
      // Carry into the outer dimensions (odometer).
      for (int d = last; d > 0 && idx[d] == L.size[d]; --d) {
        idx[d] = 0;
        ++idx[d - 1];
        for (int k = 0; k < N; ++k) off[k] += L.stride[k][d - 1] - L.size[d] * L.stride[k][d];
      }
    }
  });
}

}  // namespace loom
