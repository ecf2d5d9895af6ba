#pragma once
// Matrix products through cuBLAS (one handle per device, bound to loom's stream, with a 32 MiB
// workspace). Row-major C = A @ B is the column-major C^T = B^T @ A^T, so every call passes B
// first and reads each matrix with its row length as the leading dimension. A product with a
// bias (a Linear layer's) goes through cuBLASLt, which adds the bias in the GEMM's epilogue
// instead of in a pass of its own over C.

#include <cublasLt.h>

#include <cstring>
#include <map>
#include <tuple>

#include "loom/backend/cuda/common.cuh"

namespace loom::cuda {

namespace detail {

constexpr size_t workspace_bytes = size_t(32) << 20;

// The GEMM workspace of one device, shared by cuBLAS and cuBLASLt (both run on loom's one stream).
inline void* gemm_workspace(int device) {
  return per_device(device, [](int d) {
    LOOM_CUDA_CHECK(cudaSetDevice(d));
    void* space = nullptr;
    LOOM_CUDA_CHECK(cudaMalloc(&space, workspace_bytes));  // held for the program's life
    return space;
  });
}

inline cublasHandle_t cublas_handle(int device) {
  return per_device(device, [](int d) {
    LOOM_CUDA_CHECK(cudaSetDevice(d));
    cublasHandle_t h = nullptr;
    LOOM_CUDA_CHECK(cublasCreate(&h));
    LOOM_CUDA_CHECK(cublasSetStream(h, stream(d)));
    LOOM_CUDA_CHECK(cublasSetWorkspace(h, gemm_workspace(d), workspace_bytes));
    return h;
  });
}

inline cublasLtHandle_t lt_handle(int device) {
  return per_device(device, [](int d) {
    LOOM_CUDA_CHECK(cudaSetDevice(d));
    cublasLtHandle_t h = nullptr;
    LOOM_CUDA_CHECK(cublasLtCreate(&h));
    return h;
  });
}

// One shape of product with an epilogue: its descriptors and the algorithm cuBLASLt's heuristic
// chose (ok false when it offered none). Kept for the program's life.
struct LtPlan {
  bool ok = false;
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
  cublasLtMatmulAlgo_t algo{};
};

// One product c (M, N) = a (M, K) @ b (K, N) through cuBLASLt with an epilogue that reads or
// writes the vector `vec`:
//   CUBLASLT_EPILOGUE_BIAS    c += vec (N) on every row (a Linear layer's bias);
//   CUBLASLT_EPILOGUE_BGRADB  vec (M) = the sums of a's rows over K (for dW = g^T @ x, the bias
//                             gradient: the sums of g's columns), from the operands the GEMM reads.
// Returns false, having done nothing, where cuBLASLt has no algorithm for the shape or a pointer
// is not 16-byte aligned: the caller then does the epilogue's work itself.
inline bool gemm_lt(bool bf16, GemmOperand a, GemmOperand b, float* c, int64_t ldc, int64_t M, int64_t N, int64_t K,
                    cublasLtEpilogue_t epilogue, const float* vec, bool tf32, int device) {
  auto al = [](const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; };
  const int64_t esize = bf16 ? 2 : 4;
  if (!al(a.ptr) || !al(b.ptr) || !al(c) || !al(vec) || (a.ld * esize) % 16 || (b.ld * esize) % 16 || (ldc * 4) % 16)
    return false;
  static std::mutex mu;
  static std::map<std::tuple<int, int, bool, bool, bool, bool, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t>,
                  LtPlan>
      plans;
  std::lock_guard<std::mutex> lock(mu);
  LtPlan& plan = plans[{device, int(epilogue), bf16, tf32, a.transposed, b.transposed, M, N, K, a.ld, b.ld, ldc}];
  const cublasOperation_t opb = b.transposed ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t opa = a.transposed ? CUBLAS_OP_T : CUBLAS_OP_N;
  if (!plan.op) {  // first use of this shape: descriptors and the heuristic's pick
    const cudaDataType_t type = bf16 ? CUDA_R_16BF : CUDA_R_32F;
    const cublasComputeType_t compute = bf16 ? CUBLAS_COMPUTE_32F : (tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F);
    LOOM_CUDA_CHECK(cublasLtMatmulDescCreate(&plan.op, compute, CUDA_R_32F));
    // Column-major view, as in gemm(): D^T (N x M) = op(b)^T (N x K) @ op(a)^T (K x M).
    LOOM_CUDA_CHECK(cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_TRANSA, &opb, sizeof(opb)));
    LOOM_CUDA_CHECK(cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_TRANSB, &opa, sizeof(opa)));
    // The bias is a vector over the rows of D^T (N); BGRADB sums op(a)^T (K x M) over K (M values).
    LOOM_CUDA_CHECK(cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof(epilogue)));
    LOOM_CUDA_CHECK(cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &vec, sizeof(vec)));
    LOOM_CUDA_CHECK(b.transposed ? cublasLtMatrixLayoutCreate(&plan.a, type, uint64_t(K), uint64_t(N), b.ld)
                                 : cublasLtMatrixLayoutCreate(&plan.a, type, uint64_t(N), uint64_t(K), b.ld));
    LOOM_CUDA_CHECK(a.transposed ? cublasLtMatrixLayoutCreate(&plan.b, type, uint64_t(M), uint64_t(K), a.ld)
                                 : cublasLtMatrixLayoutCreate(&plan.b, type, uint64_t(K), uint64_t(M), a.ld));
    LOOM_CUDA_CHECK(cublasLtMatrixLayoutCreate(&plan.d, CUDA_R_32F, uint64_t(N), uint64_t(M), ldc));
    cublasLtMatmulPreference_t pref = nullptr;
    LOOM_CUDA_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    const uint64_t ws = workspace_bytes;
    const uint32_t align = 16;
    LOOM_CUDA_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)));
    for (auto attr : {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                      CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES})
      LOOM_CUDA_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, attr, &align, sizeof(align)));
    cublasLtMatmulHeuristicResult_t result{};
    int found = 0;
    const cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(lt_handle(device), plan.op, plan.a, plan.b, plan.d,
                                                             plan.d, pref, 1, &result, &found);
    LOOM_CUDA_CHECK(cublasLtMatmulPreferenceDestroy(pref));
    plan.ok = st == CUBLAS_STATUS_SUCCESS && found > 0;
    if (plan.ok) plan.algo = result.algo;
  }
  if (!plan.ok) return false;
  LOOM_CUDA_CHECK(cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &vec, sizeof(vec)));
  const float one = 1.0f, zero = 0.0f;
  LOOM_CUDA_CHECK(cublasLtMatmul(lt_handle(device), plan.op, &one, b.ptr, plan.a, a.ptr, plan.b, &zero, c, plan.d, c,
                                 plan.d, &plan.algo, gemm_workspace(device), workspace_bytes, stream(device)));
  return true;
}

