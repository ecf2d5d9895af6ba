#pragma once
// LayerNorm forward and its fused backward. One warp per row of C. When C % 4 == 0 and C <= 1024
// (every transformer width here) a lane holds its share of the row in registers as float4s: the
// forward reads x once, and the backward reads x and dout once. The backward keeps each lane's
// share of dweight/dbias in registers across the rows its warp visits; the warps of a block add
// theirs in shared memory, each block writes one partial row, and a second kernel adds the
// partials, 8 threads per column, in a fixed order (deterministic: no atomics). Other widths take
// plain one-float-at-a-time kernels.
//   norm = (x - mean) * rstd,  dnorm = dout * weight
//   dx   = rstd * (dnorm - mean(dnorm) - norm * mean(dnorm * norm))
//   dweight = sum over rows of dout * norm,  dbias = sum over rows of dout
//
// Contract (the same as backend/cpu/layer_norm.hpp): rows are contiguous; the forward writes out,
// mean and rstd (none may be null); w and b may be null (1 and 0). The backward writes dx and,
// when not null, dw and db (overwritten, not added to).

#include "loom/backend/cuda/common.cuh"
#include "loom/backend/cuda/reduce.cuh"

namespace loom::cuda {

namespace detail {

constexpr int ln_warps = 8;  // rows (warps) per block

// out (N, C) = (x - mean) * rstd * w + b;  mean, rstd: (N). The row in registers: NC float4s per
// lane (C % 4 == 0, C <= 128 * NC, 16-byte aligned rows).
template <int NC>
__global__ void layer_norm_forward_rows_kernel(float* out, float* mean, float* rstd, const float* x, const float* w,
                                               const float* b, int64_t N, int64_t C, float eps) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = int64_t(gridDim.x) * ln_warps, C4 = C / 4;
  for (int64_t n = blockIdx.x * int64_t(ln_warps) + (threadIdx.x >> 5); n < N; n += warps) {
    const float4* xr = reinterpret_cast<const float4*>(x + n * C);
    float4 v[NC];
    float s = 0.0f;
#pragma unroll
    for (int j = 0; j < NC; ++j) {
      const int64_t q = j * 32 + lane;
      v[j] = q < C4 ? xr[q] : make_float4(0.f, 0.f, 0.f, 0.f);
      s += (v[j].x + v[j].y) + (v[j].z + v[j].w);
    }
    const float m = warp_sum(s) / float(C);
    float ss = 0.0f;  // the deviations from the mean (exact even for large means)
#pragma unroll
    for (int j = 0; j < NC; ++j) {
      if (j * 32 + lane < C4) {
        const float a = v[j].x - m, b2 = v[j].y - m, c = v[j].z - m, d = v[j].w - m;
        ss += (a * a + b2 * b2) + (c * c + d * d);
      }
    }
    const float r = 1.0f / sqrtf(warp_sum(ss) / float(C) + eps);
    float4* yr = reinterpret_cast<float4*>(out + n * C);
#pragma unroll
    for (int j = 0; j < NC; ++j) {
      const int64_t q = j * 32 + lane;
      if (q < C4) {
        float4 y = make_float4((v[j].x - m) * r, (v[j].y - m) * r, (v[j].z - m) * r, (v[j].w - m) * r);
        if (w) {
          const float4 wv = reinterpret_cast<const float4*>(w)[q];
          y.x *= wv.x, y.y *= wv.y, y.z *= wv.z, y.w *= wv.w;
        }
        if (b) {
          const float4 bv = reinterpret_cast<const float4*>(b)[q];
          y.x += bv.x, y.y += bv.y, y.z += bv.z, y.w += bv.w;
        }
        yr[q] = y;
      }
    }
    if (lane == 0) {
      mean[n] = m;
      rstd[n] = r;
    }
  }
}

// The general case (any C): out (N, C) = (x - mean) * rstd * w + b, the row re-read from L1.
__global__ void layer_norm_forward_kernel(float* out, float* mean, float* rstd, const float* x, const float* w,
                                          const float* b, int64_t N, int64_t C, float eps, bool vec) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = int64_t(gridDim.x) * ln_warps;
  for (int64_t n = blockIdx.x * int64_t(ln_warps) + (threadIdx.x >> 5); n < N; n += warps) {
    const float* xr = x + n * C;
    float* yr = out + n * C;
    float s = 0.0f;
    if (vec) {
      for (int64_t q = lane; q < C / 4; q += 32) {
        float4 v = reinterpret_cast<const float4*>(xr)[q];
        s += (v.x + v.y) + (v.z + v.w);
      }
    } else {
      for (int64_t c = lane; c < C; c += 32) s += xr[c];
    }
    const float m = warp_sum(s) / float(C);
    float ss = 0.0f;  // second pass over the row (in L1): exact even for large means
    for (int64_t c = lane; c < C; c += 32) {
      float d = xr[c] - m;
      ss += d * d;
    }
    const float r = 1.0f / sqrtf(warp_sum(ss) / float(C) + eps);
    for (int64_t c = lane; c < C; c += 32) {
      float v = (xr[c] - m) * r;
      if (w) v *= w[c];
      if (b) v += b[c];
      yr[c] = v;
    }
    if (lane == 0) {
      mean[n] = m;
      rstd[n] = r;
    }
  }
}

