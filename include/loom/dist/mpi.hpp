#pragma once
/// @file mpi.hpp
/// The MPI backend of dist::Communicator (OpenMPI from Debian: apt-get install openmpi-bin
/// libopenmpi-dev; CMake's loom::mpi target adds it). Programs started by `mpirun -np N` become
/// ranks 0 .. N-1 of MPI_COMM_WORLD.
///
/// Every collective is non-blocking underneath (MPI_Ialltoallv, MPI_Iallgatherv, MPI_Ibcast,
/// MPI_Ibarrier) and is waited for by polling, so a rank that never arrives turns into a
/// dist_error after timeout() seconds instead of a hang. Before throwing, the waiting ranks tell
/// each other that they are waiting, so the message names the ranks that are missing:
///
///   rank 0: all_reduce 'gradients' waited 10 s for the other ranks; rank 1 did not arrive
///
/// Sums are taken in rank order on the owner of each piece (an all-to-all of the pieces, then
/// ordered_sum, then an all-gather), so results do not depend on MPI's reduction algorithm.

// The C API only: OpenMPI's and MPICH's mpi.h would otherwise pull in the removed C++ bindings.
#ifndef OMPI_SKIP_MPICXX
#define OMPI_SKIP_MPICXX 1
#endif
#ifndef MPICH_SKIP_MPICXX
#define MPICH_SKIP_MPICXX 1
#endif
#include <mpi.h>

#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "loom/dist/communicator.hpp"

