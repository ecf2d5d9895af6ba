#pragma once
/// @file sgemm.hpp
/// loom's own float GEMM for AVX-512 CPUs, in the BLIS style: C = A @ B is cut into blocks that
/// fit the caches, both operands are packed into contiguous panels (which also absorbs any
/// layout: row-major, column-major/transposed), and a 14x32 register-blocked micro-kernel does
/// the multiply-adds: 28 zmm accumulators, each k step one broadcast of A per row and two
/// 16-float loads of B. Without AVX-512 it is not compiled and cpu::gemm uses Eigen.
///
///   for jc in N step NC:                      (B block, shared by the threads, in L3)
///     for pc in K step KC:                    (pack B[pc, jc] into KC x 32 panels)
///       for ic in M step MC (threads):        (pack A[ic, pc] into 14 x KC panels, in L2)
///         for jr, ir: micro-kernel            (a 14 x 32 tile of C in registers)

#if defined(__AVX512F__)
#define LOOM_HAVE_SGEMM 1
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "loom/config.hpp"

namespace loom::cpu::sgemm_detail {

inline constexpr int64_t MR = 14, NR = 32;            // register tile
#ifndef LOOM_SGEMM_KC
#define LOOM_SGEMM_KC 512
#define LOOM_SGEMM_MC 140
#endif
inline constexpr int64_t KC = LOOM_SGEMM_KC, MC = LOOM_SGEMM_MC, NC = 3072;  // cache blocks

// Element (i, j) of a strided matrix: row stride rs, column stride cs.
struct Mat {
  const float* p;
  int64_t rs, cs;
  const float& operator()(int64_t i, int64_t j) const { return p[i * rs + j * cs]; }
};

// Packs A[i0 : i0 + mc, p0 : p0 + kc] as slivers of MR rows: for each k, MR consecutive values.
inline void pack_a(float* dst, Mat A, int64_t i0, int64_t mc, int64_t p0, int64_t kc) {
  for (int64_t ir = 0; ir < mc; ir += MR, dst += MR * kc) {
    int64_t mr = std::min(MR, mc - ir);
    if (A.cs == 1) {  // row-major A: read each row contiguously
      for (int64_t i = 0; i < mr; ++i) {
        const float* row = &A(i0 + ir + i, p0);
        for (int64_t k = 0; k < kc; ++k) dst[k * MR + i] = row[k];
      }
      for (int64_t i = mr; i < MR; ++i)
        for (int64_t k = 0; k < kc; ++k) dst[k * MR + i] = 0.0f;
    } else {  // column-major A (a transposed view): each k is a contiguous run of rows
      for (int64_t k = 0; k < kc; ++k) {
        for (int64_t i = 0; i < mr; ++i) dst[k * MR + i] = A(i0 + ir + i, p0 + k);
        for (int64_t i = mr; i < MR; ++i) dst[k * MR + i] = 0.0f;
      }
    }
  }
}

// Packs B[p0 : p0 + kc, j0 : j0 + nc] as panels of NR columns: for each k, NR consecutive values.
inline void pack_b(float* dst, Mat B, int64_t p0, int64_t kc, int64_t j0, int64_t nc) {
  for (int64_t jr = 0; jr < nc; jr += NR) {
    int64_t nr = std::min(NR, nc - jr);
    float* panel = dst + jr * kc;
    if (B.rs == 1 && B.cs != 1) {  // column-major B (a transposed view): read each column contiguously
      for (int64_t j = 0; j < nr; ++j) {
        const float* col = &B(p0, j0 + jr + j);
        for (int64_t k = 0; k < kc; ++k) panel[k * NR + j] = col[k];
      }
      for (int64_t j = nr; j < NR; ++j)
        for (int64_t k = 0; k < kc; ++k) panel[k * NR + j] = 0.0f;
      continue;
    }
    for (int64_t k = 0; k < kc; ++k) {
      float* d = panel + k * NR;
      if (B.cs == 1 && nr == NR) {
        std::memcpy(d, &B(p0 + k, j0 + jr), NR * sizeof(float));
      } else {
        for (int64_t j = 0; j < nr; ++j) d[j] = B(p0 + k, j0 + jr + j);
        for (int64_t j = nr; j < NR; ++j) d[j] = 0.0f;
      }
    }
  }
}

// C[0:MR, 0:NR] (+)= a (kc x MR packed) . b (kc x NR packed); c row stride ldc.
inline void micro_kernel(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, bool accumulate) {
  __m512 acc[MR][2];
#pragma GCC unroll 14
  for (int i = 0; i < MR; ++i) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
  for (int64_t k = 0; k < kc; ++k) {
    __m512 b0 = _mm512_load_ps(b), b1 = _mm512_load_ps(b + 16);
#pragma GCC unroll 14
    for (int i = 0; i < MR; ++i) {
      __m512 ai = _mm512_set1_ps(a[i]);
      acc[i][0] = _mm512_fmadd_ps(ai, b0, acc[i][0]);
      acc[i][1] = _mm512_fmadd_ps(ai, b1, acc[i][1]);
    }
    a += MR;
    b += NR;
  }
#pragma GCC unroll 14
  for (int i = 0; i < MR; ++i) {
    float* ci = c + i * ldc;
    if (accumulate) {
      acc[i][0] = _mm512_add_ps(acc[i][0], _mm512_loadu_ps(ci));
      acc[i][1] = _mm512_add_ps(acc[i][1], _mm512_loadu_ps(ci + 16));
    }
    _mm512_storeu_ps(ci, acc[i][0]);
    _mm512_storeu_ps(ci + 16, acc[i][1]);
  }
}

// A partial tile (mr < MR or nr < NR): computed into a scratch tile, then copied.
inline void edge_kernel(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, int64_t mr, int64_t nr,
                        bool accumulate) {
  alignas(64) float tile[MR * NR];
  micro_kernel(kc, a, b, tile, NR, false);
  for (int64_t i = 0; i < mr; ++i)
    for (int64_t j = 0; j < nr; ++j) c[i * ldc + j] = accumulate ? c[i * ldc + j] + tile[i * NR + j] : tile[i * NR + j];
}

// 64-byte aligned scratch that grows as needed (one per thread).
struct Scratch {
  float* p = nullptr;
  size_t n = 0;
  float* get(size_t want) {
    if (want > n) {
      std::free(p);
      n = want;
      p = static_cast<float*>(std::aligned_alloc(64, (n * sizeof(float) + 63) / 64 * 64));
    }
    return p;
  }
  ~Scratch() { std::free(p); }
};
inline Scratch& scratch_a() {
  thread_local Scratch s;
  return s;
}
inline Scratch& scratch_b() {
  thread_local Scratch s;  // the calling thread's; its team of threads shares it during one GEMM
  return s;
}

}  // namespace loom::cpu::sgemm_detail

