#pragma once
/// @file adamw.hpp
/// Adam (L2 weight decay added to the gradient) and AdamW (decoupled weight decay), with
/// PyTorch's update rules (torch.optim.Adam / AdamW). Each parameter is updated in ONE fused pass
/// over its elements that reads g and writes m, v and p (no temporary tensors):
///
///   t  = t + 1                                     (per parameter)
///   p  = p * (1 - lr * wd)                         AdamW only (decoupled decay)
///   g  = g + wd * p                                Adam only (L2 penalty in the gradient)
///   m  = beta1 * m + (1 - beta1) * g               "exp_avg"
///   v  = beta2 * v + (1 - beta2) * g * g           "exp_avg_sq"
///   p  = p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)

#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "loom/config.hpp"
#include "loom/core/parallel.hpp"
#include "loom/optim/optimizer.hpp"

namespace loom {

/// Adam's hyper-parameters (PyTorch's defaults).
struct AdamOptions {
  double lr = 1e-3;           ///< learning rate (>= 0)
  double beta1 = 0.9;         ///< decay of the first moment, in [0, 1)
  double beta2 = 0.999;       ///< decay of the second moment, in [0, 1)
  double eps = 1e-8;          ///< added to the denominator (>= 0)
  double weight_decay = 0.0;  ///< L2 penalty added to the gradient (>= 0)
};

/// AdamW's hyper-parameters (PyTorch's defaults: weight_decay 0.01).
struct AdamWOptions {
  double lr = 1e-3;           ///< learning rate (>= 0)
  double beta1 = 0.9;         ///< decay of the first moment, in [0, 1)
  double beta2 = 0.999;       ///< decay of the second moment, in [0, 1)
  double eps = 1e-8;          ///< added to the denominator (>= 0)
  double weight_decay = 1e-2; ///< decoupled decay: p shrinks by lr * weight_decay * p per step (>= 0)
};

namespace optim_detail {

/// The scalars of one Adam/AdamW update of one parameter, as float.
struct AdamScalars {
  float beta1, one_minus_beta1, beta2, one_minus_beta2;
  float step_size;          ///< lr / (1 - beta1^t)
  float bias_correction2_sqrt;  ///< sqrt(1 - beta2^t)
  float eps;
  float l2;                 ///< Adam: weight decay added to the gradient (0 for AdamW)
  float decay_factor;       ///< AdamW: 1 - lr * weight_decay (1 for Adam)
};

/// One element of Adam/AdamW: updates p, m ("exp_avg") and v ("exp_avg_sq") from gradient g, in
/// the order PyTorch does it.
LOOM_HOST_DEVICE inline void adam_update(float& p, float& m, float& v, float g, const AdamScalars& s) {
  if (s.decay_factor != 1.0f) p = p * s.decay_factor;
  if (s.l2 != 0.0f) g = g + s.l2 * p;
  m = s.beta1 * m + s.one_minus_beta1 * g;
  v = s.beta2 * v + s.one_minus_beta2 * (g * g);
  float denom = std::sqrt(v) / s.bias_correction2_sqrt + s.eps;
  p = p + (-s.step_size) * (m / denom);
}

/// Adam and AdamW: the same loop, the weight decay applied differently.
class AdamBase : public Optimizer {
 public:
  /// Runs one fused update over every parameter that has a gradient.
  void step() override {
    for_each_with_grad([&](ParamGroup& g, const Tensor<float>& p, const Tensor<float>& grad, ParamState& st) {
      const double lr = *g.lr, wd = *g.weight_decay, t = double(st.step);
      AdamScalars s;
      s.beta1 = float(beta1_);
      s.one_minus_beta1 = float(1.0 - beta1_);
      s.beta2 = float(beta2_);
      s.one_minus_beta2 = float(1.0 - beta2_);
      s.step_size = float(lr / (1.0 - std::pow(beta1_, t)));
      s.bias_correction2_sqrt = float(std::sqrt(1.0 - std::pow(beta2_, t)));
      s.eps = float(eps_);
      s.l2 = decoupled_ ? 0.0f : float(wd);
      s.decay_factor = decoupled_ ? float(1.0 - lr * wd) : 1.0f;
      float* pp = p.data();
      float* mp = st.buffers[0].data();
      float* vp = st.buffers[1].data();
      const float* gp = grad.data();
      parallel_for(0, p.numel(), parallel_grain, [&](int64_t lo, int64_t hi) {
        for (int64_t i = lo; i < hi; ++i) adam_update(pp[i], mp[i], vp[i], gp[i], s);
      });
    });
  }

