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

/// Sets grad mode for the rest of the scope, and puts the previous mode back at its end.
class GradModeGuard {
 public:
  explicit GradModeGuard(bool on) : prev_(GradMode::is_enabled()) { GradMode::set_enabled(on); }
  ~GradModeGuard() { GradMode::set_enabled(prev_); }
  GradModeGuard(const GradModeGuard&) = delete;
  GradModeGuard& operator=(const GradModeGuard&) = delete;

 private:
  bool prev_;
};

/// Disables graph recording until the end of the scope (inference, optimizer updates).
class NoGradGuard : public GradModeGuard {
 public:
  NoGradGuard() : GradModeGuard(false) {}
};

/// Enables graph recording until the end of the scope, even inside a NoGradGuard or backward().
class EnableGradGuard : public GradModeGuard {
 public:
  EnableGradGuard() : GradModeGuard(true) {}
};

}  // namespace loom
