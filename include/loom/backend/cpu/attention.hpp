#pragma once
/// @file attention.hpp
/// Fused causal attention on the CPU, flash-style: out = softmax(q k^T / sqrt(HS) + mask) v,
/// computed tile by tile with an online softmax, so no (T, T) matrix is ever stored. The
/// forward saves only the log-sum-exp of each query row; the backward recomputes each tile of
/// probabilities from it. docs/05-attention.md derives both passes.
///
/// Packed sequences (several examples in one row, as in TRL's packing with position ids, or
/// FlashAttention's varlen kernels): an optional kv_start (B, Tq) int32 gives each query a lower
/// bound on its keys, so query i of row b sees keys kv_start[b, i] <= j <= i + Tk - Tq: a
/// block-diagonal causal mask. Key tiles below the smallest bound of a query tile are skipped.
/// A null kv_start means 0 everywhere. Bounds are clamped to [0, i + Tk - Tq], so every query
/// sees at least its own key (the op layer rejects bounds outside that range on the CPU).
///
/// Operands are (B, NH, T, HS) with any strides whose last one is 1 (q, k, v may be strided
/// views into one (B, T, 3C) qkv buffer; out may be laid out as (B, T, NH, HS)).
///
/// Grouped-query attention (GQA; multi-query when NKV == 1): k and v have NKV heads, NKV dividing
/// NH, and query head h reads key/value head h / (NH / NKV). The keys and values are never
/// repeated in memory: the forward indexes the shared head, and the backward runs one thread
/// task per (b, key/value head) that loops over the G = NH / NKV query heads of its group,
/// accumulating dk and dv over them tile by tile (each dq is written by its group's task only).
/// NKV == NH is ordinary multi-head attention.
///
/// The tile products (S = Q K^T, O += P V, dV += P^T dO, dP = dO V^T, dQ += dS K, dK += dS^T Q)
/// all go through one helper, tile_product, which on AVX-512 machines runs the GEMM's
/// register-blocked float kernel (avx512.hpp's fma_block, with 8 rows x 32 columns of
/// accumulators; K and V are transposed once per head so that every product streams contiguous
/// rows) and elsewhere Eigen's small products. Causal tiles skip the half that the mask hides:
/// the columns, or the terms of the sum, that no query of a block of rows can see.
///
/// Contract (shared with backend/cuda/attention.cuh; the seam, backend/kernels.hpp, stages
/// strided operands for the CUDA backward, which reads contiguous ones): every (B, NH, T, HS)
/// operand has its own strides along B, NH and T and a unit stride along HS; kv_start, when not
/// null, is a contiguous (B, Tq) int32 array shared by the heads; the forward writes out and lse
/// (lse = log sum over the visible keys of exp(s_ij)); the backward writes dq, dk and dv
/// (overwritten, not added to; keys no query sees get 0). q, out, dout, dq and lse have NH heads;
/// k, v, dk and dv have NKV heads (NH % NKV == 0).

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <utility>
#include <vector>

#include "loom/eigen.hpp"

#include "loom/backend/cpu/avx512.hpp"
#include "loom/core/parallel.hpp"

