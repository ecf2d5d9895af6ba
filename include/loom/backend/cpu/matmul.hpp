#pragma once
/// @file matmul.hpp
/// CPU GEMM through Eigen: our row-major (or transposed) buffers are viewed through Eigen::Map,
/// so Eigen's packed, blocked, multithreaded GEMM reads them in place without copies.

#include <type_traits>

#include "loom/eigen.hpp"

#include "loom/backend/cpu/sgemm.hpp"

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
}  // namespace detail

/// c (M, N) = a (M, K) @ b (K, N)  [+ c when accumulate].
/// Each input is row-major when its column stride is 1 (leading dimension = row stride), or
/// column-major (a transposed view) when its row stride is 1 (leading dimension = column stride).
/// c is row-major with leading dimension ldc. The caller guarantees one of the two layouts.
template <class T>
void gemm(T* c, int64_t ldc, const T* a, bool a_rowmajor, int64_t lda, const T* b, bool b_rowmajor, int64_t ldb,
          int64_t M, int64_t N, int64_t K, bool accumulate = false) {
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
