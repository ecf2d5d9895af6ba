#pragma once
// Embedding lookup and its deterministic backward. The forward gathers rows (float4 when C
// allows) and flags any index outside [0, V). The backward sorts the positions by token on the
// host (the ids are small: B*T int64), then one block per distinct token adds that token's
// gradient rows in position order: no atomics, the same bits on every run.
//
// Contract (the same as backend/cpu/embedding.hpp): int64 indices; the forward throws
// index_error naming the position of an index outside [0, V); the backward writes the whole
// (V, C) dweight (overwritten, not added to), adding repeated indices in the order of n.

#include "loom/backend/cuda/common.cuh"
#include "loom/backend/cuda/reduce.cuh"

namespace loom::cuda {

namespace detail {

/// One int per device that kernels set when they meet a bad index.
inline int* error_flag(int device) {
  static std::mutex mu;
  static std::vector<int*> flags;
  std::lock_guard<std::mutex> lock(mu);
  if (int(flags.size()) <= device) flags.resize(device + 1, nullptr);
  if (!flags[device]) {
    LOOM_CUDA_CHECK(cudaSetDevice(device));
    LOOM_CUDA_CHECK(cudaMalloc(&flags[device], sizeof(int)));
    LOOM_CUDA_CHECK(cudaMemset(flags[device], 0, sizeof(int)));
  }
  return flags[device];
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

// Block k handles token tokens[k]: dw[token, :] = sum of g[pos[j], :] for j in [start[k], start[k+1]).
__global__ void embedding_backward_kernel(float* dw, const float* g, const int64_t* tokens, const int64_t* start,
                                          const int64_t* pos, int64_t U, int64_t C) {
  for (int64_t k = blockIdx.x; k < U; k += gridDim.x) {
    const int64_t t = tokens[k], j0 = start[k], j1 = start[k + 1];
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
      float s = 0.0f;
      for (int64_t j = j0; j < j1; ++j) s += g[pos[j] * C + c];
      dw[t * C + c] = s;
    }
  }
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
  std::vector<int64_t> ids(N);
  LOOM_CUDA_CHECK(cudaMemcpyAsync(ids.data(), idx, size_t(N) * sizeof(int64_t), cudaMemcpyDeviceToHost, s));
  LOOM_CUDA_CHECK(cudaStreamSynchronize(s));
  // A counting sort by token (stable: positions stay in order within a token), O(N + V).
  std::vector<int64_t> count(size_t(V) + 1, 0);
  for (int64_t j = 0; j < N; ++j) {
    const int64_t t = ids[j];
    LOOM_CHECK(t >= 0 && t < V, index_error, "embedding backward: index ", t, " is out of range for a table of ", V,
               " rows");
    ++count[size_t(t) + 1];
  }
  std::vector<int64_t> tokens, start;  // one entry per distinct token, in token order
  for (int64_t v = 0; v < V; ++v) {
    if (count[size_t(v) + 1] > 0) tokens.push_back(v), start.push_back(count[size_t(v)]);
    count[size_t(v) + 1] += count[size_t(v)];  // prefix sum: count[v] = first slot of token v
  }
  start.push_back(N);
  std::vector<int64_t> pos(N);
  for (int64_t j = 0; j < N; ++j) pos[size_t(count[size_t(ids[j])]++)] = j;
  const int64_t U = int64_t(tokens.size());
  // one upload: pos (N), tokens (U), start (U + 1)
  std::vector<int64_t> packed;
  packed.reserve(size_t(N + 2 * U + 1));
  packed.insert(packed.end(), pos.begin(), pos.end());
  packed.insert(packed.end(), tokens.begin(), tokens.end());
  packed.insert(packed.end(), start.begin(), start.end());
  detail::Scratch dev(packed.size() * sizeof(int64_t), device);
  LOOM_CUDA_CHECK(cudaMemcpyAsync(dev.p, packed.data(), packed.size() * sizeof(int64_t), cudaMemcpyHostToDevice, s));
  const int64_t* p = dev.as<int64_t>();
  int threads = C >= 512 ? 256 : 128;
  detail::embedding_backward_kernel<<<int(std::min<int64_t>(U, 65535)), threads, 0, s>>>(dw, g, p + N, p + N + U, p, U, C);
  LOOM_CUDA_CHECK_LAUNCH();
  LOOM_CUDA_CHECK(cudaStreamSynchronize(s));  // `packed` (host) must outlive the copy
}

}  // namespace loom::cuda