namespace loom::cpu {

/// Element strides of a (B, NH, T, HS) operand along B, NH and T (the HS stride is 1).
struct AttnLayout {
  int64_t b, h, t;
};

namespace detail {
template <class T>
using RowMat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class T>
using ConstRows = Eigen::Map<const RowMat<T>, Eigen::Unaligned, Eigen::OuterStride<>>;
template <class T>
using Rows = Eigen::Map<RowMat<T>, Eigen::Unaligned, Eigen::OuterStride<>>;
template <class T>
using ArrayMap = Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>>;
inline constexpr int64_t attn_block = 64;  // query rows and key columns per tile

// What one block of rows [r0, r1] of a tile product needs: the sum runs over k in [k0, k1), and
// only the first n columns are wanted (the others are masked or unused).
struct TileRange {
  int64_t k0, k1, n;
};

#if defined(__AVX512F__)
// Rows [i, i + RB) of a float tile product, in column chunks of 32 (and a last one of 16).
template <int RB>
inline void tile_rows(int64_t i, const TileRange& r, const float* a, int64_t ars, int64_t acs, const float* b,
                      int64_t ldb, float* c, int64_t ldc, float alpha, bool accumulate) {
  const float* ai = a + i * ars;
  float* ci = c + i * ldc;
  int64_t j = 0;
  for (; j + 16 < r.n; j += 32) avx512::fma_block<RB, 2>(r.k0, r.k1, ai, ars, acs, b + j, ldb, ci + j, ldc, alpha, accumulate);
  if (j < r.n) avx512::fma_block<RB, 1>(r.k0, r.k1, ai, ars, acs, b + j, ldb, ci + j, ldc, alpha, accumulate);
}
#endif

// C (m x n) = (or +=) alpha A B for one tile: A(i, k) at a[i * ars + k * acs] (row-major,
// column-major or strided), row k of B at b + k * ldb, C row-major with row stride ldc.
// range(r0, r1) says which terms and columns rows r0..r1 need (the causal staircase); entries
// outside it are left as they are, so the caller masks or ignores them. With fast (see
// fast_tiles) float products run the AVX-512 kernel, which rounds the columns up to a multiple
// of 16: the rows of b and c must have room for that. Otherwise Eigen computes the whole tile.
template <class T, class Range>
void tile_product(bool fast, T* c, int64_t ldc, const T* a, int64_t ars, int64_t acs, const T* b, int64_t ldb,
                  int64_t m, int64_t n, int64_t K, T alpha, bool accumulate, Range range) {
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<T, float>) {
    if (fast) {
      constexpr int RB = 8;
      int64_t i = 0;
      for (; i + RB <= m; i += RB) tile_rows<RB>(i, range(i, i + RB - 1), a, ars, acs, b, ldb, c, ldc, alpha, accumulate);
      for (; i < m; ++i) tile_rows<1>(i, range(i, i), a, ars, acs, b, ldb, c, ldc, alpha, accumulate);
      return;
    }
  }
#endif
  (void)fast, (void)range;
  using Strided = Eigen::Map<const RowMat<T>, Eigen::Unaligned, Eigen::Stride<Eigen::Dynamic, Eigen::Dynamic>>;
  Strided A(a, m, K, Eigen::Stride<Eigen::Dynamic, Eigen::Dynamic>(ars, acs));
  ConstRows<T> Bm(b, K, n, Eigen::OuterStride<>(ldb));
  Rows<T> C(c, m, n, Eigen::OuterStride<>(ldc));
  if (accumulate) C.noalias() += alpha * (A * Bm);
  else C.noalias() = alpha * (A * Bm);
}

// Whether tile products of this type and head size run the AVX-512 kernel: float, and head sizes
// a multiple of 16 (the (T, T) tiles and transposed heads are padded to multiples of 64).
template <class T>
constexpr bool fast_tiles(int64_t HS) {
#if defined(__AVX512F__)
  return std::is_same_v<T, float> && HS % 16 == 0;
#else
  (void)HS;
  return false;
#endif
}

// x (T, HS, row stride ld) transposed into xt (HS, ldt), the columns from T to ldt zeroed: the
// keys (or values) of one head, so that products with them stream contiguous rows.
template <class T>
void transpose_head(T* xt, int64_t ldt, const T* x, int64_t ld, int64_t Tn, int64_t HS) {
  for (int64_t d = 0; d < HS; ++d) std::fill(xt + d * ldt + Tn, xt + (d + 1) * ldt, T(0));
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<T, float>) {
    if (HS % 16 == 0) {
      for (int64_t j0 = 0; j0 < Tn; j0 += 16)
        for (int64_t d0 = 0; d0 < HS; d0 += 16) {
          const int64_t nj = std::min<int64_t>(16, Tn - j0);
          __m512 r[16];
          for (int64_t j = 0; j < 16; ++j) r[j] = j < nj ? _mm512_loadu_ps(x + (j0 + j) * ld + d0) : _mm512_setzero_ps();
          avx512::transpose16(r);
          for (int64_t d = 0; d < 16; ++d)
            _mm512_mask_storeu_ps(xt + (d0 + d) * ldt + j0, avx512::lanes(nj), r[d]);
        }
      return;
    }
  }
#endif
  for (int64_t j = 0; j < Tn; ++j)
    for (int64_t d = 0; d < HS; ++d) xt[d * ldt + j] = x[j * ld + d];
}

