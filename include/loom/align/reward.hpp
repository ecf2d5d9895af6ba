#pragma once
/// @file reward.hpp
/// A reward model: the GPT with a scalar head on the hidden state of an answer's last token (its
/// <|end|>), trained on preference pairs so that the preferred answer scores higher (InstructGPT,
/// Ouyang et al. 2022; TRL's RewardTrainer). The loss is Bradley–Terry's:
///
///   L = -log σ(r_chosen - r_rejected)            [+ λ (r_chosen + r_rejected)²]
///
/// σ(r_c - r_r) is the model's probability that the chosen answer wins; minimising L maximises the
/// likelihood of the observed preferences. Only differences of rewards matter to L, so their
/// level drifts freely; the optional centring term (Eisenstein et al. 2023, TRL's
/// center_rewards_coefficient, λ ≈ 0.01) keeps rewards near 0, which helps when they feed RL.
///
/// The checkpoint is the GPT's ("model.*", loadable by load_chat_model) plus "reward_head.weight"
/// (1, C) and "reward_head.bias" (1), with metadata kind = reward_model.

#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "loom/align/finetune.hpp"
#include "loom/align/preference.hpp"
#include "loom/io/checkpoint.hpp"
#include "loom/ops/elementwise.hpp"
#include "loom/ops/reduce.hpp"

namespace loom::align {

/// Token ids of whole conversations (answers included), right-padded into one batch, with the
/// index of each row's last token: what a reward model scores.
struct ScoreBatch {
  Tensor<int64_t> idx;        ///< (B, T) ids, 0 after each row's end
  Tensor<float> last;         ///< (B, T) 1 at each row's last token, else 0
};

/// Rendered conversations (render_examples) as a ScoreBatch padded to the longest; throws for one
/// longer than block_size tokens.
inline ScoreBatch score_batch(const std::vector<SftExample>& examples, int64_t block_size) {
  LOOM_CHECK(!examples.empty(), value_error, "score_batch: no conversations");
  int64_t T = 1;
  for (size_t i = 0; i < examples.size(); ++i) {
    const int64_t L = int64_t(examples[i].ids.size());
    LOOM_CHECK(L >= 1 && L <= block_size, value_error, "score_batch: conversation ", i, " has ", L,
               " tokens; the reward model reads at most ", block_size);
    T = std::max(T, L);
  }
  const int64_t B = int64_t(examples.size());
  ScoreBatch s{full<int64_t>({B, T}, 0), zeros<float>({B, T})};
  for (int64_t b = 0; b < B; ++b) {
    const auto& ids = examples[size_t(b)].ids;
    std::copy(ids.begin(), ids.end(), s.idx.data() + b * T);
    s.last.data()[b * T + int64_t(ids.size()) - 1] = 1.0f;
  }
  return s;
}

/// A GPT with a scalar head: the reward of a conversation is head(h_last), h_last the final hidden
/// state of its last token. Not movable (the head is a Module): hold it by unique_ptr.
struct RewardModel {
  ChatModel base;            ///< the transformer and its chat template
  nn::Linear head;           ///< C -> 1

  /// A reward model on `base`, its head drawn N(0, 1/sqrt(C + 1)) from `gen` (TRL's init).
  RewardModel(ChatModel base_in, Generator& gen)
      : base(std::move(base_in)), head(base.model->n_embd(), 1, true, gen) {
    NoGradGuard no_grad;
    const double C = double(base.model->n_embd());
    head.weight.copy_(randn<float>(head.weight.shape(), gen, 0.0, 1.0 / std::sqrt(C + 1)));
    head.bias.fill_(0.0f);
  }

  /// The head's parameters under their checkpoint names.
  nn::NamedTensors head_parameters() const {
    return {{"reward_head.weight", head.weight}, {"reward_head.bias", head.bias}};
  }

  /// Rewards (B) of the conversations in `s`. Records a graph when grads are on.
  Tensor<float> operator()(const ScoreBatch& s) const {
    const nn::CausalLM& gpt = *base.model;
    const Device d = gpt.token_embedding().weight.device();
    Tensor<float> h = gpt.hidden(s.idx);                                      // (B, T, C)
    Tensor<float> r = head(h);                                                // (B, T, 1)
    r = r.reshape({r.size(0), r.size(1)});                                    // (B, T)
    return sum(r * s.last.to(d), 1);                                          // (B): each row's last token
  }

