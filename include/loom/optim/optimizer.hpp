#pragma once
/// @file optimizer.hpp
/// The Optimizer base class: parameter groups, zero_grad, the learning rate that schedules set,
/// and the optimizer state (per-parameter buffers and step counts) as named tensors plus string
/// scalars, so that a checkpoint can save it and a resumed run continues bit for bit.
///
///   Optimizer
///     groups_[g]   ParamGroup: params, lr, weight_decay (per-group overrides of the defaults)
///     state_[i]    per parameter i (flattened over groups): step, buffers ("exp_avg", ...)
///   state_tensors()  {"<key>.exp_avg", m}, {"<key>.exp_avg_sq", v}, ...   key = name or index
///   state_scalars()  {"optimizer": "AdamW", "group.0.lr": "0.001", "<key>.step": "3", ...}

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "loom/core/error.hpp"
#include "loom/core/tensor.hpp"

/// LOOM_RESTRICT marks a pointer as the only way to reach its array (lets loops vectorize).
#if defined(__GNUC__) || defined(__clang__) || defined(_MSC_VER)
#define LOOM_RESTRICT __restrict
#else
#define LOOM_RESTRICT
#endif

namespace loom {

/// A set of parameters that share a learning rate and a weight decay. Unset values take the
/// optimizer's defaults when the optimizer is built; after that both are always set.
struct ParamGroup {
  /// An empty group.
  ParamGroup() = default;
  /// A group of `params`, optionally with its own lr and weight_decay and one name per parameter.
  ParamGroup(std::vector<Tensor<float>> params, std::optional<double> lr = std::nullopt,
             std::optional<double> weight_decay = std::nullopt, std::vector<std::string> names = {})
      : params(std::move(params)), lr(lr), weight_decay(weight_decay), names(std::move(names)) {}

  std::vector<Tensor<float>> params;   ///< leaf tensors that require grad (contiguous, CPU)
  std::optional<double> lr;            ///< learning rate (unset: the optimizer's default)
  std::optional<double> weight_decay;  ///< weight decay (unset: the optimizer's default)
  std::vector<std::string> names;      ///< optional, one per param: names the state ("<name>.exp_avg")
};

/// Splits named parameters into two groups, nanoGPT's rule: tensors with dim() >= 2 (matmul
/// weights, embeddings) decay with `weight_decay`; 1-D tensors (biases, LayerNorm weights) and
/// scalars get weight_decay 0. Parameters that do not require grad are left out, and a tensor
/// listed twice (tied weights) is kept once, under its first name. Returns {decay, no_decay}.
inline std::vector<ParamGroup> decay_groups(const std::vector<std::pair<std::string, Tensor<float>>>& named,
                                            double weight_decay) {
  ParamGroup decay, no_decay;
  decay.weight_decay = weight_decay;
  no_decay.weight_decay = 0.0;
  std::set<const float*> seen;
  for (const auto& [name, p] : named) {
    LOOM_CHECK(p.defined(), value_error, "decay_groups: parameter '", name, "' is undefined");
    if (!p.requires_grad()) continue;
    if (!seen.insert(p.data()).second) continue;
    ParamGroup& g = p.dim() >= 2 ? decay : no_decay;
    g.params.push_back(p);
    g.names.push_back(name);
  }
  return {std::move(decay), std::move(no_decay)};
}

/// Base class of SGD, Adam and AdamW. Not copyable (the state would be shared); movable.
class Optimizer {
 public:
  virtual ~Optimizer() = default;
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;
  Optimizer(Optimizer&&) = default;
  Optimizer& operator=(Optimizer&&) = default;

  /// Updates every parameter that has a gradient (parameters without one are skipped).
  virtual void step() = 0;
  /// The optimizer's name as it appears in the state ("SGD", "Adam", "AdamW").
  virtual const char* name() const = 0;

  /// Drops every parameter's gradient (grad() becomes undefined; the next backward starts anew).
  void zero_grad() {
    for (auto& g : groups_)
      for (auto& p : g.params) p.zero_grad();
  }
  /// Sets the learning rate of every group (what a schedule calls before each step).
  void set_lr(double lr) {
    check_lr(lr);
    for (auto& g : groups_) g.lr = lr;
  }
  /// The learning rate of the first group.
  double lr() const { return *groups_.front().lr; }
  /// The parameter groups (lr and weight_decay are always set); change lr/weight_decay freely.
  std::vector<ParamGroup>& param_groups() { return groups_; }
  /// The parameter groups.
  const std::vector<ParamGroup>& param_groups() const { return groups_; }
  /// Every parameter, group after group (e.g. for clip_grad_norm).
  std::vector<Tensor<float>> params() const {
    std::vector<Tensor<float>> out;
    for (const auto& g : groups_) out.insert(out.end(), g.params.begin(), g.params.end());
    return out;
  }
  /// The number of optimizer steps that updated parameter `i` (flattened index over groups).
  int64_t param_step(size_t i) const { return state_.at(i).step; }

