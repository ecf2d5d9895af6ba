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

// Two steps of loss().backward() on `plain` and on `recomputed` (the same model, made from the same
// config and seed, with dropout): with recompute_blocks set on the second, the same losses,
// gradients and dropout draws, bit for bit (the same ops on the same numbers), while the graph
// after the forward holds far fewer nodes.
inline void check_recompute_matches(loom::nn::CausalLM& plain, loom::nn::CausalLM& recomputed,
                                    const loom::Tensor<int64_t>& idx, const loom::Tensor<int64_t>& tgt,
                                    const loom::Tensor<int64_t>& segments) {
  recomputed.recompute_blocks = true;
  for (int step = 0; step < 2; ++step) {  // the second step draws after the first's recomputation
    INFO("step " << step);
    plain.zero_grad(), recomputed.zero_grad();
    const int64_t base = loom::autograd::live_nodes();
    loom::Tensor<float> la = plain.loss(idx, tgt, segments);
    const int64_t nodes_plain = loom::autograd::live_nodes() - base;
    loom::Tensor<float> lb = recomputed.loss(idx, tgt, segments);
    const int64_t nodes_recomputed = loom::autograd::live_nodes() - base - nodes_plain;
    CHECK(la.item() == lb.item());
    CHECK(nodes_recomputed * 2 < nodes_plain);
    la.backward(), lb.backward();
    CHECK(plain.gen.offset() == recomputed.gen.offset());
    auto pa = plain.named_parameters(), pb = recomputed.named_parameters();
    REQUIRE(pa.size() == pb.size());
    for (size_t i = 0; i < pa.size(); ++i) {
      INFO(pa[i].first);
      CHECK(pa[i].second.grad().to_vector() == pb[i].second.grad().to_vector());
    }
  }
}

}  // namespace loom_test
