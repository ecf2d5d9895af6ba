#pragma once
/// @file storage.hpp
/// Storage: one device-tagged, untyped, 64-byte aligned buffer that tensors share.

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>

#include "loom/config.hpp"
#include "loom/core/allocator.hpp"
#include "loom/core/device.hpp"
#include "loom/core/error.hpp"

#include "loom/backend/cuda/cuda_api.hpp"  // declarations only; defined by loom::cuda

namespace loom {

/// Alignment of CPU buffers in bytes (a cache line; enough for AVX-512 loads).
inline constexpr std::size_t storage_alignment = CpuAllocator::alignment;

/// A buffer of bytes on one device. Tensors hold it through a shared_ptr; views share it.
class Storage {
 public:
  /// Allocates `nbytes` (uninitialised) on `device`; throws backend_error for CUDA in a CPU build.
  static std::shared_ptr<Storage> allocate(std::size_t nbytes, Device device) {
    auto s = std::shared_ptr<Storage>(new Storage());
    s->nbytes_ = nbytes;
    s->device_ = device;
    if (device.is_cpu()) {
      s->data_ = CpuAllocator::instance().allocate(nbytes);
    } else {
#if LOOM_WITH_CUDA
      s->data_ = cuda::malloc(nbytes, device.index);
#else
      throw backend_error(no_cuda_message());
#endif
    }
    return s;
  }

  ~Storage() {
    if (device_.is_cpu()) {
      CpuAllocator::instance().release(data_, nbytes_);
    } else {
#if LOOM_WITH_CUDA
      cuda::free(data_, nbytes_, device_.index);
#endif
    }
  }
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  /// The first byte (a device pointer for CUDA storage).
  void* data() const { return data_; }
  /// Size in bytes.
  std::size_t nbytes() const { return nbytes_; }
  /// Where the bytes live.
  Device device() const { return device_; }
  /// How many times the bytes were modified in place (autograd checks it on saved tensors).
  uint64_t version() const { return version_; }
  /// Records one in-place modification.
  void bump_version() { ++version_; }

 private:
  Storage() = default;
  uint64_t version_ = 0;
  void* data_ = nullptr;
  std::size_t nbytes_ = 0;
  Device device_;
};

namespace detail {
/// Copies `bytes` between two storages' buffers, whichever devices they are on.
inline void copy_bytes(void* dst, Device dst_dev, const void* src, Device src_dev, std::size_t bytes) {
  if (bytes == 0) return;
  if (dst_dev.is_cpu() && src_dev.is_cpu()) {
    std::memcpy(dst, src, bytes);
    return;
  }
#if LOOM_WITH_CUDA
  if (dst_dev.is_cuda() && src_dev.is_cpu()) return cuda::memcpy_h2d(dst, src, bytes, dst_dev.index);
  if (dst_dev.is_cpu() && src_dev.is_cuda()) return cuda::memcpy_d2h(dst, src, bytes, src_dev.index);
  LOOM_CHECK(dst_dev == src_dev, device_error, "copy: direct copies between ", src_dev, " and ",
             dst_dev, " are not supported; go through the CPU");
  cuda::memcpy_d2d(dst, src, bytes, dst_dev.index);
#else
  throw backend_error(no_cuda_message());
#endif
}
}  // namespace detail

}  // namespace loom
