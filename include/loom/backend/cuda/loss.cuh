#pragma once
// Cross-entropy fused with the softmax. The forward reads each row of logits once (an online
// max and sum of exponentials per thread, merged across the block) and keeps only lse per row;
// the backward recomputes softmax = exp(x - lse) on the fly, so the (N, V) probabilities are
// never stored.
//
// Contract (the same as backend/cpu/loss.hpp): row n of the logits (and of dlogits) starts at
// n * ld; targets are int64. The forward writes losses (0 on ignored rows) and the log-sum-exp of
// each row, and throws index_error naming the position of a bad target. The reduction writes the
// sum (or the mean over the rows not ignored) and that count as scalars, summed in double in
// row order. The backward writes dlogits from the saved log-sum-exp; nothing is added to. (A
// second backward writes them in bf16, zero-padded to a wider row, for linear_cross_entropy.)

#include "loom/backend/cuda/common.cuh"
#include "loom/backend/cuda/elementwise.cuh"
#include "loom/backend/cuda/embedding.cuh"

namespace loom::cuda {

namespace detail {

// Merges two (max, sum of exp(x - max)) pairs.
__device__ inline void lse_merge(float& m, float& s, float m2, float s2) {
  if (m2 > m) {
    s = s * expf(m - m2) + s2;
    m = m2;
  } else if (m2 > -INFINITY) {
    s += s2 * expf(m2 - m);
  }
}

// One block per row: losses[n] = lse - x[t], lse[n].
__global__ void cross_entropy_forward_kernel(float* losses, float* lse_out, const float* logits, int64_t ld,
                                             const int64_t* targets, int64_t N, int64_t V, int64_t ignore_index,
                                             int* flag) {
  __shared__ float sm[32], ss[32];
  for (int64_t n = blockIdx.x; n < N; n += gridDim.x) {
    const float* x = logits + n * ld;
    float m = -INFINITY, s = 0.0f;
    for (int64_t c = threadIdx.x; c < V; c += blockDim.x) lse_merge(m, s, x[c], 1.0f);
    for (int o = 16; o > 0; o >>= 1) {
      float m2 = __shfl_xor_sync(0xffffffffu, m, o), s2 = __shfl_xor_sync(0xffffffffu, s, o);
      lse_merge(m, s, m2, s2);
    }
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    if (lane == 0) sm[warp] = m, ss[warp] = s;
    __syncthreads();
    if (threadIdx.x == 0) {
      float M = sm[0], S = ss[0];
      for (int w = 1; w < nw; ++w) lse_merge(M, S, sm[w], ss[w]);
      const float lse = M + logf(S);
      const int64_t t = targets[n];
      lse_out[n] = lse;
      if (t == ignore_index) {
        losses[n] = 0.0f;
      } else if (t < 0 || t >= V) {
        losses[n] = NAN;
        atomicCAS(flag, 0, int(n + 1 < INT32_MAX ? n + 1 : INT32_MAX));
      } else {
        losses[n] = lse - x[t];
      }
    }
    __syncthreads();
  }
}

// One block: the sum (or mean) of the losses and the count of rows not ignored.
__global__ void cross_entropy_reduce_kernel(float* out, float* count, const float* losses, const int64_t* targets,
                                            int64_t N, int64_t ignore_index, bool mean) {
  __shared__ double part[256];
  __shared__ long long cnt[256];
  double acc = 0.0;
  long long k = 0;
  for (int64_t n = threadIdx.x; n < N; n += blockDim.x) {
    acc += double(losses[n]);
    k += targets[n] != ignore_index;
  }
  part[threadIdx.x] = acc, cnt[threadIdx.x] = k;
  __syncthreads();
  for (int w = blockDim.x / 2; w > 0; w >>= 1) {
    if (threadIdx.x < w) part[threadIdx.x] += part[threadIdx.x + w], cnt[threadIdx.x] += cnt[threadIdx.x + w];
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    *out = float(mean ? part[0] / double(cnt[0]) : part[0]);
    *count = float(cnt[0]);
  }
}

// dlogits[n, c] = (exp(x - lse) - [c == t]) * dloss_n for c < V, in O (float, or bf16 for the
// GEMMs of a fused lm_head's backward); rows ld_out apart, columns [V, V_out) written as 0.
template <class O>
__global__ void cross_entropy_backward_kernel(O* dlogits, int64_t ld_out, int64_t V_out, const float* dloss,
                                              bool per_row, const float* count, const float* logits, const float* lse,
                                              int64_t ld, const int64_t* targets, int64_t N, int64_t V,
                                              int64_t ignore_index) {
  for (int64_t n = blockIdx.x; n < N; n += gridDim.x) {
    const int64_t t = targets[n];
    O* d = dlogits + n * ld_out;
    if (t == ignore_index) {
      for (int64_t c = threadIdx.x; c < V_out; c += blockDim.x) d[c] = from_float<O>(0.0f);
      continue;
    }
    float dl = per_row ? dloss[n] : dloss[0];
    if (count) dl /= *count;
    const float* x = logits + n * ld;
    const float l = lse[n];
    for (int64_t c = threadIdx.x; c < V_out; c += blockDim.x)
      d[c] = from_float<O>(c < V ? (expf(x[c] - l) - float(c == t)) * dl : 0.0f);
  }
}

}  // namespace detail

void cross_entropy_forward_f32(float* losses, float* lse, const float* logits, int64_t ld, const int64_t* targets,
                               int64_t N, int64_t V, int64_t ignore_index, int device) {
  if (N == 0) return;
  cudaStream_t s = detail::use(device);
  int grid = int(std::min<int64_t>(N, int64_t(detail::sm_count(device)) * 8));
  detail::cross_entropy_forward_kernel<<<grid, 512, 0, s>>>(losses, lse, logits, ld, targets, N, V, ignore_index,
                                                            detail::error_flag(device));
  LOOM_CUDA_CHECK_LAUNCH();
  if (int bad = detail::take_error_flag(device)) {
    int64_t n = bad - 1, t = 0;
    LOOM_CUDA_CHECK(cudaMemcpyAsync(&t, targets + n, sizeof(int64_t), cudaMemcpyDeviceToHost, s));
    LOOM_CUDA_CHECK(cudaStreamSynchronize(s));
    throw index_error(::loom::detail::concat("cross_entropy: target ", t, " at position ", n,
                                             " is out of range for ", V, " classes (ignore_index ", ignore_index, ")"));
  }
}

void cross_entropy_reduce_f32(float* out, float* count, const float* losses, const int64_t* targets, int64_t N,
                              int64_t ignore_index, bool mean, int device) {
  detail::cross_entropy_reduce_kernel<<<1, 256, 0, detail::use(device)>>>(out, count, losses, targets, N, ignore_index,
                                                                         mean);
  LOOM_CUDA_CHECK_LAUNCH();
}

void cross_entropy_backward_f32(float* dlogits, const float* dloss, bool per_row, const float* count,
                                const float* logits, const float* lse, int64_t ld, const int64_t* targets, int64_t N,
                                int64_t V, int64_t ignore_index, int device) {
  if (N == 0) return;
  int grid = int(std::min<int64_t>(N, int64_t(detail::sm_count(device)) * 8));
  detail::cross_entropy_backward_kernel<float><<<grid, 512, 0, detail::use(device)>>>(
      dlogits, ld, V, dloss, per_row, count, logits, lse, ld, targets, N, V, ignore_index);
  LOOM_CUDA_CHECK_LAUNCH();
}

void cross_entropy_backward_bf16(void* dlogits, int64_t ld_out, int64_t V_out, const float* dloss, bool per_row,
                                 const float* count, const float* logits, const float* lse, int64_t ld,
                                 const int64_t* targets, int64_t N, int64_t V, int64_t ignore_index, int device) {
  if (N == 0) return;
  int grid = int(std::min<int64_t>(N, int64_t(detail::sm_count(device)) * 8));
  detail::cross_entropy_backward_kernel<__nv_bfloat16><<<grid, 512, 0, detail::use(device)>>>(
      static_cast<__nv_bfloat16*>(dlogits), ld_out, V_out, dloss, per_row, count, logits, lse, ld, targets, N, V,
      ignore_index);
  LOOM_CUDA_CHECK_LAUNCH();
}

}  // namespace loom::cuda
