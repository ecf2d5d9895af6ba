#pragma once
// RMSNorm forward and its fused backward. One warp per row of C: the row is read with float4
// loads when C % 4 == 0 and the pointers are 16-byte aligned (else one float at a time). The
// backward computes dx for its rows and keeps each lane's share of dweight in registers across
// all the rows its warp visits; every warp then writes one partial row, and a column-sum kernel
// adds the partial rows in warp order, in fixed chunks whose sums are added in chunk order
// (deterministic: no atomics). Rows the register path does not cover (C > 1024 or C % 4 != 0)
// take a general dx kernel (one warp per row) and the same column sum over the rows of
// dout * xhat.
//   rstd (N)   = 1 / sqrt(mean(x^2) + eps),  out (N, C) = x * rstd * weight
//   xhat = x * rstd,  dxhat = dout * weight
//   dx   = rstd * (dxhat - xhat * mean(dxhat * xhat)),  dweight = sum over rows of dout * xhat
//
// Contract (the same as backend/cpu/rms_norm.hpp):
//   forward:  out (N, C) written; rstd (N) written when not null (the backward needs it);
//             w (C) may be null (then 1).
//   backward: dx (N, C) written; dw (C) WRITTEN (overwritten, not added) when not null, and
//             zero-filled when N == 0; w may be null (then 1); rstd is the forward's.
//   All arrays are contiguous, row-major, on `device`; N >= 0, C >= 0 (C == 0 writes nothing).

#include "loom/backend/cuda/common.cuh"
#include "loom/backend/cuda/reduce.cuh"

namespace loom::cuda {

namespace detail {

constexpr int rms_warps = 8;  // rows (warps) per block

// rstd[n] = 1 / sqrt(mean(x[n]^2) + eps),  out[n] = x[n] * rstd[n] * w   (rstd may be null)
// vec: C % 4 == 0 and x, out, w (when not null) are 16-byte aligned.
__global__ void rms_norm_forward_kernel(float* out, float* rstd, const float* x, const float* w, int64_t N,
                                        int64_t C, float eps, bool vec) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = int64_t(gridDim.x) * rms_warps;
  for (int64_t n = blockIdx.x * int64_t(rms_warps) + (threadIdx.x >> 5); n < N; n += warps) {
    const float* xr = x + n * C;
    float* yr = out + n * C;
    float ss = 0.0f;
    if (vec) {
      for (int64_t q = lane; q < C / 4; q += 32) {
        float4 v = reinterpret_cast<const float4*>(xr)[q];
        ss += (v.x * v.x + v.y * v.y) + (v.z * v.z + v.w * v.w);
      }
    } else {
      for (int64_t c = lane; c < C; c += 32) ss += xr[c] * xr[c];
    }
    const float r = 1.0f / sqrtf(warp_sum(ss) / float(C) + eps);
    if (vec) {  // second pass over the row (in L1)
      for (int64_t q = lane; q < C / 4; q += 32) {
        float4 v = reinterpret_cast<const float4*>(xr)[q];
        float4 wv = w ? reinterpret_cast<const float4*>(w)[q] : make_float4(1.f, 1.f, 1.f, 1.f);
        reinterpret_cast<float4*>(yr)[q] = make_float4(v.x * r * wv.x, v.y * r * wv.y, v.z * r * wv.z, v.w * r * wv.w);
      }
    } else {
      for (int64_t c = lane; c < C; c += 32) yr[c] = xr[c] * r * (w ? w[c] : 1.0f);
    }
    if (rstd && lane == 0) rstd[n] = r;
  }
}

// dx for every row; lane-owned dw partials in registers (C % 4 == 0, C <= 128 * NC), one partial
// row (C) per warp in `partial` (warps, C) when it is not null.
template <int NC>
__global__ void rms_norm_backward_kernel(float* dx, float* partial, const float* g, const float* x, const float* w,
                                         const float* rstd, int64_t N, int64_t C) {
  const int lane = threadIdx.x & 31;
  const int64_t warp = blockIdx.x * int64_t(rms_warps) + (threadIdx.x >> 5), warps = int64_t(gridDim.x) * rms_warps;
  const int64_t C4 = C / 4;
  float4 dw[NC];
#pragma unroll
  for (int j = 0; j < NC; ++j) dw[j] = make_float4(0.f, 0.f, 0.f, 0.f);
  for (int64_t n = warp; n < N; n += warps) {
    const float4* xr = reinterpret_cast<const float4*>(x + n * C);
    const float4* gr = reinterpret_cast<const float4*>(g + n * C);
    const float r = rstd[n];
    float4 xh[NC], dh[NC];
    float s = 0.0f;
#pragma unroll
    for (int j = 0; j < NC; ++j) {
      const int64_t q = j * 32 + lane;
      if (q < C4) {
        float4 xv = xr[q], gv = gr[q];
        float4 wv = w ? reinterpret_cast<const float4*>(w)[q] : make_float4(1.f, 1.f, 1.f, 1.f);
        xh[j] = make_float4(xv.x * r, xv.y * r, xv.z * r, xv.w * r);
        dh[j] = make_float4(gv.x * wv.x, gv.y * wv.y, gv.z * wv.z, gv.w * wv.w);
        s += (dh[j].x * xh[j].x + dh[j].y * xh[j].y) + (dh[j].z * xh[j].z + dh[j].w * xh[j].w);
        dw[j].x += gv.x * xh[j].x, dw[j].y += gv.y * xh[j].y, dw[j].z += gv.z * xh[j].z, dw[j].w += gv.w * xh[j].w;
      }
    }
    const float m = warp_sum(s) / float(C);
    float4* dr = reinterpret_cast<float4*>(dx + n * C);
#pragma unroll
    for (int j = 0; j < NC; ++j) {
      const int64_t q = j * 32 + lane;
      if (q < C4)
        dr[q] = make_float4(r * (dh[j].x - xh[j].x * m), r * (dh[j].y - xh[j].y * m), r * (dh[j].z - xh[j].z * m),
                            r * (dh[j].w - xh[j].w * m));
    }
  }
  if (partial) {
    float4* pw = reinterpret_cast<float4*>(partial + warp * C);
#pragma unroll
    for (int j = 0; j < NC; ++j) {
      const int64_t q = j * 32 + lane;
      if (q < C4) pw[q] = dw[j];
    }
  }
}

// The general case (any C): dx only, one warp per row.
__global__ void rms_norm_dx_kernel(float* dx, const float* g, const float* x, const float* w, const float* rstd,
                                   int64_t N, int64_t C) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = int64_t(gridDim.x) * rms_warps;
  for (int64_t n = blockIdx.x * int64_t(rms_warps) + (threadIdx.x >> 5); n < N; n += warps) {
    const float *xr = x + n * C, *gr = g + n * C;
    const float r = rstd[n];
    float s = 0.0f;
    for (int64_t c = lane; c < C; c += 32) s += gr[c] * (w ? w[c] : 1.0f) * (xr[c] * r);
    const float m = warp_sum(s) / float(C);
    for (int64_t c = lane; c < C; c += 32) dx[n * C + c] = r * (gr[c] * (w ? w[c] : 1.0f) - xr[c] * r * m);
  }
}

