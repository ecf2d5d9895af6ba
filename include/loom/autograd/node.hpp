#pragma once
/// @file node.hpp
/// The autograd graph: AutogradMeta (the state a tensor carries once it takes part in autograd),
/// Node (one recorded op: its backward function and edges to its inputs), and SavedTensor
/// (an input or output kept for backward, with the version it had when saved).
///
///   y = mul(a, b)      y.meta.grad_fn ──> Node "mul" ──edges──> a's grad_fn (or a's leaf meta)
///                                          │                  └─> b's grad_fn (or b's leaf meta)
///                                          └─ backward(dy) = {dy * b, dy * a}   (a, b saved)
///
/// Edges point from outputs to inputs only, and saved tensors are kept without their autograd
/// state, so the graph has no reference cycles: it is freed as soon as the last output goes.

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "loom/core/shape.hpp"

namespace loom {

template <class T> class Tensor;
template <class T> struct Node;

namespace autograd {
/// Number of graph nodes alive in the process (for leak tests).
inline std::atomic<int64_t>& live_node_counter() {
  static std::atomic<int64_t> n{0};
  return n;
}
/// Number of graph nodes alive in the process.
inline int64_t live_nodes() { return live_node_counter().load(); }

/// Time spent in each op's backward, when profiling is on (off by default; not thread-safe:
/// profile one backward() at a time).
struct BackwardProfile {
  bool enabled = false;
  /// Called before each clock reading when set: a GPU program sets it to a device synchronize,
  /// so that each op's time is its kernels' time rather than the time to queue them.
  std::function<void()> sync;
  std::map<std::string, std::pair<int64_t, double>> by_op;  ///< name -> (calls, seconds)
};
/// The process-wide backward profile.
inline BackwardProfile& backward_profile() {
  static BackwardProfile p;
  return p;
}
/// Turns backward profiling on or off (and clears it when turning it on).
inline void set_profiling(bool on) {
  backward_profile().enabled = on;
  if (on) backward_profile().by_op.clear();
}
/// The profile as a table, slowest op first.
inline std::string profile_report() {
  std::vector<std::pair<std::string, std::pair<int64_t, double>>> rows(backward_profile().by_op.begin(),
                                                                      backward_profile().by_op.end());
  std::sort(rows.begin(), rows.end(), [](auto& a, auto& b) { return a.second.second > b.second.second; });
  std::string out = "backward op            calls      ms\n";
  for (auto& [name, cs] : rows) {
    char line[128];
    std::snprintf(line, sizeof line, "%-20s %7lld %9.3f\n", name.c_str(), (long long)cs.first, cs.second * 1e3);
    out += line;
  }
  return out;
}
}  // namespace autograd

/// Autograd state of a tensor, allocated on first use (requires_grad_ or an op's output).
template <class T>
struct AutogradMeta {
  bool requires_grad = false;
  Tensor<T> grad;                     ///< accumulated gradient (leaves)
  std::shared_ptr<Node<T>> grad_fn;   ///< the op that produced this tensor (null for leaves)
  int output_nr = 0;                  ///< which of grad_fn's outputs this tensor is (0 for most ops)
  std::function<void()> grad_ready;   ///< leaves: called once per backward, when `grad` is final
};

/// Where a gradient goes: the producing node of a non-leaf input, or the meta of a leaf.
template <class T>
struct Edge {
  std::shared_ptr<Node<T>> fn;
  std::shared_ptr<AutogradMeta<T>> leaf;
  int output_nr = 0;  ///< which of fn's outputs the input is
  Shape shape;  ///< the input's shape: every gradient sent along the edge must have it
  /// True when the input takes part in autograd.
  bool active() const { return fn || leaf; }
};

/// One recorded op. `backward(grad_out)` returns one gradient per edge (undefined = none). An op
/// with several outputs sets num_outputs and `backward_outputs(grad_outs)` instead, which gets
/// one gradient per output, undefined for an output that no gradient reached (and which the
/// engine calls whenever it is set, for any number of outputs).
template <class T>
struct Node {
  using Backward = std::function<std::vector<Tensor<T>>(const Tensor<T>& grad_out)>;
  using BackwardOutputs = std::function<std::vector<Tensor<T>>(const std::vector<Tensor<T>>& grad_outs)>;
  const char* name = "";
  std::vector<Edge<T>> next;
  Backward backward;                 ///< the op's backward (one output)
  BackwardOutputs backward_outputs;  ///< the op's backward by output (num_outputs > 1, or recompute)
  int num_outputs = 1;
  bool released = false;  ///< set when backward ran without retain_graph (saved tensors freed)

  Node() { ++autograd::live_node_counter(); }
  ~Node() { --autograd::live_node_counter(); }
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;
};

}  // namespace loom
