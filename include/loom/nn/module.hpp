#pragma once
/// @file module.hpp
/// nn::Module: the base of every layer. A module owns its parameters as members and registers
/// them (and its sub-modules) by name, so that the whole model can list, save and load them:
/// names are dotted paths such as "transformer.h.0.attn.c_attn.weight".

#include <algorithm>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "loom/core/tensor.hpp"

namespace loom::nn {

/// Named parameters of a model, in registration order.
using NamedTensors = std::vector<std::pair<std::string, Tensor<float>>>;

/// Base class of layers and models. Modules refer to their members by address, so they can be
/// neither copied nor moved; hold them by value inside their parent, or by unique_ptr.
class Module {
 public:
  Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;
  virtual ~Module() = default;

  /// Every parameter with its dotted name, sub-modules included, in registration order.
  NamedTensors named_parameters() const {
    NamedTensors out;
    collect("", out);
    return out;
  }
  /// Every parameter (handles: they share storage and gradients with the module's).
  std::vector<Tensor<float>> parameters() const {
    std::vector<Tensor<float>> out;
    for (auto& [name, p] : named_parameters()) out.push_back(p);
    return out;
  }
  /// Total number of parameter elements.
  int64_t num_parameters() const {
    int64_t n = 0;
    for (auto& [name, p] : named_parameters()) n += p.numel();
    return n;
  }
  /// The parameters' values by name, cut off from the graph (shares storage; no copy).
  NamedTensors state_dict() const {
    NamedTensors out = named_parameters();
    for (auto& [name, p] : out) p = p.detach();
    return out;
  }
  /// Copies values into the parameters by name. Throws value_error naming the first problem: a
  /// shape mismatch, a parameter missing from `state`, or (when strict) a name the model lacks.
  void load_state_dict(const NamedTensors& state, bool strict = true) {
    std::map<std::string, const Tensor<float>*> by_name;
    for (auto& [name, t] : state) by_name[name] = &t;
    NoGradGuard no_grad;
    for (auto& [name, p] : named_parameters()) {
      auto it = by_name.find(name);
      LOOM_CHECK(it != by_name.end(), value_error, "load_state_dict: parameter '", name, "' (shape ", p.shape(),
                 ") is missing from the state");
      LOOM_CHECK(it->second->shape() == p.shape(), value_error, "load_state_dict: '", name, "' has shape ",
                 it->second->shape(), " in the state but ", p.shape(), " in the model");
      p.copy_(*it->second);
      by_name.erase(it);
    }
    LOOM_CHECK(!strict || by_name.empty(), value_error, "load_state_dict: the state has ", by_name.size(),
               " entr", by_name.size() == 1 ? "y" : "ies", " the model lacks, e.g. '",
               by_name.empty() ? "" : by_name.begin()->first, "'");
  }
  /// This module ("") and every sub-module below it, with dotted names, parents before children.
  /// A sub-module registered under the empty name shares its parent's name (see register_module).
  std::vector<std::pair<std::string, Module*>> named_modules() {
    std::vector<std::pair<std::string, Module*>> out;
    collect_modules("", this, out);
    return out;
  }
  /// Training mode (dropout active) for this module and its sub-modules.
  void train(bool on = true) {
    training_ = on;
    for (auto& [name, m] : children_) m->train(on);
  }
  /// Evaluation mode: train(false).
  void eval() { train(false); }
  /// True in training mode.
  bool is_training() const { return training_; }
  /// Drops every parameter's gradient.
  void zero_grad() {
    for (auto& [name, p] : named_parameters()) p.zero_grad();
  }
  /// Moves every parameter to `device` (throws backend_error for CUDA in a CPU-only build).
  void to(Device device) {
    for (auto& [name, p] : params_) {
      bool rg = p->requires_grad();
      Tensor<float> moved = p->detach().to(device);
      if (rg) moved.requires_grad_();
      *p = moved;
    }
    for (auto& [name, m] : children_) m->to(device);
  }

 protected:
  /// Registers member tensor `p` as a parameter called `name` (and makes it require grad).
  Tensor<float>& register_parameter(const std::string& name, Tensor<float>& p) {
    if (!p.requires_grad()) p.requires_grad_();
    params_.emplace_back(name, &p);
    return p;
  }
  /// Registers member module `m` as a sub-module called `name` (dots allowed: "transformer.wte").
  /// Under the empty name, m's parameters take this module's prefix directly (an adapter's
  /// "lora_A.weight" sits beside the Linear's own "weight", as PEFT names it).
  template <class M>
  M& register_module(const std::string& name, M& m) {
    children_.emplace_back(name, &m);
    return m;
  }
  /// Forgets sub-module `m` (registered earlier); its parameters leave named_parameters().
  void unregister_module(const Module& m) {
    children_.erase(std::remove_if(children_.begin(), children_.end(), [&](const auto& c) { return c.second == &m; }),
                    children_.end());
  }

 private:
  void collect(const std::string& prefix, NamedTensors& out) const {
    for (auto& [name, p] : params_)
      if (p->defined()) out.emplace_back(prefix + name, *p);
    for (auto& [name, m] : children_) m->collect(child_prefix(prefix, name), out);
  }
  static std::string child_prefix(const std::string& prefix, const std::string& name) {
    return name.empty() ? prefix : prefix + name + ".";
  }
  static void collect_modules(const std::string& name, Module* m, std::vector<std::pair<std::string, Module*>>& out) {
    out.emplace_back(name, m);
    for (auto& [child, c] : m->children_)
      collect_modules(child.empty() ? name : name.empty() ? child : name + "." + child, c, out);
  }

  std::vector<std::pair<std::string, Tensor<float>*>> params_;
  std::vector<std::pair<std::string, Module*>> children_;
  bool training_ = true;
};

}  // namespace loom::nn
