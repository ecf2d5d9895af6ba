#pragma once
/// @file engine.hpp
/// The backward engine: Tensor::backward() walks the graph from the root in reverse topological
/// order, calls each node's backward with the summed gradient of its output, and accumulates the
/// results into the leaves' grad(). In a few dozen lines:
///
///   order = post-order DFS from root.grad_fn           // every node after all nodes it feeds
///   pending[root.grad_fn] = grad (ones for a scalar)
///   for node in reversed(order):
///     g = pending[node]                                // the sum of every consumer's gradient
///     for (edge, dx) in zip(node.next, node.backward(g)):
///       if edge.fn:   pending[edge.fn] += dx            // flows on into the graph
///       if edge.leaf: edge.leaf.grad += dx              // lands in a parameter
///     free node's saved tensors unless retain_graph
///
/// An op with several outputs (add_layer_norm: the sum and its norm) is one node; pending holds
/// one gradient per output (keyed by node and edge.output_nr), and its backward gets them all.
///
/// A leaf with a grad_ready hook (Tensor::on_grad_ready) has it called right after the last node
/// of the order that has an edge to it: its gradient is then final for this pass.
///
/// Several roots at once (backward(roots, grads), as recompute() uses it) seed pending with each
/// root's gradient and walk the union of their graphs once.

#include <chrono>
#include <unordered_map>
#include <utility>
#include <vector>

#include "loom/autograd/grad_mode.hpp"
#include "loom/autograd/node.hpp"
#include "loom/backend/kernels.hpp"
#include "loom/core/error.hpp"

// A template over Tensor<T>, which is only declared here: core/tensor.hpp includes this file and
// its backward() calls autograd::backward, instantiated once Tensor<T> is complete.

