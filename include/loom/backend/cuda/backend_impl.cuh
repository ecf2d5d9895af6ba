#pragma once
#ifndef __CUDACC__
#error "loom/backend/cuda/*.cuh must be compiled by nvcc (from a .cu file)"
#endif
// The definitions behind cuda_api.hpp. Exactly one .cu file includes this header: CMake
// generates it for the loom::cuda target; without CMake, compile a one-line .cu file
//   #include <loom/backend/cuda/backend_impl.cuh>
// with nvcc and link it with -lcudart -lcublas.

#include <algorithm>
#include <mutex>
#include <vector>

#include "loom/backend/cuda/common.cuh"
#include "loom/backend/cuda/cuda_api.hpp"
#include "loom/backend/cuda/elementwise.cuh"

namespace loom::cuda {

namespace detail {
// One cuBLAS handle per device, created on first use.
inline cublasHandle_t cublas_handle(int device) {
  static std::mutex mu;
  static std::vector<cublasHandle_t> handles;
  std::lock_guard<std::mutex> lock(mu);
  if (int(handles.size()) <= device) handles.resize(device + 1, nullptr);
  if (!handles[device]) {
    LOOM_CUDA_CHECK(cudaSetDevice(device));
    LOOM_CUDA_CHECK(cublasCreate(&handles[device]));
  }
  return handles[device];
}
}  // namespace detail

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver" error
    return 0;
  }
  return n;
}

bool is_available() { return device_count() > 0; }

std::string device_name(int device) {
  cudaDeviceProp p{};
  LOOM_CUDA_CHECK(cudaGetDeviceProperties(&p, device));
  return std::string(p.name) + " (sm_" + std::to_string(p.major * 10 + p.minor) + ")";
}

void* malloc(std::size_t bytes, int device) {
  void* p = nullptr;
  LOOM_CUDA_CHECK(cudaSetDevice(device));
  LOOM_CUDA_CHECK(cudaMalloc(&p, std::max<std::size_t>(bytes, 1)));
  return p;
}

void free(void* ptr, int device) noexcept {
  if (!ptr) return;
  cudaSetDevice(device);
  cudaFree(ptr);
}

void memcpy_h2d(void* dst, const void* src, std::size_t bytes, int device) {
  LOOM_CUDA_CHECK(cudaSetDevice(device));
  LOOM_CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice));
}

void memcpy_d2h(void* dst, const void* src, std::size_t bytes, int device) {
  LOOM_CUDA_CHECK(cudaSetDevice(device));
  LOOM_CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost));
}

void memcpy_d2d(void* dst, const void* src, std::size_t bytes, int device) {
  LOOM_CUDA_CHECK(cudaSetDevice(device));
  LOOM_CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToDevice));
}

void scale_f32(float* x, float alpha, int64_t n, int device) {
  if (n == 0) return;
  LOOM_CUDA_CHECK(cudaSetDevice(device));
  int threads = 256;
  int blocks = int(std::min<int64_t>((n + threads - 1) / threads, 65535));
  scale_f32_kernel<<<blocks, threads>>>(x, alpha, n);
  LOOM_CUDA_CHECK(cudaGetLastError());
  LOOM_CUDA_CHECK(cudaDeviceSynchronize());
}

void matmul_f32(const float* a, const float* b, float* c, int64_t M, int64_t N, int64_t K, int device) {
  // cuBLAS is column-major: a row-major C = A @ B is the column-major C^T = B^T @ A^T, so we
  // pass B first and read every matrix with its row length as the leading dimension.
  const float one = 1.0f, zero = 0.0f;
  cublasHandle_t h = detail::cublas_handle(device);
  LOOM_CUDA_CHECK(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, int(N), int(M), int(K), &one, b, int(N), a,
                              int(K), &zero, c, int(N)));
  LOOM_CUDA_CHECK(cudaDeviceSynchronize());
}

}  // namespace loom::cuda