  /// The state buffers as named tensors ("<key>.<buffer>", key = the parameter's name or its
  /// flattened index). Parameters that never had a gradient have no state and are not listed.
  /// The tensors share storage with the optimizer: save or clone them before the next step().
  std::vector<std::pair<std::string, Tensor<float>>> state_tensors() const {
    std::vector<std::pair<std::string, Tensor<float>>> out;
    const auto bufs = buffer_names();
    for (size_t i = 0; i < state_.size(); ++i) {
      if (!state_[i].initialized) continue;
      for (size_t b = 0; b < bufs.size(); ++b) out.emplace_back(keys_[i] + "." + bufs[b], state_[i].buffers[b]);
    }
    return out;
  }
  /// The scalar state: optimizer name, hyper-parameters, groups and per-parameter step counts,
  /// as strings that round-trip exactly (doubles with 17 significant digits).
  std::map<std::string, std::string> state_scalars() const {
    std::map<std::string, std::string> s;
    s["optimizer"] = name();
    s["num_groups"] = std::to_string(groups_.size());
    for (size_t g = 0; g < groups_.size(); ++g) {
      std::string pre = "group." + std::to_string(g) + ".";
      s[pre + "size"] = std::to_string(groups_[g].params.size());
      s[pre + "lr"] = format_double(*groups_[g].lr);
      s[pre + "weight_decay"] = format_double(*groups_[g].weight_decay);
    }
    for (const auto& [k, v] : hyper_parameters()) s[k] = format_double(v);
    for (size_t i = 0; i < state_.size(); ++i)
      if (state_[i].initialized) s[keys_[i] + ".step"] = std::to_string(state_[i].step);
    return s;
  }
  /// Restores a state saved by state_tensors()/state_scalars() from an optimizer of the same type
  /// over parameters of the same shapes: buffers are copied, hyper-parameters, group learning
  /// rates and step counts restored. Everything is checked before anything changes; a mismatch
  /// throws value_error (wrong optimizer, group layout or name) or shape_error (buffer shape).
  void load_state(const std::vector<std::pair<std::string, Tensor<float>>>& tensors,
                  const std::map<std::string, std::string>& scalars) {
    const std::string me = std::string(name()) + ": load_state: ";
    auto get = [&](const std::string& k) -> const std::string& {
      auto it = scalars.find(k);
      LOOM_CHECK(it != scalars.end(), value_error, me, "the state has no scalar '", k, "'");
      return it->second;
    };
    LOOM_CHECK(get("optimizer") == name(), value_error, me, "the state was saved by ", get("optimizer"),
               ", not by ", name());
    int64_t ng = parse_int(me, "num_groups", get("num_groups"));
    LOOM_CHECK(ng == int64_t(groups_.size()), value_error, me, "the state has ", ng,
               " parameter groups, this optimizer has ", groups_.size());
    std::vector<std::pair<double, double>> group_values;
    for (size_t g = 0; g < groups_.size(); ++g) {
      std::string pre = "group." + std::to_string(g) + ".";
      int64_t n = parse_int(me, pre + "size", get(pre + "size"));
      LOOM_CHECK(n == int64_t(groups_[g].params.size()), value_error, me, "group ", g, " has ", n,
                 " parameters in the state, ", groups_[g].params.size(), " in this optimizer");
      double lr = parse_double(me, pre + "lr", get(pre + "lr"));
      double wd = parse_double(me, pre + "weight_decay", get(pre + "weight_decay"));
      check_lr(lr);
      check_weight_decay(wd);
      group_values.emplace_back(lr, wd);
    }
    std::vector<std::pair<std::string, double>> hyper = hyper_parameters();
    for (auto& [k, v] : hyper) v = parse_double(me, k, get(k));
    check_hyper_parameters(hyper);

    // Buffers: every name must be "<known key>.<known buffer>" with the parameter's shape.
    const auto bufs = buffer_names();
    std::unordered_map<std::string, size_t> index;
    for (size_t i = 0; i < keys_.size(); ++i) index[keys_[i]] = i;
    std::vector<ParamState> next(state_.size());
    for (auto& st : next) st.buffers.resize(bufs.size());
    for (const auto& [tname, t] : tensors) {
      size_t i = 0, b = bufs.size();
      for (size_t j = 0; j < bufs.size() && b == bufs.size(); ++j) {
        std::string suffix = std::string(".") + bufs[j];
        if (tname.size() > suffix.size() && tname.compare(tname.size() - suffix.size(), suffix.size(), suffix) == 0) {
          auto it = index.find(tname.substr(0, tname.size() - suffix.size()));
          if (it != index.end()) i = it->second, b = j;
        }
      }
      LOOM_CHECK(b < bufs.size(), value_error, me, "unknown state tensor '", tname, "' (expected <param>.",
                 join(bufs), " for one of this optimizer's ", keys_.size(), " parameters)");
      LOOM_CHECK(!next[i].buffers[b].defined(), value_error, me, "state tensor '", tname, "' given twice");
      LOOM_CHECK(t.defined() && t.shape() == param(i).shape(), shape_error, me, "state tensor '", tname,
                 "' has shape ", (t.defined() ? t.shape() : Shape{}), ", the parameter has shape ", param(i).shape());
      next[i].buffers[b] = t.to(Device::cpu()).detach().contiguous().clone().to(param(i).device());
    }
    for (const auto& [k, v] : scalars) {
      const std::string suffix = ".step";
      if (k.size() > suffix.size() && k.compare(k.size() - suffix.size(), suffix.size(), suffix) == 0)
        LOOM_CHECK(index.count(k.substr(0, k.size() - suffix.size())), value_error, me, "step count '", k,
                   "' names no parameter of this optimizer");
    }
    for (size_t i = 0; i < next.size(); ++i) {
      size_t have = 0;
      for (const auto& t : next[i].buffers) have += t.defined();
      auto st = scalars.find(keys_[i] + ".step");
      next[i].initialized = st != scalars.end();
      size_t want = next[i].initialized ? bufs.size() : 0;
      LOOM_CHECK(have == want, value_error, me, "parameter '", keys_[i], "' has ", have, " of its ", bufs.size(),
                 " state tensors ", join(bufs), next[i].initialized ? "" : " but no step count");
      if (!next[i].initialized) {
        next[i].buffers.clear();
        continue;
      }
      next[i].step = parse_int(me, st->first, st->second);
      LOOM_CHECK(next[i].step > 0, value_error, me, "step count '", st->first, "' must be positive, got ", next[i].step);
    }
    set_hyper_parameters(hyper);
    for (size_t g = 0; g < groups_.size(); ++g) {
      groups_[g].lr = group_values[g].first;
      groups_[g].weight_decay = group_values[g].second;
    }
    state_ = std::move(next);
  }

