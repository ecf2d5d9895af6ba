#pragma once
// Helpers shared by the op and autograd tests: visiting every index of a shape, reading a tensor
// at a broadcast index in double, random inputs in three layouts, a tolerance check, and the
// double-precision leaves and gradcheck wrapper of the gradient tests.
#include <algorithm>
#include <cmath>
#include <functional>
#include <vector>

#include <loom/loom.hpp>

#include "catch.hpp"

namespace loom_test {

using TD = loom::Tensor<double>;
using Fn = std::function<TD(const std::vector<TD>&)>;

/// Visits every multi-index of `shape` in row-major order.
inline void for_each_index(const loom::Shape& shape, const std::function<void(const std::vector<int64_t>&)>& f) {
  int64_t n = loom::numel_of(shape);
  std::vector<int64_t> idx(size_t(shape.size()), 0);
  for (int64_t i = 0; i < n; ++i) {
    f(idx);
    for (int d = shape.size() - 1; d >= 0; --d) {
      if (++idx[size_t(d)] < shape[d]) break;
      idx[size_t(d)] = 0;
    }
  }
}

/// Element of t read at an index of a (broadcast) output shape: right-aligned, size-1 dims pinned to 0.
template <class T>
double get(const loom::Tensor<T>& t, const std::vector<int64_t>& out_idx) {
  int64_t off = 0;
  int extra = int(out_idx.size()) - t.dim();
  for (int d = 0; d < t.dim(); ++d) {
    int64_t i = t.shape()[d] == 1 ? 0 : out_idx[size_t(d + extra)];
    off += i * t.strides()[d];
  }
  return double(static_cast<loom::compute_t<T>>(t.data()[off]));
}

/// Random input of `shape`, laid out 0 = contiguous, 1 = transposed view, 2 = sliced view.
template <class T = float>
loom::Tensor<T> make(const loom::Shape& shape, int layout, loom::Generator& g, double lo = -2, double hi = 2) {
  if (layout == 1 && shape.size() >= 2) {
    loom::Shape rev = shape;
    std::reverse(rev.begin(), rev.end());
    loom::Shape perm;
    for (int d = shape.size() - 1; d >= 0; --d) perm.push_back(d);
    auto t = loom::rand<T>(rev, g, lo, hi).permute(perm);
    REQUIRE(t.shape() == shape);
    return t;
  }
  if (layout == 2 && shape.size() >= 1) {
    loom::Shape wide = shape;
    wide[wide.size() - 1] = 2 * std::max<int64_t>(shape.back(), 1);
    auto t = loom::rand<T>(wide, g, lo, hi).slice(-1, 1, 2 * shape.back() + 1, 2);
    REQUIRE(t.shape() == shape);
    return t;
  }
  return loom::rand<T>(shape, g, lo, hi);
}

/// |got - want| <= abs_tol + rel |want|; NaN and infinities must match exactly.
inline bool close(double got, double want, double rel = 1e-5, double abs_tol = 1e-6) {
  if (std::isnan(want)) return std::isnan(got);
  if (std::isinf(want)) return got == want;
  return std::fabs(got - want) <= abs_tol + rel * std::fabs(want);
}

/// A double leaf that requires grad, uniform in [lo, hi).
inline TD leaf(const loom::Shape& s, uint64_t seed, double lo = -2, double hi = 2) {
  loom::Generator g(seed);
  return loom::rand<double>(s, g, lo, hi).requires_grad_();
}

/// A double leaf bounded away from 0, |x| in [0.3, 2] (for kinks, poles, and norms of one element).
inline TD leaf_away_from_zero(const loom::Shape& s, uint64_t seed) {
  loom::NoGradGuard no_grad;
  loom::Generator g(seed);
  auto m = loom::rand<double>(s, g, 0.3, 2.0);
  auto sign = loom::rand<double>(s, g, -1, 1);
  auto x = loom::where(loom::gt(sign, loom::zeros<double>({})), m, -m);
  return x.requires_grad_();
}

/// gradcheck of f at inputs, reporting the worst element when it fails.
inline void check_grad(const char* what, const Fn& f, const std::vector<TD>& inputs) {
  auto r = loom::gradcheck(f, inputs);
  INFO(what << ": " << r.report);
  CHECK(r.ok);
}

}  // namespace loom_test
