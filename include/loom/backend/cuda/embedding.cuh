#pragma once
// Embedding lookup and its deterministic backward. The forward gathers rows (float4 when C
// allows) and flags any index outside [0, V). The backward sorts the (token, position) pairs on
// the device (CUB's stable radix sort), then the first block of each run of a token adds that
// token's gradient rows in position order: no atomics, the same bits on every run, and no wait
// for the host.
//
// Contract (the same as backend/cpu/embedding.hpp): int64 indices; the forward throws
// index_error naming the position of an index outside [0, V); the backward writes the whole
// (V, C) dweight (overwritten, not added to), adding repeated indices in the order of n. (The
// backward trusts the indices the forward checked: here one outside [0, V) adds nothing.)

#include "loom/backend/cuda/common.cuh"
#include "loom/backend/cuda/reduce.cuh"

#include <cub/device/device_radix_sort.cuh>

namespace loom::cuda {

namespace detail {

/// One int per device that kernels set when they meet a bad index.
inline int* error_flag(int device) {
  return per_device(device, [](int d) {
    LOOM_CUDA_CHECK(cudaSetDevice(d));
    int* flag = nullptr;
    LOOM_CUDA_CHECK(cudaMalloc(&flag, sizeof(int)));
    LOOM_CUDA_CHECK(cudaMemset(flag, 0, sizeof(int)));
    return flag;
  });
}

/// Waits for the stream, then returns and clears the flag (1 + the first bad row, or 0).
inline int take_error_flag(int device) {
  int* f = error_flag(device);
  cudaStream_t s = use(device);
  int h = 0;
  LOOM_CUDA_CHECK(cudaMemcpyAsync(&h, f, sizeof(int), cudaMemcpyDeviceToHost, s));
  LOOM_CUDA_CHECK(cudaStreamSynchronize(s));
  if (h) LOOM_CUDA_CHECK(cudaMemsetAsync(f, 0, sizeof(int), s));
  return h;
}

// out[n, :] = w[idx[n], :] for rows of C elements of type E (float, or float4 when the rows
// allow 16-byte loads). A bad index writes zeros and sets the flag.
template <class E>
__global__ void embedding_forward_kernel(E* out, const int64_t* idx, const E* w, int64_t N, int64_t C, int64_t V,
                                         int* flag) {
  const int64_t total = N * C;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t n = i / C, c = i - n * C, t = idx[n];
    if (t < 0 || t >= V) {
      out[i] = E{};
      if (c == 0) atomicCAS(flag, 0, int(n + 1 < INT32_MAX ? n + 1 : INT32_MAX));
    } else {
      out[i] = w[t * C + c];
    }
  }
}

// The backward's sort keys: key[n] = idx[n] for an index in [0, V), else V (sorted last, then
// skipped); pos[n] = n.
__global__ void embedding_sort_keys_kernel(uint32_t* key, int32_t* pos, const int64_t* idx, int64_t N, int64_t V) {
  for (int64_t n = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; n < N; n += int64_t(gridDim.x) * blockDim.x) {
    const int64_t t = idx[n];
    key[n] = uint32_t(t >= 0 && t < V ? t : V);
    pos[n] = int32_t(n);
  }
}

// Block j starts work only where a run of equal keys begins in the sorted (key, pos): it writes
// dw[key, :] = the sum of g[pos[i], :] over that run, in the order of i, which is the order of
// n (the radix sort is stable). Every other block returns at once.
__global__ void embedding_backward_kernel(float* dw, const float* g, const uint32_t* key, const int32_t* pos, int64_t N,
                                          int64_t C, int64_t V) {
  for (int64_t j = blockIdx.x; j < N; j += gridDim.x) {
    const uint32_t t = key[j];
    if (t >= V || (j > 0 && key[j - 1] == t)) continue;
    int64_t end = j + 1;
    while (end < N && key[end] == t) ++end;
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
      float s = 0.0f;
      for (int64_t i = j; i < end; ++i) s += g[int64_t(pos[i]) * C + c];
      dw[int64_t(t) * C + c] = s;
    }
  }
}

