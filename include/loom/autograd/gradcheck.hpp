#pragma once
/// @file gradcheck.hpp
/// gradcheck: compares every op's analytic backward with central finite differences in double.
///
/// For a function f of several inputs, with a fixed random weight w of f's output shape:
///   L(x)      = sum(f(x) * w)                       (a scalar that mixes every output)
///   analytic  = dL/dx from L.backward()
///   numeric   = (L(x + eps e_i) - L(x - eps e_i)) / (2 eps)   for every element i of every input
/// and each pair must agree within atol + rtol * |numeric|. The error of the central difference
/// is O(eps^2) plus rounding O(1e-16 / eps), so eps = 1e-6 in double leaves ~1e-9 of noise.

#include <cmath>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include "loom/core/tensor.hpp"
#include "loom/ops/elementwise.hpp"
#include "loom/ops/reduce.hpp"

namespace loom {

/// What gradcheck found: ok, and the worst element in words.
struct GradcheckResult {
  bool ok = true;
  double worst_ratio = 0;  ///< largest |analytic - numeric| / (atol + rtol |numeric|); ok when <= 1
  std::string report;      ///< the worst element: input, index, both values and the tolerance
  explicit operator bool() const { return ok; }
};

/// Checks the gradients of f with respect to every input that requires grad (double tensors,
/// leaves). The inputs' grad() are overwritten with the analytic gradients.
inline GradcheckResult gradcheck(const std::function<Tensor<double>(const std::vector<Tensor<double>>&)>& f,
                                 const std::vector<Tensor<double>>& inputs, double eps = 1e-6, double atol = 1e-6,
                                 double rtol = 1e-4, uint64_t seed = 1234) {
  for (size_t i = 0; i < inputs.size(); ++i) {
    LOOM_CHECK(!inputs[i].requires_grad() || inputs[i].is_leaf(), value_error, "gradcheck: input ", i,
               " is not a leaf; pass leaves (requires_grad_()) and build views inside f");
    inputs[i].zero_grad();
  }
  Tensor<double> y = f(inputs);
  LOOM_CHECK(y.requires_grad(), value_error, "gradcheck: the output does not depend on any input that requires grad");
  Generator gen(seed);
  Tensor<double> w = randn<double>(y.shape(), gen);
  sum(y * w).backward();

  auto loss_at = [&]() {
    NoGradGuard no_grad;
    return sum(f(inputs) * w).item();
  };
  GradcheckResult res;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const Tensor<double>& x = inputs[i];
    if (!x.requires_grad()) continue;
    Tensor<double> analytic = x.grad().defined() ? x.grad().contiguous() : zeros<double>(x.shape());
    Shape idx = x.shape();
    for (int64_t& d : idx) d = 0;
    for (int64_t flat = 0; flat < x.numel(); ++flat) {
      int64_t off = 0;
      for (int d = 0; d < x.dim(); ++d) off += idx[d] * x.strides()[d];
      double& v = x.data()[off];
      double orig = v;
      v = orig + eps;
      double lp = loss_at();
      v = orig - eps;
      double lm = loss_at();
      v = orig;
      double numeric = (lp - lm) / (2 * eps), a = analytic.data()[flat];
      double tol = atol + rtol * std::fabs(numeric), err = std::fabs(a - numeric);
      double ratio = std::isfinite(err) ? err / tol : INFINITY;
      if (ratio > res.worst_ratio || (flat == 0 && i == 0 && res.report.empty())) {
        res.worst_ratio = ratio;
        std::ostringstream os;
        os << "input " << i << " (shape " << x.shape() << ") element " << idx << ": analytic " << a << " vs numeric "
           << numeric << " (error " << err << ", tolerance " << tol << ")";
        res.report = os.str();
      }
      for (int d = x.dim() - 1; d >= 0; --d) {  // next multi-index
        if (++idx[d] < x.shape()[d]) break;
        idx[d] = 0;
      }
    }
  }
  res.ok = res.worst_ratio <= 1.0;
  return res;
}

}  // namespace loom
