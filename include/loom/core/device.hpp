#pragma once
/// @file device.hpp
/// Device: where a tensor's storage lives (the CPU or one CUDA GPU).

#include <ostream>
#include <string>

namespace loom {

/// The kind of device.
enum class DeviceType { cpu, cuda };

/// A device: its type and, for CUDA, the GPU index.
struct Device {
  DeviceType type = DeviceType::cpu;
  int index = 0;

  /// The host CPU.
  static Device cpu() { return {DeviceType::cpu, 0}; }
  /// CUDA GPU number i.
  static Device cuda(int i = 0) { return {DeviceType::cuda, i}; }
  /// True for the CPU.
  bool is_cpu() const { return type == DeviceType::cpu; }
  /// True for a CUDA GPU.
  bool is_cuda() const { return type == DeviceType::cuda; }
  /// "cpu" or "cuda:N".
  std::string str() const { return is_cpu() ? "cpu" : "cuda:" + std::to_string(index); }

  friend bool operator==(Device a, Device b) { return a.type == b.type && a.index == b.index; }
  friend bool operator!=(Device a, Device b) { return !(a == b); }
};

inline std::ostream& operator<<(std::ostream& os, Device d) { return os << d.str(); }

}  // namespace loom
