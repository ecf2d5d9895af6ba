#pragma once
/// @file attention.hpp
/// Fused causal attention on the CPU, flash-style: out = softmax(q k^T / sqrt(HS) + mask) v,
/// computed tile by tile with an online softmax, so no (T, T) matrix is ever stored. The
/// forward saves only the log-sum-exp of each query row; the backward recomputes each tile of
/// probabilities from it. docs/05-attention.md derives both passes.
///
/// Operands are (B, NH, T, HS) with any strides whose last one is 1 (q, k, v may be strided
/// views into one (B, T, 3C) qkv buffer; out may be laid out as (B, T, NH, HS)).
///
/// Contract (shared with backend/cuda/attention.cuh; the seam, backend/kernels.hpp, stages
/// strided operands for the CUDA backward, which reads contiguous ones): every (B, NH, T, HS)
/// operand has its own strides along B, NH and T and a unit stride along HS; the forward writes
/// out and lse; the backward writes dq, dk and dv (overwritten, not added to).

#include <algorithm>
#include <cmath>
#include <limits>

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
}  // namespace detail

/// Forward. q (B, NH, Tq, HS); k, v (B, NH, Tk, HS) with Tk >= Tq: query i sits at position
/// i + (Tk - Tq) and sees keys j <= that position. Writes out (B, NH, Tq, HS) and
/// lse (B, NH, Tq, contiguous) = log sum_j exp(s_ij), for the backward.
template <class T>
void attention_forward(T* out, AttnLayout lo, T* lse, const T* q, AttnLayout lq, const T* k, AttnLayout lk,
                       const T* v, AttnLayout lv, int64_t B, int64_t NH, int64_t Tq, int64_t Tk, int64_t HS) {
  using namespace detail;
  const T scale = T(1) / std::sqrt(T(HS));
  const int64_t off = Tk - Tq;
  parallel_for(0, B * NH, 1, [&](int64_t lo_bh, int64_t hi_bh) {
    RowMat<T> S, acc;
    Eigen::Array<T, Eigen::Dynamic, 1> m, l, m_new, corr;
    for (int64_t bh = lo_bh; bh < hi_bh; ++bh) {
      int64_t b = bh / NH, h = bh % NH;
      const T* qb = q + b * lq.b + h * lq.h;
      const T* kb = k + b * lk.b + h * lk.h;
      const T* vb = v + b * lv.b + h * lv.h;
      T* ob = out + b * lo.b + h * lo.h;
      for (int64_t i0 = 0; i0 < Tq; i0 += attn_block) {
        int64_t nr = std::min(attn_block, Tq - i0);
        ConstRows<T> Qi(qb + i0 * lq.t, nr, HS, Eigen::OuterStride<>(lq.t));
        acc.setZero(nr, HS);
        m.setConstant(nr, -std::numeric_limits<T>::infinity());
        l.setZero(nr);
        int64_t j_end = std::min(Tk, i0 + nr + off);  // the last query row's horizon
        for (int64_t j0 = 0; j0 < j_end; j0 += attn_block) {
          int64_t nc = std::min(attn_block, j_end - j0);
          ConstRows<T> Kj(kb + j0 * lk.t, nc, HS, Eigen::OuterStride<>(lk.t));
          ConstRows<T> Vj(vb + j0 * lv.t, nc, HS, Eigen::OuterStride<>(lv.t));
          S.noalias() = (Qi * Kj.transpose()) * scale;                 // (nr, nc) scores
          if (j0 + nc - 1 > i0 + off) mask_future(S, i0, j0, off);
          m_new = m.max(S.rowwise().maxCoeff().array());               // running row max
          corr = (m - m_new).exp();                                    // rescales the old sum
          S = (S.array().colwise() - m_new).exp().matrix();            // P tile (masked: 0)
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
/// (same shapes as q, k, v; overwritten). Per (b, h): D_i = dout_i . out_i, then for each tile
/// P = exp(S - lse), dv += P^T dout, dS = P * (dout v^T - D), dq += dS k * scale, dk += dS^T q * scale.
template <class T>
void attention_backward(T* dq, AttnLayout ldq, T* dk, AttnLayout ldk, T* dv, AttnLayout ldv, const T* dout,
                        AttnLayout ldo, const T* q, AttnLayout lq, const T* k, AttnLayout lk, const T* v,
                        AttnLayout lv, const T* out, AttnLayout lo, const T* lse, int64_t B, int64_t NH, int64_t Tq,
                        int64_t Tk, int64_t HS) {
  using namespace detail;
  const T scale = T(1) / std::sqrt(T(HS));
  const int64_t off = Tk - Tq;
  parallel_for(0, B * NH, 1, [&](int64_t lo_bh, int64_t hi_bh) {
    RowMat<T> S, dP, dKj, dVj;
    Eigen::Array<T, Eigen::Dynamic, 1> D;
    for (int64_t bh = lo_bh; bh < hi_bh; ++bh) {
      int64_t b = bh / NH, h = bh % NH;
      const T* qb = q + b * lq.b + h * lq.h;
      const T* kb = k + b * lk.b + h * lk.h;
      const T* vb = v + b * lv.b + h * lv.h;
      const T* ob = out + b * lo.b + h * lo.h;
      const T* gb = dout + b * ldo.b + h * ldo.h;
      T* dqb = dq + b * ldq.b + h * ldq.h;
      T* dkb = dk + b * ldk.b + h * ldk.h;
      T* dvb = dv + b * ldv.b + h * ldv.h;
      const T* lseb = lse + bh * Tq;
      Rows<T>(dqb, Tq, HS, Eigen::OuterStride<>(ldq.t)).setZero();
      // D_i = sum_d dout_id * out_id: the "diagonal" term of the softmax Jacobian.
      D = (ConstRows<T>(gb, Tq, HS, Eigen::OuterStride<>(ldo.t)).array() *
           ConstRows<T>(ob, Tq, HS, Eigen::OuterStride<>(lo.t)).array())
              .rowwise()
              .sum();
      for (int64_t j0 = 0; j0 < Tk; j0 += attn_block) {
        int64_t nc = std::min(attn_block, Tk - j0);
        ConstRows<T> Kj(kb + j0 * lk.t, nc, HS, Eigen::OuterStride<>(lk.t));
        ConstRows<T> Vj(vb + j0 * lv.t, nc, HS, Eigen::OuterStride<>(lv.t));
        dKj.setZero(nc, HS);
        dVj.setZero(nc, HS);
        int64_t i_first = std::max<int64_t>(0, j0 - off) / attn_block * attn_block;  // earlier rows see none of these keys
        for (int64_t i0 = i_first; i0 < Tq; i0 += attn_block) {
          int64_t nr = std::min(attn_block, Tq - i0);
          ConstRows<T> Qi(qb + i0 * lq.t, nr, HS, Eigen::OuterStride<>(lq.t));
          ConstRows<T> dOi(gb + i0 * ldo.t, nr, HS, Eigen::OuterStride<>(ldo.t));
          Rows<T> dQi(dqb + i0 * ldq.t, nr, HS, Eigen::OuterStride<>(ldq.t));
          S.noalias() = (Qi * Kj.transpose()) * scale;
          if (j0 + nc - 1 > i0 + off) mask_future(S, i0, j0, off);
          auto lse_i = Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>>(lseb + i0, nr);
          S = (S.array().colwise() - lse_i).exp().matrix();            // P tile, recomputed
          dVj.noalias() += S.transpose() * dOi;
          dP.noalias() = dOi * Vj.transpose();
          dP = (S.array() * (dP.array().colwise() - D.segment(i0, nr))).matrix();  // dS
          dQi.noalias() += (dP * Kj) * scale;
          dKj.noalias() += (dP.transpose() * Qi) * scale;
        }
        Rows<T>(dkb + j0 * ldk.t, nc, HS, Eigen::OuterStride<>(ldk.t)) = dKj;
        Rows<T>(dvb + j0 * ldv.t, nc, HS, Eigen::OuterStride<>(ldv.t)) = dVj;
      }
    }
  });
}

}  // namespace loom::cpu
