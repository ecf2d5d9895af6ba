#pragma once
/// @file error.hpp
/// loom's exceptions and the LOOM_CHECK / LOOM_ASSERT macros.
///
/// Every error loom raises derives from loom::Error (itself a std::runtime_error), so one catch
/// clause handles them all, and the concrete type says what went wrong. Messages always name the
/// operation and the offending shapes or values, in every build type.

#include <cassert>
#include <sstream>
#include <stdexcept>
#include <string>

namespace loom {

/// Base class of every exception loom throws.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Shapes that do not fit together (matmul inner dims, broadcasting, reshape sizes).
class shape_error : public Error { public: using Error::Error; };
/// An axis or element index out of range.
class index_error : public Error { public: using Error::Error; };
/// An argument value that is not allowed (a negative size, an empty range, an unknown option).
class value_error : public Error { public: using Error::Error; };
/// A command line that a program cannot run: an unknown option, a malformed or missing value, options
/// that exclude each other. loom's programs exit with status 2 for it (1 for errors while running).
class usage_error : public value_error { public: using value_error::value_error; };
/// An element type that the operation does not support.
class dtype_error : public Error { public: using Error::Error; };
/// Tensors on different devices, or an operation not available on a tensor's device.
class device_error : public Error { public: using Error::Error; };
/// A backend that was not compiled in (for example CUDA in a CPU-only build).
class backend_error : public Error { public: using Error::Error; };
/// A failing CUDA runtime or cuBLAS call; the message carries file:line and CUDA's own text.
class cuda_error : public Error { public: using Error::Error; };
/// A file that cannot be read or written, or whose contents are malformed.
class io_error : public Error { public: using Error::Error; };
/// A collective between processes that failed or timed out; the message names the ranks and the operation.
class dist_error : public Error { public: using Error::Error; };

namespace detail {
/// Streams every argument into one string: concat("a", 1, 'b') == "a1b".
template <class... Args>
std::string concat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}
}  // namespace detail

/// The message of the error raised when CUDA is asked for in a CPU-only build.
inline const char* no_cuda_message() {
  return "loom was built without CUDA; reconfigure with -DLOOM_CUDA=ON and link loom::cuda";
}

}  // namespace loom

/// Throws loom::ERR with the streamed message when COND is false. Always on, in every build.
/// Example: LOOM_CHECK(a.dim() == 2, shape_error, "mm: expected a matrix, got ", a.shape());
#define LOOM_CHECK(cond, ERR, ...)                                  \
  do {                                                              \
    if (!(cond)) throw ::loom::ERR(::loom::detail::concat(__VA_ARGS__)); \
  } while (0)

/// An internal invariant: checked in debug builds, compiled out under NDEBUG.
#define LOOM_ASSERT(cond) assert(cond)
