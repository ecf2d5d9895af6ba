#pragma once
// Reductions: one axis of a contiguous (outer, R, inner) tensor, the global sum of squares
// (for gradient clipping) and an in-place scale. Sums accumulate in double, and every sum is
// taken in a fixed order, so results are the same bits on every run.

#include "loom/backend/cuda/common.cuh"

namespace loom::cuda {

namespace detail {

__device__ inline double reduce_init(Reduce op) {
  return op == Reduce::max ? -INFINITY : op == Reduce::min ? INFINITY : 0.0;
}
__device__ inline double reduce_step(Reduce op, double acc, double v) {
  switch (op) {
    case Reduce::max: return (v != v || v > acc || acc != acc) ? (acc != acc ? acc : v) : acc;
    case Reduce::min: return (v != v || v < acc || acc != acc) ? (acc != acc ? acc : v) : acc;
    default: return acc + v;
  }
}
__device__ inline double reduce_merge(Reduce op, double a, double b) { return reduce_step(op, a, b); }

// inner == 1: one block of 256 threads per output row, the R values strided across threads,
// then a tree over the block.
__global__ void reduce_rows_kernel(Reduce op, float* out, const float* in, int64_t outer, int64_t R) {
  __shared__ double part[256];
  for (int64_t o = blockIdx.x; o < outer; o += gridDim.x) {
    const float* row = in + o * R;
    double acc = reduce_init(op);
    for (int64_t r = threadIdx.x; r < R; r += blockDim.x) acc = reduce_step(op, acc, double(row[r]));
    part[threadIdx.x] = acc;
    __syncthreads();
    for (int w = blockDim.x / 2; w > 0; w >>= 1) {
      if (threadIdx.x < w) part[threadIdx.x] = reduce_merge(op, part[threadIdx.x], part[threadIdx.x + w]);
      __syncthreads();
    }
    if (threadIdx.x == 0) out[o] = float(op == Reduce::mean ? part[0] / double(R) : part[0]);
    __syncthreads();
  }
}

// inner > 1: block (32, 8) covers 32 adjacent columns i of one o; its 8 rows of threads take
// every 8th r of one chunk of R (blockIdx.y). Each chunk writes a partial per (o, i) to
// `partial` (chunks, outer*inner); a second kernel adds the chunks in order.
__global__ void reduce_cols_kernel(Reduce op, double* partial, const float* in, int64_t outer, int64_t R,
                                   int64_t inner, int64_t chunk) {
  __shared__ double part[8][33];
  const int64_t col_tiles = (inner + 31) / 32;
  const int64_t r0 = int64_t(blockIdx.y) * chunk, r1 = min(R, r0 + chunk);
  for (int64_t t = blockIdx.x; t < outer * col_tiles; t += gridDim.x) {
    int64_t o = t / col_tiles, i = (t % col_tiles) * 32 + threadIdx.x;
    double acc = reduce_init(op);
    if (i < inner)
      for (int64_t r = r0 + threadIdx.y; r < r1; r += 8) acc = reduce_step(op, acc, double(in[(o * R + r) * inner + i]));
    part[threadIdx.y][threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.y == 0 && i < inner) {
      double a = part[0][threadIdx.x];
      for (int y = 1; y < 8; ++y) a = reduce_merge(op, a, part[y][threadIdx.x]);
      partial[int64_t(blockIdx.y) * outer * inner + o * inner + i] = a;
    }
    __syncthreads();
  }
}

__global__ void reduce_chunks_kernel(Reduce op, float* out, const double* partial, int64_t chunks, int64_t m,
                                     int64_t R) {
  for (int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; j < m; j += int64_t(gridDim.x) * blockDim.x) {
    double a = partial[j];
    for (int64_t c = 1; c < chunks; ++c) a = reduce_merge(op, a, partial[c * m + j]);
    out[j] = float(op == Reduce::mean ? a / double(R) : a);
  }
}

// Per-block partial sums of squares (fixed grid-stride order, then a tree) into partial[b].
__global__ void sumsq_kernel(const float* x, int64_t n, double* partial) {
  __shared__ double part[256];
  double acc = 0.0;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    acc += double(x[i]) * double(x[i]);
  part[threadIdx.x] = acc;
  __syncthreads();
  for (int w = blockDim.x / 2; w > 0; w >>= 1) {
    if (threadIdx.x < w) part[threadIdx.x] += part[threadIdx.x + w];
    __syncthreads();
  }
  if (threadIdx.x == 0) partial[blockIdx.x] = part[0];
}

// One block adds m doubles in a fixed order.
__global__ void sum_doubles_kernel(const double* x, int64_t m, double* out) {
  __shared__ double part[256];
  double acc = 0.0;
  for (int64_t i = threadIdx.x; i < m; i += blockDim.x) acc += x[i];
  part[threadIdx.x] = acc;
  __syncthreads();
  for (int w = blockDim.x / 2; w > 0; w >>= 1) {
    if (threadIdx.x < w) part[threadIdx.x] += part[threadIdx.x + w];
    __syncthreads();
  }
  if (threadIdx.x == 0) *out = part[0];
}

__global__ void scale_kernel(float* x, float alpha, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    x[i] *= alpha;
}

}  // namespace detail

// Defined in matmul.cuh: out (inner) = alpha * sum over R rows of in (R, inner), by cuBLAS gemv.
void column_sum_gemv(float* out, const float* in, int64_t R, int64_t inner, float alpha, int device);

void reduce_f32(Reduce op, float* out, const float* in, int64_t outer, int64_t R, int64_t inner, int device) {
  if (outer * inner == 0) return;
  if (outer == 1 && inner > 1 && R > 1 && R < INT32_MAX && inner < INT32_MAX && (op == Reduce::sum || op == Reduce::mean)) {
    // The sum of many rows (a bias gradient): a matrix-vector product with ones, in fp32 with
    // cuBLAS's fixed blocking (deterministic), at memory speed.
    return column_sum_gemv(out, in, R, inner, op == Reduce::mean ? float(1.0 / double(R)) : 1.0f, device);
  }
  cudaStream_t s = detail::use(device);
  if (R == 0) {  // an empty reduction: the identity (sum 0, mean NaN, max -inf, min +inf)
    float v = op == Reduce::sum ? 0.0f : op == Reduce::mean ? NAN : op == Reduce::max ? -INFINITY : INFINITY;
    Layout L;
    L.ndim = 1, L.size[0] = outer * inner, L.stride[0][0] = 1;
    uint32_t bits;
    std::memcpy(&bits, &v, 4);
    fill(out, 4, bits, L, device);
    return;
  }
  if (inner == 1) {
    int grid = int(std::min<int64_t>(outer, int64_t(detail::sm_count(device)) * 16));
    detail::reduce_rows_kernel<<<grid, 256, 0, s>>>(op, out, in, outer, R);
    LOOM_CUDA_CHECK_LAUNCH();
    return;
  }
  const int64_t tiles = outer * ((inner + 31) / 32);
  const int64_t want_blocks = int64_t(detail::sm_count(device)) * 8;
  int64_t chunks = std::max<int64_t>(1, std::min<int64_t>((R + 63) / 64, want_blocks / std::max<int64_t>(tiles, 1)));
  chunks = std::min<int64_t>(chunks, 65535);
  const int64_t chunk = (R + chunks - 1) / chunks;
  chunks = (R + chunk - 1) / chunk;
  detail::Scratch partial(size_t(chunks * outer * inner) * sizeof(double), device);
  dim3 grid(unsigned(std::min<int64_t>(tiles, 65535)), unsigned(chunks));
  detail::reduce_cols_kernel<<<grid, dim3(32, 8), 0, s>>>(op, partial.as<double>(), in, outer, R, inner, chunk);
  LOOM_CUDA_CHECK_LAUNCH();
  detail::reduce_chunks_kernel<<<detail::grid_for(outer * inner, 256, device), 256, 0, s>>>(
      op, out, partial.as<double>(), chunks, outer * inner, R);
  LOOM_CUDA_CHECK_LAUNCH();
}

double sum_of_squares_f32(const float* const* arrays, const int64_t* sizes, int count, int device) {
  cudaStream_t s = detail::use(device);
  constexpr int threads = 256, max_blocks = 256;
  std::vector<int> blocks(count);
  int64_t total = 0;
  for (int i = 0; i < count; ++i) {
    blocks[i] = int(std::max<int64_t>(1, std::min<int64_t>(max_blocks, (sizes[i] + threads * 16 - 1) / (threads * 16))));
    total += blocks[i];
  }
  detail::Scratch partial(size_t(total + 1) * sizeof(double), device);
  double* p = partial.as<double>();
  int64_t base = 0;
  for (int i = 0; i < count; ++i) {
    detail::sumsq_kernel<<<blocks[i], threads, 0, s>>>(arrays[i], sizes[i], p + base);
    LOOM_CUDA_CHECK_LAUNCH();
    base += blocks[i];
  }
  detail::sum_doubles_kernel<<<1, 256, 0, s>>>(p, total, p + total);
  LOOM_CUDA_CHECK_LAUNCH();
  double result = 0.0;
  LOOM_CUDA_CHECK(cudaMemcpyAsync(&result, p + total, sizeof(double), cudaMemcpyDeviceToHost, s));
  LOOM_CUDA_CHECK(cudaStreamSynchronize(s));
  return result;
}

void scale_f32(float* x, float alpha, int64_t n, int device) {
  if (n == 0) return;
  detail::scale_kernel<<<detail::grid_for(n, 256, device), 256, 0, detail::use(device)>>>(x, alpha, n);
  LOOM_CUDA_CHECK_LAUNCH();
}

}  // namespace loom::cuda
