#pragma once
#ifndef __CUDACC__
#error "loom/backend/cuda/*.cuh must be compiled by nvcc (from a .cu file)"
#endif
// The NCCL collectives behind nccl_api.hpp (included by backend_impl.cuh when LOOM_HAVE_NCCL).
//
// The communicator is non-blocking (ncclConfig_t::blocking = 0): NCCL calls return at once,
// possibly with ncclInProgress, and loom polls ncclCommGetAsyncError and then cudaStreamQuery
// until the work is done. That poll is what makes a timeout possible: a rank that never arrives
// leaves the others polling, and past the timeout they call ncclCommAbort (which stops their
// kernels) and throw dist_error, instead of hanging inside NCCL.

#include <nccl.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <thread>

#include "loom/backend/cuda/common.cuh"
#include "loom/backend/cuda/nccl_api.hpp"

namespace loom::cuda {

struct NcclComm {
  ncclComm_t comm = nullptr;
  int rank = 0, size = 1, device = 0;
  cudaStream_t stream = nullptr;  // the device's loom stream
  void* scratch = nullptr;        // one element for the barrier
  bool aborted = false;
  std::string why_aborted;
  bool always_grouped = false;
  ~NcclComm() {
    if (scratch) cudaFree(scratch);
  }
};

namespace detail {

using Clock = std::chrono::steady_clock;

inline ncclDataType_t nccl_type(CommType t) {
  switch (t) {
    case CommType::f32: return ncclFloat32;
    case CommType::f64: return ncclFloat64;
    case CommType::i64: return ncclInt64;
    case CommType::u8: return ncclUint8;
  }
  return ncclUint8;
}

inline size_t comm_type_size(CommType t) { return t == CommType::u8 ? 1 : t == CommType::f32 ? 4 : 8; }

/// NCCL's text for r, plus the communicator's last error message when it has one.
inline std::string nccl_text(NcclComm* c, ncclResult_t r) {
  std::string s = ncclGetErrorString(r);
  const char* last = c->comm ? ncclGetLastError(c->comm) : nullptr;
  if (last && *last) s += std::string(" (") + last + ")";
  return s;
}

/// Aborts the communicator and throws dist_error "rank R: WHAT MESSAGE".
[[noreturn]] inline void abort_and_throw(NcclComm* c, const char* what, const std::string& message) {
  std::string text = ::loom::detail::concat("rank ", c->rank, ": ", what, " ", message);
  if (!c->aborted) {
    ncclCommAbort(c->comm);
    c->aborted = true;
    c->why_aborted = text;
  }
  throw ::loom::dist_error(text + "; the NCCL communicator was aborted");
}

/// Makes the communicator's device current and returns its stream; throws when it was aborted.
inline cudaStream_t ready(NcclComm* c, const char* what) {
  LOOM_CHECK(c != nullptr, value_error, "dist: ", what, ": no NCCL communicator");
  if (c->aborted)
    throw ::loom::dist_error(::loom::detail::concat("rank ", c->rank, ": ", what,
                                                    ": the NCCL communicator was aborted earlier (", c->why_aborted,
                                                    "); make a new one"));
  return use(c->device);
}

/// Checks the result of issuing an NCCL call. A wrong argument leaves the communicator usable;
/// any other failure aborts it.
inline void issued(NcclComm* c, ncclResult_t r, const char* what) {
  if (r == ncclSuccess || r == ncclInProgress) return;
  if (r == ncclInvalidArgument || r == ncclInvalidUsage)
    throw ::loom::dist_error(::loom::detail::concat("rank ", c->rank, ": ", what, " rejected by NCCL: ", nccl_text(c, r)));
  abort_and_throw(c, what, "failed in NCCL: " + nccl_text(c, r));
}

/// Polls until NCCL has issued everything (the communicator's state leaves ncclInProgress) and,
/// with `stream_too`, until the stream has run it. Past timeout_s since `start`, aborts and throws.
inline void wait(NcclComm* c, const char* what, double timeout_s, Clock::time_point start, bool stream_too) {
  for (int polls = 0;; ++polls) {
    ncclResult_t state = ncclSuccess;
    ncclResult_t r = ncclCommGetAsyncError(c->comm, &state);
    if (r != ncclSuccess) state = r;
    if (state != ncclSuccess && state != ncclInProgress)
      abort_and_throw(c, what, "failed in NCCL: " + nccl_text(c, state));
    if (state == ncclSuccess) {
      if (!stream_too) return;
      cudaError_t e = cudaStreamQuery(c->stream);
      if (e == cudaSuccess) return;
      if (e != cudaErrorNotReady) {
        cudaGetLastError();
        abort_and_throw(c, what, ::loom::detail::concat("failed on cuda:", c->device, ": ", cudaGetErrorString(e)));
      }
    }
    const double waited = std::chrono::duration<double>(Clock::now() - start).count();
    if (waited > timeout_s) {
      char secs[32];
      std::snprintf(secs, sizeof secs, "%.1f", waited);
      abort_and_throw(c, what,
                      ::loom::detail::concat("waited ", secs, " s for the other ranks (timeout ", timeout_s,
                                             " s); NCCL does not say which of the ", c->size,
                                             " ranks did not arrive"));
    }
    // Spin briefly, then yield the core (see MpiCommunicator::wait).
    if (polls > 100) std::this_thread::sleep_for(std::chrono::microseconds(polls > 2000 ? 500 : 20));
  }
}

template <class T>
__global__ void times_kernel(T* x, int64_t n, T factor) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    x[i] = x[i] * factor;
}

__global__ void divide_kernel(int64_t* x, int64_t n, int64_t d) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    x[i] = x[i] / d;
}

