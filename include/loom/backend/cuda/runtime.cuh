#pragma once
// The CUDA runtime side of loom: devices, the caching allocator, copies and the TF32 switch.

#include <atomic>
#include <memory>
#include <string>
#include <unordered_map>

#include "loom/backend/cuda/common.cuh"

namespace loom::cuda {

namespace detail {

__global__ void probe_kernel(int* p) {
  if (p) *p = 0;
}

#define LOOM_STR2(...) #__VA_ARGS__
#define LOOM_STR(...) LOOM_STR2(__VA_ARGS__)
inline const char* compiled_architectures() {
#ifdef __CUDA_ARCH_LIST__
  return LOOM_STR(__CUDA_ARCH_LIST__);
#else
  return "(unknown)";
#endif
}
#undef LOOM_STR
#undef LOOM_STR2

// The caching allocator (one per device). Sizes are rounded up to a size class (512 bytes
// under 1 MiB, else a multiple of 2 MiB); a freed block goes to its class's free list and the
// next request of that class takes it without calling cudaMalloc. All loom work on a device
// runs on its one stream, so a block freed while kernels that use it are still queued is safe
// to hand out again: the next user's kernels queue behind them.
class CachingAllocator {
 public:
  static std::size_t size_class(std::size_t bytes) {
    constexpr std::size_t small = 512, large = std::size_t(2) << 20;
    if (bytes == 0) bytes = 1;
    return bytes < (std::size_t(1) << 20) ? (bytes + small - 1) / small * small : (bytes + large - 1) / large * large;
  }

  void* allocate(std::size_t bytes, int device) {
    std::size_t sz = size_class(bytes);
    std::lock_guard<std::mutex> lock(mu_);
    ++stats_.allocations;
    auto& list = free_[sz];
    void* p = nullptr;
    if (!list.empty()) {
      p = list.back();
      list.pop_back();
      stats_.cached -= sz;
      ++stats_.cache_hits;
    } else {
      LOOM_CUDA_CHECK(cudaSetDevice(device));
      cudaError_t err = cudaMalloc(&p, sz);
      if (err == cudaErrorMemoryAllocation) {  // out of memory: give the cache back and retry once
        cudaGetLastError();
        release_cached_locked(device);
        err = cudaMalloc(&p, sz);
      }
      if (err != cudaSuccess) {
        cudaGetLastError();
        std::size_t free_b = 0, total_b = 0;
        cudaMemGetInfo(&free_b, &total_b);
        throw cuda_error(::loom::detail::concat("cuda::malloc: cannot allocate ", sz, " bytes on cuda:", device, " (",
                                                cudaGetErrorString(err), "; loom holds ", stats_.in_use,
                                                " bytes in tensors, the device has ", free_b, " of ", total_b,
                                                " bytes free)"));
      }
    }
    stats_.in_use += sz;
    stats_.peak = std::max(stats_.peak, stats_.in_use);
    return p;
  }

  void release(void* p, std::size_t bytes) noexcept {
    std::size_t sz = size_class(bytes);
    std::lock_guard<std::mutex> lock(mu_);
    try {
      free_[sz].push_back(p);
    } catch (...) {
      cudaFree(p);  // no memory for the list: give the block back instead
      stats_.in_use -= sz;
      return;
    }
    stats_.in_use -= sz;
    stats_.cached += sz;
  }

  void empty(int device) {
    std::lock_guard<std::mutex> lock(mu_);
    release_cached_locked(device);
  }
  MemoryStats stats() {
    std::lock_guard<std::mutex> lock(mu_);
    return stats_;
  }
  void reset_peak() {
    std::lock_guard<std::mutex> lock(mu_);
    stats_.peak = stats_.in_use;
  }

