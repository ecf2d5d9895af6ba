#pragma once
/// @file config.hpp
/// Build configuration: the CUDA switch, the host/device function marker, thread control, and
/// Eigen (included here, through eigen.hpp, so that it comes before any kernel that uses it).

#ifndef LOOM_WITH_CUDA
/// 1 when the CUDA backend (the loom::cuda target) is linked into this program.
#define LOOM_WITH_CUDA 0
#endif

#include "loom/core/host_device.hpp"

#ifdef _OPENMP
#include <omp.h>
#endif

#ifndef __CUDACC__
#include "loom/eigen.hpp"
#endif

namespace loom {

/// Number of threads loom's CPU kernels use (1 when built without OpenMP).
inline int get_num_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

/// Sets the number of threads for loom's CPU kernels and Eigen's GEMM (ignored without OpenMP).
inline void set_num_threads(int n) {
#ifdef _OPENMP
  if (n > 0) omp_set_num_threads(n);
#else
  (void)n;
#endif
}

}  // namespace loom
