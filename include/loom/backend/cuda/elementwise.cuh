#pragma once
// Elementwise CUDA kernels: unary and broadcasting binary maps and their gradients, strided
// copies, fills and dtype conversions. One kernel shape serves them all: a grid-stride loop
// that decodes each linear index into every operand's offset (Layout), and, when every operand
// is contiguous and 16-byte aligned, a float4 loop (one 16-byte load per operand per thread).

#include <cmath>
#include <cstring>

#include "loom/backend/cuda/common.cuh"
#include "loom/core/math.hpp"

namespace loom::cuda {

namespace detail {

// --- The scalar maps (the CPU's formulas, op by op) ---------------------------------------------

__device__ inline float unary_fn(Unary op, float x, float a) {
  switch (op) {
    case Unary::copy: return x;
    case Unary::neg: return -x;
    case Unary::exp: return expf(x);
    case Unary::log: return logf(x);
    case Unary::sqrt: return sqrtf(x);
    case Unary::rsqrt: return 1.0f / sqrtf(x);
    case Unary::tanh: return tanhf(x);
    case Unary::abs: return fabsf(x);
    case Unary::relu: return x > 0.0f ? x : 0.0f;
    case Unary::sigmoid: return math::sigmoid(x);
    case Unary::gelu_tanh: return math::gelu_tanh(x);
    case Unary::gelu_erf: return math::gelu_erf(x);
    case Unary::add_scalar: return x + a;
    case Unary::mul_scalar: return x * a;
    case Unary::div_scalar: return x / a;
    case Unary::rsub_scalar: return a - x;
    case Unary::rdiv_scalar: return a / x;
    case Unary::pow_scalar: return a == 2.0f ? x * x : powf(x, a);
    case Unary::silu: return math::silu(x);
    case Unary::log_sigmoid: return math::log_sigmoid(x);
  }
  return x;
}

// d f(x) / dx given x and y = f(x).
__device__ inline float unary_grad_fn(Unary op, float x, float y, float a) {
  switch (op) {
    case Unary::copy: case Unary::add_scalar: return 1.0f;
    case Unary::neg: case Unary::rsub_scalar: return -1.0f;
    case Unary::mul_scalar: return a;
    case Unary::div_scalar: return 1.0f / a;
    case Unary::exp: return y;
    case Unary::log: return 1.0f / x;
    case Unary::sqrt: return 0.5f / y;
    case Unary::rsqrt: return -0.5f * y * y * y;
    case Unary::tanh: return 1.0f - y * y;
    case Unary::abs: return float(x > 0.0f) - float(x < 0.0f);
    case Unary::relu: return float(x > 0.0f);
    case Unary::sigmoid: return y * (1.0f - y);
    case Unary::gelu_tanh: {  // 0.5 (1 + tanh u) + 0.5 x (1 - tanh^2 u) k (1 + 3 c x^2)
      const float k = float(math::sqrt_2_over_pi), c = 0.044715f;
      float t = tanhf(k * (x + c * x * x * x));
      return 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * k * (1.0f + 3.0f * c * x * x);
    }
    case Unary::gelu_erf: {  // Phi(x) + x phi(x)
      float cdf = 0.5f * (1.0f + erff(x * float(math::inv_sqrt_2)));
      float pdf = expf(-0.5f * x * x) * 0.3989422804014327f;
      return cdf + x * pdf;
    }
    case Unary::rdiv_scalar: return -a / (x * x);
    case Unary::pow_scalar: return a == 2.0f ? 2.0f * x : a * powf(x, a - 1.0f);
    case Unary::silu: return math::silu_grad(x);
    case Unary::log_sigmoid: return math::sigmoid(-x);
  }
  return 0.0f;
}

__device__ inline float binary_fn(Binary op, float x, float y) {
  switch (op) {
    case Binary::add: return x + y;
    case Binary::sub: return x - y;
    case Binary::mul: return x * y;
    case Binary::div: return x / y;
    case Binary::pow: return powf(x, y);
    case Binary::maximum: return (x != x || x > y) ? x : y;
    case Binary::minimum: return (x != x || x < y) ? x : y;
  }
  return x;
}

// The share of g that goes to `mine` for max (less = false) or min (less = true).
__device__ inline float share(float g, float mine, float other, bool less) {
  bool wins = less ? mine < other : mine > other;
  return wins ? g : (mine == other ? g * 0.5f : 0.0f);
}

__device__ inline float binary_grad_fn(BinaryGrad op, float g, float a, float b) {
  switch (op) {
    case BinaryGrad::g_times_b: return g * b;
    case BinaryGrad::g_times_a: return g * a;
    case BinaryGrad::g_over_b: return g / b;
    case BinaryGrad::div_db: return -g * a / (b * b);
    case BinaryGrad::pow_da: return g * b * powf(a, b - 1.0f);
    case BinaryGrad::pow_db: return g * powf(a, b) * logf(a);
    case BinaryGrad::max_da: return share(g, a, b, false);
    case BinaryGrad::max_db: return share(g, b, a, false);
    case BinaryGrad::min_da: return share(g, a, b, true);
    case BinaryGrad::min_db: return share(g, b, a, true);
  }
  return 0.0f;
}

// The functors the map kernels call with NIn input values.
struct UnaryF {
  Unary op; float a;
  __device__ float operator()(const float (&v)[1]) const { return unary_fn(op, v[0], a); }
};
struct UnaryGradF {  // inputs (g, x, y)
  Unary op; float a;
  __device__ float operator()(const float (&v)[3]) const { return v[0] * unary_grad_fn(op, v[1], v[2], a); }
};
struct UnaryGradXF {  // inputs (g, x): derivatives that need no y
  Unary op; float a;
  __device__ float operator()(const float (&v)[2]) const { return v[0] * unary_grad_fn(op, v[1], 0.0f, a); }
};
struct BinaryF {
  Binary op;
  __device__ float operator()(const float (&v)[2]) const { return binary_fn(op, v[0], v[1]); }
};
struct BinaryGradF {  // inputs (g, a, b)
  BinaryGrad op;
  __device__ float operator()(const float (&v)[3]) const { return binary_grad_fn(op, v[0], v[1], v[2]); }
};

template <int NIn>
struct Inputs {
  const float* p[NIn];
};

// f applied lane by lane to NIn float4 values.
template <int NIn, class F>
__device__ inline float4 apply4(const F& f, const float4 (&x)[NIn]) {
  float v[NIn];
  float4 r;
#pragma unroll
  for (int k = 0; k < NIn; ++k) v[k] = x[k].x;
  r.x = f(v);
#pragma unroll
  for (int k = 0; k < NIn; ++k) v[k] = x[k].y;
  r.y = f(v);
#pragma unroll
  for (int k = 0; k < NIn; ++k) v[k] = x[k].z;
  r.z = f(v);
#pragma unroll
  for (int k = 0; k < NIn; ++k) v[k] = x[k].w;
  r.w = f(v);
  return r;
}

// out[off0] = f(in_k[off_k+1]) over any strided layout.
template <int NIn, class F>
__global__ void map_strided_kernel(float* out, Inputs<NIn> in, F f, Layout L, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t off[NIn + 1];
    offsets<NIn + 1>(L, i, off);
    float v[NIn];
#pragma unroll
    for (int k = 0; k < NIn; ++k) v[k] = in.p[k][off[k + 1]];
    out[off[0]] = f(v);
  }
}

// The contiguous, aligned case: one float4 per operand per iteration, then a scalar tail.
template <int NIn, class F>
__global__ void map_vec4_kernel(float* out, Inputs<NIn> in, F f, int64_t n) {
  const int64_t n4 = n / 4, step = int64_t(gridDim.x) * blockDim.x;
  const int64_t tid = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  for (int64_t i = tid; i < n4; i += step) {
    float4 x[NIn];
#pragma unroll
    for (int k = 0; k < NIn; ++k) x[k] = reinterpret_cast<const float4*>(in.p[k])[i];
    const float4 r = apply4(f, x);
    reinterpret_cast<float4*>(out)[i] = r;
  }
  for (int64_t i = 4 * n4 + tid; i < n; i += step) {
    float v[NIn];
#pragma unroll
    for (int k = 0; k < NIn; ++k) v[k] = in.p[k][i];
    out[i] = f(v);
  }
}

// Two dimensions whose inner one is contiguous in every operand (a row broadcast such as a
// bias add has outer stride 0): one float4 per operand per iteration, one division per 4.
template <int NIn, class F>
__global__ void map_rows_vec4_kernel(float* out, Inputs<NIn> in, F f, Layout L, int64_t n4) {
  const uint32_t cols = uint32_t(L.size[1]);
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n4; i += int64_t(gridDim.x) * blockDim.x) {
    const uint32_t e = uint32_t(i * 4), row = e / cols, col = e - row * cols;  // n < 2^32: 32-bit division
    float4 x[NIn];
#pragma unroll
    for (int k = 0; k < NIn; ++k) x[k] = *reinterpret_cast<const float4*>(in.p[k] + int64_t(row) * L.stride[k + 1][0] + col);
    const float4 r = apply4(f, x);
    *reinterpret_cast<float4*>(out + int64_t(row) * L.stride[0][0] + col) = r;
  }
}