 private:
  void release_cached_locked(int device) {
    cudaSetDevice(device);
    cudaDeviceSynchronize();
    for (auto& [sz, list] : free_) {
      for (void* p : list) cudaFree(p);
      stats_.cached -= sz * list.size();
      list.clear();
    }
  }
  std::mutex mu_;
  std::unordered_map<std::size_t, std::vector<void*>> free_;
  MemoryStats stats_;
};

inline CachingAllocator& allocator(int device) {
  static std::mutex mu;
  static std::vector<std::unique_ptr<CachingAllocator>> all;
  std::lock_guard<std::mutex> lock(mu);
  if (int(all.size()) <= device) all.resize(device + 1);
  if (!all[device]) all[device] = std::make_unique<CachingAllocator>();
  return *all[device];
}

inline std::atomic<bool>& tf32_flag() {
  static std::atomic<bool> on{false};
  return on;
}

}  // namespace detail

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the "no driver" error
    return 0;
  }
  return n;
}

bool is_available() { return device_count() > 0; }

std::string device_name(int device) {
  cudaDeviceProp p{};
  LOOM_CUDA_CHECK(cudaGetDeviceProperties(&p, device));
  return std::string(p.name) + " (sm_" + std::to_string(p.major * 10 + p.minor) + ")";
}

void check_device(int device) {
  static std::mutex mu;
  static std::vector<char> checked;
  std::lock_guard<std::mutex> lock(mu);
  if (int(checked.size()) > device && checked[device]) return;
  int n = device_count();
  LOOM_CHECK(device >= 0 && device < n, device_error, "cuda:", device, " does not exist (", n,
             " CUDA device", n == 1 ? "" : "s", " visible)");
  LOOM_CUDA_CHECK(cudaSetDevice(device));
  cudaFuncAttributes attr{};
  cudaError_t err = cudaFuncGetAttributes(&attr, detail::probe_kernel);
  if (err != cudaSuccess) {
    cudaGetLastError();
    throw cuda_error(::loom::detail::concat("cuda:", device, " is ", device_name(device),
                                            ", but this build of loom has machine code only for the architectures ",
                                            detail::compiled_architectures(),
                                            "; rebuild with -DCMAKE_CUDA_ARCHITECTURES including it (",
                                            cudaGetErrorString(err), ")"));
  }
  if (int(checked.size()) <= device) checked.resize(device + 1, 0);
  checked[device] = 1;
}

void synchronize(int device) { LOOM_CUDA_CHECK(cudaStreamSynchronize(detail::use(device))); }

bool is_device_pointer(const void* p) {
  cudaPointerAttributes a{};
  if (cudaPointerGetAttributes(&a, p) != cudaSuccess) {
    cudaGetLastError();  // an address CUDA has never seen is host memory
    return false;
  }
  return a.type == cudaMemoryTypeDevice || a.type == cudaMemoryTypeManaged;
}

void* malloc(std::size_t bytes, int device) {
  check_device(device);
  return detail::allocator(device).allocate(bytes, device);
}

void free(void* ptr, std::size_t bytes, int device) noexcept {
  if (ptr) detail::allocator(device).release(ptr, bytes);
}

MemoryStats memory_stats(int device) { return detail::allocator(device).stats(); }
void reset_peak_memory(int device) { detail::allocator(device).reset_peak(); }
void empty_cache(int device) { detail::allocator(device).empty(device); }

void memcpy_h2d(void* dst, const void* src, std::size_t bytes, int device) {
  cudaStream_t s = detail::use(device);
  LOOM_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, s));
  LOOM_CUDA_CHECK(cudaStreamSynchronize(s));
}

void memcpy_d2h(void* dst, const void* src, std::size_t bytes, int device) {
  cudaStream_t s = detail::use(device);
  LOOM_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, s));
  LOOM_CUDA_CHECK(cudaStreamSynchronize(s));
}

void memcpy_d2d(void* dst, const void* src, std::size_t bytes, int device) {
  LOOM_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, detail::use(device)));
}

void set_allow_tf32(bool on) { detail::tf32_flag() = on; }
bool allow_tf32() { return detail::tf32_flag(); }

}  // namespace loom::cuda
