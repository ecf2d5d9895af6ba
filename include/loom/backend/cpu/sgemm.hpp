#pragma once
/// @file sgemm.hpp
/// loom's own float GEMM for AVX-512 CPUs, in the BLIS style: C = A @ B is cut into blocks that
/// fit the caches, both operands are packed into contiguous panels (which also absorbs any
/// layout: row-major, column-major/transposed), and a 14x32 register-blocked micro-kernel does
/// the multiply-adds: 28 zmm accumulators, each k step one broadcast of A per row and two
/// 16-float loads of B (avx512.hpp's fma_block, which the fused attention runs too). Without
/// AVX-512 it is not compiled and cpu::gemm uses Eigen.
///
///   for jc in N step NC:                      (B block, shared by the threads, in L3)
///     for pc in K step KC:                    (pack B[pc, jc] into KC x 32 panels)
///       for ic in M step MC (threads):        (pack A[ic, pc] into 14 x KC panels, in L2)
///         for jr, ir: micro-kernel            (a 14 x 32 tile of C in registers)

#if defined(__AVX512F__)
#define LOOM_HAVE_SGEMM 1
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "loom/backend/cpu/avx512.hpp"
#include "loom/config.hpp"

namespace loom::cpu::sgemm_detail {

inline constexpr int64_t MR = 14, NR = 32;            // register tile
#ifndef LOOM_SGEMM_KC
#define LOOM_SGEMM_KC 512
#define LOOM_SGEMM_MC 140
#endif
inline constexpr int64_t KC = LOOM_SGEMM_KC, MC = LOOM_SGEMM_MC, NC = 3072;  // cache blocks
inline constexpr int64_t b_direct_max = int64_t(1) << 20;  // floats of a row-major B read in place (4 MB)

// Element (i, j) of a strided matrix: row stride rs, column stride cs.
struct Mat {
  const float* p;
  int64_t rs, cs;
  const float& operator()(int64_t i, int64_t j) const { return p[i * rs + j * cs]; }
};

using avx512::lanes;
using avx512::transpose16;

// Packs the rows [i0, i0 + mc) of A[:, p0 : p0 + kc] as slivers of MR rows: for each k, MR
// consecutive values (rows past mc are zeros).
inline void pack_a(float* dst, Mat A, int64_t i0, int64_t mc, int64_t p0, int64_t kc) {
  if (A.rs == 1 && A.cs != 1) {  // column-major A (a transposed view): each k is a contiguous run of rows
    for (int64_t k = 0; k < kc; ++k)
      for (int64_t ir = 0; ir < mc; ir += MR) {
        __mmask16 m = lanes(std::min(MR, mc - ir));
        _mm512_mask_storeu_ps(dst + ir * kc + k * MR, lanes(MR), _mm512_maskz_loadu_ps(m, &A(i0 + ir, p0 + k)));
      }
    return;
  }
  for (int64_t ir = 0; ir < mc; ir += MR, dst += MR * kc) {
    int64_t mr = std::min(MR, mc - ir);
    if (A.cs == 1) {  // row-major A: 16 columns of MR rows at a time, transposed in registers
      for (int64_t k0 = 0; k0 < kc; k0 += 16) {
        int64_t kn = std::min<int64_t>(16, kc - k0);
        __m512 r[16];
        for (int64_t i = 0; i < 16; ++i)
          r[i] = i < mr ? _mm512_maskz_loadu_ps(lanes(kn), &A(i0 + ir + i, p0 + k0)) : _mm512_setzero_ps();
        transpose16(r);
        for (int64_t j = 0; j < kn; ++j) _mm512_mask_storeu_ps(dst + (k0 + j) * MR, lanes(MR), r[j]);
      }
    } else {  // any other strides: element by element
      for (int64_t k = 0; k < kc; ++k)
        for (int64_t i = 0; i < MR; ++i) dst[k * MR + i] = i < mr ? A(i0 + ir + i, p0 + k) : 0.0f;
    }
  }
}

// Packs B[p0 : p0 + kc, j0 : j0 + nc] as panels of NR columns: for each k, NR consecutive values
// (columns past nc are zeros).
inline void pack_b(float* dst, Mat B, int64_t p0, int64_t kc, int64_t j0, int64_t nc) {
  for (int64_t jr = 0; jr < nc; jr += NR) {
    int64_t nr = std::min(NR, nc - jr);
    float* panel = dst + jr * kc;
    if (B.rs == 1 && B.cs != 1) {  // column-major B (a transposed view): 16 x 16 blocks transposed in registers
      for (int64_t h = 0; h < NR; h += 16)
        for (int64_t k0 = 0; k0 < kc; k0 += 16) {
          int64_t kn = std::min<int64_t>(16, kc - k0);
          __m512 r[16];
          for (int64_t j = 0; j < 16; ++j)
            r[j] = h + j < nr ? _mm512_maskz_loadu_ps(lanes(kn), &B(p0 + k0, j0 + jr + h + j)) : _mm512_setzero_ps();
          transpose16(r);
          for (int64_t k = 0; k < kn; ++k) _mm512_store_ps(panel + (k0 + k) * NR + h, r[k]);
        }
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

// C[0:MR, 0:16 NV] (+)= a (kc x MR) . b (kc x 16 NV); c row stride ldc. For each k, the MR
// values of a are consecutive and the next k's are as floats further on (MR when packed, the
// column stride of a column-major A read in place); likewise b's rows, bs apart (NR packed, the
// row stride of a row-major B read in place). NV = 2 is the full tile; NV = 1 serves a last
// panel of at most 16 columns.
template <int NV = 2>
inline void micro_kernel(int64_t kc, const float* a, int64_t as, const float* b, int64_t bs, float* c, int64_t ldc,
                         bool accumulate) {
  avx512::fma_block<MR, NV>(0, kc, a, 1, as, b, bs, c, ldc, 1.0f, accumulate);
}

// A partial tile (mr < MR or nr < NR): computed into a scratch tile, then copied.
inline void edge_kernel(int64_t kc, const float* a, int64_t as, const float* b, int64_t bs, float* c, int64_t ldc,
                        int64_t mr, int64_t nr, bool accumulate) {
  alignas(64) float tile[MR * NR];
  if (nr <= 16) micro_kernel<1>(kc, a, as, b, bs, tile, NR, false);
  else micro_kernel<2>(kc, a, as, b, bs, tile, NR, false);
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
inline Scratch& scratch_a_shared() {
  thread_local Scratch s;  // the calling thread's; A packed once for the whole team (few rows)
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
/// several threads at once (the packed buffers are shared), which loom never does.
inline void sgemm(float* c, int64_t ldc, const float* a, int64_t a_rs, int64_t a_cs, const float* b, int64_t b_rs,
                  int64_t b_cs, int64_t M, int64_t N, int64_t K, bool accumulate) {
  using namespace sgemm_detail;
  Mat A{a, a_rs, a_cs}, B{b, b_rs, b_cs};
  const int nt = get_num_threads();
  // Operands already in the micro-kernel's order are read where they lie, unpacked: a
  // column-major A (each k's rows are contiguous: the dY^T of a weight gradient), of which only
  // a partial last sliver is packed, and a row-major B of whole panels (each k's NR columns are
  // contiguous) that is small enough to stay in the caches. A larger B (the dY of a big weight
  // gradient, streamed from memory) is packed: the packing loads run with nothing waiting on
  // them, where the micro-kernel would stall on each of its strided misses.
  const bool a_direct = A.rs == 1 && A.cs != 1, b_direct = B.cs == 1 && N % NR == 0 && K * N <= b_direct_max;
  // Rows of C go in blocks of whole slivers (MR rows), at most MC rows each and, when there are
  // enough, a multiple of the thread count, so that every thread gets the same number of rows.
  // Fewer rows than threads x MC (a skinny product such as a weight gradient, C 128 x 128): the
  // threads split the columns instead, over one packed copy of A shared by the team.
  const int64_t slivers = (M + MR - 1) / MR;
  int64_t nblocks = (slivers + MC / MR - 1) / (MC / MR);
  const bool few_rows = nblocks < nt, shared_a = few_rows && !a_direct;
  if (!few_rows) nblocks = (nblocks + nt - 1) / nt * nt;
  for (int64_t jc = 0; jc < N; jc += NC) {
    const int64_t nc = std::min(NC, N - jc), nc_pad = (nc + NR - 1) / NR * NR, npanels = nc_pad / NR;
    for (int64_t pc = 0; pc < K; pc += KC) {
      const int64_t kc = std::min(KC, K - pc);
      const bool acc = accumulate || pc > 0;
      float* bp = b_direct ? nullptr : scratch_b().get(size_t(nc_pad * kc));
      float* ap_shared = shared_a ? scratch_a_shared().get(size_t(slivers * MR * kc)) : nullptr;
      const int64_t bs = b_direct ? B.rs : NR;
      // Work items: (block of rows of C) x (group of B panels).
      const int64_t groups = few_rows ? std::min<int64_t>(npanels, nt) : 1, items = nblocks * groups;
#ifdef _OPENMP
#pragma omp parallel num_threads(int(std::min<int64_t>(nt, std::max<int64_t>(items, npanels)))) if (M * N * kc > (1 << 18))
#endif
      {
#ifdef _OPENMP
        const int t = omp_get_thread_num(), T = omp_get_num_threads();
#else
        const int t = 0, T = 1;
#endif
        // Pack B (and a shared A) cooperatively: each thread packs a share of the panels.
        if (bp)
          for (int64_t p = t; p < npanels; p += T) pack_b(bp + p * NR * kc, B, pc, kc, jc + p * NR, std::min(NR, nc - p * NR));
        if (shared_a)
          for (int64_t s = t; s < slivers; s += T) pack_a(ap_shared + s * MR * kc, A, s * MR, std::min(MR, M - s * MR), pc, kc);
#ifdef _OPENMP
        if (bp || shared_a) {
#pragma omp barrier
        }
#endif
        for (int64_t item = t; item < items; item += T) {
          const int64_t ib = item / groups, g = item % groups;
          const int64_t ic = slivers * ib / nblocks * MR, mc = std::min(M, slivers * (ib + 1) / nblocks * MR) - ic;
          const int64_t p0 = npanels * g / groups, p1 = npanels * (g + 1) / groups;
          // Where each sliver of A is read: packed (privately or shared), or in place.
          float* ap = nullptr;
          if (shared_a) {
            ap = ap_shared + ic * kc;
          } else if (!a_direct) {
            ap = scratch_a().get(size_t((mc + MR - 1) / MR * MR * kc));
            pack_a(ap, A, ic, mc, pc, kc);
          } else if (mc % MR) {  // in place, but the partial last sliver is packed
            ap = scratch_a().get(size_t(MR * kc));
            pack_a(ap, A, ic + mc / MR * MR, mc % MR, pc, kc);
          }
          for (int64_t p = p0; p < p1; ++p) {
            const int64_t jr = p * NR, nr = std::min(NR, nc - jr);
            const float* bpanel = bp ? bp + jr * kc : &B(pc, jc + jr);
            for (int64_t ir = 0; ir < mc; ir += MR) {
              const int64_t mr = std::min(MR, mc - ir);
              const bool packed = !a_direct || mr < MR;
              const float* apanel = !a_direct ? ap + ir * kc : mr < MR ? ap : &A(ic + ir, pc);
              const int64_t as = packed ? MR : A.cs;
              float* cij = c + (ic + ir) * ldc + jc + jr;
              if (mr == MR && nr == NR) micro_kernel(kc, apanel, as, bpanel, bs, cij, ldc, acc);
              else edge_kernel(kc, apanel, as, bpanel, bs, cij, ldc, mr, nr, acc);
            }
          }
        }
      }
    }
  }
}

}  // namespace loom::cpu

#endif  // __AVX512F__