/// Turns the sums of n elements into averages over the ranks: x * T(1/N), integers x / N.
inline void sums_to_averages(NcclComm* c, void* x, int64_t n, CommType t) {
  if (c->size == 1 || n == 0) return;
  const int grid = grid_for(n, 256, c->device);
  switch (t) {
    case CommType::f32:
      times_kernel<<<grid, 256, 0, c->stream>>>(static_cast<float*>(x), n, float(1.0 / double(c->size)));
      break;
    case CommType::f64:
      times_kernel<<<grid, 256, 0, c->stream>>>(static_cast<double*>(x), n, 1.0 / double(c->size));
      break;
    case CommType::i64: divide_kernel<<<grid, 256, 0, c->stream>>>(static_cast<int64_t*>(x), n, int64_t(c->size)); break;
    case CommType::u8: break;
  }
  LOOM_CUDA_CHECK_LAUNCH();
}

inline void check_reducible(NcclComm* c, CommType t, const char* what) {
  LOOM_CHECK(t != CommType::u8, value_error, "rank ", c->rank, ": ", what,
             ": bytes cannot be reduced, only broadcast or gathered");
}

inline bool all_equal(const int64_t* counts, int n) {
  for (int r = 1; r < n; ++r)
    if (counts[r] != counts[0]) return false;
  return true;
}

}  // namespace detail

int nccl_version() {
  int v = 0;
  ncclGetVersion(&v);
  return v;
}

NcclId nccl_unique_id() {
  ncclUniqueId u;
  ncclResult_t r = ncclGetUniqueId(&u);
  if (r != ncclSuccess)
    throw ::loom::dist_error(::loom::detail::concat("dist: ncclGetUniqueId failed: ", ncclGetErrorString(r)));
  static_assert(sizeof(u.internal) == sizeof(NcclId::bytes), "NcclId and ncclUniqueId differ in size");
  NcclId id;
  std::memcpy(id.bytes, u.internal, sizeof id.bytes);
  return id;
}

NcclComm* nccl_create(const NcclId& id, int rank, int size, int device, double timeout_s) {
  LOOM_CHECK(size >= 1 && rank >= 0 && rank < size, value_error, "dist: nccl: rank ", rank, " is not a rank of ", size);
  const auto start = detail::Clock::now();
  check_device(device);
  auto c = std::make_unique<NcclComm>();
  c->rank = rank, c->size = size, c->device = device;
  c->stream = detail::use(device);
  LOOM_CUDA_CHECK(cudaMalloc(&c->scratch, 8));
  ncclUniqueId u;
  std::memcpy(u.internal, id.bytes, sizeof id.bytes);
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  ncclResult_t r = ncclCommInitRankConfig(&c->comm, size, u, rank, &config);
  if (r != ncclSuccess && r != ncclInProgress) {
    if (c->comm) ncclCommAbort(c->comm);
    throw ::loom::dist_error(::loom::detail::concat("rank ", rank, ": NCCL init on cuda:", device,
                                                    " failed: ", ncclGetErrorString(r)));
  }
  detail::wait(c.get(), "NCCL init", timeout_s, start, false);
  return c.release();
}

void nccl_all_reduce(NcclComm* c, void* data, int64_t n, CommType t, CommOp op, const char* what, double timeout_s) {
  const auto start = detail::Clock::now();
  cudaStream_t s = detail::ready(c, what);
  detail::check_reducible(c, t, what);
  if (n == 0) return;
  detail::issued(c, ncclAllReduce(data, data, size_t(n), detail::nccl_type(t), ncclSum, c->comm, s), what);
  detail::wait(c, what, timeout_s, start, false);  // queued on the stream before the scaling below
  if (op == CommOp::average) detail::sums_to_averages(c, data, n, t);
  detail::wait(c, what, timeout_s, start, true);
}

