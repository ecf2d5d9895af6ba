#pragma once
#ifndef __CUDACC__
#error "loom/backend/cuda/*.cuh must be compiled by nvcc (from a .cu file)"
#endif
// Error checking shared by every CUDA file: LOOM_CUDA_CHECK and LOOM_CUBLAS_CHECK throw
// loom::cuda_error with file:line and CUDA's own message (llm.c's cudaCheck, but catchable).

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "loom/core/error.hpp"

namespace loom::cuda::detail {

inline void check(cudaError_t err, const char* expr, const char* file, int line) {
  if (err != cudaSuccess) {
    throw ::loom::cuda_error(::loom::detail::concat(file, ":", line, ": ", expr, " failed: ",
                                                    cudaGetErrorString(err)));
  }
}

inline void check(cublasStatus_t st, const char* expr, const char* file, int line) {
  if (st != CUBLAS_STATUS_SUCCESS) {
    throw ::loom::cuda_error(::loom::detail::concat(file, ":", line, ": ", expr,
                                                    " failed: cuBLAS status ", int(st)));
  }
}

}  // namespace loom::cuda::detail

/// Throws loom::cuda_error when a CUDA runtime or cuBLAS call fails.
#define LOOM_CUDA_CHECK(expr) ::loom::cuda::detail::check((expr), #expr, __FILE__, __LINE__)
