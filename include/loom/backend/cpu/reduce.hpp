#pragma once
/// @file reduce.hpp
/// The CPU reduction kernel: reduce the middle axis of a contiguous (outer, R, inner) array.
///
/// Results never depend on the thread count: a long row is cut into fixed blocks whose partial
/// results are merged in block order, whatever the number of threads working on them.

#include <algorithm>
#include <vector>

#include "loom/core/parallel.hpp"

namespace loom::cpu {

/// Rows longer than this are reduced in blocks of this size, then merged in order.
inline constexpr int64_t reduce_block = 16384;

/// For each (o, i): acc = init; acc = step(acc, in[o][r][i], r) for r in [0, R); emit(o * inner + i, acc).
/// `merge(a, b)` combines two partial results; it must be associative, as partials come from
/// interleaved and consecutive runs of r.
template <class Acc, class T, class Step, class Merge, class Emit>
void reduce_axis(const T* in, int64_t outer, int64_t R, int64_t inner, Acc init, Step step, Merge merge,
                 Emit emit) {
  if (outer == 0 || inner == 0) return;
  if (inner == 1) {
    // Rows: (row, block) tasks in parallel, merged per row in block order.
    int64_t nblocks = std::max<int64_t>(1, (R + reduce_block - 1) / reduce_block);
    std::vector<Acc> partial(size_t(outer * nblocks), init);
    int64_t grain = std::max<int64_t>(1, parallel_grain / std::min(std::max<int64_t>(R, 1), reduce_block) + 1);
    parallel_for(0, outer * nblocks, grain, [&](int64_t lo, int64_t hi) {
      for (int64_t task = lo; task < hi; ++task) {
        int64_t o = task / nblocks, b = task % nblocks;
        int64_t r0 = b * reduce_block, r1 = std::min(R, r0 + reduce_block);
        const T* row = in + o * R;
        // Eight interleaved accumulators break the add-latency chain (4x faster sums); they
        // are merged in a fixed order, so the result is still the same on every run.
        constexpr int lanes = 8;
        Acc lane[lanes];
        std::fill(lane, lane + lanes, init);
        int64_t r = r0;
        for (; r + lanes <= r1; r += lanes)
          for (int l = 0; l < lanes; ++l) lane[l] = step(lane[l], row[r + l], r + l);
        Acc acc = lane[0];
        for (int l = 1; l < lanes; ++l) acc = merge(acc, lane[l]);
        for (; r < r1; ++r) acc = step(acc, row[r], r);
        partial[size_t(task)] = acc;
      }
    });
    for (int64_t o = 0; o < outer; ++o) {
      Acc acc = partial[size_t(o * nblocks)];
      for (int64_t b = 1; b < nblocks; ++b) acc = merge(acc, partial[size_t(o * nblocks + b)]);
      emit(o, acc);
    }
    return;
  }
  // Columns: each task owns a tile of `inner` for one o and walks r in order.
  constexpr int64_t tile = 256;
  int64_t ntiles = (inner + tile - 1) / tile;
  int64_t grain = std::max<int64_t>(1, parallel_grain / (std::max<int64_t>(R, 1) * tile) + 1);
  parallel_for(0, outer * ntiles, grain, [&](int64_t lo, int64_t hi) {
    Acc acc[tile];
    for (int64_t task = lo; task < hi; ++task) {
      int64_t o = task / ntiles, i0 = (task % ntiles) * tile, n = std::min(tile, inner - i0);
      std::fill(acc, acc + n, init);
      for (int64_t r = 0; r < R; ++r) {
        const T* x = in + (o * R + r) * inner + i0;
        for (int64_t j = 0; j < n; ++j) acc[j] = step(acc[j], x[j], r);
      }
      for (int64_t j = 0; j < n; ++j) emit(o * inner + i0 + j, acc[j]);
    }
  });
}

}  // namespace loom::cpu