// Sets S(r, c) = -inf where key j0 + c is in the future of query i0 + r (j > i + off), for
// c < nc; S has row stride lds.
template <class T>
void mask_future(T* S, int64_t lds, int64_t nr, int64_t nc, int64_t i0, int64_t j0, int64_t off) {
  for (int64_t r = 0; r < nr; ++r) {
    int64_t first_hidden = std::max<int64_t>(0, i0 + r + off + 1 - j0);
    for (int64_t c = first_hidden; c < nc; ++c) S[r * lds + c] = -std::numeric_limits<T>::infinity();
  }
}

// The first key query i sees: kv_start[i] clamped to [0, i + off], or 0 without kv_start.
inline int64_t first_key(const int32_t* ks, int64_t i, int64_t off) {
  return ks ? std::min<int64_t>(std::max<int64_t>(ks[i], 0), i + off) : 0;
}

// Sets S(r, c) = -inf where key j0 + c is before the first key of query i0 + r (packed rows).
template <class T>
void mask_past(T* S, int64_t lds, int64_t nr, int64_t nc, const int32_t* ks, int64_t i0, int64_t j0, int64_t off) {
  for (int64_t r = 0; r < nr; ++r) {
    int64_t hidden = std::min<int64_t>(nc, first_key(ks, i0 + r, off) - j0);
    for (int64_t c = 0; c < hidden; ++c) S[r * lds + c] = -std::numeric_limits<T>::infinity();
  }
}

// The smallest and largest first key of queries i0 .. i0 + nr - 1.
inline std::pair<int64_t, int64_t> first_key_range(const int32_t* ks, int64_t i0, int64_t nr, int64_t off) {
  if (!ks) return {0, 0};
  int64_t lo = first_key(ks, i0, off), hi = lo;
  for (int64_t r = 1; r < nr; ++r) {
    int64_t f = first_key(ks, i0 + r, off);
    lo = std::min(lo, f), hi = std::max(hi, f);
  }
  return {lo, hi};
}

// The causal staircase of a (query tile i0, key tile j0) pair: query row r sees key column c
// when c < r + d + 1 (d = i0 + off - j0); nc key columns in all.
struct Stair {
  int64_t d, nc;
  // keys seen by query rows up to r1: columns [0, min(nc, r1 + d + 1))
  int64_t keys_upto(int64_t r1) const { return std::clamp<int64_t>(r1 + d + 1, 0, nc); }
  // the first query row that sees key column c0
  int64_t first_query(int64_t c0) const { return std::max<int64_t>(0, c0 - d); }
};

// Per-thread tile buffers: zero-initialised, so columns a product does not compute hold finite
// values, and 64-byte aligned, so that Eigen's vectorised row operations (whose scalar head
// depends on the address) give the same bits in every thread and every run. Each pass allocates
// only the ones it uses.
template <class T>
struct TileBuffers {
  using Buffer = std::vector<T, Eigen::aligned_allocator<T>>;
  Buffer kt, vt, S, P, acc, dk, dv;
  static Buffer zeros(int64_t n) { return Buffer(size_t(n), T(0)); }
  // The forward's: K^T (HS, ldt), S (64, 64) and the output accumulator (64, HS).
  static TileBuffers forward(int64_t ldt, int64_t HS) {
    TileBuffers t;
    t.kt = zeros(HS * ldt), t.S = zeros(attn_block * attn_block), t.acc = zeros(attn_block * HS);
    return t;
  }
  // The backward's: K^T and V^T (HS, ldt), P and dS (64, 64), dK_j and dV_j (64, HS).
  static TileBuffers backward(int64_t ldt, int64_t HS) {
    TileBuffers t;
    t.kt = zeros(HS * ldt), t.vt = zeros(HS * ldt);
    t.S = zeros(attn_block * attn_block), t.P = zeros(attn_block * attn_block);
    t.dk = zeros(attn_block * HS), t.dv = zeros(attn_block * HS);
    return t;
  }
};
}  // namespace detail