// dx for every row; lane-owned dw/db partials in registers (C % 4 == 0, C <= 128 * NC), added
// over the block's warps in shared memory: one partial row (2C: dw then db) per block in `partial`.
template <int NC>
__global__ void layer_norm_backward_kernel(float* dx, float* partial, const float* g, const float* x, const float* w,
                                           const float* mean, const float* rstd, int64_t N, int64_t C) {
  const int lane = threadIdx.x & 31;
  const int64_t warp = blockIdx.x * int64_t(ln_warps) + (threadIdx.x >> 5), warps = int64_t(gridDim.x) * ln_warps;
  const int64_t C4 = C / 4;
  float4 dw[NC], db[NC];
#pragma unroll
  for (int j = 0; j < NC; ++j) dw[j] = db[j] = make_float4(0.f, 0.f, 0.f, 0.f);
  for (int64_t n = warp; n < N; n += warps) {
    const float4* xr = reinterpret_cast<const float4*>(x + n * C);
    const float4* gr = reinterpret_cast<const float4*>(g + n * C);
    const float m = mean[n], r = rstd[n];
    float4 nv[NC], dn[NC];
    float s1 = 0.0f, s2 = 0.0f;
#pragma unroll
    for (int j = 0; j < NC; ++j) {
      const int64_t q = j * 32 + lane;
      if (q < C4) {
        float4 xv = xr[q], gv = gr[q];
        float4 wv = w ? reinterpret_cast<const float4*>(w)[q] : make_float4(1.f, 1.f, 1.f, 1.f);
        nv[j] = make_float4((xv.x - m) * r, (xv.y - m) * r, (xv.z - m) * r, (xv.w - m) * r);
        dn[j] = make_float4(gv.x * wv.x, gv.y * wv.y, gv.z * wv.z, gv.w * wv.w);
        s1 += (dn[j].x + dn[j].y) + (dn[j].z + dn[j].w);
        s2 += (dn[j].x * nv[j].x + dn[j].y * nv[j].y) + (dn[j].z * nv[j].z + dn[j].w * nv[j].w);
        dw[j].x += gv.x * nv[j].x, dw[j].y += gv.y * nv[j].y, dw[j].z += gv.z * nv[j].z, dw[j].w += gv.w * nv[j].w;
        db[j].x += gv.x, db[j].y += gv.y, db[j].z += gv.z, db[j].w += gv.w;
      }
    }
    const float m1 = warp_sum(s1) / float(C), m2 = warp_sum(s2) / float(C);
    float4* dr = reinterpret_cast<float4*>(dx + n * C);
#pragma unroll
    for (int j = 0; j < NC; ++j) {
      const int64_t q = j * 32 + lane;
      if (q < C4)
        dr[q] = make_float4(r * (dn[j].x - m1 - nv[j].x * m2), r * (dn[j].y - m1 - nv[j].y * m2),
                            r * (dn[j].z - m1 - nv[j].z * m2), r * (dn[j].w - m1 - nv[j].w * m2));
    }
  }
  if (!partial) return;
  // The block's warps add their shares in warp order: dw into partial[block][0, C), then db into
  // partial[block][C, 2C).
  __shared__ float4 share[ln_warps][32 * NC];
  const int wid = threadIdx.x >> 5;
  for (int half = 0; half < 2; ++half) {
#pragma unroll
    for (int j = 0; j < NC; ++j) share[wid][j * 32 + lane] = half == 0 ? dw[j] : db[j];
    __syncthreads();
    float4* dst = reinterpret_cast<float4*>(partial + blockIdx.x * 2 * C + half * C);
    for (int64_t q = threadIdx.x; q < C4; q += blockDim.x) {
      float4 t = share[0][q];
      for (int k = 1; k < ln_warps; ++k) t.x += share[k][q].x, t.y += share[k][q].y, t.z += share[k][q].z, t.w += share[k][q].w;
      dst[q] = t;
    }
    __syncthreads();
  }
}