// The number of low bits that hold every key in [0, V].
inline int key_bits(int64_t V) {
  int bits = 1;
  while ((int64_t(1) << bits) <= V) ++bits;
  return bits;
}

}  // namespace detail

void embedding_forward_f32(float* out, const int64_t* idx, const float* w, int64_t N, int64_t C, int64_t V,
                           int device) {
  if (N * C == 0) return;
  cudaStream_t s = detail::use(device);
  int* flag = detail::error_flag(device);
  if (C % 4 == 0 && detail::aligned16(out) && detail::aligned16(w)) {
    detail::embedding_forward_kernel<float4><<<detail::grid_for(N * C / 4, 256, device), 256, 0, s>>>(
        reinterpret_cast<float4*>(out), idx, reinterpret_cast<const float4*>(w), N, C / 4, V, flag);
  } else {
    detail::embedding_forward_kernel<float><<<detail::grid_for(N * C, 256, device), 256, 0, s>>>(out, idx, w, N, C, V, flag);
  }
  LOOM_CUDA_CHECK_LAUNCH();
  if (int bad = detail::take_error_flag(device)) {
    int64_t n = bad - 1, t = 0;
    LOOM_CUDA_CHECK(cudaMemcpyAsync(&t, idx + n, sizeof(int64_t), cudaMemcpyDeviceToHost, s));
    LOOM_CUDA_CHECK(cudaStreamSynchronize(s));
    throw index_error(::loom::detail::concat("embedding: index ", t, " at position ", n,
                                             " is out of range for a table of ", V, " rows"));
  }
}

void embedding_backward_f32(float* dw, const float* g, const int64_t* idx, int64_t N, int64_t C, int64_t V,
                            int device) {
  cudaStream_t s = detail::use(device);
  if (V * C == 0) return;
  LOOM_CUDA_CHECK(cudaMemsetAsync(dw, 0, size_t(V * C) * sizeof(float), s));
  if (N == 0) return;
  LOOM_CHECK(N < INT32_MAX && V < INT32_MAX, value_error, "embedding backward on CUDA: ", N, " positions or ", V,
             " rows exceed the int32 range of its sort");
  // Sort (key, position) pairs by key on the device: a stable radix sort over the key's low bits.
  const int n = int(N), bits = detail::key_bits(V);
  size_t sort_bytes = 0;
  LOOM_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, sort_bytes, static_cast<const uint32_t*>(nullptr),
                                                  static_cast<uint32_t*>(nullptr), static_cast<const int32_t*>(nullptr),
                                                  static_cast<int32_t*>(nullptr), n, 0, bits, s));
  const size_t arr = (size_t(N) * 4 + 255) / 256 * 256;  // one of the four arrays, 256-byte aligned
  detail::Scratch scratch(4 * arr + sort_bytes, device);
  char* base = scratch.as<char>();
  auto* key_in = reinterpret_cast<uint32_t*>(base);
  auto* key_out = reinterpret_cast<uint32_t*>(base + arr);
  auto* pos_in = reinterpret_cast<int32_t*>(base + 2 * arr);
  auto* pos_out = reinterpret_cast<int32_t*>(base + 3 * arr);
  detail::embedding_sort_keys_kernel<<<detail::grid_for(N, 256, device), 256, 0, s>>>(key_in, pos_in, idx, N, V);
  LOOM_CUDA_CHECK_LAUNCH();
  LOOM_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(base + 4 * arr, sort_bytes, key_in, key_out, pos_in, pos_out, n, 0,
                                                  bits, s));
  // One block per position; only the first of each run of a token works (no atomics: the same
  // bits on every run, and no synchronization with the host).
  const int threads = C >= 512 ? 256 : 128;
  detail::embedding_backward_kernel<<<int(std::min<int64_t>(N, INT32_MAX)), threads, 0, s>>>(dw, g, key_out, pos_out,
                                                                                           N, C, V);
  LOOM_CUDA_CHECK_LAUNCH();
}

}  // namespace loom::cuda
