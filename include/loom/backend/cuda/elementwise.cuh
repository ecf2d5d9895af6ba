#pragma once
#ifndef __CUDACC__
#error "loom/backend/cuda/*.cuh must be compiled by nvcc (from a .cu file)"
#endif
// Elementwise CUDA kernels.

#include <cstdint>

namespace loom::cuda {

// x[i] *= alpha; a grid-stride loop so any n fits any grid.
__global__ void scale_f32_kernel(float* x, float alpha, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    x[i] *= alpha;
  }
}

}  // namespace loom::cuda