  /// Rewards of whole conversations (each ending with an assistant turn), in batches of
  /// `batch_size`, without a graph. A conversation longer than the context keeps its newest turns
  /// (the prompt side is cut, as render does).
  std::vector<double> score(const std::vector<Conversation>& convs, int64_t batch_size = 32) {
    NoGradGuard no_grad;
    nn::CausalLM& gpt = *base.model;
    const bool was_training = gpt.is_training();
    gpt.eval();
    const std::vector<SftExample> ex = render_examples(base.chat, convs, gpt.block_size());
    std::vector<double> out;
    for (size_t i = 0; i < ex.size(); i += size_t(batch_size)) {
      std::vector<SftExample> chunk(ex.begin() + long(i), ex.begin() + long(std::min(ex.size(), i + size_t(batch_size))));
      const Tensor<float> r = (*this)(score_batch(chunk, gpt.block_size())).to(Device::cpu()).contiguous();
      for (int64_t k = 0; k < r.numel(); ++k) out.push_back(double(r.data()[k]));
    }
    gpt.train(was_training);
    return out;
  }

  /// The checkpoint of this model: the GPT under "model.*", the head, its tokenizer, and
  /// kind = reward_model (see the file comment).
  io::Checkpoint checkpoint() const {
    io::Checkpoint c;
    for (auto& [name, p] : base.model->named_parameters()) c.add("model." + name, p.detach().to(Device::cpu()));
    for (auto& [name, p] : head_parameters()) c.add(name, p.detach().to(Device::cpu()));
    c.set_meta_json("config", train::config_json(*base.model));
    c.set_meta("tokenizer", tokenizer_json(base));
    c.set_meta("kind", "reward_model");
    return c;
  }
};

/// A reward model saved by RewardModel::checkpoint(); throws value_error naming the file when it
/// is not one (no head: a language model's checkpoint) or when the head does not fit the model.
inline std::unique_ptr<RewardModel> load_reward_model(const std::string& path) {
  io::Checkpoint c = io::load_checkpoint(path);
  const std::vector<std::string> head = c.names("reward_head.");
  LOOM_CHECK(!head.empty(), value_error, path, ": not a reward model (it has no reward_head.* tensors; train one with "
             "loom-rl rm)");
  Generator gen(0);
  auto rm = std::make_unique<RewardModel>(load_chat_model(path), gen);
  const Tensor<float> w = c.get<float>("reward_head.weight"), b = c.get<float>("reward_head.bias");
  LOOM_CHECK(w.shape() == rm->head.weight.shape() && b.shape() == rm->head.bias.shape(), value_error, path,
             ": the reward head is ", w.shape(), " + ", b.shape(), " but the model's width asks for ",
             rm->head.weight.shape(), " + ", rm->head.bias.shape(), " (the checkpoint's config does not match its head)");
  NoGradGuard no_grad;
  rm->head.weight.copy_(w), rm->head.bias.copy_(b);
  return rm;
}

/// The Bradley–Terry loss and what to log, for rewards of chosen and rejected answers (N each).
template <class T = float>
struct PreferenceLoss {
  Tensor<T> loss;   ///< scalar: mean of -log σ(r_c - r_r) (+ λ (r_c + r_r)²)
  double accuracy = 0;  ///< share of pairs with r_c > r_r
  double margin = 0;    ///< mean r_c - r_r
};

/// -log σ(r_c - r_r) averaged over pairs, plus center · (r_c + r_r)² when center > 0 (see the file comment).
template <class T>
PreferenceLoss<T> bradley_terry_loss(const Tensor<T>& r_chosen, const Tensor<T>& r_rejected,
                                         double center = 0.0) {
  LOOM_CHECK(r_chosen.shape() == r_rejected.shape() && r_chosen.dim() == 1 && r_chosen.numel() > 0, shape_error,
             "bradley_terry_loss: rewards must be two non-empty (N) tensors, got ", r_chosen.shape(), " and ",
             r_rejected.shape());
  LOOM_CHECK(center >= 0, value_error, "bradley_terry_loss: the centring weight must be >= 0, got ", center);
  PreferenceLoss<T> out;
  const Tensor<T> diff = r_chosen - r_rejected;                           // (N)
  out.loss = -mean(log_sigmoid(diff));
  if (center > 0) out.loss = out.loss + mean(pow(r_chosen + r_rejected, 2.0)) * T(center);
  const Tensor<T> d = diff.detach().to(Device::cpu()).contiguous();
  for (int64_t i = 0; i < d.numel(); ++i) out.accuracy += d.data()[i] > 0, out.margin += d.data()[i];
  out.accuracy /= double(d.numel()), out.margin /= double(d.numel());
  return out;
}

}  // namespace loom::align