// The general case (any C): dx only, one warp per row.
__global__ void layer_norm_dx_kernel(float* dx, const float* g, const float* x, const float* w, const float* mean,
                                     const float* rstd, int64_t N, int64_t C) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = int64_t(gridDim.x) * ln_warps;
  for (int64_t n = blockIdx.x * int64_t(ln_warps) + (threadIdx.x >> 5); n < N; n += warps) {
    const float *xr = x + n * C, *gr = g + n * C;
    const float m = mean[n], r = rstd[n];
    float s1 = 0.0f, s2 = 0.0f;
    for (int64_t c = lane; c < C; c += 32) {
      float nv = (xr[c] - m) * r, dn = gr[c] * (w ? w[c] : 1.0f);
      s1 += dn, s2 += dn * nv;
    }
    const float m1 = warp_sum(s1) / float(C), m2 = warp_sum(s2) / float(C);
    for (int64_t c = lane; c < C; c += 32) {
      float nv = (xr[c] - m) * r, dn = gr[c] * (w ? w[c] : 1.0f);
      dx[n * C + c] = r * (dn - m1 - nv * m2);
    }
  }
}

// The general case's dw/db: one thread per column, rows in order.
__global__ void layer_norm_dwdb_kernel(float* dw, float* db, const float* g, const float* x, const float* mean,
                                       const float* rstd, int64_t N, int64_t C) {
  for (int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; c < C; c += int64_t(gridDim.x) * blockDim.x) {
    float sw = 0.0f, sb = 0.0f;
    for (int64_t n = 0; n < N; ++n) {
      float gv = g[n * C + c];
      sw += gv * (x[n * C + c] - mean[n]) * rstd[n];
      sb += gv;
    }
    if (dw) dw[c] = sw;
    if (db) db[c] = sb;
  }
}

// dw[c] = sum over k of partial[k][c], db[c] likewise from partial[k][C + c], for K partial rows.
// A block of 32 x 8 threads takes 32 columns: thread row ty adds rows ty, ty + 8, ..., then the
// eight sums are added in order (deterministic).
__global__ void layer_norm_sum_partials_kernel(float* dw, float* db, const float* partial, int64_t K, int64_t C) {
  __shared__ float sums[8][33];
  const int tx = threadIdx.x & 31, ty = threadIdx.x >> 5;
  const int64_t c = blockIdx.x * int64_t(32) + tx;
  float s = 0.0f;
  if (c < 2 * C)
    for (int64_t k = ty; k < K; k += 8) s += partial[k * 2 * C + c];
  sums[ty][tx] = s;
  __syncthreads();
  if (ty == 0 && c < 2 * C) {
    for (int k = 1; k < 8; ++k) s += sums[k][tx];
    float* dst = c < C ? dw : db;
    if (dst) dst[c < C ? c : c - C] = s;
  }
}

}  // namespace detail

void layer_norm_forward_f32(float* out, float* mean, float* rstd, const float* x, const float* w, const float* b,
                            int64_t N, int64_t C, float eps, int device) {
  if (N == 0) return;
  cudaStream_t s = detail::use(device);
  int grid = int(std::min<int64_t>((N + detail::ln_warps - 1) / detail::ln_warps, int64_t(detail::sm_count(device)) * 16));
  const int threads = 32 * detail::ln_warps;
  const bool rows = C % 4 == 0 && C <= 1024 && detail::aligned16(x) && detail::aligned16(out) &&
                    (!w || detail::aligned16(w)) && (!b || detail::aligned16(b));
  if (rows) {
    switch (int((C / 4 + 31) / 32)) {
#define LOOM_LN_CASE(K) \
  case K: detail::layer_norm_forward_rows_kernel<K><<<grid, threads, 0, s>>>(out, mean, rstd, x, w, b, N, C, eps); break;
      LOOM_LN_CASE(1) LOOM_LN_CASE(2) LOOM_LN_CASE(3) LOOM_LN_CASE(4)
      LOOM_LN_CASE(5) LOOM_LN_CASE(6) LOOM_LN_CASE(7) LOOM_LN_CASE(8)
#undef LOOM_LN_CASE
    }
  } else {
    const bool vec = C % 4 == 0 && detail::aligned16(x);
    detail::layer_norm_forward_kernel<<<grid, threads, 0, s>>>(out, mean, rstd, x, w, b, N, C, eps, vec);
  }
  LOOM_CUDA_CHECK_LAUNCH();
}

