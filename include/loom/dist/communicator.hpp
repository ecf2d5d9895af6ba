#pragma once
/// @file communicator.hpp
/// The collectives that data-parallel training needs, over a backend chosen at run time: MPI
/// (dist/mpi.hpp) for processes and host buffers, NCCL (dist/nccl.hpp) for GPU buffers, and the
/// single process below, for which every call is a copy or nothing.
///
///   all_reduce(x)          every rank gets x_0 + x_1 + ... + x_{N-1}        (or that times 1/N)
///   reduce_scatter(x, c)   rank r gets the sum of everyone's r-th piece (c[r] elements)
///   all_gather(x, c)       every rank gets every rank's piece, in rank order
///   gather(x, c, root)     rank root gets every rank's piece, in rank order
///   broadcast(x, root)     every rank gets root's x
///   barrier()              no rank leaves before every rank has arrived
///
/// Sums on the host are taken in rank order, element by element: ((x_0 + x_1) + x_2) + ...
/// That fixes the bits of every result, so N ranks can reproduce one process exactly.
/// An average is that sum times T(1 / N). Every call carries a name (`what`) that an error quotes,
/// and a backend that waits longer than timeout() for the other ranks throws dist_error naming
/// the ranks that did not arrive.

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "loom/core/error.hpp"

namespace loom::dist {

/// How all_reduce and reduce_scatter combine the ranks' values.
enum class ReduceOp { sum, average };

/// Element types the collectives carry.
enum class DType { f32, f64, i64, u8 };

/// Bytes per element of `t`.
inline size_t dtype_size(DType t) {
  switch (t) {
    case DType::f32: return 4;
    case DType::f64: return 8;
    case DType::i64: return 8;
    case DType::u8: return 1;
  }
  return 1;
}

/// The DType of a C++ element type.
template <class T> constexpr DType dtype_of();
template <> constexpr DType dtype_of<float>() { return DType::f32; }
template <> constexpr DType dtype_of<double>() { return DType::f64; }
template <> constexpr DType dtype_of<int64_t>() { return DType::i64; }
template <> constexpr DType dtype_of<uint8_t>() { return DType::u8; }

/// `n` elements cut into `parts` pieces that differ by at most one element (the first ones longer).
inline std::vector<int64_t> even_counts(int64_t n, int parts) {
  std::vector<int64_t> c(size_t(parts), n / parts);
  for (int64_t r = 0; r < n % parts; ++r) ++c[size_t(r)];
  return c;
}

/// out[i] = (((in_0[i] + in_1[i]) + in_2[i]) + ...) for `ranks` arrays of n elements laid end to
/// end in `in`; times 1/ranks for an average. The order every host backend sums in.
template <class T>
void ordered_sum(const T* in, T* out, int64_t n, int ranks, ReduceOp op) {
  std::copy(in, in + n, out);
  for (int r = 1; r < ranks; ++r) {
    const T* x = in + int64_t(r) * n;
    for (int64_t i = 0; i < n; ++i) out[i] = out[i] + x[i];
  }
  if (op == ReduceOp::average && ranks > 1) {
    if constexpr (std::is_floating_point_v<T>) {
      const T scale = T(1.0 / double(ranks));
      for (int64_t i = 0; i < n; ++i) out[i] = out[i] * scale;
    } else {
      for (int64_t i = 0; i < n; ++i) out[i] = out[i] / T(ranks);
    }
  }
}

/// ordered_sum for a run-time element type.
inline void ordered_sum(DType t, const void* in, void* out, int64_t n, int ranks, ReduceOp op) {
  switch (t) {
    case DType::f32: return ordered_sum(static_cast<const float*>(in), static_cast<float*>(out), n, ranks, op);
    case DType::f64: return ordered_sum(static_cast<const double*>(in), static_cast<double*>(out), n, ranks, op);
    case DType::i64: return ordered_sum(static_cast<const int64_t*>(in), static_cast<int64_t*>(out), n, ranks, op);
    case DType::u8: throw value_error("dist: bytes cannot be reduced, only broadcast or gathered");
  }
}

/// A group of processes (ranks 0 .. size-1) and the collectives between them. Every rank must
/// make the same calls in the same order with matching sizes.
class Communicator {
 public:
  virtual ~Communicator() = default;
  /// This process's rank.
  virtual int rank() const = 0;
  /// Number of ranks.
  virtual int size() const = 0;
  /// "single", "mpi" or "nccl".
  virtual std::string backend() const = 0;
  /// True when the buffers must be GPU memory (NCCL); false for host memory.
  virtual bool device_buffers() const { return false; }