void nccl_reduce_scatter(NcclComm* c, const void* send, void* recv, const int64_t* counts, CommType t, CommOp op,
                         const char* what, double timeout_s) {
  const auto start = detail::Clock::now();
  cudaStream_t s = detail::ready(c, what);
  detail::check_reducible(c, t, what);
  const ncclDataType_t dt = detail::nccl_type(t);
  const size_t esz = detail::comm_type_size(t);
  if (detail::all_equal(counts, c->size) && !c->always_grouped) {
    if (counts[0] > 0) detail::issued(c, ncclReduceScatter(send, recv, size_t(counts[0]), dt, ncclSum, c->comm, s), what);
  } else {
    // One ncclReduce per piece, to its owner; a non-owner's receive buffer is never written,
    // so it gets the piece's own send address.
    ncclResult_t first = ncclGroupStart();
    const char* piece = static_cast<const char*>(send);
    for (int r = 0; r < c->size && first == ncclSuccess; ++r) {
      if (counts[r] > 0) {
        void* to = r == c->rank ? recv : const_cast<char*>(piece);
        first = ncclReduce(piece, to, size_t(counts[r]), dt, ncclSum, r, c->comm, s);
      }
      piece += size_t(counts[r]) * esz;
    }
    ncclResult_t end = ncclGroupEnd();
    detail::issued(c, first != ncclSuccess ? first : end, what);
  }
  detail::wait(c, what, timeout_s, start, false);
  if (op == CommOp::average) detail::sums_to_averages(c, recv, counts[c->rank], t);
  detail::wait(c, what, timeout_s, start, true);
}

void nccl_all_gather(NcclComm* c, const void* send, void* recv, const int64_t* counts, CommType t, const char* what,
                     double timeout_s) {
  const auto start = detail::Clock::now();
  cudaStream_t s = detail::ready(c, what);
  const ncclDataType_t dt = detail::nccl_type(t);
  const size_t esz = detail::comm_type_size(t);
  if (detail::all_equal(counts, c->size) && !c->always_grouped) {
    if (counts[0] > 0) detail::issued(c, ncclAllGather(send, recv, size_t(counts[0]), dt, c->comm, s), what);
  } else {
    // One ncclBroadcast per piece, from its owner; a non-owner's send buffer is never read, so
    // it gets the piece's receive address.
    ncclResult_t first = ncclGroupStart();
    char* piece = static_cast<char*>(recv);
    for (int r = 0; r < c->size && first == ncclSuccess; ++r) {
      if (counts[r] > 0) {
        const void* from = r == c->rank ? send : piece;
        first = ncclBroadcast(from, piece, size_t(counts[r]), dt, r, c->comm, s);
      }
      piece += size_t(counts[r]) * esz;
    }
    ncclResult_t end = ncclGroupEnd();
    detail::issued(c, first != ncclSuccess ? first : end, what);
  }
  detail::wait(c, what, timeout_s, start, true);
}

void nccl_broadcast(NcclComm* c, void* data, int64_t n, CommType t, int root, const char* what, double timeout_s) {
  const auto start = detail::Clock::now();
  cudaStream_t s = detail::ready(c, what);
  LOOM_CHECK(root >= 0 && root < c->size, value_error, "rank ", c->rank, ": ", what, ": root ", root,
             " is not a rank of ", c->size);
  if (n == 0) return;
  detail::issued(c, ncclBroadcast(data, data, size_t(n), detail::nccl_type(t), root, c->comm, s), what);
  detail::wait(c, what, timeout_s, start, true);
}

void nccl_barrier(NcclComm* c, const char* what, double timeout_s) {
  const auto start = detail::Clock::now();
  cudaStream_t s = detail::ready(c, what);
  detail::issued(c, ncclAllReduce(c->scratch, c->scratch, 1, ncclFloat32, ncclSum, c->comm, s), what);
  detail::wait(c, what, timeout_s, start, true);
}

void nccl_abort(NcclComm* c) noexcept {
  if (!c || c->aborted) return;
  cudaSetDevice(c->device);
  ncclCommAbort(c->comm);
  c->aborted = true;
  c->why_aborted = ::loom::detail::concat("rank ", c->rank, ": abort() was called");
}

void nccl_destroy(NcclComm* c, double timeout_s) noexcept {
  if (!c) return;
  if (!c->aborted) {
    try {
      cudaSetDevice(c->device);
      ncclResult_t r = ncclCommFinalize(c->comm);  // flushes this rank's work, waits for the others
      if (r == ncclSuccess || r == ncclInProgress) {
        detail::wait(c, "NCCL finalize", timeout_s, detail::Clock::now(), false);
        ncclCommDestroy(c->comm);
      } else {
        ncclCommAbort(c->comm);
      }
    } catch (...) {
      // wait() aborted the communicator: nothing is left to free but the handle
    }
  }
  delete c;
}

void nccl_set_always_grouped(NcclComm* c, bool on) {
  LOOM_CHECK(c != nullptr, value_error, "dist: nccl_set_always_grouped: no NCCL communicator");
  c->always_grouped = on;
}

}  // namespace loom::cuda