namespace loom::dist {

/// MPI's datatype for `t`.
inline MPI_Datatype mpi_datatype(DType t) {
  switch (t) {
    case DType::f32: return MPI_FLOAT;
    case DType::f64: return MPI_DOUBLE;
    case DType::i64: return MPI_INT64_T;
    case DType::u8: return MPI_UINT8_T;
  }
  return MPI_BYTE;
}

/// True when this process was started by an MPI launcher (mpirun, srun, ...).
inline bool launched_by_mpi() {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS"})
    if (std::getenv(v)) return true;
  return false;
}

/// Ranks of MPI_COMM_WORLD talking through MPI (host buffers).
class MpiCommunicator final : public Communicator {
 public:
  /// Initialises MPI unless the program already did (one thread at a time calls MPI:
  /// MPI_THREAD_SERIALIZED) and works on a private duplicate of MPI_COMM_WORLD.
  MpiCommunicator() {
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (!initialized) {
      int provided = 0;
      MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED, &provided);
      owns_mpi_ = true;
      LOOM_CHECK(provided >= MPI_THREAD_SERIALIZED, dist_error,
                 "dist: this MPI library does not allow calls from more than one thread (MPI_THREAD_SERIALIZED)");
    }
    MPI_Comm_dup(MPI_COMM_WORLD, &comm_);
    MPI_Comm_dup(MPI_COMM_WORLD, &watch_);
    MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &size_);
  }
  MpiCommunicator(const MpiCommunicator&) = delete;
  MpiCommunicator& operator=(const MpiCommunicator&) = delete;
  /// Frees the communicators and finalises MPI if the constructor initialised it.
  ~MpiCommunicator() override {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (finalized) return;
    MPI_Comm_free(&comm_);
    MPI_Comm_free(&watch_);
    if (owns_mpi_) MPI_Finalize();
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string backend() const override { return "mpi"; }

  void all_reduce_raw(void* data, int64_t n, DType t, ReduceOp op, const char* what) override {
    if (size_ == 1 || n == 0) return;
    // Reduce-scatter into this rank's piece (in place), then gather every piece back.
    std::vector<int64_t> counts = even_counts(n, size_);
    char* piece = static_cast<char*>(data) + size_t(offset_of(counts, rank_)) * dtype_size(t);
    reduce_scatter_raw(data, piece, counts, t, op, what);
    all_gather_raw(piece, data, counts, t, what);
  }

  void reduce_scatter_raw(const void* send, void* recv, const std::vector<int64_t>& counts, DType t, ReduceOp op,
                          const char* what) override {
    const int64_t mine = counts[size_t(rank_)];
    const size_t esz = dtype_size(t);
    const size_t ranks = static_cast<size_t>(size_);
    std::vector<int> scount(ranks), sdispl(ranks), rcount(ranks), rdispl(ranks);
    for (int r = 0; r < size_; ++r) {
      scount[size_t(r)] = to_int(counts[size_t(r)], what);
      sdispl[size_t(r)] = to_int(offset_of(counts, r), what);
      rcount[size_t(r)] = to_int(mine, what);
      rdispl[size_t(r)] = to_int(mine * r, what);
    }
    scratch_.resize(size_t(mine) * size_t(size_) * esz);
    MPI_Request req;
    check(MPI_Ialltoallv(send, scount.data(), sdispl.data(), mpi_datatype(t), scratch_.data(), rcount.data(),
                         rdispl.data(), mpi_datatype(t), comm_, &req),
          what);
    wait(req, what);
    ordered_sum(t, scratch_.data(), recv, mine, size_, op);
  }

  void all_gather_raw(const void* send, void* recv, const std::vector<int64_t>& counts, DType t,
                      const char* what) override {
    const size_t ranks = static_cast<size_t>(size_);
    std::vector<int> rcount(ranks), rdispl(ranks);
    for (int r = 0; r < size_; ++r)
      rcount[size_t(r)] = to_int(counts[size_t(r)], what), rdispl[size_t(r)] = to_int(offset_of(counts, r), what);
    const void* own = static_cast<const char*>(recv) + size_t(rdispl[size_t(rank_)]) * dtype_size(t);
    MPI_Request req;
    check(MPI_Iallgatherv(send == own ? MPI_IN_PLACE : send, rcount[size_t(rank_)], mpi_datatype(t), recv,
                          rcount.data(), rdispl.data(), mpi_datatype(t), comm_, &req),
          what);
    wait(req, what);
  }

  void gather_raw(const void* send, void* recv, const std::vector<int64_t>& counts, DType t, int root,
                  const char* what) override {
    const size_t ranks = static_cast<size_t>(size_);
    std::vector<int> rcount(ranks), rdispl(ranks);
    for (int r = 0; r < size_; ++r)
      rcount[size_t(r)] = to_int(counts[size_t(r)], what), rdispl[size_t(r)] = to_int(offset_of(counts, r), what);
    MPI_Request req;
    check(MPI_Igatherv(send, rcount[size_t(rank_)], mpi_datatype(t), recv, rcount.data(), rdispl.data(), mpi_datatype(t),
                       root, comm_, &req),
          what);
    wait(req, what);
  }

  void broadcast_raw(void* data, int64_t n, DType t, int root, const char* what) override {
    MPI_Request req;
    check(MPI_Ibcast(data, to_int(n, what), mpi_datatype(t), root, comm_, &req), what);
    wait(req, what);
  }

  void barrier(const char* what) override {
    MPI_Request req;
    check(MPI_Ibarrier(comm_, &req), what);
    wait(req, what);
  }

  /// MPI_Abort: mpirun stops every rank.
  void abort(int code) override { MPI_Abort(MPI_COMM_WORLD, code); }

 private:
  static int64_t offset_of(const std::vector<int64_t>& counts, int r) {
    int64_t o = 0;
    for (int i = 0; i < r; ++i) o += counts[size_t(i)];
    return o;
  }
  int to_int(int64_t v, const char* what) const {
    LOOM_CHECK(v <= INT_MAX, dist_error, "rank ", rank_, ": ", what, ": ", v,
               " elements exceed MPI's int counts; use smaller buckets");
    return int(v);
  }
  void check(int rc, const char* what) const {
    if (rc == MPI_SUCCESS) return;
    char text[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, text, &len);
    throw dist_error(detail::concat("rank ", rank_, ": ", what, " failed in MPI: ", std::string(text, size_t(len))));
  }

  /// Polls `req` until it completes; past timeout() finds out which ranks are missing and throws.
  void wait(MPI_Request& req, const char* what) {
    ++sequence_;
    const auto start = std::chrono::steady_clock::now();
    for (int polls = 0;; ++polls) {
      int done = 0;
      check(MPI_Test(&req, &done, MPI_STATUS_IGNORE), what);
      if (done) return;
      double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      if (waited > timeout_) missing_ranks(what, waited);
      // Spin briefly (a collective over shared memory takes microseconds), then yield the core:
      // on a machine with a rank per core, a busy wait would slow the rank we are waiting for.
      if (polls > 100) std::this_thread::sleep_for(std::chrono::microseconds(polls > 2000 ? 500 : 20));
    }
  }

  /// Tells every other rank that this one is stuck, listens a moment for the same word from them,
  /// and throws dist_error naming those that stayed silent.
  [[noreturn]] void missing_ranks(const char* what, double waited) {
    constexpr int tag = 7100;
    stuck_at_ = sequence_;
    std::vector<MPI_Request> sends;
    for (int r = 0; r < size_; ++r) {
      if (r == rank_) continue;
      sends.emplace_back();
      MPI_Isend(&stuck_at_, 1, MPI_INT64_T, r, tag, watch_, &sends.back());
    }
    std::vector<bool> heard(static_cast<size_t>(size_), false);
    heard[size_t(rank_)] = true;
    const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(std::min(2.0, timeout_));
    int heard_count = 1;
    while (heard_count < size_ && std::chrono::steady_clock::now() < until) {
      int flag = 0;
      MPI_Status st;
      MPI_Iprobe(MPI_ANY_SOURCE, tag, watch_, &flag, &st);
      if (!flag) {
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
        continue;
      }
      int64_t theirs = 0;
      MPI_Recv(&theirs, 1, MPI_INT64_T, st.MPI_SOURCE, tag, watch_, MPI_STATUS_IGNORE);
      if (!heard[size_t(st.MPI_SOURCE)]) heard[size_t(st.MPI_SOURCE)] = true, ++heard_count;
    }
    std::string missing, waiting;
    for (int r = 0; r < size_; ++r) (heard[size_t(r)] ? waiting : missing) += (std::to_string(r) + ", ");
    missing.resize(missing.size() >= 2 ? missing.size() - 2 : 0);
    waiting.resize(waiting.size() >= 2 ? waiting.size() - 2 : 0);
    char secs[32];
    std::snprintf(secs, sizeof secs, "%.1f", waited);
    throw dist_error(detail::concat("rank ", rank_, ": ", what, " waited ", secs, " s for the other ranks (timeout ",
                                    timeout_, " s); ", missing.find(',') == std::string::npos ? "rank " : "ranks ",
                                    missing, " did not arrive (waiting: ", waiting, ")"));
  }

  MPI_Comm comm_ = MPI_COMM_NULL, watch_ = MPI_COMM_NULL;
  int rank_ = 0, size_ = 1;
  bool owns_mpi_ = false;
  int64_t sequence_ = 0, stuck_at_ = 0;
  std::vector<char> scratch_;
};

}  // namespace loom::dist
