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
#include <utility>
#include <vector>

#include "loom/eigen.hpp"

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
inline constexpr int64_t attn_block = 64;  // query rows and key columns per tile

// Sets S(r, c) = -inf where key j0 + c is in the future of query i0 + r (j > i + off).
template <class T>
void mask_future(RowMat<T>& S, int64_t i0, int64_t j0, int64_t off) {
  for (int64_t r = 0; r < S.rows(); ++r) {
    int64_t first_hidden = std::max<int64_t>(0, i0 + r + off + 1 - j0);
    for (int64_t c = first_hidden; c < S.cols(); ++c) S(r, c) = -std::numeric_limits<T>::infinity();
  }
}

// The first key query i sees: kv_start[i] clamped to [0, i + off], or 0 without kv_start.
inline int64_t first_key(const int32_t* ks, int64_t i, int64_t off) {
  return ks ? std::min<int64_t>(std::max<int64_t>(ks[i], 0), i + off) : 0;
}

// Sets S(r, c) = -inf where key j0 + c is before the first key of query i0 + r (packed rows).
template <class T>
void mask_past(RowMat<T>& S, const int32_t* ks, int64_t i0, int64_t j0, int64_t off) {
  for (int64_t r = 0; r < S.rows(); ++r) {
    int64_t hidden = std::min<int64_t>(S.cols(), first_key(ks, i0 + r, off) - j0);
    for (int64_t c = 0; c < hidden; ++c) S(r, c) = -std::numeric_limits<T>::infinity();
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
  const T scale = T(1) / std::sqrt(T(HS));
  const int64_t off = Tk - Tq, G = NH / NKV;  // G query heads share each key/value head
  parallel_for(0, B * NH, 1, [&](int64_t lo_bh, int64_t hi_bh) {
    RowMat<T> S, acc;
    Eigen::Array<T, Eigen::Dynamic, 1> m, l, m_new, m_sub, corr;
    for (int64_t bh = lo_bh; bh < hi_bh; ++bh) {
      int64_t b = bh / NH, h = bh % NH, hk = h / G;
      const T* qb = q + b * lq.b + h * lq.h;
      const T* kb = k + b * lk.b + hk * lk.h;
      const T* vb = v + b * lv.b + hk * lv.h;
      T* ob = out + b * lo.b + h * lo.h;
      const int32_t* ks = kv_start ? kv_start + b * Tq : nullptr;  // (Tq) first keys of this row
      for (int64_t i0 = 0; i0 < Tq; i0 += attn_block) {
        int64_t nr = std::min(attn_block, Tq - i0);
        ConstRows<T> Qi(qb + i0 * lq.t, nr, HS, Eigen::OuterStride<>(lq.t));
        acc.setZero(nr, HS);
        m.setConstant(nr, -std::numeric_limits<T>::infinity());
        l.setZero(nr);
        int64_t j_end = std::min(Tk, i0 + nr + off);  // the last query row's horizon
        // packed rows: keys before the smallest first key of these queries are skipped whole
        auto [j_begin, j_masked] = first_key_range(ks, i0, nr, off);
        for (int64_t j0 = j_begin; j0 < j_end; j0 += attn_block) {
          int64_t nc = std::min(attn_block, j_end - j0);
          ConstRows<T> Kj(kb + j0 * lk.t, nc, HS, Eigen::OuterStride<>(lk.t));
          ConstRows<T> Vj(vb + j0 * lv.t, nc, HS, Eigen::OuterStride<>(lv.t));
          S.noalias() = (Qi * Kj.transpose()) * scale;                 // (nr, nc) scores
          if (j0 + nc - 1 > i0 + off) mask_future(S, i0, j0, off);
          if (j0 < j_masked) mask_past(S, ks, i0, j0, off);
          m_new = m.max(S.rowwise().maxCoeff().array());               // running row max
          // packed rows: a row whose keys all lie in later tiles still has m_new = -inf; subtract
          // 0 for it instead, so its P row and correction are exp(-inf) = 0, not exp(-inf + inf)
          if (j0 < j_masked) m_sub = (m_new == -std::numeric_limits<T>::infinity()).select(T(0), m_new);
          const auto& mref = j0 < j_masked ? m_sub : m_new;
          corr = (m - mref).exp();                                     // rescales the old sum
          S = (S.array().colwise() - mref).exp().matrix();             // P tile (masked: 0)
          l = l * corr + S.rowwise().sum().array();
          acc = corr.matrix().asDiagonal() * acc;
          acc.noalias() += S * Vj;
          m = m_new;
        }
        Rows<T> Oi(ob + i0 * lo.t, nr, HS, Eigen::OuterStride<>(lo.t));
        Oi = l.inverse().matrix().asDiagonal() * acc;
        Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>>(lse + bh * Tq + i0, nr) = m + l.log();
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
  // one task per (b, key/value head): it alone writes that head's dk, dv and its group's dq
  parallel_for(0, B * NKV, 1, [&](int64_t lo_bh, int64_t hi_bh) {
    RowMat<T> S, dP, dKj, dVj;
    Eigen::Array<T, Eigen::Dynamic, 1> D;                // (G * Tq): D of each query head of the group
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
      // D_i = sum_d dout_id * out_id: the "diagonal" term of the softmax Jacobian, per query head.
      D.resize(G * Tq);
      for (int64_t g = 0; g < G; ++g) {
        const int64_t h = hk * G + g;
        Rows<T>(dq + b * ldq.b + h * ldq.h, Tq, HS, Eigen::OuterStride<>(ldq.t)).setZero();
        D.segment(g * Tq, Tq) = (ConstRows<T>(dout + b * ldo.b + h * ldo.h, Tq, HS, Eigen::OuterStride<>(ldo.t)).array() *
                                 ConstRows<T>(out + b * lo.b + h * lo.h, Tq, HS, Eigen::OuterStride<>(lo.t)).array())
                                    .rowwise()
                                    .sum();
      }
      for (int64_t j0 = 0; j0 < Tk; j0 += attn_block) {
        int64_t nc = std::min(attn_block, Tk - j0);
        ConstRows<T> Kj(kb + j0 * lk.t, nc, HS, Eigen::OuterStride<>(lk.t));
        ConstRows<T> Vj(vb + j0 * lv.t, nc, HS, Eigen::OuterStride<>(lv.t));
        dKj.setZero(nc, HS);
        dVj.setZero(nc, HS);
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
            int64_t nr = std::min(attn_block, Tq - i0);
            ConstRows<T> Qi(qb + i0 * lq.t, nr, HS, Eigen::OuterStride<>(lq.t));
            ConstRows<T> dOi(gb + i0 * ldo.t, nr, HS, Eigen::OuterStride<>(ldo.t));
            Rows<T> dQi(dqb + i0 * ldq.t, nr, HS, Eigen::OuterStride<>(ldq.t));
            S.noalias() = (Qi * Kj.transpose()) * scale;
            if (j0 + nc - 1 > i0 + off) mask_future(S, i0, j0, off);
            if (j0 < i_hi) mask_past(S, ks, i0, j0, off);
            auto lse_i = Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>>(lseb + i0, nr);
            S = (S.array().colwise() - lse_i).exp().matrix();            // P tile, recomputed
            dVj.noalias() += S.transpose() * dOi;
            dP.noalias() = dOi * Vj.transpose();
            dP = (S.array() * (dP.array().colwise() - D.segment(g * Tq + i0, nr))).matrix();  // dS
            dQi.noalias() += (dP * Kj) * scale;
            dKj.noalias() += (dP.transpose() * Qi) * scale;
          }
        }
        Rows<T>(dkb + j0 * ldk.t, nc, HS, Eigen::OuterStride<>(ldk.t)) = dKj;
        Rows<T>(dvb + j0 * ldv.t, nc, HS, Eigen::OuterStride<>(ldv.t)) = dVj;
      }
    }
  });
}

}  // namespace loom::cpu
