#pragma once
/// @file nccl.hpp
/// The NCCL backend of dist::Communicator: collectives between GPUs, one GPU per rank, on
/// buffers in GPU memory (device_buffers() is true). It needs loom::cuda built with NCCL
/// (CMake finds nccl.h and libnccl.so and defines LOOM_HAVE_NCCL=1); in any other build the
/// constructor throws backend_error.
///
/// NCCL's ranks find each other through a 128-byte unique id that rank 0 draws and a host
/// communicator hands to the others, usually MPI: make_communicator("nccl") in dist.hpp does
///
///   NcclCommunicator(std::make_unique<MpiCommunicator>(), local_rank % gpus)
///
/// Each call is queued on the GPU's loom stream, after the kernels that wrote its buffers, and
/// returns when it is done. A rank that does not arrive within timeout() turns into dist_error on
/// the others (rank, operation, seconds) and the NCCL communicator is aborted; NCCL cannot say
/// which rank was missing. Sums are NCCL's own (not the host backends' rank order); an average is
/// the sum times T(1/N). reduce_scatter and all_gather with unequal counts become one grouped
/// NCCL call per piece (backend/cuda/nccl_api.hpp says why).
///
/// Host buffers: when the communicator keeps its host communicator (the unique_ptr constructor),
/// a call whose buffers are all host memory goes through that one instead, so broadcast_string
/// and gather_values keep working; otherwise host buffers throw value_error.

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "loom/backend/cuda/cuda_api.hpp"
#include "loom/backend/cuda/nccl_api.hpp"
#include "loom/core/error.hpp"
#include "loom/dist/communicator.hpp"

namespace loom::dist {

/// True when this build can run NCCL collectives (loom::cuda linked, built with NCCL).
inline constexpr bool have_nccl() {
#if LOOM_WITH_CUDA && LOOM_HAVE_NCCL
  return true;
#else
  return false;
#endif
}

/// The message of the backend_error raised when NCCL is asked for in a build without it.
inline std::string no_nccl_message() {
#if LOOM_WITH_CUDA
  return "dist: loom::cuda was built without NCCL; install NCCL (nccl.h and libnccl.so, e.g. apt-get install "
         "libnccl-dev) and reconfigure, or use the mpi backend";
#else
  return std::string("dist: NCCL needs the CUDA backend: ") + no_cuda_message();
#endif
}

}  // namespace loom::dist

/// The body of a call that needs NCCL: the statement in an NCCL build, a backend_error otherwise
/// (the statement then sits in an uncalled lambda, so nothing links against the missing functions).
#if LOOM_WITH_CUDA && LOOM_HAVE_NCCL
#define LOOM_NCCL_ONLY(...) __VA_ARGS__
#else
#define LOOM_NCCL_ONLY(...)                                             \
  do {                                                                  \
    (void)[&]() { __VA_ARGS__; };                                       \
    throw ::loom::backend_error(::loom::dist::no_nccl_message());       \
  } while (0)
#endif

