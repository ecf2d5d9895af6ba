#pragma once
/// @file record.hpp
/// How an op enters the autograd graph: detail::record(name, out, inputs, backward) attaches a
/// Node to the op's output, and SavedTensor keeps an input or output for the backward.
///
/// These are templates over Tensor<T>, which is only declared here: autograd sits below the
/// tensor in the layer order (core/tensor.hpp includes this file), and every use of a tensor
/// member below is resolved when an op instantiates it, after Tensor<T> is complete.

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <utility>

#include "loom/autograd/grad_mode.hpp"
#include "loom/autograd/node.hpp"
#include "loom/core/error.hpp"

namespace loom {

/// A tensor kept for backward, without its autograd state (no reference cycles), with the
/// storage version it had when saved, so that a later in-place change is caught.
template <class T>
class SavedTensor {
 public:
  SavedTensor() = default;
  /// Saves `t` (shares its storage; copies nothing).
  explicit SavedTensor(const Tensor<T>& t) : data_(t.detach()), version_(t.storage() ? t.storage()->version() : 0) {}
  /// The saved tensor; throws when it was modified in place since it was saved.
  const Tensor<T>& get(const char* op) const {
    uint64_t now = data_.storage() ? data_.storage()->version() : 0;
    LOOM_CHECK(now == version_, value_error, "backward of ", op, ": a tensor saved for the gradient (shape ",
               data_.shape(), ") was modified in place after it was saved (version ", now, ", expected ",
               version_, "); clone() it before modifying it");
    return data_;
  }

 private:
  Tensor<T> data_;
  uint64_t version_ = 0;
};

namespace detail {

/// The edge to input `t`: its producing node's output, its leaf meta, or neither (inactive)
/// when t does not require grad.
template <class T>
Edge<T> edge_to(const Tensor<T>& t) {
  Edge<T> e;
  if (t.requires_grad()) {
    if (t.is_leaf()) e.leaf = t.autograd_meta();
    else e.fn = t.grad_fn(), e.output_nr = t.autograd_meta()->output_nr;
  }
  e.shape = t.shape();
  return e;
}

/// A node for an op on `inputs`, with an edge to each, or null when grad mode is off or no
/// input requires grad (then the op is not recorded).
template <class T>
std::shared_ptr<Node<T>> make_node(const char* name, std::initializer_list<const Tensor<T>*> inputs) {
  if (!GradMode::is_enabled()) return nullptr;
  bool any = false;
  for (const Tensor<T>* t : inputs) any = any || t->requires_grad();
  if (!any) return nullptr;
  auto node = std::make_shared<Node<T>>();
  node->name = name;
  node->next.reserve(inputs.size());
  for (const Tensor<T>* t : inputs) node->next.push_back(edge_to(*t));
  return node;
}

/// Makes `out` output number `k` of `node`.
template <class T>
void attach_output(Tensor<T>& out, std::shared_ptr<Node<T>> node, int k) {
  auto meta = std::make_shared<AutogradMeta<T>>();
  meta->requires_grad = true;
  meta->grad_fn = std::move(node);
  meta->output_nr = k;
  out.set_autograd_meta(std::move(meta));
}

/// Records `out = op(inputs)` in the autograd graph when grad mode is on and an input requires
/// grad. `backward(grad_out)` returns one gradient per input (an undefined Tensor for none).
template <class T, class F>
void record(const char* name, Tensor<T>& out, std::initializer_list<const Tensor<T>*> inputs, F&& backward) {
  std::shared_ptr<Node<T>> node = make_node<T>(name, inputs);
  if (!node) return;
  node->backward = std::forward<F>(backward);
  attach_output(out, std::move(node), 0);
}

/// Records an op with several outputs, `outs = op(inputs)`, as one node. `backward(grad_outs)`
/// gets one gradient per output, undefined for an output that no gradient reached, and returns
/// one per input.
template <class T, class F>
void record_outputs(const char* name, std::initializer_list<Tensor<T>*> outs,
                    std::initializer_list<const Tensor<T>*> inputs, F&& backward) {
  std::shared_ptr<Node<T>> node = make_node<T>(name, inputs);
  if (!node) return;
  node->backward_outputs = std::forward<F>(backward);
  node->num_outputs = int(outs.size());
  int k = 0;
  for (Tensor<T>* out : outs) attach_output(*out, node, k++);
}

}  // namespace detail

}  // namespace loom