// c[i] (M, N) += bias (N) for every row r of every batch entry i (rows ldc apart, entries cbs apart).
__global__ void add_bias_rows_kernel(float* c, const float* bias, int64_t batch, int64_t M, int64_t N, int64_t ldc,
                                     int64_t cbs) {
  const int64_t total = batch * M * N;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t n = e % N, r = (e / N) % M, i = e / (N * M);
    c[i * cbs + r * ldc + n] += bias[n];
  }
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

// c (M, N) = a @ b + beta * c without a bias; see gemm() below.
void gemm_no_bias(bool bf16, GemmOperand a, GemmOperand b, float* c, int64_t ldc, int64_t c_batch_stride, int64_t M,
                  int64_t N, int64_t K, int64_t batch, float beta, int device);

bool gemm(bool bf16, GemmOperand a, GemmOperand b, float* c, int64_t ldc, int64_t c_batch_stride, int64_t M,
          int64_t N, int64_t K, int64_t batch, float beta, const float* bias, float* a_row_sums, int device) {
  if (M * N * batch == 0) return false;
  detail::use(device);
  const bool one = batch == 1 && beta == 0.0f && K > 0 && M < INT32_MAX && N < INT32_MAX && K < INT32_MAX;
  if (one && bias && !a_row_sums &&
      detail::gemm_lt(bf16, a, b, c, ldc, M, N, K, CUBLASLT_EPILOGUE_BIAS, bias, allow_tf32(), device))
    return false;
  if (one && a_row_sums && !bias &&
      detail::gemm_lt(bf16, a, b, c, ldc, M, N, K, CUBLASLT_EPILOGUE_BGRADB, a_row_sums, allow_tf32(), device))
    return true;
  gemm_no_bias(bf16, a, b, c, ldc, c_batch_stride, M, N, K, batch, beta, device);
  if (bias) {
    detail::add_bias_rows_kernel<<<detail::grid_for(batch * M * N, 256, device), 256, 0, detail::stream(device)>>>(
        c, bias, batch, M, N, ldc, c_batch_stride);
    LOOM_CUDA_CHECK_LAUNCH();
  }
  return false;
}

void gemm_no_bias(bool bf16, GemmOperand a, GemmOperand b, float* c, int64_t ldc, int64_t c_batch_stride, int64_t M,
                  int64_t N, int64_t K, int64_t batch, float beta, int device) {
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
