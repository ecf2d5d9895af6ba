#pragma once
/// @file avx512.hpp
/// The AVX-512 pieces that loom's float GEMM (sgemm.hpp) and fused attention (attention.hpp)
/// share: lane masks, a 16 x 16 transpose in registers (for packing transposed operands), and
/// the register-blocked multiply-add kernel that both run for their inner products. Without
/// AVX-512 nothing here is compiled, and both fall back to Eigen.

#if defined(__AVX512F__)
#include <immintrin.h>

#include <cstdint>

namespace loom::cpu::avx512 {

/// The low n lanes of a 16-float vector (0 <= n <= 16).
inline __mmask16 lanes(int64_t n) { return __mmask16((1u << n) - 1u); }

/// Transposes the 16 x 16 block r[0..15] (rows) in place, so that r[j] holds column j: three
/// rounds of in-lane unpacks and two of 128-bit lane shuffles (64 shuffles for 256 floats).
inline void transpose16(__m512 r[16]) {
  __m512 t[16], u[16];
  for (int i = 0; i < 16; i += 2) {  // pairs of rows interleaved: (r0[0], r1[0], r0[1], r1[1]) per lane
    t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int g = 0; g < 16; g += 4) {  // u[g + j]: rows g..g+3 of columns j, 4 + j, 8 + j, 12 + j (one per lane)
    __m512d a = _mm512_castps_pd(t[g]), b = _mm512_castps_pd(t[g + 1]);
    __m512d c = _mm512_castps_pd(t[g + 2]), d = _mm512_castps_pd(t[g + 3]);
    u[g + 0] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
    u[g + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
    u[g + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
    u[g + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
  }
  for (int j = 0; j < 4; ++j) {  // gather the four row groups of columns j, 4 + j, 8 + j, 12 + j
    __m512 v0 = _mm512_shuffle_f32x4(u[j], u[4 + j], 0x88), w0 = _mm512_shuffle_f32x4(u[j], u[4 + j], 0xdd);
    __m512 v1 = _mm512_shuffle_f32x4(u[8 + j], u[12 + j], 0x88), w1 = _mm512_shuffle_f32x4(u[8 + j], u[12 + j], 0xdd);
    r[j] = _mm512_shuffle_f32x4(v0, v1, 0x88);
    r[8 + j] = _mm512_shuffle_f32x4(v0, v1, 0xdd);
    r[4 + j] = _mm512_shuffle_f32x4(w0, w1, 0x88);
    r[12 + j] = _mm512_shuffle_f32x4(w0, w1, 0xdd);
  }
}

/// One register block of a float product: C[0:RB, 0:16 NV] = (or +=) alpha * sum over
/// k0 <= k < k1 of A(i, k) B(k, :), with A(i, k) at a[i * ars + k * acs] and row k of B at
/// b + k * ldb (16 NV contiguous floats); C has row stride ldc. RB x NV zmm accumulators stay in
/// registers (RB NV + NV + 1 <= 32): each k step loads NV vectors of B, broadcasts RB values of
/// A and does RB NV fused multiply-adds. The GEMM runs it with RB 14, NV 2 on packed panels
/// (ars 1); attention with RB 8 on its 64 x 64 tiles, reading A in either layout.
template <int RB, int NV>
inline __attribute__((always_inline)) void fma_block(int64_t k0, int64_t k1, const float* a, int64_t ars, int64_t acs,
                                                     const float* b, int64_t ldb, float* c, int64_t ldc, float alpha,
                                                     bool accumulate) {
  static_assert(RB * NV + NV + 1 <= 32, "the accumulators, B's vectors and A's broadcast must fit in 32 zmm registers");
  __m512 acc[RB][NV];
#pragma GCC unroll 16
  for (int i = 0; i < RB; ++i)
    for (int v = 0; v < NV; ++v) acc[i][v] = _mm512_setzero_ps();
  for (int64_t k = k0; k < k1; ++k) {
    __m512 bv[NV];
    for (int v = 0; v < NV; ++v) bv[v] = _mm512_loadu_ps(b + k * ldb + 16 * v);
#pragma GCC unroll 16
    for (int i = 0; i < RB; ++i) {
      __m512 ai = _mm512_set1_ps(a[i * ars + k * acs]);
      for (int v = 0; v < NV; ++v) acc[i][v] = _mm512_fmadd_ps(ai, bv[v], acc[i][v]);
    }
  }
  const __m512 al = _mm512_set1_ps(alpha);
#pragma GCC unroll 16
  for (int i = 0; i < RB; ++i)
    for (int v = 0; v < NV; ++v) {
      float* ci = c + i * ldc + 16 * v;
      _mm512_storeu_ps(ci,
                       accumulate ? _mm512_fmadd_ps(al, acc[i][v], _mm512_loadu_ps(ci)) : _mm512_mul_ps(al, acc[i][v]));
    }
}

}  // namespace loom::cpu::avx512

#endif  // __AVX512F__