// Column sums for dw, in fixed chunks of rc rows: partial[k][c] = sum over the rows r of chunk k
// of a[r, c] (b null: the fast path's per-warp partial rows) or of a[r, c] * (b[r, c] * s[r])
// (dout * xhat: the general path). Block (32, 8): 32 adjacent columns (coalesced); thread row ty
// adds rows ty, ty + 8, ... of the chunk, and the 8 sums are combined in order.
__global__ void rms_norm_column_partial_kernel(float* partial, const float* a, const float* b, const float* s,
                                               int64_t R, int64_t C, int64_t rc) {
  __shared__ float part[8][33];
  const int64_t c = blockIdx.x * int64_t(32) + threadIdx.x;
  const int64_t r0 = int64_t(blockIdx.y) * rc, r1 = min(R, r0 + rc);
  float acc = 0.0f;
  if (c < C) {
    if (b) {
      for (int64_t r = r0 + threadIdx.y; r < r1; r += 8) acc += a[r * C + c] * (b[r * C + c] * s[r]);
    } else {
      for (int64_t r = r0 + threadIdx.y; r < r1; r += 8) acc += a[r * C + c];
    }
  }
  part[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && c < C) {
    float t = part[0][threadIdx.x];
#pragma unroll
    for (int y = 1; y < 8; ++y) t += part[y][threadIdx.x];
    partial[int64_t(blockIdx.y) * C + c] = t;
  }
}

// dw[c] = sum over k (in order) of partial[k][c].
__global__ void rms_norm_sum_partials_kernel(float* dw, const float* partial, int64_t K, int64_t C) {
  for (int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; c < C; c += int64_t(gridDim.x) * blockDim.x) {
    float s = 0.0f;
    for (int64_t k = 0; k < K; ++k) s += partial[k * C + c];
    dw[c] = s;
  }
}

