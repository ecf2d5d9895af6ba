#pragma once
#ifndef __CUDACC__
#error "loom/backend/cuda/*.cuh must be compiled by nvcc (from a .cu file)"
#endif
// What every CUDA file shares: LOOM_CUDA_CHECK (throws loom::cuda_error with file:line and
// CUDA's own message, like llm.c's cudaCheck but catchable), the per-device stream, launch
// sizes, and the strided index decoding of the elementwise kernels.

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <mutex>
#include <vector>

#include "loom/backend/cuda/cuda_api.hpp"
#include "loom/backend/cuda/per_device.hpp"
#include "loom/core/error.hpp"

namespace loom::cuda::detail {

inline void check(cudaError_t err, const char* expr, const char* file, int line) {
  if (err != cudaSuccess) {
    cudaGetLastError();  // clear a non-sticky error so that later calls can go on
    throw ::loom::cuda_error(::loom::detail::concat(file, ":", line, ": ", expr, " failed: ",
                                                    cudaGetErrorName(err), ": ", cudaGetErrorString(err)));
  }
}

inline void check(cublasStatus_t st, const char* expr, const char* file, int line) {
  if (st != CUBLAS_STATUS_SUCCESS) {
    throw ::loom::cuda_error(::loom::detail::concat(file, ":", line, ": ", expr, " failed: ",
                                                    cublasGetStatusString(st)));
  }
}

}  // namespace loom::cuda::detail

/// Throws loom::cuda_error when a CUDA runtime or cuBLAS call fails.
#define LOOM_CUDA_CHECK(expr) ::loom::cuda::detail::check((expr), #expr, __FILE__, __LINE__)
/// Checks the launch just made (a bad configuration shows up here, not at the next call).
#define LOOM_CUDA_CHECK_LAUNCH() LOOM_CUDA_CHECK(cudaGetLastError())

namespace loom::cuda::detail {

/// One non-blocking stream per device, created on first use: every loom kernel, copy and
/// cuBLAS call on that device is queued on it, in order.
inline cudaStream_t stream(int device) {
  return per_device(device, [](int d) {
    LOOM_CUDA_CHECK(cudaSetDevice(d));
    cudaStream_t s = nullptr;
    LOOM_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    return s;
  });
}

/// Makes `device` current and returns its stream (the first lines of every host wrapper).
inline cudaStream_t use(int device) {
  int cur = -1;
  cudaGetDevice(&cur);
  if (cur != device) LOOM_CUDA_CHECK(cudaSetDevice(device));
  return stream(device);
}

/// The multiprocessor count of `device` (cached).
inline int sm_count(int device) {
  return per_device(device, [](int d) {
    int count = 0;
    LOOM_CUDA_CHECK(cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, d));
    return count;
  });
}

/// A device buffer from the caching allocator, returned to it on scope exit (stream-ordered,
/// so queued kernels may still use it).
struct Scratch {
  void* p = nullptr;
  std::size_t bytes = 0;
  int device = 0;
  Scratch(std::size_t b, int d) : p(::loom::cuda::malloc(b, d)), bytes(b), device(d) {}
  ~Scratch() { ::loom::cuda::free(p, bytes, device); }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  template <class T> T* as() const { return static_cast<T*>(p); }
};

/// Blocks for a grid-stride loop over n items: enough to fill the GPU, no more.
inline int grid_for(int64_t n, int threads, int device) {
  int64_t want = (n + threads - 1) / threads;
  int64_t cap = int64_t(sm_count(device)) * 32;
  return int(std::max<int64_t>(1, std::min(want, cap)));
}

/// Element offsets of operand k at linear index i (row-major over L.size). Below 2^32 elements
/// the index is decoded with 32-bit divisions, several times cheaper than 64-bit ones (a
/// strided kernel is otherwise bound by its index arithmetic, not by memory).
template <int K>
__device__ inline void offsets(const Layout& L, int64_t i, int64_t (&off)[K]) {
  for (int k = 0; k < K; ++k) off[k] = 0;
  uint64_t total = 1;
  for (int d = 0; d < L.ndim; ++d) total *= uint64_t(L.size[d]);
  if (total < (uint64_t(1) << 32)) {  // then every size and every index fits 32 bits
    uint32_t j = uint32_t(i);
    for (int d = L.ndim - 1; d >= 0; --d) {
      uint32_t s = uint32_t(L.size[d]);
      uint32_t q = j / s, r = j - q * s;
      for (int k = 0; k < K; ++k) off[k] += int64_t(r) * L.stride[k][d];
      j = q;
    }
    return;
  }
  for (int d = L.ndim - 1; d >= 0; --d) {
    int64_t s = L.size[d];
    int64_t q = i / s, r = i - q * s;
    for (int k = 0; k < K; ++k) off[k] += r * L.stride[k][d];
    i = q;
  }
}

/// True when every one of the first k operands is a contiguous run over the whole layout.
inline bool all_contiguous(const Layout& L, int k) {
  if (L.ndim != 1) return false;
  for (int j = 0; j < k; ++j)
    if (L.stride[j][0] != 1) return false;
  return true;
}

/// True when p is aligned for 16-byte vector loads.
inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

/// Warp-wide sum and max (every lane gets the result).
__device__ inline float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ inline double warp_sum(double v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ inline float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

/// Block-wide sum (any blockDim that is a multiple of 32, at most 1024); every thread gets it.
/// `scratch` is 32 floats of shared memory.
template <class T>
__device__ inline T block_sum(T v, T* scratch) {
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  v = warp_sum(v);
  __syncthreads();  // scratch may still be read by a previous call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  T r = lane < nw ? scratch[lane] : T(0);
  return warp_sum(r);
}
__device__ inline float block_max(float v, float* scratch) {
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float r = lane < nw ? scratch[lane] : -INFINITY;
  return warp_max(r);
}

}  // namespace loom::cuda::detail
