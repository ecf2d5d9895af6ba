#pragma once
/// @file math.hpp
/// Scalar math shared by the CPU and CUDA kernels (marked LOOM_HOST_DEVICE).

#include <cmath>

#include "loom/config.hpp"

namespace loom::math {

/// sqrt(2 / pi), the constant of GELU's tanh approximation.
inline constexpr double sqrt_2_over_pi = 0.7978845608028654;
/// 1 / sqrt(2), the constant of the exact (erf) GELU.
inline constexpr double inv_sqrt_2 = 0.7071067811865476;

/// GELU, tanh approximation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))). GPT-2 uses this one.
template <class T>
LOOM_HOST_DEVICE T gelu_tanh(T x) {
  T inner = T(sqrt_2_over_pi) * (x + T(0.044715) * x * x * x);
  return T(0.5) * x * (T(1) + std::tanh(inner));
}

/// GELU, exact form: 0.5 x (1 + erf(x / sqrt(2))).
template <class T>
LOOM_HOST_DEVICE T gelu_erf(T x) {
  return T(0.5) * x * (T(1) + std::erf(x * T(inv_sqrt_2)));
}

/// The logistic sigmoid 1 / (1 + exp(-x)), without overflow for large |x|.
template <class T>
LOOM_HOST_DEVICE T sigmoid(T x) {
  if (x >= T(0)) return T(1) / (T(1) + std::exp(-x));
  T e = std::exp(x);
  return e / (T(1) + e);
}

/// log sigmoid(x) = min(x, 0) - log(1 + exp(-|x|)): finite for every x (no overflow, no log 0).
template <class T>
LOOM_HOST_DEVICE T log_sigmoid(T x) {
  return (x < T(0) ? x : T(0)) - std::log1p(std::exp(-(x < T(0) ? -x : x)));
}

/// SiLU (swish): x * sigmoid(x), the activation of Llama's SwiGLU MLP.
template <class T>
LOOM_HOST_DEVICE T silu(T x) {
  return x * sigmoid(x);
}

/// d silu(x) / dx = s (1 + x (1 - s)) with s = sigmoid(x).
template <class T>
LOOM_HOST_DEVICE T silu_grad(T x) {
  T s = sigmoid(x);
  return s * (T(1) + x * (T(1) - s));
}

}  // namespace loom::math
