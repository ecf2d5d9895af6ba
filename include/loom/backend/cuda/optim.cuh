#pragma once
// The fused Adam/AdamW step: one pass reads p, m, v, g and writes p, m, v (fp32 master weights
// and state), with the same per-element rule as the CPU (optim_detail::adam_update).

#include "loom/backend/cuda/common.cuh"

namespace loom::cuda {

namespace detail {

__global__ void adam_kernel(float* p, float* m, float* v, const float* g, int64_t n, AdamParams s) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    float pv = p[i], mv = m[i], vv = v[i], gv = g[i];
    pv = pv * s.decay_factor;  // AdamW's decoupled decay (1 for Adam)
    gv = gv + s.l2 * pv;       // Adam's L2 term (0 for AdamW)
    mv = s.beta1 * mv + s.one_minus_beta1 * gv;
    vv = s.beta2 * vv + s.one_minus_beta2 * (gv * gv);
    const float denom = sqrtf(vv) / s.bias_correction2_sqrt + s.eps;
    p[i] = pv + (-s.step_size) * (mv / denom);
    m[i] = mv;
    v[i] = vv;
  }
}

}  // namespace detail

void adam_f32(float* p, float* m, float* v, const float* g, int64_t n, const AdamParams& s, int device) {
  if (n == 0) return;
  detail::adam_kernel<<<detail::grid_for(n, 256, device), 256, 0, detail::use(device)>>>(p, m, v, g, n, s);
  LOOM_CUDA_CHECK_LAUNCH();
}

}  // namespace loom::cuda