/// Forward. q (B, NH, Tq, HS); k, v (B, NKV, Tk, HS) with Tk >= Tq: query i sits at position
/// i + (Tk - Tq) and sees keys j <= that position; query head h reads key/value head
/// h / (NH / NKV). Writes out (B, NH, Tq, HS) and lse (B, NH, Tq, contiguous) = log sum_j
/// exp(s_ij), for the backward. kv_start (B, Tq) or null: query i also hides the keys j < kv_start[b, i].
template <class T>
void attention_forward(T* out, AttnLayout lo, T* lse, const T* q, AttnLayout lq, const T* k, AttnLayout lk,
                       const T* v, AttnLayout lv, int64_t B, int64_t NH, int64_t NKV, int64_t Tq, int64_t Tk,
                       int64_t HS, const int32_t* kv_start = nullptr) {
  using namespace detail;
  const T scale = T(1) / std::sqrt(T(HS)), inf = std::numeric_limits<T>::infinity();
  const int64_t off = Tk - Tq, G = NH / NKV;  // G query heads share each key/value head
  const int64_t ldt = (Tk + attn_block - 1) / attn_block * attn_block, lds = attn_block;
  const bool fast = fast_tiles<T>(HS);
  parallel_for(0, B * NH, 1, [&](int64_t lo_bh, int64_t hi_bh) {
    TileBuffers<T> buf = TileBuffers<T>::forward(ldt, HS);
    T* S = buf.S.data();
    T* acc = buf.acc.data();
    T m[attn_block], l[attn_block];
    int64_t kt_head = -1;  // the (b, key/value head) whose K^T buf.kt holds
    for (int64_t bh = lo_bh; bh < hi_bh; ++bh) {
      int64_t b = bh / NH, h = bh % NH, hk = h / G;
      const T* qb = q + b * lq.b + h * lq.h;
      const T* kb = k + b * lk.b + hk * lk.h;
      const T* vb = v + b * lv.b + hk * lv.h;
      T* ob = out + b * lo.b + h * lo.h;
      const int32_t* ks = kv_start ? kv_start + b * Tq : nullptr;  // (Tq) first keys of this row
      if (b * NKV + hk != kt_head) {  // K^T (HS, ldt), once for the G query heads of a group
        transpose_head(buf.kt.data(), ldt, kb, lk.t, Tk, HS);
        kt_head = b * NKV + hk;
      }
      for (int64_t i0 = 0; i0 < Tq; i0 += attn_block) {
        int64_t nr = std::min(attn_block, Tq - i0);
        std::fill(acc, acc + nr * HS, T(0));
        std::fill(m, m + nr, -inf), std::fill(l, l + nr, T(0));
        int64_t j_end = std::min(Tk, i0 + nr + off);  // the last query row's horizon
        // packed rows: keys before the smallest first key of these queries are skipped whole
        auto [j_begin, j_masked] = first_key_range(ks, i0, nr, off);
        for (int64_t j0 = j_begin; j0 < j_end; j0 += attn_block) {
          const int64_t nc = std::min(attn_block, j_end - j0);
          const Stair st{i0 + off - j0, nc};
          // S (nr, nc) = scale Q_i K_j^T: for each block of rows, only the keys it can see
          tile_product(fast, S, lds, qb + i0 * lq.t, lq.t, int64_t(1), buf.kt.data() + j0, ldt, nr, nc, HS, scale, false,
                       [&](int64_t, int64_t r1) { return TileRange{0, HS, st.keys_upto(r1)}; });
          if (j0 + nc - 1 > i0 + off) mask_future(S, lds, nr, nc, i0, j0, off);
          if (j0 < j_masked) mask_past(S, lds, nr, nc, ks, i0, j0, off);
          for (int64_t r = 0; r < nr; ++r) {  // online softmax, one row at a time
            ArrayMap<T> s(S + r * lds, nc);
            const T m_new = std::max(m[r], s.maxCoeff());               // running row max
            // packed rows: a row whose keys all lie in later tiles still has m_new = -inf; subtract
            // 0 for it instead, so its P row and correction are exp(-inf) = 0, not exp(-inf + inf)
            const T m_sub = m_new == -inf ? T(0) : m_new;
            const T corr = std::exp(m[r] - m_sub);                      // rescales the old sum
            s = (s - m_sub).exp();                                      // P row (masked: 0)
            l[r] = l[r] * corr + s.sum();
            if (corr != T(1)) ArrayMap<T>(acc + r * HS, HS) *= corr;
            m[r] = m_new;
          }
          // acc (nr, HS) += P V_j: each block of rows sums over the keys it can see
          tile_product(fast, acc, HS, S, lds, int64_t(1), vb + j0 * lv.t, lv.t, nr, HS, nc, T(1), true,
                       [&](int64_t, int64_t r1) { return TileRange{0, st.keys_upto(r1), HS}; });
        }
        for (int64_t r = 0; r < nr; ++r) {
          ArrayMap<T>(ob + (i0 + r) * lo.t, HS) = ArrayMap<T>(acc + r * HS, HS) / l[r];
          lse[bh * Tq + i0 + r] = m[r] + std::log(l[r]);
        }
      }
    }
  });
}

