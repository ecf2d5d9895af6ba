#pragma once
/// @file evaluate.hpp
/// Held-out evaluation: the mean loss over a number of random batches, and its perplexity.

#include <cmath>
#include <vector>

#include "loom/dist/communicator.hpp"
#include "loom/nn/causal_lm.hpp"
#include "loom/train/data.hpp"

namespace loom::train {

/// Mean cross-entropy of `model` over `batches` random (B, T) windows of `data`, in eval mode
/// and without recording a graph (the model's mode is restored afterwards). With a communicator
/// of N ranks, rank r evaluates batches r, r + N, ... and the result is the same as one process's.
inline double evaluate(nn::CausalLM& model, const BatchLoader& data, int64_t batches, int64_t B, int64_t T, Generator& gen,
                       dist::Communicator* comm = nullptr) {
  LOOM_CHECK(batches > 0, value_error, "evaluate: batches must be positive, got ", batches);
  NoGradGuard no_grad;
  bool was_training = model.is_training();
  model.eval();
  const int ranks = comm ? comm->size() : 1, rank = comm ? comm->rank() : 0;
  std::vector<double> loss(size_t(batches), 0.0);
  for (int64_t i = 0; i < batches; ++i) {
    if (i % ranks != rank) {
      data.skip(B, T, gen);
      continue;
    }
    auto [x, y] = data.batch(B, T, gen);
    loss[size_t(i)] = double(model.loss(x, y).item());
  }
  // Each batch's loss comes from one rank and zeros from the others: the sum over ranks is exact.
  if (ranks > 1) comm->all_reduce(loss.data(), batches, dist::ReduceOp::sum, "all_reduce 'evaluation losses'");
  model.train(was_training);
  double total = 0;
  for (double l : loss) total += l;
  return total / double(batches);
}

/// exp(loss): the model is as unsure as a uniform choice among this many tokens.
inline double perplexity(double loss) { return std::exp(loss); }

}  // namespace loom::train
