#pragma once
/// @file dropout.hpp
/// Dropout: zero each element with probability p and scale the survivors by 1 / (1 - p), so the
/// expected value is unchanged. The mask comes from a seeded Generator (reproducible runs).

#include "loom/ops/elementwise.hpp"

namespace loom {

/// x * mask / (1 - p) with mask ~ Bernoulli(1 - p) drawn from `gen`; x itself when not training
/// or p == 0. Differentiable: the gradient is g * mask / (1 - p).
template <class T>
Tensor<T> dropout(const Tensor<T>& x, double p, Generator& gen, bool training = true) {
  static_assert(is_floating_v<T>, "dropout: needs a floating element type");
  LOOM_CHECK(p >= 0.0 && p <= 1.0, value_error, "dropout: p must lie in [0, 1], got ", p);
  if (!training || p == 0.0) return x;
  using C = compute_t<T>;
  C scale = p < 1.0 ? C(1.0 / (1.0 - p)) : C(0);
  Tensor<T> mask = rand<T>(x.shape(), gen);  // uniform [0, 1): keep where u >= p
  mask = detail::unary_op<T>("dropout", mask, [p, scale](C u) { return double(u) >= p ? scale : C(0); });
  // The mask is drawn on the CPU from `gen` (the same mask on every device) and moved to x's.
  return mul(x, mask.to(x.device()));  // records the mask as a constant: dx = g * mask
}

}  // namespace loom