// dw (C) = column sums over R rows of a (b null) or of a * b * s[r] (see the kernel above). The
// rows are cut into chunks (enough blocks to fill the GPU, at least 64 rows each) whose partial
// sums are added in chunk order: the same bits on every run on a given device.
inline void rms_norm_column_sum(float* dw, const float* a, const float* b, const float* s, int64_t R, int64_t C,
                                int device, cudaStream_t st) {
  const int64_t col_blocks = (C + 31) / 32;
  int64_t chunks = (int64_t(sm_count(device)) * 8 + col_blocks - 1) / col_blocks;
  chunks = std::max<int64_t>(1, std::min<int64_t>(std::min<int64_t>(chunks, (R + 63) / 64), 65535));
  const int64_t rc = (R + chunks - 1) / chunks;
  chunks = (R + rc - 1) / rc;  // no empty chunk
  Scratch scratch(chunks > 1 ? size_t(chunks * C) * sizeof(float) : 1, device);
  float* p = chunks > 1 ? scratch.as<float>() : dw;  // one chunk: straight into dw
  rms_norm_column_partial_kernel<<<dim3(unsigned(col_blocks), unsigned(chunks)), dim3(32, 8), 0, st>>>(p, a, b, s, R,
                                                                                                       C, rc);
  LOOM_CUDA_CHECK_LAUNCH();
  if (chunks > 1) {
    rms_norm_sum_partials_kernel<<<grid_for(C, 128, device), 128, 0, st>>>(dw, p, chunks, C);
    LOOM_CUDA_CHECK_LAUNCH();
  }
}

}  // namespace detail

void rms_norm_forward_f32(float* out, float* rstd, const float* x, const float* w, int64_t N, int64_t C, float eps,
                          int device) {
  if (N == 0 || C == 0) return;
  const bool vec = C % 4 == 0 && detail::aligned16(x) && detail::aligned16(out) && (!w || detail::aligned16(w));
  const int64_t blocks = (N + detail::rms_warps - 1) / detail::rms_warps;
  int grid = int(std::min<int64_t>(blocks, int64_t(detail::sm_count(device)) * 16));
  detail::rms_norm_forward_kernel<<<grid, 32 * detail::rms_warps, 0, detail::use(device)>>>(out, rstd, x, w, N, C, eps,
                                                                                            vec);
  LOOM_CUDA_CHECK_LAUNCH();
}

void rms_norm_backward_f32(float* dx, float* dw, const float* g, const float* x, const float* w, const float* rstd,
                           int64_t N, int64_t C, int device) {
  if (C == 0) return;
  cudaStream_t s = detail::use(device);
  if (N == 0) {  // no rows: the weight gradient is zero (written, like every other call)
    if (dw) LOOM_CUDA_CHECK(cudaMemsetAsync(dw, 0, size_t(C) * sizeof(float), s));
    return;
  }
  const int64_t blocks = (N + detail::rms_warps - 1) / detail::rms_warps;
  const bool fast = C % 4 == 0 && C <= 1024 && detail::aligned16(x) && detail::aligned16(g) && detail::aligned16(dx) &&
                    (!w || detail::aligned16(w));
  if (fast) {
    int grid = int(std::min<int64_t>(blocks, int64_t(detail::sm_count(device)) * 2));
    const int64_t warps = int64_t(grid) * detail::rms_warps;
    detail::Scratch partial(dw ? size_t(warps * C) * sizeof(float) : 1, device);
    float* p = dw ? partial.as<float>() : nullptr;
    const int nc = int((C / 4 + 31) / 32);
    const int threads = 32 * detail::rms_warps;
    switch (nc) {
#define LOOM_RMS_CASE(K) \
  case K: detail::rms_norm_backward_kernel<K><<<grid, threads, 0, s>>>(dx, p, g, x, w, rstd, N, C); break;
      LOOM_RMS_CASE(1) LOOM_RMS_CASE(2) LOOM_RMS_CASE(3) LOOM_RMS_CASE(4)
      LOOM_RMS_CASE(5) LOOM_RMS_CASE(6) LOOM_RMS_CASE(7) LOOM_RMS_CASE(8)
#undef LOOM_RMS_CASE
    }
    LOOM_CUDA_CHECK_LAUNCH();
    if (dw) detail::rms_norm_column_sum(dw, p, nullptr, nullptr, warps, C, device, s);
    return;
  }
  int grid = int(std::min<int64_t>(blocks, int64_t(detail::sm_count(device)) * 16));
  detail::rms_norm_dx_kernel<<<grid, 32 * detail::rms_warps, 0, s>>>(dx, g, x, w, rstd, N, C);
  LOOM_CUDA_CHECK_LAUNCH();
  if (dw) detail::rms_norm_column_sum(dw, g, x, rstd, N, C, device, s);
}

}  // namespace loom::cuda
