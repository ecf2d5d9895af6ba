#pragma once
/// @file rope.hpp
/// Rotary position embedding (RoPE) on the CPU: each pair of a head's features is rotated by
/// an angle proportional to the token's position, pair p of position n by n * theta^(-2p/HS).
///
/// Contract: x is (B, T, H, HS) with element strides (b, t, h) and a unit stride along HS; out
/// is a contiguous (B, T, H, HS) array (written, not added to); pos is a contiguous (B, T) int64
/// array on the CPU; HS is even. The pairs are (p, p + HS/2) for RopeLayout::half and
/// (2p, 2p + 1) for RopeLayout::interleaved. For each pair (i, j) and angle a:
///   out[i] = x[i] cos(a) - x[j] sin(a),   out[j] = x[j] cos(a) + x[i] sin(a),
/// with a negated when `inverse` (the backward: a rotation's inverse is the opposite rotation).
/// The angle and its cosine and sine are computed in double, once per distinct position and pair
/// (a table, when the positions span no more than B * T values) and shared by the H heads; the
/// rotation itself is done in T. The calling thread keeps its last table: the queries and keys
/// of every layer, forward and backward, share their positions, so a training step computes it
/// once (and a run whose positions never change, once in all).

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "loom/backend/op_codes.hpp"
#include "loom/core/parallel.hpp"

namespace loom::cpu {

/// Element strides of a (B, T, H, HS) operand along B, T and H (the HS stride is 1).
struct RopeStrides {
  int64_t b, t, h;
};

/// out (B, T, H, HS, contiguous) = x rotated pair by pair at positions pos (B, T); see above.
template <class T>
void rope(T* out, const T* x, RopeStrides sx, const int64_t* pos, int64_t B, int64_t T_, int64_t H, int64_t HS,
          double theta, RopeLayout layout, bool inverse) {
  const int64_t half = HS / 2;
  const bool interleaved = layout == RopeLayout::interleaved;
  const int64_t first_step = interleaved ? 2 : 1, second_off = interleaved ? 1 : half;
  const T sign = inverse ? T(-1) : T(1);
  // pair p's frequency theta^(-2p/HS), computed when a table or a row's angles are made
  std::vector<double> inv_freq;
  auto frequencies = [&] {
    inv_freq.resize(size_t(half));
    for (int64_t p = 0; p < half; ++p) inv_freq[size_t(p)] = std::pow(theta, -2.0 * double(p) / double(HS));
  };
  auto angles = [&](int64_t n, T* c, T* s) {  // pair p at position n: cos and sin of n * inv_freq[p]
    for (int64_t p = 0; p < half; ++p) {
      const double a = double(n) * inv_freq[size_t(p)];
      c[p] = T(std::cos(a)), s[p] = T(std::sin(a));
    }
  };
  // The cosines and sines of every position from the smallest to the largest: rows usually
  // share their positions (0 .. T-1), so this is T rows of sincos instead of B * T.
  int64_t first = 0, last = -1;
  if (B * T_ > 0) first = *std::min_element(pos, pos + B * T_), last = *std::max_element(pos, pos + B * T_);
  const int64_t span = last - first + 1;
  const bool table = span <= B * T_;  // else (scattered positions) each row computes its own
  struct Table {
    double theta = 0;
    int64_t HS = 0, first = 0, span = 0;
    std::vector<T> cos, sin;  // (span, half)
  };
  thread_local Table last_table;  // this thread's last table, reused while theta, HS and the span match
  Table& tab = last_table;
  if (table && !(tab.theta == theta && tab.HS == HS && tab.first <= first && last < tab.first + tab.span)) {
    tab.theta = theta, tab.HS = HS, tab.first = first, tab.span = span;
    tab.cos.resize(size_t(span * half)), tab.sin.resize(size_t(span * half));  // every entry written below
    frequencies();
    parallel_for(0, span, std::max<int64_t>(1, parallel_grain / std::max<int64_t>(8 * half, 1)), [&](int64_t lo, int64_t hi) {
      for (int64_t r = lo; r < hi; ++r) angles(first + r, &tab.cos[size_t(r * half)], &tab.sin[size_t(r * half)]);
    });
  }
  if (!table) frequencies();
  parallel_for(0, B * T_, std::max<int64_t>(1, parallel_grain / std::max<int64_t>(H * HS, 1)), [&](int64_t lo, int64_t hi) {
    std::vector<T> own_c(static_cast<size_t>(table ? 0 : half)), own_s(own_c.size());
    for (int64_t bt = lo; bt < hi; ++bt) {
      const int64_t b = bt / T_, t = bt % T_;
      const T *c = table ? &tab.cos[size_t((pos[bt] - tab.first) * half)] : own_c.data(),
              *s = table ? &tab.sin[size_t((pos[bt] - tab.first) * half)] : own_s.data();
      if (!table) angles(pos[bt], own_c.data(), own_s.data());
      for (int64_t h = 0; h < H; ++h) {
        const T* xr = x + b * sx.b + t * sx.t + h * sx.h;
        T* o = out + (bt * H + h) * HS;
        for (int64_t p = 0; p < half; ++p) {
          const int64_t i = p * first_step, j = i + second_off;
          const T xi = xr[i], xj = xr[j], cp = c[p], sp = sign * s[p];
          o[i] = xi * cp - xj * sp;
          o[j] = xj * cp + xi * sp;
        }
      }
    }
  });
}

}  // namespace loom::cpu
