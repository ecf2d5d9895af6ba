#pragma once
/// @file sgd.hpp
/// Stochastic gradient descent with momentum, dampening, Nesterov momentum and L2 weight decay,
/// with PyTorch's update rule (torch.optim.SGD). Per parameter, one pass over its elements:
///
///   d = g + wd * p                            (weight decay, when wd != 0)
///   b = d                  on the first step  (momentum buffer, when momentum != 0)
///   b = mu * b + (1 - dampening) * d          afterwards
///   d = d + mu * b  (Nesterov)  or  d = b
///   p = p - lr * d

#include <string>
#include <utility>
#include <vector>

#include "loom/config.hpp"
#include "loom/core/parallel.hpp"
#include "loom/optim/optimizer.hpp"

namespace loom {

/// SGD's hyper-parameters (PyTorch's defaults, except that lr has one).
struct SGDOptions {
  double lr = 1e-3;            ///< learning rate (>= 0)
  double momentum = 0.0;       ///< momentum factor mu (>= 0; 0 = plain SGD, no buffer)
  double dampening = 0.0;      ///< scales the new gradient in the buffer by (1 - dampening)
  double weight_decay = 0.0;   ///< L2 penalty: wd * p is added to the gradient (>= 0)
  bool nesterov = false;       ///< Nesterov momentum (needs momentum > 0 and dampening 0)
};

namespace optim_detail {

/// The scalars of one SGD update, as float (what the element loop uses).
struct SgdScalars {
  float lr, momentum, one_minus_dampening, weight_decay;
  bool use_momentum, nesterov, first;
};

/// One element of SGD: updates p and the momentum buffer b (unused without momentum). The
/// choices are selects, not branches, so loops over it vectorize; adding wd * p with wd = 0 is
/// an exact no-op.
LOOM_HOST_DEVICE inline void sgd_update(float& p, float& b, float g, const SgdScalars& s) {
  float d = g + s.weight_decay * p;
  if (s.use_momentum) {
    float nb = s.momentum * b + s.one_minus_dampening * d;
    b = s.first ? d : nb;
    d = s.nesterov ? d + s.momentum * b : b;
  }
  p = p + (-s.lr) * d;
}

/// SGD over n elements on the CPU (b may be null without momentum).
inline void sgd_kernel(float* LOOM_RESTRICT p, float* LOOM_RESTRICT b, const float* LOOM_RESTRICT g, int64_t n,
                       const SgdScalars s) {
  if (b) {
    for (int64_t i = 0; i < n; ++i) sgd_update(p[i], b[i], g[i], s);
  } else {
    for (int64_t i = 0; i < n; ++i) {
      float unused = 0.0f;
      sgd_update(p[i], unused, g[i], s);
    }
  }
}

}  // namespace optim_detail

/// SGD with momentum / Nesterov / weight decay, PyTorch semantics. State per parameter:
/// "momentum_buffer" (only when momentum != 0).
class SGD : public Optimizer {
 public:
  /// An optimizer over one group of parameters.
  explicit SGD(std::vector<Tensor<float>> params, SGDOptions options = {})
      : SGD(std::vector<ParamGroup>{ParamGroup(std::move(params))}, options) {}
  /// An optimizer over parameter groups (each may override lr and weight_decay).
  explicit SGD(std::vector<ParamGroup> groups, SGDOptions options = {})
      : Optimizer(std::move(groups), options.lr, options.weight_decay, "SGD"), opt_(options) {
    check(opt_.momentum, opt_.dampening, opt_.nesterov);
  }

  /// "SGD".
  const char* name() const override { return "SGD"; }
  /// The options the optimizer was built with (lr and weight_decay: the defaults of the groups).
  const SGDOptions& options() const { return opt_; }

  /// One update of every parameter that has a gradient.
  void step() override {
    for_each_with_grad([&](ParamGroup& g, const Tensor<float>& p, const Tensor<float>& grad, ParamState& st) {
      LOOM_CHECK(p.device().is_cpu(), device_error, "SGD: step: parameters on ", p.device(),
                 " are not supported (SGD runs on the CPU; use AdamW on the GPU)");
      optim_detail::SgdScalars s{float(*g.lr), float(opt_.momentum), float(1.0 - opt_.dampening),
                                 float(*g.weight_decay), opt_.momentum != 0.0, opt_.nesterov, st.step == 1};
      float* pp = p.data();
      float* bp = s.use_momentum ? st.buffers[0].data() : nullptr;
      const float* gp = grad.data();
      parallel_for(0, p.numel(), parallel_grain, [&](int64_t lo, int64_t hi) {
        optim_detail::sgd_kernel(pp + lo, bp ? bp + lo : nullptr, gp + lo, hi - lo, s);
      });
    });
  }

 protected:
  std::vector<const char*> buffer_names() const override {
    if (opt_.momentum != 0.0) return {"momentum_buffer"};
    return {};
  }
  std::vector<std::pair<std::string, double>> hyper_parameters() const override {
    return {{"momentum", opt_.momentum}, {"dampening", opt_.dampening}, {"nesterov", opt_.nesterov ? 1.0 : 0.0}};
  }
  void check_hyper_parameters(const std::vector<std::pair<std::string, double>>& v) const override {
    check(v[0].second, v[1].second, v[2].second != 0.0);
    LOOM_CHECK((v[0].second != 0.0) == (opt_.momentum != 0.0), value_error, "SGD: load_state: the state has momentum ",
               v[0].second, ", this optimizer has momentum ", opt_.momentum,
               " (one keeps momentum buffers, the other does not)");
  }
  void set_hyper_parameters(const std::vector<std::pair<std::string, double>>& v) override {
    opt_.momentum = v[0].second;
    opt_.dampening = v[1].second;
    opt_.nesterov = v[2].second != 0.0;
  }

 private:
  static void check(double momentum, double dampening, bool nesterov) {
    LOOM_CHECK(std::isfinite(momentum) && momentum >= 0, value_error, "SGD: invalid momentum ", momentum,
               " (must be >= 0)");
    LOOM_CHECK(std::isfinite(dampening), value_error, "SGD: invalid dampening ", dampening);
    LOOM_CHECK(!nesterov || (momentum > 0 && dampening == 0), value_error,
               "SGD: Nesterov momentum needs momentum > 0 and dampening 0 (got momentum ", momentum, ", dampening ",
               dampening, ")");
  }

  SGDOptions opt_;
};

}  // namespace loom
