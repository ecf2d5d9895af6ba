#pragma once
/// @file matmul.hpp
/// CPU GEMM: loom's AVX-512 sgemm for float where it is built (backend/cpu/sgemm.hpp), else Eigen,
/// whose packed, blocked, multithreaded GEMM reads our row-major (or transposed) buffers in place
/// through Eigen::Map. A single row (M = 1, decoding one token) is a matrix-vector product.

#include <algorithm>
#include <type_traits>

#include "loom/eigen.hpp"

#include "loom/backend/cpu/sgemm.hpp"
#include "loom/core/parallel.hpp"

namespace loom::cpu {

namespace detail {
template <class T, int Order>
using MatMap = Eigen::Map<const Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Order>, Eigen::Unaligned,
                          Eigen::OuterStride<>>;
template <class T>
using OutMap = Eigen::Map<Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>, Eigen::Unaligned,
                          Eigen::OuterStride<>>;

template <class T, int OA, int OB>
void gemm_mapped(T* c, int64_t ldc, const T* a, int64_t lda, const T* b, int64_t ldb, int64_t M, int64_t N,
                 int64_t K, bool accumulate) {
  MatMap<T, OA> A(a, M, K, Eigen::OuterStride<>(lda));
  MatMap<T, OB> B(b, K, N, Eigen::OuterStride<>(ldb));
  OutMap<T> C(c, M, N, Eigen::OuterStride<>(ldc));
  if (accumulate) {
    C.noalias() += A * B;
  } else {
    C.noalias() = A * B;
  }
}

// One row: c (1, N) = a (1, K) @ b (K, N) [+ c], a's elements `as` apart. A matrix-vector product
// reads each weight once, so it is bound by memory, not by FMAs: no packing (a GEMM packs the
// whole of b into panels for a single row), and the columns of c split across the threads.
// b column-major (a Linear's W^T: column n is row n of W, contiguous): N dot products.
// b row-major: c accumulates rows of b scaled by a[k], each thread over its own columns.
template <class T>
void gemv_row(T* c, const T* a, int64_t as, const T* b, bool b_rowmajor, int64_t ldb, int64_t N, int64_t K,
              bool accumulate) {
  using Vec = Eigen::Matrix<T, Eigen::Dynamic, 1>;
  const Vec x = Eigen::Map<const Vec, Eigen::Unaligned, Eigen::InnerStride<>>(a, K, Eigen::InnerStride<>(as));
  const int64_t grain = std::max<int64_t>(1, parallel_grain / std::max<int64_t>(K, 1));
  parallel_for(0, N, grain, [&](int64_t lo, int64_t hi) {
    Eigen::Map<Vec> y(c + lo, hi - lo);
    if (!b_rowmajor) {  // W (N, K) row-major: y[n] = W[n, :] . x
      MatMap<T, Eigen::RowMajor> W(b + lo * ldb, hi - lo, K, Eigen::OuterStride<>(ldb));
      if (accumulate) y.noalias() += W * x;
      else y.noalias() = W * x;
    } else {  // b (K, N) row-major: y = b[:, lo:hi]^T x
      MatMap<T, Eigen::RowMajor> Bm(b + lo, K, hi - lo, Eigen::OuterStride<>(ldb));
      if (accumulate) y.noalias() += Bm.transpose() * x;
      else y.noalias() = Bm.transpose() * x;
    }
  });
}
}  // namespace detail

/// c (M, N) = a (M, K) @ b (K, N)  [+ c when accumulate].
/// Each input is row-major when its column stride is 1 (leading dimension = row stride), or
/// column-major (a transposed view) when its row stride is 1 (leading dimension = column stride).
/// c is row-major with leading dimension ldc. The caller guarantees one of the two layouts.
template <class T>
void gemm(T* c, int64_t ldc, const T* a, bool a_rowmajor, int64_t lda, const T* b, bool b_rowmajor, int64_t ldb,
          int64_t M, int64_t N, int64_t K, bool accumulate = false) {
  if (M == 1 && N > 0 && K > 0)  // one row (decoding one token): a matrix-vector product
    return detail::gemv_row(c, a, a_rowmajor ? 1 : lda, b, b_rowmajor, ldb, N, K, accumulate);
#if defined(LOOM_HAVE_SGEMM)
  if constexpr (std::is_same_v<T, float>) {  // loom's AVX-512 kernel (benchmarks/README.md)
    if (K > 0 && M > 0 && N > 0) {
      sgemm(c, ldc, a, a_rowmajor ? lda : 1, a_rowmajor ? 1 : lda, b, b_rowmajor ? ldb : 1, b_rowmajor ? 1 : ldb, M, N,
            K, accumulate);
      return;
    }
  }
#endif
  constexpr int R = Eigen::RowMajor, C = Eigen::ColMajor;
  if (a_rowmajor && b_rowmajor) return detail::gemm_mapped<T, R, R>(c, ldc, a, lda, b, ldb, M, N, K, accumulate);
  if (a_rowmajor) return detail::gemm_mapped<T, R, C>(c, ldc, a, lda, b, ldb, M, N, K, accumulate);
  if (b_rowmajor) return detail::gemm_mapped<T, C, R>(c, ldc, a, lda, b, ldb, M, N, K, accumulate);
  return detail::gemm_mapped<T, C, C>(c, ldc, a, lda, b, ldb, M, N, K, accumulate);
}

}  // namespace loom::cpu