namespace loom::cpu {

/// C (M, N, row stride ldc) = A (M, K) @ B (K, N) [+ C when accumulate], for A and B with any
/// strides (a_rs/a_cs, b_rs/b_cs in elements). Threads split the rows of C; not re-entrant from
/// several threads at once (the packed B buffer is shared), which loom never does.
inline void sgemm(float* c, int64_t ldc, const float* a, int64_t a_rs, int64_t a_cs, const float* b, int64_t b_rs,
                  int64_t b_cs, int64_t M, int64_t N, int64_t K, bool accumulate) {
  using namespace sgemm_detail;
  Mat A{a, a_rs, a_cs}, B{b, b_rs, b_cs};
  for (int64_t jc = 0; jc < N; jc += NC) {
    int64_t nc = std::min(NC, N - jc);
    int64_t nc_pad = (nc + NR - 1) / NR * NR;
    for (int64_t pc = 0; pc < K; pc += KC) {
      int64_t kc = std::min(KC, K - pc);
      bool acc = accumulate || pc > 0;
      float* bp = scratch_b().get(size_t(nc_pad * kc));
      int64_t npanels = nc_pad / NR, nblocks = (M + MC - 1) / MC;
      // Work items: (block of rows of C) x (group of B panels), so that skinny products still
      // use every thread.
      int nt = get_num_threads();
      int64_t groups = nblocks >= nt ? 1 : std::min<int64_t>(npanels, (nt + nblocks - 1) / nblocks);
      int64_t items = nblocks * groups;
#ifdef _OPENMP
#pragma omp parallel num_threads(int(std::min<int64_t>(nt, std::max<int64_t>(items, npanels)))) if (M * N * kc > (1 << 18))
#endif
      {
#ifdef _OPENMP
        int t = omp_get_thread_num(), T = omp_get_num_threads();
#else
        int t = 0, T = 1;
#endif
        // Pack B cooperatively: each thread packs a share of the panels.
        for (int64_t p = t; p < npanels; p += T) {
          int64_t nr = std::min(NR, nc - p * NR);
          pack_b(bp + p * NR * kc, B, pc, kc, jc + p * NR, nr);
        }
#ifdef _OPENMP
#pragma omp barrier
#endif
        for (int64_t item = t; item < items; item += T) {
          int64_t ib = item / groups, g = item % groups;
          int64_t ic = ib * MC, mc = std::min(MC, M - ic);
          int64_t p0 = npanels * g / groups, p1 = npanels * (g + 1) / groups;
          float* ap = scratch_a().get(size_t((mc + MR - 1) / MR * MR * kc));
          pack_a(ap, A, ic, mc, pc, kc);
          for (int64_t p = p0; p < p1; ++p) {
            int64_t jr = p * NR, nr = std::min(NR, nc - jr);
            const float* bpanel = bp + jr * kc;
            for (int64_t ir = 0; ir < mc; ir += MR) {
              int64_t mr = std::min(MR, mc - ir);
              float* cij = c + (ic + ir) * ldc + jc + jr;
              const float* apanel = ap + ir * kc;
              if (mr == MR && nr == NR) micro_kernel(kc, apanel, bpanel, cij, ldc, acc);
              else edge_kernel(kc, apanel, bpanel, cij, ldc, mr, nr, acc);
            }
          }
        }
      }
    }
  }
}

}  // namespace loom::cpu

#endif  // __AVX512F__
