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

/// Records `out = op(inputs)` in the autograd graph when grad mode is on and an input requires
/// grad. `backward(grad_out)` returns one gradient per input (an undefined Tensor for none).
template <class T, class F>
void record(const char* name, Tensor<T>& out, std::initializer_list<const Tensor<T>*> inputs, F&& backward) {
  if (!GradMode::is_enabled()) return;
  bool any = false;
  for (const Tensor<T>* t : inputs) any = any || t->requires_grad();
  if (!any) return;
  auto node = std::make_shared<Node<T>>();
  node->name = name;
  node->next.reserve(inputs.size());
  for (const Tensor<T>* t : inputs) {
    Edge<T> e;
    if (t->requires_grad()) {
      if (t->is_leaf()) e.leaf = t->autograd_meta(); else e.fn = t->grad_fn();
    }
    e.shape = t->shape();
    node->next.push_back(std::move(e));
  }
  node->backward = std::forward<F>(backward);
  auto meta = std::make_shared<AutogradMeta<T>>();
  meta->requires_grad = true;
  meta->grad_fn = std::move(node);
  out.set_autograd_meta(std::move(meta));
}

}  // namespace detail

}  // namespace loom