void layer_norm_backward_f32(float* dx, float* dw, float* db, const float* g, const float* x, const float* w,
                             const float* mean, const float* rstd, int64_t N, int64_t C, int device) {
  if (N == 0 || C == 0) {
    if (C > 0) {  // no rows: the parameter gradients are zero
      cudaStream_t s = detail::use(device);
      if (dw) LOOM_CUDA_CHECK(cudaMemsetAsync(dw, 0, size_t(C) * 4, s));
      if (db) LOOM_CUDA_CHECK(cudaMemsetAsync(db, 0, size_t(C) * 4, s));
    }
    return;
  }
  cudaStream_t s = detail::use(device);
  const bool params = dw || db;
  const bool fast = C % 4 == 0 && C <= 1024 && detail::aligned16(x) && detail::aligned16(g) && detail::aligned16(dx) &&
                    (!w || detail::aligned16(w));
  if (fast) {
    const int threads = 32 * detail::ln_warps;
    // As many blocks as fit on the GPU at once (their registers bound it), at most one per 8 rows.
    auto grid_of = [&](auto kernel) {
      int per_sm = 0;
      LOOM_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, 0));
      return int(std::min<int64_t>((N + detail::ln_warps - 1) / detail::ln_warps,
                                   int64_t(detail::sm_count(device)) * std::max(per_sm, 1)));
    };
    const int nc = int((C / 4 + 31) / 32);
    int grid = 0;
    switch (nc) {
#define LOOM_LN_CASE(K) \
  case K: grid = grid_of(detail::layer_norm_backward_kernel<K>); break;
      LOOM_LN_CASE(1) LOOM_LN_CASE(2) LOOM_LN_CASE(3) LOOM_LN_CASE(4)
      LOOM_LN_CASE(5) LOOM_LN_CASE(6) LOOM_LN_CASE(7) LOOM_LN_CASE(8)
#undef LOOM_LN_CASE
    }
    detail::Scratch partial(params ? size_t(grid) * 2 * size_t(C) * sizeof(float) : 1, device);
    float* p = params ? partial.as<float>() : nullptr;
    switch (nc) {
#define LOOM_LN_CASE(K) \
  case K: detail::layer_norm_backward_kernel<K><<<grid, threads, 0, s>>>(dx, p, g, x, w, mean, rstd, N, C); break;
      LOOM_LN_CASE(1) LOOM_LN_CASE(2) LOOM_LN_CASE(3) LOOM_LN_CASE(4)
      LOOM_LN_CASE(5) LOOM_LN_CASE(6) LOOM_LN_CASE(7) LOOM_LN_CASE(8)
#undef LOOM_LN_CASE
    }
    LOOM_CUDA_CHECK_LAUNCH();
    if (params) {
      detail::layer_norm_sum_partials_kernel<<<int((2 * C + 31) / 32), 256, 0, s>>>(dw, db, p, grid, C);
      LOOM_CUDA_CHECK_LAUNCH();
    }
    return;
  }
  int grid = int(std::min<int64_t>((N + detail::ln_warps - 1) / detail::ln_warps, int64_t(detail::sm_count(device)) * 16));
  detail::layer_norm_dx_kernel<<<grid, 32 * detail::ln_warps, 0, s>>>(dx, g, x, w, mean, rstd, N, C);
  LOOM_CUDA_CHECK_LAUNCH();
  if (params) {
    detail::layer_norm_dwdb_kernel<<<detail::grid_for(C, 128, device), 128, 0, s>>>(dw, db, g, x, mean, rstd, N, C);
    LOOM_CUDA_CHECK_LAUNCH();
  }
}

}  // namespace loom::cuda