namespace loom::autograd {

namespace detail {
/// a + b for two gradients of the same shape and device, as a new contiguous tensor.
template <class T>
Tensor<T> add_grads(const Tensor<T>& a, const Tensor<T>& b) {
  Tensor<T> out = Tensor<T>::empty(a.shape(), a.device());
  kernel::binary(a.device(), BinaryOp::add, out.data(), a.data(), b.data(), a.shape(),
                 {out.strides(), a.strides(), b.strides()});
  return out;
}
}  // namespace detail

/// Back-propagates from several roots at once (PyTorch's torch.autograd.backward(tensors,
/// grad_tensors)): accumulates into every leaf's grad() the sum over k of d(roots[k])/d(leaf) *
/// grads[k]; grads[k] may be undefined for a one-element root (then 1). Shared parts of the
/// graph are walked once.
template <class T>
void backward(const std::vector<Tensor<T>>& roots, const std::vector<Tensor<T>>& grads, bool retain_graph) {
  LOOM_CHECK(roots.size() == grads.size(), value_error, "backward: ", roots.size(), " outputs but ", grads.size(),
             " gradients");
  std::vector<Tensor<T>> root_grads(roots.size());
  for (size_t k = 0; k < roots.size(); ++k) {
    const Tensor<T>& root = roots[k];
    LOOM_CHECK(root.requires_grad(), value_error,
               "backward: this tensor does not require grad (no input of the ops that made it called "
               "requires_grad_(), or it was computed under NoGradGuard)");
    Tensor<T>& root_grad = root_grads[k] = grads[k];
    if (!root_grad.defined()) {
      LOOM_CHECK(root.numel() == 1, shape_error,
                 "backward: a gradient can be implied only for a one-element output; "
                 "this one has shape ",
                 root.shape(), ", so pass backward(grad) with a gradient of that shape");
      root_grad = Tensor<T>::empty(root.shape(), root.device());
      root_grad.fill_(T(1.0f));
    }
    LOOM_CHECK(root_grad.shape() == root.shape(), shape_error, "backward: gradient of shape ", root_grad.shape(),
               " given for a tensor of shape ", root.shape());
    LOOM_CHECK(root_grad.device() == root.device(), device_error, "backward: gradient on ", root_grad.device(),
               " given for a tensor on ", root.device());
  }
  NoGradGuard no_grad;  // backward computations are not themselves recorded

  // A leaf's first gradient is kept as it is when nothing else holds its buffer (contiguous, the
  // whole of a storage no other tensor shares); any other is copied, so that in-place updates of
  // grad() (clipping, zeroing) never reach another tensor.
  auto accumulate_leaf = [](AutogradMeta<T>& meta, Tensor<T>& g) {
    if (meta.grad.defined()) {
      meta.grad = detail::add_grads(meta.grad, g);
      return;
    }
    const bool sole = g.is_contiguous() && g.offset() == 0 && g.storage().use_count() == 1 &&
                      g.storage()->nbytes() == size_t(g.numel()) * sizeof(T);
    meta.grad = sole ? std::move(g) : g.clone();
  };
  // the summed gradient of each output that some consumer sent one to: (node, output_nr) -> grad
  struct OutputHash {
    size_t operator()(const std::pair<Node<T>*, int>& k) const {
      return std::hash<Node<T>*>()(k.first) ^ size_t(k.second);
    }
  };
  std::unordered_map<std::pair<Node<T>*, int>, Tensor<T>, OutputHash> pending;
  // adds dx to the gradient of output k of node
  auto send = [&](Node<T>* node, int k, Tensor<T>&& dx) {
    Tensor<T>& slot = pending[{node, k}];
    slot = slot.defined() ? detail::add_grads(slot, dx) : std::move(dx);
  };
  // A root that is a leaf takes its gradient now; the others seed the walk.
  std::vector<AutogradMeta<T>*> leaf_roots;
  for (size_t k = 0; k < roots.size(); ++k) {
    if (roots[k].is_leaf()) {
      accumulate_leaf(*roots[k].autograd_meta(), root_grads[k]);
      leaf_roots.push_back(roots[k].autograd_meta().get());
    } else {
      send(roots[k].grad_fn().get(), roots[k].autograd_meta()->output_nr, std::move(root_grads[k]));
    }
  }

  // Post-order DFS (iterative: deep graphs must not overflow the stack).
  std::vector<Node<T>*> order;
  {
    std::unordered_map<Node<T>*, bool> seen;
    std::vector<std::pair<Node<T>*, size_t>> stack;
    for (const Tensor<T>& root : roots) {
      if (root.is_leaf() || seen[root.grad_fn().get()]) continue;
      seen[root.grad_fn().get()] = true;
      stack.push_back({root.grad_fn().get(), 0});
      while (!stack.empty()) {
        auto& [node, i] = stack.back();
        if (i < node->next.size()) {
          Node<T>* child = node->next[i++].fn.get();
          if (child && !seen[child]) {
            seen[child] = true;
            stack.push_back({child, 0});
          }
        } else {
          order.push_back(node);
          stack.pop_back();
        }
      }
    }
  }

  // Leaves with a grad_ready hook: how many edges of the order still point at each.
  std::unordered_map<AutogradMeta<T>*, int> edges_left;
  for (Node<T>* node : order)
    for (const Edge<T>& e : node->next)
      if (e.leaf && e.leaf->grad_ready) ++edges_left[e.leaf.get()];
  for (AutogradMeta<T>* leaf : leaf_roots)  // a root leaf that no node feeds: final already
    if (leaf->grad_ready && !edges_left.count(leaf)) leaf->grad_ready();
  auto edges_done = [&](Node<T>* node) {
    if (edges_left.empty()) return;
    for (const Edge<T>& e : node->next)
      if (e.leaf && e.leaf->grad_ready && --edges_left[e.leaf.get()] == 0) e.leaf->grad_ready();
  };

  for (auto it = order.rbegin(); it != order.rend(); ++it) {
    Node<T>* node = *it;
    // the gradient of each of the node's outputs (undefined where none arrived)
    std::vector<Tensor<T>> gs(size_t(node->num_outputs));
    bool reached = false;
    for (int k = 0; k < node->num_outputs; ++k)
      if (auto p = pending.find({node, k}); p != pending.end()) {
        gs[size_t(k)] = std::move(p->second), pending.erase(p);
        reached = true;
      }
    if (!reached) {  // no gradient reached this node
      edges_done(node);
      continue;
    }
    LOOM_CHECK(!node->released, value_error, "backward: the graph through '", node->name,
               "' was already freed by an earlier backward(); pass retain_graph=true to the first "
               "backward() to go through the graph twice");
    auto& prof = backward_profile();
    if (prof.enabled && prof.sync) prof.sync();
    auto t0 = prof.enabled ? std::chrono::steady_clock::now() : std::chrono::steady_clock::time_point();
    std::vector<Tensor<T>> dx = node->backward_outputs ? node->backward_outputs(gs) : node->backward(gs[0]);
    gs.clear();  // a gradient passed through (a view's backward) is then held by dx alone
    if (prof.enabled) {
      if (prof.sync) prof.sync();
      auto& entry = prof.by_op[node->name];
      entry.first += 1;
      entry.second += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    }
    LOOM_ASSERT(dx.size() == node->next.size());
    for (size_t k = 0; k < node->next.size(); ++k) {
      const Edge<T>& e = node->next[k];
      if (!e.active() || !dx[k].defined()) continue;
      LOOM_CHECK(dx[k].shape() == e.shape, shape_error, "backward of ", node->name, ": gradient ", k,
                 " has shape ", dx[k].shape(), ", expected ", e.shape, " (a bug in that op's backward)");
      if (e.fn) {
        send(e.fn.get(), e.output_nr, std::move(dx[k]));
      } else {
        accumulate_leaf(*e.leaf, dx[k]);
      }
    }
    edges_done(node);
    if (!retain_graph) {
      node->backward = nullptr;  // frees the saved tensors now, not when the outputs die
      node->backward_outputs = nullptr;
      node->released = true;
    }
  }
}

/// Back-propagates from `root` (what Tensor::backward() calls): accumulates d(root)/d(leaf) *
/// grad into every leaf's grad(); grad may be undefined for a one-element root (then 1).
template <class T>
void backward(const Tensor<T>& root, const Tensor<T>& grad, bool retain_graph) {
  backward(std::vector<Tensor<T>>{root}, std::vector<Tensor<T>>{grad}, retain_graph);
}

}  // namespace loom::autograd
