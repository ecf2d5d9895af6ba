#pragma once
/// @file clip_grad.hpp
/// Gradient-norm clipping (torch.nn.utils.clip_grad_norm_): the L2 norm of all gradients taken
/// together, and a rescale of every gradient when it exceeds max_norm.
///
///   norm = sqrt(sum over params, sum over elements of g^2)      (in double, fixed order)
///   if max_norm / (norm + 1e-6) < 1:  g *= max_norm / (norm + 1e-6)   for every g

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "loom/core/error.hpp"
#include "loom/core/parallel.hpp"
#include "loom/core/tensor.hpp"
#include "loom/backend/kernels.hpp"

namespace loom {

namespace optim_detail {

/// Elements per partial sum: the sum is split at fixed places, so the result does not depend on
/// the number of threads.
inline constexpr int64_t norm_block = 1 << 16;

/// The gradients of `params` that are defined, made contiguous (a copy only for strided grads).
inline std::vector<Tensor<float>> defined_grads(const std::vector<Tensor<float>>& params, const char* op) {
  std::vector<Tensor<float>> grads;
  for (size_t i = 0; i < params.size(); ++i) {
    LOOM_CHECK(params[i].defined(), value_error, op, ": parameter ", i, " is undefined");
    Tensor<float> g = params[i].grad();
    if (!g.defined()) continue;
    LOOM_CHECK(grads.empty() || g.device() == grads[0].device(), device_error, op, ": the gradient of parameter ", i,
               " is on ", g.device(), ", the first one on ", grads[0].device());
    grads.push_back(g);
  }
  return grads;
}

/// Sum of squares of one block of at most norm_block elements, in double, in a fixed order: 8
/// running sums (element i goes to sum i % 8), added up at the end, so that the compiler can
/// still vectorize. A sharded optimizer computes the blocks it owns with it.
inline double block_sum_of_squares(const float* x, int64_t n) {
  double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) acc[j] += double(x[i + j]) * double(x[i + j]);
  for (; i < n; ++i) acc[i % 8] += double(x[i]) * double(x[i]);
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

/// Sum of squares of every element of `grads`, in double; the same bits for any thread count.
inline double sum_of_squares(const std::vector<Tensor<float>>& grads) {
  if (!grads.empty() && grads[0].device().is_cuda()) {  // one GPU reduction over all of them, in double
    std::vector<Tensor<float>> keep;
    std::vector<const float*> ptrs;
    std::vector<int64_t> sizes;
    for (const auto& g : grads) {
      keep.push_back(g.is_contiguous() ? g : g.detach().contiguous());
      ptrs.push_back(keep.back().data());
      sizes.push_back(keep.back().numel());
    }
    LOOM_GPU_ONLY(return cuda::sum_of_squares_f32(ptrs.data(), sizes.data(), int(ptrs.size()), grads[0].device().index));
  }
  struct Block { const float* p; int64_t n; };
  std::vector<Tensor<float>> keep;  // contiguous copies of strided gradients
  std::vector<Block> blocks;
  for (const auto& g0 : grads) {
    Tensor<float> g = g0.is_contiguous() ? g0 : g0.detach().contiguous();
    if (!g0.is_contiguous()) keep.push_back(g);
    for (int64_t lo = 0; lo < g.numel(); lo += norm_block)
      blocks.push_back({g.data() + lo, std::min(norm_block, g.numel() - lo)});
  }
  std::vector<double> partial(blocks.size(), 0.0);
  parallel_for(0, int64_t(blocks.size()), 1, [&](int64_t lo, int64_t hi) {
    for (int64_t b = lo; b < hi; ++b) partial[b] = block_sum_of_squares(blocks[b].p, blocks[b].n);
  });
  double total = 0.0;
  for (double s : partial) total += s;
  return total;
}

/// Multiplies every gradient in `grads` by c in place (a strided one through a copy).
inline void scale_grads(const std::vector<Tensor<float>>& grads, float c) {
  for (const auto& g : grads) {
    if (g.storage()) g.storage()->bump_version();
    if (g.device().is_cuda() && g.is_contiguous()) {
      LOOM_GPU_ONLY(cuda::scale_f32(g.data(), c, g.numel(), g.device().index));
    } else if (g.device().is_cuda()) {
      Tensor<float> s = g.detach().contiguous();
      LOOM_GPU_ONLY(cuda::scale_f32(s.data(), c, s.numel(), s.device().index));
      NoGradGuard no_grad;
      g.copy_(s);
    } else if (g.is_contiguous()) {
      float* p = g.data();
      parallel_for(0, g.numel(), parallel_grain, [&](int64_t lo, int64_t hi) {
        for (int64_t i = lo; i < hi; ++i) p[i] = p[i] * c;
      });
    } else {  // a strided gradient given by set_grad: scale a copy and write it back
      Tensor<float> s = g.detach().contiguous();
      float* p = s.data();
      for (int64_t i = 0; i < s.numel(); ++i) p[i] = p[i] * c;
      NoGradGuard no_grad;
      g.copy_(s);
    }
  }
}

}  // namespace optim_detail

/// The L2 norm of all gradients of `params` taken together (parameters without a gradient
/// count as zero), computed in double in a fixed order.
inline double grad_norm(const std::vector<Tensor<float>>& params) {
  return std::sqrt(optim_detail::sum_of_squares(optim_detail::defined_grads(params, "grad_norm")));
}

/// Clips gradients by their total L2 norm, as torch.nn.utils.clip_grad_norm_: when
/// max_norm / (norm + 1e-6) < 1, every gradient is multiplied in place by that factor. Returns
/// the norm before clipping. A non-finite norm is returned as it is (the gradients then hold inf or
/// NaN already): check it and skip the step. Works with or without a NoGradGuard.
/// @throws value_error when max_norm is negative or not finite.
inline double clip_grad_norm(const std::vector<Tensor<float>>& params, double max_norm) {
  LOOM_CHECK(std::isfinite(max_norm) && max_norm >= 0, value_error, "clip_grad_norm: invalid max_norm ", max_norm,
             " (must be finite and >= 0)");
  std::vector<Tensor<float>> grads = optim_detail::defined_grads(params, "clip_grad_norm");
  double norm = std::sqrt(optim_detail::sum_of_squares(grads));
  double coef = max_norm / (norm + 1e-6);
  if (!(coef < 1.0)) return norm;
  optim_detail::scale_grads(grads, float(coef));
  return norm;
}

}  // namespace loom