 protected:
  /// Per-parameter state: how many steps updated it and its buffers (empty until its first step).
  struct ParamState {
    int64_t step = 0;
    bool initialized = false;
    std::vector<Tensor<float>> buffers;
  };

  /// Checks and stores the groups; unset lr / weight_decay take the given defaults.
  Optimizer(std::vector<ParamGroup> groups, double default_lr, double default_weight_decay, const char* op)
      : groups_(std::move(groups)) {
    check_lr(default_lr, op);
    check_weight_decay(default_weight_decay, op);
    std::set<const float*> seen;
    std::set<std::string> names;
    size_t count = 0;
    for (size_t g = 0; g < groups_.size(); ++g) {
      ParamGroup& grp = groups_[g];
      if (!grp.lr) grp.lr = default_lr;
      if (!grp.weight_decay) grp.weight_decay = default_weight_decay;
      check_lr(*grp.lr, op);
      check_weight_decay(*grp.weight_decay, op);
      LOOM_CHECK(grp.names.empty() || grp.names.size() == grp.params.size(), value_error, op, ": group ", g, " has ",
                 grp.params.size(), " parameters but ", grp.names.size(), " names");
      for (size_t j = 0; j < grp.params.size(); ++j) {
        const Tensor<float>& p = grp.params[j];
        std::string key = grp.names.empty() ? std::to_string(count) : grp.names[j];
        std::string what = "parameter " + std::to_string(count) + (grp.names.empty() ? "" : " ('" + key + "')");
        LOOM_CHECK(p.defined(), value_error, op, ": ", what, " is undefined");
        LOOM_CHECK(p.requires_grad(), value_error, op, ": ", what, " (shape ", p.shape(),
                   ") does not require grad; call requires_grad_() on it or leave it out");
        LOOM_CHECK(p.is_leaf(), value_error, op, ": ", what, " is not a leaf tensor (it was computed by '",
                   p.grad_fn()->name, "'); optimize the tensors it was computed from");
        LOOM_CHECK(p.is_contiguous(), value_error, op, ": ", what, " (shape ", p.shape(), ", strides ", p.strides(),
                   ") is not contiguous");
        LOOM_CHECK(p.numel() == 0 || seen.insert(p.data()).second, value_error, op, ": ", what,
                   " appears more than once (in one group or in two)");
        LOOM_CHECK(names.insert(key).second, value_error, op, ": the name '", key, "' is used by two parameters");
        keys_.push_back(key);
        ++count;
      }
    }
    LOOM_CHECK(count > 0, value_error, op, ": got an empty parameter list");
    state_.resize(count);
  }

