#pragma once
/// @file dropout.hpp
/// Dropout's mask applied on the CPU, drawn from the counter-based generator as it goes.
///
/// Contract (shared with backend/cuda/dropout.cuh): over n contiguous elements,
/// out[i] = x[i] * scale where element i's uniform draw is at least p, else 0. Element i's draw is
/// the one rand() gives element i from blocks first, first + 1, ... under `seed` (24 bits for
/// float, bf16 and half, 53 for double), compared as an integer with ceil(p * 2^bits), so both
/// backends keep exactly the same elements. The same call on the gradient is the backward: no
/// mask is stored. out may alias x.

#include <cmath>
#include <cstdint>
#include <type_traits>

#include "loom/core/dtype.hpp"
#include "loom/core/parallel.hpp"
#include "loom/core/random.hpp"

namespace loom::cpu {

/// out[i] = x[i] * scale for the elements whose draw from (seed, first) is >= p, else 0.
template <class T>
void dropout(T* out, const T* x, int64_t n, uint64_t seed, uint64_t first, double p, double scale) {
  using C = compute_t<T>;
  constexpr bool wide = std::is_same_v<T, double>;
  const uint64_t threshold = uint64_t(std::ceil(p * (wide ? 9007199254740992.0 : 16777216.0)));  // p * 2^bits
  const C s = C(scale);
  // Elements 2j and 2j + 1 read block first + j, words 0 (and 1) and 2 (and 3), as rand() does.
  parallel_for(0, (n + 1) / 2, parallel_grain / 8, [&](int64_t lo, int64_t hi) {
    for (int64_t j = lo; j < hi; ++j) {
      const Philox4 r = philox4x32(first + uint64_t(j), seed);
      for (int lane = 0; lane < 2 && 2 * j + lane < n; ++lane) {
        const int64_t i = 2 * j + lane;
        const uint64_t bits = wide ? random_bits53(r.w[2 * lane], r.w[2 * lane + 1]) : random_bits24(r.w[2 * lane]);
        out[i] = ::loom::detail::convert<T>(bits >= threshold ? C(x[i]) * s : C(0));
      }
    }
  });
}

}  // namespace loom::cpu