 protected:
  AdamBase(std::vector<ParamGroup> groups, double lr, double beta1, double beta2, double eps, double wd,
           bool decoupled, const char* op)
      : Optimizer(std::move(groups), lr, wd, op), beta1_(beta1), beta2_(beta2), eps_(eps), decoupled_(decoupled) {
    check(op, beta1, beta2, eps);
  }
  std::vector<const char*> buffer_names() const override { return {"exp_avg", "exp_avg_sq"}; }
  std::vector<std::pair<std::string, double>> hyper_parameters() const override {
    return {{"beta1", beta1_}, {"beta2", beta2_}, {"eps", eps_}};
  }
  void check_hyper_parameters(const std::vector<std::pair<std::string, double>>& v) const override {
    check(name(), v[0].second, v[1].second, v[2].second);
  }
  void set_hyper_parameters(const std::vector<std::pair<std::string, double>>& v) override {
    beta1_ = v[0].second, beta2_ = v[1].second, eps_ = v[2].second;
  }
  static void check(const char* op, double beta1, double beta2, double eps) {
    LOOM_CHECK(beta1 >= 0 && beta1 < 1, value_error, op, ": invalid beta1 ", beta1, " (must be in [0, 1))");
    LOOM_CHECK(beta2 >= 0 && beta2 < 1, value_error, op, ": invalid beta2 ", beta2, " (must be in [0, 1))");
    LOOM_CHECK(std::isfinite(eps) && eps >= 0, value_error, op, ": invalid eps ", eps, " (must be >= 0)");
  }

  double beta1_, beta2_, eps_;
  bool decoupled_;
};

}  // namespace optim_detail

/// Adam with L2 weight decay added to the gradient, PyTorch semantics. State per parameter:
/// "exp_avg", "exp_avg_sq" and the step count.
class Adam : public optim_detail::AdamBase {
 public:
  /// An optimizer over one group of parameters.
  explicit Adam(std::vector<Tensor<float>> params, AdamOptions o = {})
      : Adam(std::vector<ParamGroup>{ParamGroup(std::move(params))}, o) {}
  /// An optimizer over parameter groups (each may override lr and weight_decay).
  explicit Adam(std::vector<ParamGroup> groups, AdamOptions o = {})
      : AdamBase(std::move(groups), o.lr, o.beta1, o.beta2, o.eps, o.weight_decay, false, "Adam") {}
  /// "Adam".
  const char* name() const override { return "Adam"; }
};

/// AdamW: Adam with decoupled weight decay (Loshchilov & Hutter), PyTorch semantics. State per
/// parameter: "exp_avg", "exp_avg_sq" and the step count.
class AdamW : public optim_detail::AdamBase {
 public:
  /// An optimizer over one group of parameters.
  explicit AdamW(std::vector<Tensor<float>> params, AdamWOptions o = {})
      : AdamW(std::vector<ParamGroup>{ParamGroup(std::move(params))}, o) {}
  /// An optimizer over parameter groups (each may override lr and weight_decay), e.g. from
  /// decay_groups(model.named_parameters(), 0.1).
  explicit AdamW(std::vector<ParamGroup> groups, AdamWOptions o = {})
      : AdamBase(std::move(groups), o.lr, o.beta1, o.beta2, o.eps, o.weight_decay, true, "AdamW") {}
  /// "AdamW".
  const char* name() const override { return "AdamW"; }
};

}  // namespace loom
