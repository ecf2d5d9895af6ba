#pragma once
// Matrix products through cuBLAS (one handle per device, bound to loom's stream, with a 32 MiB
// workspace). Row-major C = A @ B is the column-major C^T = B^T @ A^T, so every call passes B
// first and reads each matrix with its row length as the leading dimension.

#include <cstring>

#include "loom/backend/cuda/common.cuh"

namespace loom::cuda {

namespace detail {

inline cublasHandle_t cublas_handle(int device) {
  static std::mutex mu;
  static std::vector<cublasHandle_t> handles;
  std::lock_guard<std::mutex> lock(mu);
  if (int(handles.size()) <= device) handles.resize(device + 1, nullptr);
  if (!handles[device]) {
    LOOM_CUDA_CHECK(cudaSetDevice(device));
    LOOM_CUDA_CHECK(cublasCreate(&handles[device]));
    LOOM_CUDA_CHECK(cublasSetStream(handles[device], stream(device)));
    constexpr size_t workspace_bytes = size_t(32) << 20;
    void* ws = nullptr;
    LOOM_CUDA_CHECK(cudaMalloc(&ws, workspace_bytes));  // held for the program's life, like the handle
    LOOM_CUDA_CHECK(cublasSetWorkspace(handles[device], ws, workspace_bytes));
  }
  return handles[device];
}

}  // namespace detail

namespace detail {
// A device vector of at least n ones (grown on demand, kept for the program's life).
inline const float* ones(int64_t n, int device) {
  static std::mutex mu;
  static std::vector<std::pair<float*, int64_t>> cache;
  std::lock_guard<std::mutex> lock(mu);
  if (int(cache.size()) <= device) cache.resize(device + 1, {nullptr, 0});
  auto& [p, have] = cache[device];
  if (have < n) {
    cudaStream_t s = use(device);
    LOOM_CUDA_CHECK(cudaStreamSynchronize(s));  // kernels queued may still read the old vector
    if (p) LOOM_CUDA_CHECK(cudaFree(p));
    p = nullptr, have = 0;
    LOOM_CUDA_CHECK(cudaMalloc(&p, size_t(n) * sizeof(float)));
    Layout L;
    L.ndim = 1, L.size[0] = n, L.stride[0][0] = 1;
    const float one = 1.0f;
    uint32_t bits;
    std::memcpy(&bits, &one, 4);
    fill(p, 4, bits, L, device);
    have = n;
  }
  return p;
}
}  // namespace detail

void column_sum_gemv(float* out, const float* in, int64_t R, int64_t inner, float alpha, int device) {
  detail::use(device);
  const float* x = detail::ones(R, device);
  const float zero = 0.0f;
  // in (R, inner) row-major is the column-major (inner x R) matrix A: out = alpha * A @ ones(R)
  LOOM_CUDA_CHECK(cublasSgemv(detail::cublas_handle(device), CUBLAS_OP_N, int(inner), int(R), &alpha, in, int(inner), x,
                              1, &zero, out, 1));
}

void gemm(bool bf16, GemmOperand a, GemmOperand b, float* c, int64_t ldc, int64_t c_batch_stride, int64_t M,
          int64_t N, int64_t K, int64_t batch, float beta, int device) {
  if (M * N * batch == 0) return;
  detail::use(device);
  cublasHandle_t h = detail::cublas_handle(device);
  const float one = 1.0f;
  if (K == 0 && beta == 0.0f) {  // an empty sum: C = 0
    for (int64_t i = 0; i < batch; ++i)
      LOOM_CUDA_CHECK(cudaMemset2DAsync(c + i * c_batch_stride, size_t(ldc) * 4, 0, size_t(N) * 4, size_t(M),
                                        detail::stream(device)));
    return;
  }
  // Column-major view: C^T (N x M) = op(B)^T (N x K) @ op(A)^T (K x M). A row-major operand that is
  // not transposed is, read column-major, already its own transpose: op N.
  const cublasOperation_t opb = b.transposed ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t opa = a.transposed ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cudaDataType_t type = bf16 ? CUDA_R_16BF : CUDA_R_32F;
  const cublasComputeType_t compute =
      bf16 ? CUBLAS_COMPUTE_32F : (allow_tf32() ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F);
  LOOM_CHECK(M < INT32_MAX && N < INT32_MAX && K < INT32_MAX && batch < INT32_MAX, value_error,
             "matmul on CUDA: sizes M ", M, ", N ", N, ", K ", K, " exceed cuBLAS's int range");
  if (batch == 1) {  // the plain GEMM entry point (its heuristics differ from the batched one's)
    LOOM_CUDA_CHECK(cublasGemmEx(h, opb, opa, int(N), int(M), int(K), &one, b.ptr, type, int(b.ld), a.ptr, type,
                                 int(a.ld), &beta, c, CUDA_R_32F, int(ldc), compute, CUBLAS_GEMM_DEFAULT));
    return;
  }
  LOOM_CUDA_CHECK(cublasGemmStridedBatchedEx(h, opb, opa, int(N), int(M), int(K), &one, b.ptr, type, int(b.ld),
                                             b.batch_stride, a.ptr, type, int(a.ld), a.batch_stride, &beta, c,
                                             CUDA_R_32F, int(ldc), c_batch_stride, int(batch), compute,
                                             CUBLAS_GEMM_DEFAULT));
}

}  // namespace loom::cuda
