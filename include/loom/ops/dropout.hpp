#pragma once
/// @file dropout.hpp
/// Dropout: zero each element with probability p and scale the survivors by 1 / (1 - p), so the
/// expected value is unchanged. The mask comes from a seeded Generator (reproducible runs): the
/// kernel draws it as it goes, on the tensor's own device, and the backward draws it again from
/// the same counters instead of keeping it.

#include "loom/ops/elementwise.hpp"

namespace loom {

/// x * mask / (1 - p) with mask ~ Bernoulli(1 - p) drawn from `gen`; x itself when not training
/// or p == 0. Differentiable: the gradient is g * mask / (1 - p). The mask keeps element i where
/// element i of rand(x.shape(), gen) would be >= p, on every device alike.
template <class T>
Tensor<T> dropout(const Tensor<T>& x, double p, Generator& gen, bool training = true) {
  static_assert(is_floating_v<T>, "dropout: needs a floating element type");
  LOOM_CHECK(p >= 0.0 && p <= 1.0, value_error, "dropout: p must lie in [0, 1], got ", p);
  if (!training || p == 0.0) return x;
  const Device d = detail::op_device<T>("dropout", x);
  const Tensor<T> xc = x.contiguous();
  // x (...) -> out (...): element i kept by the draw of block first + i / 2 (rand's layout)
  const int64_t n = xc.numel();
  const uint64_t first = gen.advance(uint64_t(n + 1) / 2), seed = gen.seed();
  const double scale = p < 1.0 ? 1.0 / (1.0 - p) : 0.0;
  Tensor<T> out = Tensor<T>::empty(x.shape(), d);
  kernel::dropout(d, out.data(), xc.data(), n, seed, first, p, scale);
  detail::record<T>("dropout", out, {&x}, [n, seed, first, p, scale](const Tensor<T>& g) {
    // dx (...) = g * mask / (1 - p): the same draws, applied to g
    const Tensor<T> gc = g.contiguous();
    Tensor<T> dx = Tensor<T>::empty(gc.shape(), gc.device());
    kernel::dropout(gc.device(), dx.data(), gc.data(), n, seed, first, p, scale);
    return Grads<T>{dx};
  });
  return out;
}

}  // namespace loom
