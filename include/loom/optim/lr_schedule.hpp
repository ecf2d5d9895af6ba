#pragma once
/// @file lr_schedule.hpp
/// Learning-rate schedules: pure functions of the step (0-based), so a resumed run gets the same
/// rate from the step alone. Call opt.set_lr(schedule(step)) before each opt.step().
///
///   lr ^
///  max|     ___
///     |   /     `-.                   cosine: warmup, then half a cosine down to min_lr
///     |  /         `-.
///  min| /             `-.________     (linear: the same warmup, then a straight line)
///     +---|--------------|-------> step
///       warmup        decay_steps

#include <cmath>
#include <cstdint>

#include "loom/core/error.hpp"

namespace loom {

namespace optim_detail {
inline void check_schedule(const char* op, double max_lr, double min_lr, int64_t warmup_steps, int64_t decay_steps) {
  LOOM_CHECK(std::isfinite(max_lr) && max_lr >= 0 && std::isfinite(min_lr) && min_lr >= 0, value_error, op,
             ": learning rates must be finite and >= 0 (max_lr ", max_lr, ", min_lr ", min_lr, ")");
  LOOM_CHECK(warmup_steps >= 0 && decay_steps >= warmup_steps, value_error, op,
             ": need 0 <= warmup_steps <= decay_steps (got warmup_steps ", warmup_steps, ", decay_steps ",
             decay_steps, ")");
}
/// The linear warmup shared by both schedules: max_lr * (step + 1) / (warmup_steps + 1).
inline double warmup(int64_t step, double max_lr, int64_t warmup_steps) {
  return max_lr * double(step + 1) / double(warmup_steps + 1);
}
}  // namespace optim_detail

/// A constant learning rate (a schedule in name only).
inline double lr_constant(int64_t /*step*/, double lr) { return lr; }

/// nanoGPT's get_lr: linear warmup max_lr * (step + 1) / (warmup_steps + 1) for step < warmup_steps,
/// then cosine decay from max_lr to min_lr, reaching min_lr at decay_steps and staying there.
/// Throws value_error unless 0 <= warmup_steps <= decay_steps and both rates are >= 0.
inline double lr_cosine(int64_t step, double max_lr, double min_lr, int64_t warmup_steps, int64_t decay_steps) {
  optim_detail::check_schedule("lr_cosine", max_lr, min_lr, warmup_steps, decay_steps);
  LOOM_CHECK(step >= 0, value_error, "lr_cosine: negative step ", step);
  if (step < warmup_steps) return optim_detail::warmup(step, max_lr, warmup_steps);
  if (step >= decay_steps) return min_lr;
  double ratio = double(step - warmup_steps) / double(decay_steps - warmup_steps);  // in [0, 1)
  double coeff = 0.5 * (1.0 + std::cos(3.14159265358979323846 * ratio));           // 1 -> 0
  return min_lr + coeff * (max_lr - min_lr);
}

/// Linear warmup (as lr_cosine), then a straight line from max_lr down to min_lr at decay_steps,
/// then min_lr. Throws value_error unless 0 <= warmup_steps <= decay_steps and both rates are >= 0.
inline double lr_linear(int64_t step, double max_lr, double min_lr, int64_t warmup_steps, int64_t decay_steps) {
  optim_detail::check_schedule("lr_linear", max_lr, min_lr, warmup_steps, decay_steps);
  LOOM_CHECK(step >= 0, value_error, "lr_linear: negative step ", step);
  if (step < warmup_steps) return optim_detail::warmup(step, max_lr, warmup_steps);
  if (step >= decay_steps) return min_lr;
  double ratio = double(step - warmup_steps) / double(decay_steps - warmup_steps);
  return max_lr + ratio * (min_lr - max_lr);
}

/// A schedule as a value (what a training program keeps in its config): one of the three shapes
/// above with its parameters; call it with the step.
class LrSchedule {
 public:
  /// The shape of the curve.
  enum class Kind { constant, cosine, linear };

  /// lr at every step.
  static LrSchedule constant(double lr) { return LrSchedule(Kind::constant, lr, lr, 0, 0); }
  /// Warmup then cosine decay to min_lr (nanoGPT's get_lr); see lr_cosine.
  static LrSchedule cosine(double max_lr, double min_lr, int64_t warmup_steps, int64_t decay_steps) {
    return LrSchedule(Kind::cosine, max_lr, min_lr, warmup_steps, decay_steps);
  }
  /// Warmup then linear decay to min_lr; see lr_linear.
  static LrSchedule linear(double max_lr, double min_lr, int64_t warmup_steps, int64_t decay_steps) {
    return LrSchedule(Kind::linear, max_lr, min_lr, warmup_steps, decay_steps);
  }

  /// The learning rate for `step` (0-based).
  double operator()(int64_t step) const {
    switch (kind_) {
      case Kind::cosine: return lr_cosine(step, max_lr_, min_lr_, warmup_steps_, decay_steps_);
      case Kind::linear: return lr_linear(step, max_lr_, min_lr_, warmup_steps_, decay_steps_);
      default: return lr_constant(step, max_lr_);
    }
  }
  /// The shape of the curve.
  Kind kind() const { return kind_; }
  /// The peak learning rate (the constant one for Kind::constant).
  double max_lr() const { return max_lr_; }
  /// The floor reached at decay_steps.
  double min_lr() const { return min_lr_; }
  /// Steps of linear warmup.
  int64_t warmup_steps() const { return warmup_steps_; }
  /// The step at which the floor is reached.
  int64_t decay_steps() const { return decay_steps_; }

 private:
  LrSchedule(Kind kind, double max_lr, double min_lr, int64_t warmup_steps, int64_t decay_steps)
      : kind_(kind), max_lr_(max_lr), min_lr_(min_lr), warmup_steps_(warmup_steps), decay_steps_(decay_steps) {
    optim_detail::check_schedule("LrSchedule", max_lr, min_lr, warmup_steps, decay_steps);
  }
  Kind kind_;
  double max_lr_, min_lr_;
  int64_t warmup_steps_, decay_steps_;
};

}  // namespace loom
