#pragma once
/// @file cuda_api.hpp
/// Host-callable declarations of the CUDA backend. No CUDA types appear here, so g++ can
/// compile any file that includes it; the definitions come from one nvcc translation unit
/// (backend_impl.cuh, built into the loom::cuda target). Include it only when LOOM_WITH_CUDA.

#include <cstddef>
#include <cstdint>
#include <string>

namespace loom::cuda {

/// True when the CUDA runtime finds at least one usable GPU.
bool is_available();
/// Number of visible CUDA devices (0 when there is no driver or no GPU).
int device_count();
/// The device's name and compute capability, e.g. "NVIDIA H100 (sm_90)".
std::string device_name(int device);

/// Allocates `bytes` on GPU `device`; throws loom::cuda_error on failure.
void* malloc(std::size_t bytes, int device);
/// Frees memory from loom::cuda::malloc (never throws).
void free(void* ptr, int device) noexcept;
/// Copies host → device.
void memcpy_h2d(void* dst, const void* src, std::size_t bytes, int device);
/// Copies device → host.
void memcpy_d2h(void* dst, const void* src, std::size_t bytes, int device);
/// Copies device → device.
void memcpy_d2d(void* dst, const void* src, std::size_t bytes, int device);

/// x[i] *= alpha for i < n (a minimal custom kernel).
void scale_f32(float* x, float alpha, int64_t n, int device);
/// c (M, N) = a (M, K) @ b (K, N), row-major, through cuBLAS SGEMM.
void matmul_f32(const float* a, const float* b, float* c, int64_t M, int64_t N, int64_t K, int device);

}  // namespace loom::cuda
