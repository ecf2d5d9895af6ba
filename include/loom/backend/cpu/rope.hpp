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
/// The angle and its cosine and sine are computed in double, once per (b, t, p) and shared by
/// the H heads; the rotation itself is done in T.

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
  // pair p of feature pairs: its two features, and its frequency theta^(-2p/HS)
  std::vector<double> inv_freq(static_cast<size_t>(half));
  for (int64_t p = 0; p < half; ++p) inv_freq[size_t(p)] = std::pow(theta, -2.0 * double(p) / double(HS));
  const bool interleaved = layout == RopeLayout::interleaved;
  const int64_t first_step = interleaved ? 2 : 1, second_off = interleaved ? 1 : half;
  const double sign = inverse ? -1.0 : 1.0;
  parallel_for(0, B * T_, std::max<int64_t>(1, parallel_grain / std::max<int64_t>(H * HS, 1)), [&](int64_t lo, int64_t hi) {
    std::vector<T> c(static_cast<size_t>(half)), s(static_cast<size_t>(half));
    for (int64_t bt = lo; bt < hi; ++bt) {
      const int64_t b = bt / T_, t = bt % T_;
      const double n = double(pos[bt]);
      for (int64_t p = 0; p < half; ++p) {
        const double a = n * inv_freq[size_t(p)];
        c[size_t(p)] = T(std::cos(a)), s[size_t(p)] = T(sign * std::sin(a));
      }
      for (int64_t h = 0; h < H; ++h) {
        const T* xr = x + b * sx.b + t * sx.t + h * sx.h;
        T* o = out + (bt * H + h) * HS;
        for (int64_t p = 0; p < half; ++p) {
          const int64_t i = p * first_step, j = i + second_off;
          const T xi = xr[i], xj = xr[j], cp = c[size_t(p)], sp = s[size_t(p)];
          o[i] = xi * cp - xj * sp;
          o[j] = xj * cp + xi * sp;
        }
      }
    }
  });
}

}  // namespace loom::cpu
