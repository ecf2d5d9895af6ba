#pragma once
/// @file per_device.hpp
/// One value per GPU, made the first time a device asks for it and kept for the program's life:
/// the CUDA backend's stream, cuBLAS and cuBLASLt handles, GEMM workspace and error flag are all
/// made this way. Plain C++ (no CUDA type), so it is tested on any machine.

#include <mutex>
#include <optional>
#include <vector>

namespace loom::cuda::detail {

/// The value make(device) returns for `device`, made on that device's first call and returned
/// again by every later one. Each call site passes its own lambda, a distinct type, and so has a
/// table of its own. Thread-safe: make runs under the table's lock, once per device; when it
/// throws, nothing is kept and the next call tries again.
template <class Make>
auto per_device(int device, Make make) -> decltype(make(device)) {
  using Value = decltype(make(device));
  static std::mutex mu;
  static std::vector<std::optional<Value>> values;  // indexed by device
  std::lock_guard<std::mutex> lock(mu);
  if (int(values.size()) <= device) values.resize(size_t(device) + 1);
  if (!values[size_t(device)]) values[size_t(device)] = make(device);
  return *values[size_t(device)];
}

}  // namespace loom::cuda::detail