namespace loom::dist {

/// The element type of the NCCL calls for `t`.
inline cuda::CommType nccl_comm_type(DType t) {
  switch (t) {
    case DType::f32: return cuda::CommType::f32;
    case DType::f64: return cuda::CommType::f64;
    case DType::i64: return cuda::CommType::i64;
    case DType::u8: return cuda::CommType::u8;
  }
  return cuda::CommType::u8;
}

/// Ranks talking through NCCL, one GPU each (device buffers).
class NcclCommunicator final : public Communicator {
 public:
  /// Joins the NCCL group of bootstrap's ranks on GPU `device`: rank 0 draws the unique id and
  /// `bootstrap` broadcasts it (a collective: every rank of bootstrap must construct one). The
  /// bootstrap is not kept; host buffers throw value_error.
  NcclCommunicator(Communicator& bootstrap, int device) { join(bootstrap, device); }
  /// The same, keeping `host` for the calls on host buffers (and destroying it last).
  NcclCommunicator(std::unique_ptr<Communicator> host, int device) : host_(std::move(host)) {
    LOOM_CHECK(host_ != nullptr, value_error, "dist: NcclCommunicator needs a host communicator, got none");
    join(*host_, device);
  }
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;
  /// Finalizes the NCCL communicator (waiting at most timeout() for the other ranks).
  ~NcclCommunicator() override {
#if LOOM_WITH_CUDA && LOOM_HAVE_NCCL
    cuda::nccl_destroy(comm_, timeout());
#endif
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string backend() const override { return "nccl"; }
  bool device_buffers() const override { return true; }
  /// The GPU this rank's buffers live on.
  int device() const { return device_; }
  /// The host communicator kept by the unique_ptr constructor (nullptr otherwise).
  Communicator* host() const { return host_.get(); }

  void all_reduce_raw(void* data, int64_t n, DType t, ReduceOp op, const char* what) override {
    if (on_host(what, data)) return host_->all_reduce_raw(data, n, t, op, what);
    LOOM_NCCL_ONLY(cuda::nccl_all_reduce(comm_, data, n, nccl_comm_type(t), comm_op(op), what, timeout()));
  }

  void reduce_scatter_raw(const void* send, void* recv, const std::vector<int64_t>& counts, DType t, ReduceOp op,
                          const char* what) override {
    if (on_host(what, send, recv)) return host_->reduce_scatter_raw(send, recv, counts, t, op, what);
    LOOM_NCCL_ONLY(
        cuda::nccl_reduce_scatter(comm_, send, recv, counts.data(), nccl_comm_type(t), comm_op(op), what, timeout()));
  }

  void all_gather_raw(const void* send, void* recv, const std::vector<int64_t>& counts, DType t,
                      const char* what) override {
    if (on_host(what, send, recv)) return host_->all_gather_raw(send, recv, counts, t, what);
    LOOM_NCCL_ONLY(cuda::nccl_all_gather(comm_, send, recv, counts.data(), nccl_comm_type(t), what, timeout()));
  }

  void broadcast_raw(void* data, int64_t n, DType t, int root, const char* what) override {
    if (on_host(what, data)) return host_->broadcast_raw(data, n, t, root, what);
    LOOM_NCCL_ONLY(cuda::nccl_broadcast(comm_, data, n, nccl_comm_type(t), root, what, timeout()));
  }

  void barrier(const char* what = "barrier") override {
    LOOM_NCCL_ONLY(cuda::nccl_barrier(comm_, what, timeout()));
  }

  /// Aborts the NCCL communicator (later calls throw dist_error), then the host communicator
  /// if one is kept (MPI_Abort stops every rank).
  void abort(int code) override {
#if LOOM_WITH_CUDA && LOOM_HAVE_NCCL
    cuda::nccl_abort(comm_);
#endif
    if (host_) host_->abort(code);
  }

  /// For tests: reduce_scatter and all_gather take the per-piece path even with equal counts.
  void set_always_grouped(bool on) { LOOM_NCCL_ONLY(cuda::nccl_set_always_grouped(comm_, on)); }

 private:
  void join(Communicator& bootstrap, int device) {
    LOOM_CHECK(!bootstrap.device_buffers(), value_error, "dist: NcclCommunicator needs a host bootstrap, got '",
               bootstrap.backend(), "'");
    rank_ = bootstrap.rank(), size_ = bootstrap.size(), device_ = device;
    set_timeout(bootstrap.timeout());
    cuda::NcclId id;
    LOOM_NCCL_ONLY(if (rank_ == 0) id = cuda::nccl_unique_id());
    bootstrap.broadcast(reinterpret_cast<uint8_t*>(id.bytes), cuda::nccl_id_bytes, 0, "NCCL unique id");
    LOOM_NCCL_ONLY(comm_ = cuda::nccl_create(id, rank_, size_, device_, timeout()));
  }

  static cuda::CommOp comm_op(ReduceOp op) { return op == ReduceOp::sum ? cuda::CommOp::sum : cuda::CommOp::average; }

  /// False when every given buffer is GPU memory (an NCCL call); true when all are host memory
  /// and a host communicator is kept; value_error otherwise. Null pointers (empty pieces) do not count.
  bool on_host(const char* what, const void* a, const void* b = nullptr) {
    int device = 0, host = 0;
    for (const void* p : {a, b}) {
      if (!p) continue;
      bool on_gpu = false;
      LOOM_NCCL_ONLY(on_gpu = cuda::is_device_pointer(p));
      ++(on_gpu ? device : host);
    }
    if (host == 0) return false;
    LOOM_CHECK(device == 0, value_error, "rank ", rank_, ": ", what,
               ": one buffer is GPU memory and the other host memory; NCCL needs both on the GPU");
    LOOM_CHECK(host_ != nullptr, value_error, "rank ", rank_, ": ", what,
               ": the buffer is host memory, but the NCCL communicator needs GPU memory (device_buffers())");
    host_->set_timeout(timeout());
    return true;
  }

  std::unique_ptr<Communicator> host_;  // outlives the NCCL communicator (freed in ~NcclCommunicator's body)
  cuda::NcclComm* comm_ = nullptr;
  int rank_ = 0, size_ = 1, device_ = 0;
};

}  // namespace loom::dist
