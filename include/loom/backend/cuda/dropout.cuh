#pragma once
// Dropout drawn on the GPU: each thread draws one Philox block and applies it to two elements,
// so no mask is made on the host, copied or stored.
//
// Contract (the same as backend/cpu/dropout.hpp): over n contiguous elements,
// out[i] = x[i] * scale where element i's uniform draw (the one rand() gives element i from
// blocks first, first + 1, ... under `seed`; 24 bits) is at least p, compared as an integer with
// ceil(p * 2^24), else 0. Both backends keep exactly the same elements. out may alias x.

#include <cmath>

#include "loom/backend/cuda/common.cuh"
#include "loom/core/random.hpp"

namespace loom::cuda {

namespace detail {

// Thread j handles elements 2j and 2j + 1 with Philox block first + j.
__global__ void dropout_kernel(float* out, const float* x, int64_t n, uint64_t seed, uint64_t first,
                               uint32_t threshold, float scale) {
  const int64_t pairs = (n + 1) / 2;
  for (int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; j < pairs; j += int64_t(gridDim.x) * blockDim.x) {
    const Philox4 r = philox4x32(first + uint64_t(j), seed);
    const int64_t i = 2 * j;
    out[i] = random_bits24(r.w[0]) >= threshold ? x[i] * scale : 0.0f;
    if (i + 1 < n) out[i + 1] = random_bits24(r.w[2]) >= threshold ? x[i + 1] * scale : 0.0f;
  }
}

}  // namespace detail

void dropout_f32(float* out, const float* x, int64_t n, uint64_t seed, uint64_t first, double p, double scale,
                 int device) {
  if (n == 0) return;
  cudaStream_t s = detail::use(device);
  const auto threshold = uint32_t(std::ceil(p * 16777216.0));  // p * 2^24
  detail::dropout_kernel<<<detail::grid_for((n + 1) / 2, 256, device), 256, 0, s>>>(out, x, n, seed, first, threshold,
                                                                                   float(scale));
  LOOM_CUDA_CHECK_LAUNCH();
}

}  // namespace loom::cuda