  /// The names of the per-parameter buffers, in the order of ParamState::buffers.
  virtual std::vector<const char*> buffer_names() const = 0;
  /// The optimizer-wide hyper-parameters saved in the state (name, value).
  virtual std::vector<std::pair<std::string, double>> hyper_parameters() const = 0;
  /// Throws value_error when hyper-parameters read back from a saved state are invalid or need
  /// other state buffers than this optimizer keeps (the names and order of hyper_parameters()).
  virtual void check_hyper_parameters(const std::vector<std::pair<std::string, double>>& values) const = 0;
  /// Restores hyper-parameters that check_hyper_parameters accepted.
  virtual void set_hyper_parameters(const std::vector<std::pair<std::string, double>>& values) = 0;

  /// Parameter i (flattened over groups).
  const Tensor<float>& param(size_t i) const {
    for (const auto& g : groups_) {
      if (i < g.params.size()) return g.params[i];
      i -= g.params.size();
    }
    throw value_error("optimizer: parameter index out of range");
  }

  /// Calls f(group, param, grad, state) for every parameter that has a gradient, after checking
  /// the gradient, allocating the state on the parameter's first step and counting the step
  /// (st.step is 1 on the first call). The parameter's storage version is bumped (it is about to
  /// be modified in place, so a graph that saved it can no longer run backward).
  template <class F>
  void for_each_with_grad(F&& f) {
    size_t i = 0;
    for (ParamGroup& g : groups_) {
      for (const Tensor<float>& p : g.params) {
        ParamState& st = state_[i];
        const std::string& key = keys_[i++];
        Tensor<float> grad = p.grad();
        if (!grad.defined()) continue;
        LOOM_CHECK(grad.shape() == p.shape(), shape_error, name(), ": step: the gradient of parameter '", key,
                   "' has shape ", grad.shape(), ", the parameter has shape ", p.shape());
        LOOM_CHECK(grad.device() == p.device(), device_error, name(), ": step: the gradient of parameter '", key,
                   "' is on ", grad.device(), ", the parameter on ", p.device());
        if (!grad.is_contiguous()) grad = grad.detach().contiguous();  // only for set_grad with a view
        if (!st.initialized) {
          st.buffers.clear();
          for (size_t b = 0; b < buffer_names().size(); ++b) st.buffers.push_back(zeros<float>(p.shape(), p.device()));
          st.initialized = true;
        }
        ++st.step;
        if (p.storage()) p.storage()->bump_version();
        f(g, p, grad, st);
      }
    }
  }

  /// Throws value_error unless lr is finite and >= 0.
  void check_lr(double lr, const char* op = nullptr) const {
    LOOM_CHECK(std::isfinite(lr) && lr >= 0, value_error, op ? op : name(), ": invalid learning rate ", lr,
               " (must be >= 0)");
  }
  /// Throws value_error unless weight_decay is finite and >= 0.
  void check_weight_decay(double wd, const char* op = nullptr) const {
    LOOM_CHECK(std::isfinite(wd) && wd >= 0, value_error, op ? op : name(), ": invalid weight_decay ", wd,
               " (must be >= 0)");
  }

  std::vector<ParamGroup> groups_;
  std::vector<std::string> keys_;     ///< per parameter: its name, or its flattened index
  std::vector<ParamState> state_;     ///< per parameter (flattened over groups)

 private:
  static std::string format_double(double v) {
    char buf[40];
    std::snprintf(buf, sizeof buf, "%.17g", v);
    return buf;
  }
  static double parse_double(const std::string& me, const std::string& key, const std::string& s) {
    errno = 0;
    char* end = nullptr;
    double v = std::strtod(s.c_str(), &end);
    LOOM_CHECK(!s.empty() && end == s.c_str() + s.size() && errno == 0, value_error, me, "scalar '", key,
               "' is not a number: '", s, "'");
    return v;
  }
  static int64_t parse_int(const std::string& me, const std::string& key, const std::string& s) {
    errno = 0;
    char* end = nullptr;
    long long v = std::strtoll(s.c_str(), &end, 10);
    LOOM_CHECK(!s.empty() && end == s.c_str() + s.size() && errno == 0, value_error, me, "scalar '", key,
               "' is not an integer: '", s, "'");
    return int64_t(v);
  }
  static std::string join(const std::vector<const char*>& v) {
    std::string s = "{";
    for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::string(v[i]);
    return s + "}";
  }
};

}  // namespace loom