inline int64_t layout_numel(const Layout& L) {
  int64_t n = 1;
  for (int d = 0; d < L.ndim; ++d) n *= L.size[d];
  return n;
}

template <int NIn, class F>
void launch_map(float* out, Inputs<NIn> in, F f, const Layout& L, int device) {
  const int64_t n = layout_numel(L);
  if (n == 0) return;
  cudaStream_t s = use(device);
  bool vec = all_contiguous(L, NIn + 1) && aligned16(out);
  for (int k = 0; k < NIn; ++k) vec = vec && aligned16(in.p[k]);
  constexpr int threads = 256;
  bool rows = !vec && L.ndim == 2 && L.size[1] % 4 == 0 && L.size[0] * L.size[1] < (int64_t(1) << 32) &&
              aligned16(out) && L.stride[0][1] == 1 && L.stride[0][0] % 4 == 0;
  for (int k = 0; k < NIn && rows; ++k)
    rows = aligned16(in.p[k]) && L.stride[k + 1][1] == 1 && L.stride[k + 1][0] % 4 == 0;
  if (vec) {
    map_vec4_kernel<NIn><<<grid_for((n + 3) / 4, threads, device), threads, 0, s>>>(out, in, f, n);
  } else if (rows) {
    map_rows_vec4_kernel<NIn><<<grid_for(n / 4, threads, device), threads, 0, s>>>(out, in, f, L, n / 4);
  } else {
    map_strided_kernel<NIn><<<grid_for(n, threads, device), threads, 0, s>>>(out, in, f, L, n);
  }
  LOOM_CUDA_CHECK_LAUNCH();
}

