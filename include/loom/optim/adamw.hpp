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

#include <algorithm>
#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "loom/backend/kernels.hpp"
#include "loom/config.hpp"
#include "loom/core/parallel.hpp"
#include "loom/eigen.hpp"
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

/// First half of one Adam/AdamW element update: weight decay, then the moments m ("exp_avg") and
/// v ("exp_avg_sq"), in PyTorch's order. Branch-free, so that loops over it vectorize.
LOOM_HOST_DEVICE inline void adam_moments(float& p, float& m, float& v, float g, const AdamScalars& s) {
  p = p * s.decay_factor;  // AdamW's decoupled decay; an exact no-op for Adam (factor 1)
  g = g + s.l2 * p;        // Adam's L2 term; an exact no-op for AdamW (l2 = 0)
  m = s.beta1 * m + s.one_minus_beta1 * g;
  v = s.beta2 * v + s.one_minus_beta2 * (g * g);
}

/// Second half: the step p -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps),
/// given sqrt_v = sqrt(v).
LOOM_HOST_DEVICE inline void adam_apply(float& p, float m, float sqrt_v, const AdamScalars& s) {
  float denom = sqrt_v / s.bias_correction2_sqrt + s.eps;
  p = p + (-s.step_size) * (m / denom);
}

/// One element of Adam/AdamW: updates p, m and v from the gradient g (the rule a GPU kernel runs).
LOOM_HOST_DEVICE inline void adam_update(float& p, float& m, float& v, float g, const AdamScalars& s) {
  adam_moments(p, m, v, g, s);
  adam_apply(p, m, std::sqrt(v), s);
}

/// Adam/AdamW over n elements on the CPU: adam_update, blocked so that it vectorizes. A scalar
/// std::sqrt keeps a compiler from vectorizing a loop (its errno path is control flow), so each
/// block of 512 elements runs the moments loop, Eigen's SIMD sqrt over the block's v (kept in a
/// stack buffer), and the apply loop. The block stays in L1: still one pass over memory.
inline void adam_kernel(float* LOOM_RESTRICT p, float* LOOM_RESTRICT m, float* LOOM_RESTRICT v,
                        const float* LOOM_RESTRICT g, int64_t n, const AdamScalars s) {
  constexpr int64_t block = 512;
  alignas(64) float root[block];
  for (int64_t lo = 0; lo < n; lo += block) {
    const int64_t k = std::min(block, n - lo);
    float* LOOM_RESTRICT pb = p + lo;
    float* LOOM_RESTRICT mb = m + lo;
    float* LOOM_RESTRICT vb = v + lo;
    const float* LOOM_RESTRICT gb = g + lo;
    for (int64_t i = 0; i < k; ++i) {
      adam_moments(pb[i], mb[i], vb[i], gb[i], s);
      root[i] = vb[i];
    }
    Eigen::Map<Eigen::ArrayXf> r(root, k);
    r = r.sqrt();  // correctly rounded like std::sqrt, lane by lane: the same bits
    for (int64_t i = 0; i < k; ++i) adam_apply(pb[i], mb[i], root[i], s);
  }
}

/// Adam and AdamW: the same loop, the weight decay applied differently.
class AdamBase : public Optimizer {
 public:
  /// Runs one fused update over every parameter that has a gradient.
  void step() override {
    for_each_with_grad([&](ParamGroup& g, const Tensor<float>& p, const Tensor<float>& grad, ParamState& st) {
      const AdamScalars s = scalars(*g.lr, *g.weight_decay, st.step);
      float* pp = p.data();
      float* mp = st.buffers[0].data();
      float* vp = st.buffers[1].data();
      const float* gp = grad.data();
      if (p.device().is_cuda()) {  // the same rule in one fused kernel (backend/cuda/optim.cuh)
        cuda::AdamParams c{s.beta1, s.one_minus_beta1, s.beta2, s.one_minus_beta2, s.step_size,
                           s.bias_correction2_sqrt, s.eps, s.l2, s.decay_factor};
        LOOM_GPU_ONLY(cuda::adam_f32(pp, mp, vp, gp, p.numel(), c, p.device().index));
        return;
      }
      parallel_for(0, p.numel(), parallel_grain, [&](int64_t lo, int64_t hi) {
        adam_kernel(pp + lo, mp + lo, vp + lo, gp + lo, hi - lo, s);
      });
    });
  }

  /// The scalars of the update at step t (1 on the first) for a group's lr and weight decay; a
  /// sharded optimizer (dist::ZeroAdamW) runs adam_kernel with them over its piece.
  AdamScalars scalars(double lr, double wd, int64_t step) const {
    const double t = double(step);
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
    return s;
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
