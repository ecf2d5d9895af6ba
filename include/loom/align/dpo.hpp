#pragma once
/// @file dpo.hpp
/// Direct Preference Optimization (Rafailov et al. 2023): learn from preference pairs without a
/// reward model or sampling. With log-probabilities of the chosen and rejected answers under the
/// policy π (trained) and a frozen reference π_ref (the fine-tuned start),
///
///   h = (log π(y_c) - log π(y_r)) - (log π_ref(y_c) - log π_ref(y_r))
///   sigmoid (DPO):        L = -log σ(β h)
///   cdpo (label noise ε): L = -(1 - ε) log σ(β h) - ε log σ(-β h)       (Mitchell 2023)
///   ipo:                  L = (h - 1 / (2β))²                            (Azar et al. 2023)
///
/// β (default 0.1) sets how far π may move from π_ref: the implicit reward of an answer is
/// β (log π(y) - log π_ref(y)). Each step logs the mean rewards of chosen and rejected answers,
/// their margin and the share of pairs whose chosen reward is higher (accuracy).
///
/// DPO only pushes the *difference* up, and in practice both likelihoods often fall, the chosen
/// one more slowly (Pal et al. 2024, "Smaug"; Razin et al. 2024): the chosen reward goes negative.
/// The optional SFT term α · NLL(y_c) per token (RPO, Pang et al. 2024; TRL's rpo_alpha) holds the
/// chosen answers' likelihood up. loom logs the chosen reward so the effect is visible.
///
/// IPO here uses the summed log-probabilities like the other two (TRL averages them per token for
/// IPO); with short answers of similar length the difference is a rescaling of β.

#include <string>

#include "loom/ops/elementwise.hpp"
#include "loom/ops/reduce.hpp"

namespace loom::align {

/// The DPO loss family.
enum class DpoLossKind { sigmoid, ipo, cdpo };

/// "sigmoid", "ipo" or "cdpo" as a DpoLossKind; throws value_error for anything else.
inline DpoLossKind parse_dpo_loss(const std::string& name) {
  if (name == "sigmoid") return DpoLossKind::sigmoid;
  if (name == "ipo") return DpoLossKind::ipo;
  if (name == "cdpo") return DpoLossKind::cdpo;
  throw value_error("unknown DPO loss '" + name + "' (sigmoid, ipo or cdpo)");
}

/// DPO settings (TRL's defaults).
struct DpoConfig {
  double beta = 0.1;              ///< β: the strength of the pull towards the reference (> 0)
  DpoLossKind loss = DpoLossKind::sigmoid;
  double label_smoothing = 0.1;   ///< ε of cdpo: the assumed share of flipped labels, in [0, 0.5)
  double sft_weight = 0.0;        ///< α of the SFT term on the chosen answers (0: off)
};

/// The loss of a batch of pairs and what to log.
template <class T = float>
struct DpoTerms {
  Tensor<T> loss;           ///< scalar (with a graph to the policy's log-probabilities)
  double chosen_reward = 0;     ///< mean β (log π(y_c) - log π_ref(y_c))
  double rejected_reward = 0;   ///< mean β (log π(y_r) - log π_ref(y_r))
  double margin = 0;            ///< chosen_reward - rejected_reward
  double accuracy = 0;          ///< share of pairs whose chosen reward is higher
};

/// The DPO loss (see the file comment) from (N) log-probabilities: the policy's (with a graph)
/// and the reference's (constants). chosen_tokens (N), needed when sft_weight > 0, holds the
/// answer length of each chosen answer, for the per-token SFT term.
template <class T>
DpoTerms<T> dpo_loss(const Tensor<T>& policy_chosen, const Tensor<T>& policy_rejected,
                         const Tensor<T>& ref_chosen, const Tensor<T>& ref_rejected, const DpoConfig& cfg,
                         const Tensor<T>& chosen_tokens = Tensor<T>()) {
  const Shape& s = policy_chosen.shape();
  LOOM_CHECK(s.size() == 1 && s[0] > 0 && policy_rejected.shape() == s && ref_chosen.shape() == s &&
                 ref_rejected.shape() == s,
             shape_error, "dpo_loss: the four log-probabilities must be (N) tensors of one shape, got ",
             policy_chosen.shape(), ", ", policy_rejected.shape(), ", ", ref_chosen.shape(), ", ", ref_rejected.shape());
  LOOM_CHECK(cfg.beta > 0, value_error, "dpo_loss: beta must be > 0, got ", cfg.beta);
  LOOM_CHECK(cfg.label_smoothing >= 0 && cfg.label_smoothing < 0.5, value_error,
             "dpo_loss: label_smoothing must lie in [0, 0.5), got ", cfg.label_smoothing);
  const Device d = policy_chosen.device();
  const Tensor<T> rc = ref_chosen.detach().to(d), rr = ref_rejected.detach().to(d);
  const Tensor<T> chosen = policy_chosen - rc, rejected = policy_rejected - rr;  // (N) log-ratios
  const Tensor<T> h = chosen - rejected;                                         // (N)
  const T beta = T(cfg.beta);
  DpoTerms<T> out;
  switch (cfg.loss) {
    case DpoLossKind::sigmoid: out.loss = -mean(log_sigmoid(h * beta)); break;
    case DpoLossKind::cdpo: {
      const T e = T(cfg.label_smoothing);
      out.loss = -mean(log_sigmoid(h * beta) * (T(1) - e) + log_sigmoid(h * (-beta)) * e);
      break;
    }
    case DpoLossKind::ipo: out.loss = mean(pow(h - T(1.0 / (2.0 * cfg.beta)), 2.0)); break;
  }
  if (cfg.sft_weight > 0) {
    LOOM_CHECK(chosen_tokens.defined() && chosen_tokens.shape() == s, shape_error,
               "dpo_loss: the SFT term needs the chosen answers' lengths (N)");
    out.loss = out.loss + mean(-policy_chosen / chosen_tokens.to(d)) * T(cfg.sft_weight);
  }
  const Tensor<T> c = chosen.detach().to(Device::cpu()).contiguous(), r = rejected.detach().to(Device::cpu()).contiguous();
  const int64_t N = c.numel();
  for (int64_t i = 0; i < N; ++i) {
    out.chosen_reward += cfg.beta * c.data()[i];
    out.rejected_reward += cfg.beta * r.data()[i];
    out.accuracy += c.data()[i] > r.data()[i];
  }
  out.chosen_reward /= double(N), out.rejected_reward /= double(N), out.accuracy /= double(N);
  out.margin = out.chosen_reward - out.rejected_reward;
  return out;
}

}  // namespace loom::align