/// Backward. From dout (B, NH, Tq, HS) and the forward's q, k, v, out and lse, writes dq, dk, dv
/// (same shapes as q, k, v; overwritten). Per (b, key/value head): D_i = dout_i . out_i for each
/// query head of the group, then for each key tile and each query head of the group, for each
/// query tile: P = exp(S - lse), dv += P^T dout, dS = P * (dout v^T - D), dq += dS k * scale,
/// dk += dS^T q * scale. kv_start as in the forward: masked keys get P = 0, and query tiles that
/// see none of a key tile are skipped.
template <class T>
void attention_backward(T* dq, AttnLayout ldq, T* dk, AttnLayout ldk, T* dv, AttnLayout ldv, const T* dout,
                        AttnLayout ldo, const T* q, AttnLayout lq, const T* k, AttnLayout lk, const T* v,
                        AttnLayout lv, const T* out, AttnLayout lo, const T* lse, int64_t B, int64_t NH, int64_t NKV,
                        int64_t Tq, int64_t Tk, int64_t HS, const int32_t* kv_start = nullptr) {
  using namespace detail;
  const T scale = T(1) / std::sqrt(T(HS));
  const int64_t off = Tk - Tq, G = NH / NKV;  // G query heads share each key/value head
  const int64_t ldt = (Tk + attn_block - 1) / attn_block * attn_block, lds = attn_block;
  const bool fast = fast_tiles<T>(HS);
  // one task per (b, key/value head): it alone writes that head's dk, dv and its group's dq
  parallel_for(0, B * NKV, 1, [&](int64_t lo_bh, int64_t hi_bh) {
    TileBuffers<T> buf = TileBuffers<T>::backward(ldt, HS);
    T *S = buf.S.data(), *dS = buf.P.data(), *dKj = buf.dk.data(), *dVj = buf.dv.data();
    typename TileBuffers<T>::Buffer D(size_t(G * Tq));   // D of each query head of the group
    std::vector<std::pair<int64_t, int64_t>> tile_keys;  // (smallest, largest) first key of each query tile
    for (int64_t bk = lo_bh; bk < hi_bh; ++bk) {
      int64_t b = bk / NKV, hk = bk % NKV;
      const T* kb = k + b * lk.b + hk * lk.h;
      const T* vb = v + b * lv.b + hk * lv.h;
      T* dkb = dk + b * ldk.b + hk * ldk.h;
      T* dvb = dv + b * ldv.b + hk * ldv.h;
      const int32_t* ks = kv_start ? kv_start + b * Tq : nullptr;
      tile_keys.clear();
      for (int64_t i0 = 0; i0 < Tq; i0 += attn_block)
        tile_keys.push_back(first_key_range(ks, i0, std::min(attn_block, Tq - i0), off));
      transpose_head(buf.kt.data(), ldt, kb, lk.t, Tk, HS);  // K^T, V^T (HS, ldt)
      transpose_head(buf.vt.data(), ldt, vb, lv.t, Tk, HS);
      // D_i = sum_d dout_id * out_id: the "diagonal" term of the softmax Jacobian, per query head.
      for (int64_t g = 0; g < G; ++g) {
        const int64_t h = hk * G + g;
        Rows<T>(dq + b * ldq.b + h * ldq.h, Tq, HS, Eigen::OuterStride<>(ldq.t)).setZero();
        ArrayMap<T>(D.data() + g * Tq, Tq) =
            (ConstRows<T>(dout + b * ldo.b + h * ldo.h, Tq, HS, Eigen::OuterStride<>(ldo.t)).array() *
             ConstRows<T>(out + b * lo.b + h * lo.h, Tq, HS, Eigen::OuterStride<>(lo.t)).array())
                .rowwise()
                .sum();
      }
      for (int64_t j0 = 0; j0 < Tk; j0 += attn_block) {
        const int64_t nc = std::min(attn_block, Tk - j0);
        std::fill(dKj, dKj + nc * HS, T(0));
        std::fill(dVj, dVj + nc * HS, T(0));
        int64_t i_first = std::max<int64_t>(0, j0 - off) / attn_block * attn_block;  // earlier rows see none of these keys
        for (int64_t g = 0; g < G; ++g) {  // every query head of the group adds to this key tile's dk, dv
          const int64_t h = hk * G + g;
          const T* qb = q + b * lq.b + h * lq.h;
          const T* gb = dout + b * ldo.b + h * ldo.h;
          T* dqb = dq + b * ldq.b + h * ldq.h;
          const T* lseb = lse + (b * NH + h) * Tq;
          for (int64_t i0 = i_first; i0 < Tq; i0 += attn_block) {
            auto [i_lo, i_hi] = tile_keys[size_t(i0 / attn_block)];
            if (i_lo >= j0 + nc) continue;  // packed rows: these queries start after this key tile
            const int64_t nr = std::min(attn_block, Tq - i0);
            const Stair st{i0 + off - j0, nc};
            const T *Qi = qb + i0 * lq.t, *dOi = gb + i0 * ldo.t;
            auto cols = [&](int64_t, int64_t r1) { return TileRange{0, HS, st.keys_upto(r1)}; };
            auto keys_seen = [&](int64_t, int64_t r1) { return TileRange{0, st.keys_upto(r1), HS}; };
            auto queries_seeing = [&](int64_t c0, int64_t) { return TileRange{st.first_query(c0), nr, HS}; };
            // P (nr, nc) = exp(scale Q_i K_j^T - lse), recomputed
            tile_product(fast, S, lds, Qi, lq.t, int64_t(1), buf.kt.data() + j0, ldt, nr, nc, HS, scale, false, cols);
            if (j0 + nc - 1 > i0 + off) mask_future(S, lds, nr, nc, i0, j0, off);
            if (j0 < i_hi) mask_past(S, lds, nr, nc, ks, i0, j0, off);
            for (int64_t r = 0; r < nr; ++r) ArrayMap<T>(S + r * lds, nc) = (ArrayMap<T>(S + r * lds, nc) - lseb[i0 + r]).exp();
            // dV_j (nc, HS) += P^T dO_i: key column c sums over the queries that see it
            tile_product(fast, dVj, HS, S, int64_t(1), lds, dOi, ldo.t, nc, HS, nr, T(1), true, queries_seeing);
            // dP (nr, nc) = dO_i V_j^T, then dS = P * (dP - D) (0 where P is masked)
            tile_product(fast, dS, lds, dOi, ldo.t, int64_t(1), buf.vt.data() + j0, ldt, nr, nc, HS, T(1), false, cols);
            for (int64_t r = 0; r < nr; ++r) {
              const int64_t seen = st.keys_upto(r);
              ArrayMap<T> ds(dS + r * lds, seen);
              ds = ArrayMap<T>(S + r * lds, seen) * (ds - D[size_t(g * Tq + i0 + r)]);
              std::fill(dS + r * lds + seen, dS + r * lds + nc, T(0));
            }
            // dQ_i (nr, HS) += scale dS K_j;  dK_j (nc, HS) += scale dS^T Q_i
            tile_product(fast, dqb + i0 * ldq.t, ldq.t, dS, lds, int64_t(1), kb + j0 * lk.t, lk.t, nr, HS, nc, scale, true,
                         keys_seen);
            tile_product(fast, dKj, HS, dS, int64_t(1), lds, Qi, lq.t, nc, HS, nr, scale, true, queries_seeing);
          }
        }
        Rows<T>(dkb + j0 * ldk.t, nc, HS, Eigen::OuterStride<>(ldk.t)) = ConstRows<T>(dKj, nc, HS, Eigen::OuterStride<>(HS));
        Rows<T>(dvb + j0 * ldv.t, nc, HS, Eigen::OuterStride<>(ldv.t)) = ConstRows<T>(dVj, nc, HS, Eigen::OuterStride<>(HS));
      }
    }
  });
}

}  // namespace loom::cpu
