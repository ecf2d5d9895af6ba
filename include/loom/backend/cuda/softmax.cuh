#pragma once
// Softmax and log-softmax over contiguous rows, forward and backward: one block per row,
// three passes over the row (max, sum of exponentials, write) that stay in L1/L2.

#include "loom/backend/cuda/common.cuh"

namespace loom::cuda {

namespace detail {

inline int row_threads(int64_t C) { return C >= 2048 ? 1024 : C >= 512 ? 256 : 128; }

// y = softmax(x) or log_softmax(x), row by row.  x, y: (N, C)
__global__ void softmax_kernel(float* out, const float* in, int64_t N, int64_t C, bool log) {
  __shared__ float scratch[32];
  for (int64_t n = blockIdx.x; n < N; n += gridDim.x) {
    const float* x = in + n * C;
    float* y = out + n * C;
    float m = -INFINITY;
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) m = fmaxf(m, x[c]);
    m = block_max(m, scratch);
    float s = 0.0f;
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) s += expf(x[c] - m);
    s = block_sum(s, scratch);
    if (log) {
      const float lse = m + logf(s);
      for (int64_t c = threadIdx.x; c < C; c += blockDim.x) y[c] = x[c] - lse;
    } else {
      const float inv = 1.0f / s;
      for (int64_t c = threadIdx.x; c < C; c += blockDim.x) y[c] = expf(x[c] - m) * inv;
    }
  }
}

// softmax:     dx = y * (g - sum_c g y)
// log_softmax: dx = g - exp(y) * sum_c g
__global__ void softmax_backward_kernel(float* dx, const float* gin, const float* yin, int64_t N, int64_t C, bool log) {
  __shared__ float scratch[32];
  for (int64_t n = blockIdx.x; n < N; n += gridDim.x) {
    const float *g = gin + n * C, *y = yin + n * C;
    float* d = dx + n * C;
    float s = 0.0f;
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) s += log ? g[c] : g[c] * y[c];
    s = block_sum(s, scratch);
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) d[c] = log ? g[c] - expf(y[c]) * s : y[c] * (g[c] - s);
  }
}

inline int row_grid(int64_t N, int device) { return int(std::min<int64_t>(N, int64_t(sm_count(device)) * 32)); }

}  // namespace detail

void softmax_f32(float* out, const float* in, int64_t N, int64_t C, bool log, int device) {
  if (N * C == 0) return;
  int t = detail::row_threads(C);
  detail::softmax_kernel<<<detail::row_grid(N, device), t, 0, detail::use(device)>>>(out, in, N, C, log);
  LOOM_CUDA_CHECK_LAUNCH();
}

void softmax_backward_f32(float* dx, const float* g, const float* y, int64_t N, int64_t C, bool log, int device) {
  if (N * C == 0) return;
  int t = detail::row_threads(C);
  detail::softmax_backward_kernel<<<detail::row_grid(N, device), t, 0, detail::use(device)>>>(dx, g, y, N, C, log);
  LOOM_CUDA_CHECK_LAUNCH();
}

}  // namespace loom::cuda
