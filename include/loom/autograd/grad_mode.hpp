#pragma once
/// @file grad_mode.hpp
/// Grad mode: whether ops record the graph for backward. NoGradGuard turns it off in a scope,
/// EnableGradGuard back on (recompute() does, to record a block again inside backward).

namespace loom {

/// The per-thread switch that ops consult before recording a graph node.
class GradMode {
 public:
  /// True when ops record the graph (the default).
  static bool is_enabled() { return flag(); }
  /// Turns graph recording on or off for this thread.
  static void set_enabled(bool on) { flag() = on; }

 private:
  static bool& flag() {
    thread_local bool enabled = true;
    return enabled;
  }
};

/// Disables graph recording until the end of the scope (inference, optimizer updates).
class NoGradGuard {
 public:
  NoGradGuard() : prev_(GradMode::is_enabled()) { GradMode::set_enabled(false); }
  ~NoGradGuard() { GradMode::set_enabled(prev_); }
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool prev_;
};

/// Enables graph recording until the end of the scope, even inside a NoGradGuard or backward().
class EnableGradGuard {
 public:
  EnableGradGuard() : prev_(GradMode::is_enabled()) { GradMode::set_enabled(true); }
  ~EnableGradGuard() { GradMode::set_enabled(prev_); }
  EnableGradGuard(const EnableGradGuard&) = delete;
  EnableGradGuard& operator=(const EnableGradGuard&) = delete;

 private:
  bool prev_;
};

}  // namespace loom