template <class E>
__global__ void copy_kernel(E* out, const E* in, Layout L, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t off[2];
    offsets<2>(L, i, off);
    out[off[0]] = in[off[1]];
  }
}

template <class E>
__global__ void fill_kernel(E* out, E value, Layout L, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t off[1];
    offsets<1>(L, i, off);
    out[off[0]] = value;
  }
}

template <class E>
void launch_copy(void* out, const void* in, const Layout& L, int device) {
  int64_t n = layout_numel(L);
  if (n == 0) return;
  cudaStream_t s = use(device);
  if (all_contiguous(L, 2)) {
    LOOM_CUDA_CHECK(cudaMemcpyAsync(out, in, size_t(n) * sizeof(E), cudaMemcpyDeviceToDevice, s));
    return;
  }
  copy_kernel<E><<<grid_for(n, 256, device), 256, 0, s>>>(static_cast<E*>(out), static_cast<const E*>(in), L, n);
  LOOM_CUDA_CHECK_LAUNCH();
}

template <class E>
void launch_fill(void* out, uint64_t bits, const Layout& L, int device) {
  int64_t n = layout_numel(L);
  if (n == 0) return;
  E value;
  std::memcpy(&value, &bits, sizeof(E));
  fill_kernel<E><<<grid_for(n, 256, device), 256, 0, use(device)>>>(static_cast<E*>(out), value, L, n);
  LOOM_CUDA_CHECK_LAUNCH();
}

template <class T> __device__ inline float to_float(T x);
template <> __device__ inline float to_float(float x) { return x; }
template <> __device__ inline float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
template <> __device__ inline float to_float(__half x) { return __half2float(x); }
template <class T> __device__ inline T from_float(float x);
template <> __device__ inline float from_float(float x) { return x; }
template <> __device__ inline __nv_bfloat16 from_float(float x) { return __float2bfloat16_rn(x); }
template <> __device__ inline __half from_float(float x) { return __float2half_rn(x); }

