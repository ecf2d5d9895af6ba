#pragma once
/// @file op_codes.hpp
/// The names of the elementwise maps and reductions that both backends implement. An op picks
/// one by code and hands it to the seam (backend/kernels.hpp); the CPU kernels
/// (backend/cpu/elementwise.hpp) and the CUDA kernels (backend/cuda/elementwise.cuh) each
/// implement every code with the same formula. Plain enums: no loom header is needed here.

namespace loom {

/// Unary maps out = f(x; alpha). The *_scalar forms use alpha; the rest ignore it.
enum class UnaryOp : int {
  copy, neg, exp, log, sqrt, rsqrt, tanh, abs, relu, sigmoid, gelu_tanh, gelu_erf,
  add_scalar,   ///< x + alpha
  mul_scalar,   ///< x * alpha
  div_scalar,   ///< x / alpha
  rsub_scalar,  ///< alpha - x
  rdiv_scalar,  ///< alpha / x
  pow_scalar,   ///< x ^ alpha
  silu,         ///< x * sigmoid(x)
  log_sigmoid,  ///< log sigmoid(x), computed without overflow (DPO's and the reward model's losses)
};

/// True when the derivative of the unary map is written in terms of its output y = f(x) (exp,
/// sqrt, rsqrt, tanh, sigmoid): its backward keeps y. The others keep x (or nothing).
constexpr bool grad_needs_output(UnaryOp op) {
  return op == UnaryOp::exp || op == UnaryOp::sqrt || op == UnaryOp::rsqrt || op == UnaryOp::tanh ||
         op == UnaryOp::sigmoid;
}

/// Broadcasting binary maps out = f(a, b).
enum class BinaryOp : int { add, sub, mul, div, pow, maximum, minimum };

/// The gradient maps of the binary ops: out = f(g, a, b), with a and b broadcast to g's shape.
enum class BinaryGradOp : int {
  g_times_b,     ///< mul da
  g_times_a,     ///< mul db
  g_over_b,      ///< div da
  div_db,        ///< -g a / b^2
  pow_da,        ///< g b a^(b-1)
  pow_db,        ///< g a^b log a
  max_da, max_db, min_da, min_db,  ///< to the winner; split evenly on ties
};

/// The reductions over one axis.
enum class ReduceOp : int { sum, mean, max, min };

/// Which pairs of a head's HS features rotate together in rope (ops/rope.hpp).
enum class RopeLayout : int {
  half,        ///< Hugging Face / GPT-NeoX "rotate_half": pair p is (p, p + HS/2)  (the default; HF Llama checkpoints)
  interleaved  ///< Meta's original Llama / GPT-J: pair p is (2p, 2p + 1)
};

}  // namespace loom
