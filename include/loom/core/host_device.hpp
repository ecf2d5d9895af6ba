#pragma once
/// @file host_device.hpp
/// LOOM_HOST_DEVICE: marks scalar code that the CPU kernels and the CUDA kernels share, so that
/// both compute the same values from one definition.

#if defined(__CUDACC__)
#define LOOM_HOST_DEVICE __host__ __device__
#else
/// Marks scalar math shared by the CPU and CUDA kernels (empty outside nvcc).
#define LOOM_HOST_DEVICE
#endif
