#pragma once
// Checks shared by the model tests: two copies of a model, run two ways, against each other.
#include <loom/loom.hpp>

#include "../catch.hpp"

namespace loom_test {

// Each parameter gradient of `a` within rel_tol of the same parameter's in `b` (the same model
// type and config), relative to the largest magnitude of b's gradient.
inline void check_gradients_close(const loom::nn::Module& a, const loom::nn::Module& b, double rel_tol) {
  auto pa = a.named_parameters(), pb = b.named_parameters();
  REQUIRE(pa.size() == pb.size());
  for (size_t i = 0; i < pa.size(); ++i) {
    INFO(pa[i].first);
    const loom::Tensor<double> ga = pa[i].second.grad().to<double>(), gb = pb[i].second.grad().to<double>();
    CHECK(loom::max(loom::abs(ga - gb)).item() <= rel_tol * loom::max(loom::abs(gb)).item() );
  }
}

}  // namespace loom_test
