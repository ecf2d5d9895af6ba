#pragma once
/// @file recompute.hpp
/// Activation recomputation (PyTorch's torch.utils.checkpoint, also called gradient
/// checkpointing): outs = f(inputs) without keeping the tensors that f's ops save for backward.
/// The forward runs f with grad mode off and keeps only the inputs; the backward runs f again,
/// recorded this time, and back-propagates the outputs' gradients through that second graph at
/// once:
///
///   forward:  outs = f(inputs)                 grad mode off; one node "recompute" saves the inputs
///   backward: xs = the inputs, as new leaves   (requiring grad where the inputs did)
///             ys = f(xs)                       recorded; gen set back to its state of the forward
///             backward(ys, grad_outs)          f's parameters get their gradients here
///             return the gradients of xs       which flow on to whatever made the inputs
///
/// A transformer trained this way holds the activations of one block at a time, not of all of
/// them, for one more forward of each block per step (a forward is about a third of a block's
/// forward and backward).
///
/// What f must do: compute the same thing both times (same ops on the same inputs). Its random
/// draws (dropout) must come from `gen`, whose state recompute saves before the forward, sets
/// back for the second run and restores after it; the second run also gets the forward's bf16
/// autocast setting (AutocastGuard), which a training loop sets around its forward only. f's parameters, the leaves it reads that are
/// not among the inputs, get their gradients inside the backward of the "recompute" node; a
/// parameter with an on_grad_ready hook (data-parallel training) must be read by one recompute
/// call per backward, so that its hook fires once. With grad mode off, recompute is just f.

#include <functional>
#include <memory>
#include <vector>

#include "loom/autograd/grad_mode.hpp"
#include "loom/backend/kernels.hpp"
#include "loom/core/random.hpp"
#include "loom/core/tensor.hpp"

namespace loom {

/// A function from a list of tensors to a list of tensors, as recompute() takes it.
template <class T>
using RecomputeFn = std::function<std::vector<Tensor<T>>(const std::vector<Tensor<T>>&)>;

/// f(inputs), with f's intermediate tensors recomputed in backward instead of kept (see the top
/// of this file). The outputs take part in autograd whenever grad mode is on; `gen`, when given,
/// is the generator f draws from.
template <class T>
std::vector<Tensor<T>> recompute(RecomputeFn<T> f, const std::vector<Tensor<T>>& inputs, Generator* gen = nullptr) {
  if (!GradMode::is_enabled()) return f(inputs);
  const uint64_t seed = gen ? gen->seed() : 0, offset = gen ? gen->offset() : 0;
  const bool bf16 = AutocastGuard::bf16();  // the second run computes in the forward's precision
  std::vector<Tensor<T>> outs;
  {
    NoGradGuard no_grad;
    std::vector<Tensor<T>> detached;
    for (const Tensor<T>& x : inputs) detached.push_back(x.detach());
    outs = f(detached);
  }
  std::vector<Shape> shapes;
  for (const Tensor<T>& y : outs) {
    LOOM_CHECK(y.defined(), value_error, "recompute: the function returned an undefined tensor");
    shapes.push_back(y.shape());
  }

  // one node: an edge to each input, one output per output of f
  auto node = std::make_shared<Node<T>>();
  node->name = "recompute";
  std::vector<SavedTensor<T>> saved;
  std::vector<bool> wants_grad;
  for (const Tensor<T>& x : inputs) {
    node->next.push_back(detail::edge_to(x));
    saved.emplace_back(x);
    wants_grad.push_back(x.requires_grad());
  }
  node->num_outputs = int(outs.size());
  node->backward_outputs = [f, saved, wants_grad, shapes, gen, seed, offset,
                            bf16](const std::vector<Tensor<T>>& grad_outs) {
    // f again, recorded, on the saved inputs as fresh leaves, drawing the forward's random numbers
    std::vector<Tensor<T>> xs;
    for (size_t i = 0; i < saved.size(); ++i) {
      xs.push_back(saved[i].get("recompute").detach());
      if (wants_grad[i]) xs.back().requires_grad_();
    }
    std::vector<Tensor<T>> ys;
    {
      EnableGradGuard grad_mode;
      AutocastGuard autocast(bf16);
      const uint64_t now_seed = gen ? gen->seed() : 0, now_offset = gen ? gen->offset() : 0;
      if (gen) gen->set_state(seed, offset);
      ys = f(xs);
      if (gen) gen->set_state(now_seed, now_offset);
    }
    LOOM_CHECK(ys.size() == shapes.size(), value_error, "recompute: the function returned ", ys.size(),
               " tensors when run again in backward, ", shapes.size(), " in the forward");
    std::vector<Tensor<T>> roots, grads;
    for (size_t k = 0; k < ys.size(); ++k) {
      LOOM_CHECK(ys[k].defined() && ys[k].shape() == shapes[k], value_error, "recompute: output ", k,
                 " has shape ", ys[k].defined() ? ys[k].shape() : Shape{}, " when run again in backward, ",
                 shapes[k], " in the forward (the function must compute the same thing twice)");
      if (grad_outs[k].defined() && ys[k].requires_grad()) roots.push_back(ys[k]), grads.push_back(grad_outs[k]);
    }
    if (!roots.empty()) autograd::backward(roots, grads, /*retain_graph=*/false);
    std::vector<Tensor<T>> dx;
    for (size_t i = 0; i < xs.size(); ++i) dx.push_back(wants_grad[i] ? xs[i].grad() : Tensor<T>());
    return dx;
  };
  for (size_t k = 0; k < outs.size(); ++k) detail::attach_output(outs[k], node, int(k));
  return outs;
}

}  // namespace loom