template <class O, class I>
__global__ void convert_kernel(O* out, const I* in, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    out[i] = from_float<O>(to_float<I>(in[i]));
}

template <class O, class I>
__global__ void convert_strided_kernel(O* out, const I* in, Layout L, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t off[2];
    offsets<2>(L, i, off);
    out[off[0]] = from_float<O>(to_float<I>(in[off[1]]));
  }
}

template <class O, class I>
void launch_convert_from(O* out, const I* in, const Layout& L, int device) {
  const int64_t n = layout_numel(L);
  cudaStream_t s = use(device);
  if (all_contiguous(L, 2)) {
    convert_kernel<<<grid_for(n, 256, device), 256, 0, s>>>(out, in, n);
  } else {
    convert_strided_kernel<<<grid_for(n, 256, device), 256, 0, s>>>(out, in, L, n);
  }
  LOOM_CUDA_CHECK_LAUNCH();
}

template <class O>
void launch_convert(O* out, const void* in, Elem in_type, const Layout& L, int device) {
  switch (in_type) {
    case Elem::f32: return launch_convert_from(out, static_cast<const float*>(in), L, device);
    case Elem::bf16: return launch_convert_from(out, static_cast<const __nv_bfloat16*>(in), L, device);
    case Elem::f16: return launch_convert_from(out, static_cast<const __half*>(in), L, device);
  }
}

}  // namespace detail

void unary_f32(Unary op, float alpha, float* out, const float* x, const Layout& L, int device) {
  detail::launch_map<1>(out, {{x}}, detail::UnaryF{op, alpha}, L, device);
}

void unary_backward_f32(Unary op, float alpha, float* dx, const float* g, const float* x, const float* y,
                        const Layout& L, int device) {
  detail::launch_map<3>(dx, {{g, x, y}}, detail::UnaryGradF{op, alpha}, L, device);
}

void unary_backward_x_f32(Unary op, float alpha, float* dx, const float* g, const float* x, const Layout& L,
                          int device) {
  detail::launch_map<2>(dx, {{g, x}}, detail::UnaryGradXF{op, alpha}, L, device);
}

void binary_f32(Binary op, float* out, const float* a, const float* b, const Layout& L, int device) {
  detail::launch_map<2>(out, {{a, b}}, detail::BinaryF{op}, L, device);
}

void binary_backward_f32(BinaryGrad op, float* out, const float* g, const float* a, const float* b,
                         const Layout& L, int device) {
  detail::launch_map<3>(out, {{g, a, b}}, detail::BinaryGradF{op}, L, device);
}

void copy_strided(void* out, const void* in, int elem_bytes, const Layout& L, int device) {
  switch (elem_bytes) {
    case 1: return detail::launch_copy<uint8_t>(out, in, L, device);
    case 2: return detail::launch_copy<uint16_t>(out, in, L, device);
    case 4: return detail::launch_copy<uint32_t>(out, in, L, device);
    case 8: return detail::launch_copy<uint64_t>(out, in, L, device);
  }
  throw value_error(::loom::detail::concat("cuda::copy_strided: unsupported element size ", elem_bytes));
}

void fill(void* out, int elem_bytes, uint64_t bits, const Layout& L, int device) {
  switch (elem_bytes) {
    case 1: return detail::launch_fill<uint8_t>(out, bits, L, device);
    case 2: return detail::launch_fill<uint16_t>(out, bits, L, device);
    case 4: return detail::launch_fill<uint32_t>(out, bits, L, device);
    case 8: return detail::launch_fill<uint64_t>(out, bits, L, device);
  }
  throw value_error(::loom::detail::concat("cuda::fill: unsupported element size ", elem_bytes));
}

void convert(void* out, Elem out_type, const void* in, Elem in_type, const Layout& L, int device) {
  if (detail::layout_numel(L) == 0) return;
  switch (out_type) {
    case Elem::f32: return detail::launch_convert(static_cast<float*>(out), in, in_type, L, device);
    case Elem::bf16: return detail::launch_convert(static_cast<__nv_bfloat16*>(out), in, in_type, L, device);
    case Elem::f16: return detail::launch_convert(static_cast<__half*>(out), in, in_type, L, device);
  }
}

}  // namespace loom::cuda