  /// In place: every rank's n elements of `data` become their sum (or average) over the ranks.
  virtual void all_reduce_raw(void* data, int64_t n, DType t, ReduceOp op, const char* what) = 0;
  /// `send` holds sum(counts) elements; rank r receives into `recv` the reduction of the piece
  /// [counts[0] + ... + counts[r-1], + counts[r]) over the ranks.
  virtual void reduce_scatter_raw(const void* send, void* recv, const std::vector<int64_t>& counts, DType t,
                                  ReduceOp op, const char* what) = 0;
  /// Rank r sends counts[r] elements; every rank receives all pieces, in rank order, in `recv`.
  virtual void all_gather_raw(const void* send, void* recv, const std::vector<int64_t>& counts, DType t,
                              const char* what) = 0;
  /// Every rank's n elements of `data` become rank `root`'s.
  virtual void broadcast_raw(void* data, int64_t n, DType t, int root, const char* what) = 0;
  /// Rank r sends counts[r] elements; rank `root` receives all pieces, in rank order, in `recv`
  /// (other ranks may pass null). This default gathers on every rank; backends do better.
  virtual void gather_raw(const void* send, void* recv, const std::vector<int64_t>& counts, DType t, int root,
                          const char* what) {
    int64_t total = 0;
    for (int64_t c : counts) total += c;
    std::vector<char> all(size_t(total) * dtype_size(t));
    all_gather_raw(send, all.data(), counts, t, what);
    if (rank() == root && !all.empty()) std::memcpy(recv, all.data(), all.size());
  }
  /// Returns once every rank has called it.
  virtual void barrier(const char* what = "barrier") = 0;
  /// Stops every rank at once after an unrecoverable error on this one (MPI_Abort); a single
  /// process just returns.
  virtual void abort(int code) { (void)code; }

  /// Seconds a collective waits for the other ranks before it throws dist_error.
  double timeout() const { return timeout_; }
  /// Sets timeout() (> 0).
  void set_timeout(double seconds) {
    LOOM_CHECK(seconds > 0, value_error, "dist: the timeout must be positive, got ", seconds);
    timeout_ = seconds;
  }

  /// Typed all_reduce_raw.
  template <class T>
  void all_reduce(T* data, int64_t n, ReduceOp op = ReduceOp::sum, const char* what = "all_reduce") {
    all_reduce_raw(data, n, dtype_of<T>(), op, what);
  }
  /// Typed reduce_scatter_raw.
  template <class T>
  void reduce_scatter(const T* send, T* recv, const std::vector<int64_t>& counts, ReduceOp op = ReduceOp::sum,
                      const char* what = "reduce_scatter") {
    check_counts(counts, what);
    reduce_scatter_raw(send, recv, counts, dtype_of<T>(), op, what);
  }
  /// Typed all_gather_raw.
  template <class T>
  void all_gather(const T* send, T* recv, const std::vector<int64_t>& counts, const char* what = "all_gather") {
    check_counts(counts, what);
    all_gather_raw(send, recv, counts, dtype_of<T>(), what);
  }
  /// Typed gather_raw.
  template <class T>
  void gather(const T* send, T* recv, const std::vector<int64_t>& counts, int root = 0, const char* what = "gather") {
    check_counts(counts, what);
    LOOM_CHECK(root >= 0 && root < size(), value_error, "dist: ", what, ": root ", root, " is not a rank of ", size());
    gather_raw(send, recv, counts, dtype_of<T>(), root, what);
  }
  /// Typed broadcast_raw.
  template <class T>
  void broadcast(T* data, int64_t n, int root = 0, const char* what = "broadcast") {
    LOOM_CHECK(root >= 0 && root < size(), value_error, "dist: ", what, ": root ", root, " is not a rank of ", size());
    broadcast_raw(data, n, dtype_of<T>(), root, what);
  }
  /// Rank root's string on every rank.
  std::string broadcast_string(std::string s, int root = 0, const char* what = "broadcast") {
    int64_t n = int64_t(s.size());
    broadcast(&n, 1, root, what);
    s.resize(size_t(n));
    broadcast(reinterpret_cast<uint8_t*>(s.data()), n, root, what);
    return s;
  }
  /// One value per rank, in rank order, on every rank.
  template <class T>
  std::vector<T> gather_values(T value, const char* what = "all_gather") {
    std::vector<T> out(static_cast<size_t>(size()));
    all_gather(&value, out.data(), std::vector<int64_t>(static_cast<size_t>(size()), 1), what);
    return out;
  }

 protected:
  void check_counts(const std::vector<int64_t>& counts, const char* what) const {
    LOOM_CHECK(int(counts.size()) == size(), value_error, "dist: ", what, ": ", counts.size(), " counts for ", size(),
               " ranks");
    for (int64_t c : counts) LOOM_CHECK(c >= 0, value_error, "dist: ", what, ": negative count ", c);
  }
  double timeout_ = 300;
};

/// One process: all_reduce leaves the data as it is (an average of one value is that value),
/// reduce_scatter and all_gather copy, broadcast and barrier do nothing. Today's programs run on it.
class SingleProcess final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string backend() const override { return "single"; }
  void all_reduce_raw(void*, int64_t, DType, ReduceOp, const char*) override {}
  void reduce_scatter_raw(const void* send, void* recv, const std::vector<int64_t>& counts, DType t, ReduceOp,
                          const char*) override {
    if (send != recv) std::memmove(recv, send, size_t(counts[0]) * dtype_size(t));
  }
  void all_gather_raw(const void* send, void* recv, const std::vector<int64_t>& counts, DType t, const char*) override {
    if (send != recv) std::memmove(recv, send, size_t(counts[0]) * dtype_size(t));
  }
  void broadcast_raw(void*, int64_t, DType, int, const char*) override {}
  void barrier(const char*) override {}
};

}  // namespace loom::dist
