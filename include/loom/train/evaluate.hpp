#pragma once
/// @file evaluate.hpp
/// Held-out evaluation: the mean loss over a number of random batches, and its perplexity.

#include <cmath>

#include "loom/nn/gpt.hpp"
#include "loom/train/data.hpp"

namespace loom::train {

/// Mean cross-entropy of `model` over `batches` random (B, T) windows of `data`, in eval mode
/// and without recording a graph (the model's mode is restored afterwards).
inline double evaluate(nn::GPT& model, const BatchLoader& data, int64_t batches, int64_t B, int64_t T, Generator& gen) {
  LOOM_CHECK(batches > 0, value_error, "evaluate: batches must be positive, got ", batches);
  NoGradGuard no_grad;
  bool was_training = model.is_training();
  model.eval();
  double total = 0;
  for (int64_t i = 0; i < batches; ++i) {
    auto [x, y] = data.batch(B, T, gen);
    total += double(model(x, y).loss.item());
  }
  model.train(was_training);
  return total / double(batches);
}

/// exp(loss): the model is as unsure as a uniform choice among this many tokens.
inline double perplexity(double loss) { return std::exp(loss); }

}  // namespace loom::train
