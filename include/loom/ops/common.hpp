#pragma once
/// @file common.hpp
/// Checks shared by every op: tensors defined, on the same device, and on a device the op runs on.

#include "loom/core/tensor.hpp"

namespace loom::detail {

/// Throws unless every tensor is defined and on the CPU (the only backend with these ops so far).
template <class... Ts>
void check_cpu(const char* op, const Tensor<Ts>&... ts) {
  bool all_defined = (ts.defined() && ...);
  LOOM_CHECK(all_defined, value_error, op, ": an input tensor is undefined");
  Device first = Device::cpu();
  bool have = false, mixed = false;
  auto visit = [&](Device d) {
    if (have && d != first) mixed = true;
    if (!have) first = d, have = true;
  };
  (visit(ts.device()), ...);
  LOOM_CHECK(!mixed, device_error, op, ": input tensors are on different devices");
  LOOM_CHECK(first.is_cpu(), device_error, op, ": not available for tensors on ", first,
             " yet; move them with .to(Device::cpu())");
}

}  // namespace loom::detail
