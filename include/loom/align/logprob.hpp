#pragma once
/// @file logprob.hpp
/// The one quantity every method of learning from feedback is built on: the log-probability a
/// model gives to an answer, log π(y | x) = Σ_t log π(y_t | x, y_<t), summed over the answer's
/// tokens only (the loss mask of the chat template). Evaluation (the masked loss), the DPO loss,
/// the policy gradient of GRPO and the reward model's data all go through these functions.
///
/// log π(y_t | ...) is minus the cross-entropy of that position, so token_logprobs is
/// -GPT::token_losses: one fused forward, 0 where a position carries no loss. A batch from
/// make_batch holds one example per row (unpacked: sum each row) or several (packed: sum each
/// segment; the sums are a product with a 0/1 matrix, so the backward is the same matmul).

#include <cstdint>
#include <vector>

#include "loom/align/sft.hpp"
#include "loom/nn/causal_lm.hpp"
#include "loom/ops/matmul.hpp"
#include "loom/ops/reduce.hpp"

namespace loom::align {

/// log π of every target token, (B, T): 0 where the target is -1. Records a graph when grads are on.
inline Tensor<float> token_logprobs(const nn::CausalLM& model, const SftBatch& b) {
  return -model.token_losses(b.idx, b.targets, b.segments);  // (B, T)
}

/// Sums a (B, T) tensor of per-token values over each example of `b`: (E), E = examples in the
/// batch, in row order (and segment order inside a packed row). Differentiable.
inline Tensor<float> sum_per_example(const Tensor<float>& per_token, const SftBatch& b) {
  LOOM_CHECK(per_token.dim() == 2 && per_token.size(0) == b.idx.size(0) && per_token.size(1) == b.idx.size(1),
             shape_error, "sum_per_example: values ", per_token.shape(), " do not match the batch ", b.idx.shape());
  if (!b.segments.defined()) return sum(per_token, 1);  // one example per row: (B)
  const int64_t B = b.idx.size(0), T = b.idx.size(1);
  LOOM_CHECK(int64_t(b.row_examples.size()) == B, value_error, "sum_per_example: the batch does not say how many examples "
             "each row holds (build it with make_batch)");
  int64_t E = 0;
  for (int64_t n : b.row_examples) E += n;
  // S (B*T, E): S[p, e] = 1 when position p belongs to example e; padding belongs to none.
  Tensor<float> S = zeros<float>({B * T, E});
  const Tensor<int64_t> seg = b.segments.to(Device::cpu()).contiguous();
  int64_t base = 0;
  for (int64_t r = 0; r < B; ++r) {
    for (int64_t t = 0; t < T; ++t) {
      const int64_t s = seg.data()[r * T + t];
      if (s < b.row_examples[size_t(r)]) S.data()[(r * T + t) * E + base + s] = 1.0f;
    }
    base += b.row_examples[size_t(r)];
  }
  return matmul(per_token.reshape({1, B * T}), S.to(per_token.device())).reshape({E});  // (E)
}

/// log π(answer | prompt) of each example of `b`: (E) sums of token_logprobs over the loss-carrying
/// tokens, one per example (see sum_per_example). Records a graph when grads are on.
inline Tensor<float> sequence_logprobs(const nn::CausalLM& model, const SftBatch& b) {
  return sum_per_example(token_logprobs(model, b), b);
}

/// Loss-carrying tokens of each example of `b`, in the order of sequence_logprobs.
inline std::vector<int64_t> answer_lengths(const SftBatch& b) {
  const Tensor<int64_t> y = b.targets.to(Device::cpu()).contiguous();
  const int64_t B = y.size(0), T = y.size(1);
  std::vector<int64_t> out;
  if (!b.segments.defined()) {
    for (int64_t r = 0; r < B; ++r) {
      int64_t n = 0;
      for (int64_t t = 0; t < T; ++t) n += y.data()[r * T + t] >= 0;
      out.push_back(n);
    }
    return out;
  }
  const Tensor<int64_t> seg = b.segments.to(Device::cpu()).contiguous();
  for (int64_t r = 0; r < B; ++r) {
    std::vector<int64_t> n(size_t(b.row_examples[size_t(r)]), 0);
    for (int64_t t = 0; t < T; ++t) {
      const int64_t s = seg.data()[r * T + t];
      if (s < int64_t(n.size()) && y.data()[r * T + t] >= 0) ++n[size_t(s)];
    }
    out.insert(out.end(), n.begin(), n.end());
  }
  return out;
}

/// One unpacked batch of `examples` (each its own row), padded to the longest: the batch that
/// sequence_logprobs scores for DPO pairs and sampled answers. Throws for an example longer than
/// the model's context + 1 tokens.
inline SftBatch example_batch(const std::vector<SftExample>& examples, int64_t block_size) {
  LOOM_CHECK(!examples.empty(), value_error, "example_batch: no examples");
  int64_t T = 1;
  std::vector<std::vector<int64_t>> rows;
  for (size_t i = 0; i < examples.size(); ++i) {
    const int64_t L = int64_t(examples[i].ids.size());
    LOOM_CHECK(L - 1 <= block_size, value_error, "example_batch: example ", i, " has ", L,
               " tokens; the model's context holds ", block_size + 1);
    T = std::max<int64_t>(T, L - 1);
    rows.push_back({int64_t(i)});
  }
  return make_batch(examples, rows, T, false);
}

/// The model's masked loss over `batches`: minus the summed log-probability of every answer
/// token, per answer token (loom-finetune trains this, loom-eval reports it). Eval mode, no graph.
inline double answer_nll(nn::CausalLM& model, const std::vector<SftBatch>& batches) {
  NoGradGuard no_grad;
  const bool was_training = model.is_training();
  model.eval();
  double total = 0;
  int64_t tokens = 0;
  for (const SftBatch& b : batches) {
    if (b.loss_tokens == 0) continue;
    const Tensor<float> lp = sequence_logprobs(model, b).to(Device::cpu()).contiguous();
    for (int64_t e = 0; e < lp.numel(); ++e) total -= double(lp.data()[e]);
    tokens += b.loss_tokens;
  }
  model.train(was_training);
  LOOM_CHECK(tokens > 0, value_error, "answer_nll: no token carries loss in these batches");
  return total / double(tokens);
}

}  // namespace loom::align
