#pragma once
/// @file allocator.hpp
/// The CPU caching allocator: 64-byte aligned blocks, with large freed blocks kept for reuse.
///
/// Why: glibc serves large blocks straight from mmap and returns them on free, or trims the top
/// of its heap, so a new tensor pays a page fault per 4 KiB on first touch, which costs more
/// than the op that fills it (measured: an add of two 64 MiB tensors ran at 6 GB/s instead of
/// 20+; a small GPT's training step, whose activations are 100-400 KiB, took ~500 faults per
/// step, ~5% of its time). Freed blocks of at least `cache_min_bytes` are kept in a per-size
/// free list and handed back for the next request of the same size, as PyTorch's CUDA allocator
/// does on the GPU.
///
/// Smaller blocks come from glibc's malloc, aligned by hand: its aligned_alloc bypasses the
/// per-thread caches that make a small malloc fast and splits a larger chunk each time (in a
/// chain of small ops, that alone was ~12% of autograd's time per op).

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "loom/core/error.hpp"

namespace loom {

/// Byte counts of the CPU allocator.
struct AllocatorStats {
  std::size_t in_use = 0;  ///< bytes in live blocks
  std::size_t peak = 0;    ///< the most bytes ever in live blocks
  std::size_t cached = 0;  ///< bytes in freed blocks kept for reuse
};

/// The process-wide CPU allocator (see the file comment). Thread-safe.
class CpuAllocator {
 public:
  /// Blocks smaller than this go straight to malloc/free (glibc keeps them in its heap).
  static constexpr std::size_t cache_min_bytes = std::size_t(64) << 10;
  /// Alignment of every block.
  static constexpr std::size_t alignment = 64;

  /// The single instance. It is never destroyed, so tensors alive at exit can still free.
  static CpuAllocator& instance() {
    static CpuAllocator* a = new CpuAllocator();
    return *a;
  }

  /// A block of at least `bytes` bytes (uninitialised, 64-byte aligned); nullptr for 0 bytes.
  void* allocate(std::size_t bytes) {
    if (bytes == 0) return nullptr;
    std::size_t size = round_up(bytes);
    {
      std::lock_guard<std::mutex> lock(mu_);
      stats_.in_use += size;
      if (stats_.in_use > stats_.peak) stats_.peak = stats_.in_use;
      auto it = free_.find(size);
      if (it != free_.end() && !it->second.empty()) {
        void* p = it->second.back();
        it->second.pop_back();
        stats_.cached -= size;
        return p;
      }
    }
    void* p = system_alloc(size);
    if (!p) {
      empty_cache();  // give cached blocks back to the system and try once more
      p = system_alloc(size);
    }
    if (!p) {
      std::lock_guard<std::mutex> lock(mu_);
      stats_.in_use -= size;
      throw Error(detail::concat("CpuAllocator: out of memory allocating ", bytes, " bytes"));
    }
    return p;
  }

  /// Returns a block from allocate(bytes) (same `bytes`).
  void release(void* p, std::size_t bytes) noexcept {
    if (!p) return;
    std::size_t size = round_up(bytes);
    {
      std::lock_guard<std::mutex> lock(mu_);
      stats_.in_use -= size;
      if (size >= cache_min_bytes && stats_.cached + size <= limit_) {
        try {
          free_[size].push_back(p);
          stats_.cached += size;
          return;
        } catch (...) {  // no memory for the list itself: just free the block
        }
      }
    }
    system_free(p, size);
  }

  /// Frees every cached block.
  void empty_cache() {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& kv : free_)
      for (void* p : kv.second) system_free(p, kv.first);
    free_.clear();
    stats_.cached = 0;
  }

  /// Current byte counts.
  AllocatorStats stats() const {
    std::lock_guard<std::mutex> lock(mu_);
    return stats_;
  }

  /// The most bytes kept in the cache (default 4 GiB, or the LOOM_CPU_CACHE_MB environment variable).
  std::size_t cache_limit() const { return limit_; }

 private:
  CpuAllocator() {
    if (const char* env = std::getenv("LOOM_CPU_CACHE_MB")) limit_ = std::size_t(std::strtoull(env, nullptr, 10)) << 20;
  }
  // A new block of `size` bytes (a round_up size) from the system, 64-byte aligned, or null. A
  // small one is a malloc of size + 64 whose first 64-byte boundary after its start is the block;
  // the byte before the block holds that offset (16 to 64: malloc aligns to 16) for system_free.
  static void* system_alloc(std::size_t size) {
    if (size >= cache_min_bytes) return std::aligned_alloc(alignment, size);
    auto* raw = static_cast<unsigned char*>(std::malloc(size + alignment));
    if (!raw) return nullptr;
    const std::size_t offset = alignment - reinterpret_cast<std::uintptr_t>(raw) % alignment;  // 1 to 64
    unsigned char* p = raw + offset;
    p[-1] = static_cast<unsigned char>(offset);
    return p;
  }
  // Frees a block of `size` bytes from system_alloc.
  static void system_free(void* p, std::size_t size) noexcept {
    if (size >= cache_min_bytes) {
      std::free(p);
    } else {
      auto* q = static_cast<unsigned char*>(p);
      std::free(q - q[-1]);
    }
  }
  static std::size_t round_up(std::size_t bytes) {
    // Blocks of 1 MiB or more round to 64 KiB and cached smaller ones to 4 KiB, so that nearby
    // sizes share a free list; the others to 64 bytes.
    std::size_t q = bytes >= (std::size_t(1) << 20) ? (std::size_t(1) << 16) : bytes >= cache_min_bytes ? 4096 : alignment;
    return (bytes + q - 1) / q * q;
  }

  mutable std::mutex mu_;
  std::unordered_map<std::size_t, std::vector<void*>> free_;
  AllocatorStats stats_;
  std::size_t limit_ = std::size_t(4) << 30;
};

}  // namespace loom
