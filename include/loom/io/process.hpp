#pragma once
/// @file process.hpp
/// Running an external program: `/bin/sh -c COMMAND` with some bytes on its stdin, collecting
/// everything it writes to stdout and stderr, with a time limit. (POSIX only.)
///
/// How it stays safe against a program that misbehaves:
/// - **No deadlock.** stdin is written and stdout/stderr are read together, in one poll() loop on
///   non-blocking pipes, so a child that writes a lot before it reads its input (or never reads
///   it) cannot block either side.
/// - **No SIGPIPE death.** A child that exits without reading all its input is not an error by
///   itself: SIGPIPE is blocked in the calling thread while it writes, the EPIPE ends the input,
///   and the pending signal is consumed before the signal mask is restored.
/// - **No hang.** The child runs in its own process group; when it has not finished (exited and
///   closed its output) within the time limit, the whole group gets SIGKILL, is reaped, and
///   run_process throws io_error. Output beyond 64 MiB on either stream stops it the same way.
/// - **No leak.** Every pipe end is closed on every path, and the child is always reaped.
///
/// The child is started with posix_spawn (cheap even from a process with a large memory
/// footprint), with an empty signal mask and SIGPIPE at its default action, and inherits the
/// environment and the working directory.

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <string>
#include <thread>

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "loom/core/error.hpp"

extern "C" {
extern char** environ;  // the environment the child inherits (POSIX)
}

namespace loom::io {

/// What a finished child process did.
struct ProcessResult {
  int exit_code = -1;  ///< its exit status when it exited normally, else -1
  int signal = 0;      ///< the signal that killed it (0 when it exited)
  std::string out;     ///< everything it wrote to stdout
  std::string err;     ///< everything it wrote to stderr
};

/// The most bytes run_process collects from either stdout or stderr before it stops the child.
inline constexpr size_t process_output_limit = size_t(64) << 20;

namespace detail {

/// A file descriptor that is closed when it goes out of scope.
class UniqueFd {
 public:
  /// Holds no descriptor.
  UniqueFd() = default;
  /// Takes ownership of `fd` (-1 for none).
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  /// Takes over the other's descriptor.
  UniqueFd(UniqueFd&& o) noexcept : fd_(o.release()) {}
  /// Closes its own descriptor and takes over the other's.
  UniqueFd& operator=(UniqueFd&& o) noexcept {
    if (this != &o) reset(o.release());
    return *this;
  }
  ~UniqueFd() { reset(); }
  /// The descriptor (-1 when none).
  int get() const { return fd_; }
  /// True when it holds a descriptor.
  explicit operator bool() const { return fd_ >= 0; }
  /// Closes the descriptor it holds (if any) and holds `fd` instead.
  void reset(int fd = -1) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }
  /// Gives up ownership and returns the descriptor.
  int release() {
    int fd = fd_;
    fd_ = -1;
    return fd;
  }

 private:
  int fd_ = -1;
};

/// A pipe: `read` and `write` ends, both close-on-exec, both numbered 3 or above (so placing
/// them on the child's 0, 1 and 2 never overwrites another pipe end).
struct Pipe {
  UniqueFd read;   ///< the read end
  UniqueFd write;  ///< the write end
};

/// Moves `fd` to a number >= 3 (close-on-exec) when it is 0, 1 or 2 (the caller's own standard
/// streams were closed); returns the new descriptor, or -1 on failure (closing `fd`).
inline int fd_above_stdio(int fd) {
  if (fd >= 3) return fd;
  int moved = ::fcntl(fd, F_DUPFD_CLOEXEC, 3);
  ::close(fd);
  return moved;
}

/// Opens a pipe (see Pipe); throws io_error naming `command` when it cannot.
inline Pipe make_pipe(const std::string& command) {
  int fds[2];
  LOOM_CHECK(::pipe2(fds, O_CLOEXEC) == 0, io_error, "command '", command, "': cannot create a pipe: ",
             std::strerror(errno));
  Pipe p;
  p.read.reset(fd_above_stdio(fds[0]));
  p.write.reset(fd_above_stdio(fds[1]));
  LOOM_CHECK(p.read && p.write, io_error, "command '", command, "': cannot create a pipe: ", std::strerror(errno));
  return p;
}

/// Makes `fd` non-blocking; throws io_error when it cannot.
inline void set_nonblocking(int fd) {
  int flags = ::fcntl(fd, F_GETFL);
  LOOM_CHECK(flags >= 0 && ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) == 0, io_error,
             "cannot make a pipe non-blocking: ", std::strerror(errno));
}

/// A started child: on destruction, unless it was reaped, its process group is killed and it
/// is reaped, so no path leaves a running child or a zombie behind.
class Child {
 public:
  /// Owns the child `pid`, the leader of its own process group.
  explicit Child(pid_t pid) : pid_(pid) {}
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;
  ~Child() {
    if (pid_ > 0) kill_and_reap();
  }
  /// Sends SIGKILL to the whole process group and waits for the child; returns its wait status.
  int kill_and_reap() {
    ::kill(-pid_, SIGKILL);
    ::kill(pid_, SIGKILL);  // in case the group is gone already
    return reap();
  }
  /// Waits for the child to end; returns its wait status.
  int reap() {
    int status = 0;
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
    pid_ = -1;
    return status;
  }
  /// Checks without waiting whether the child has ended; when it has, reaps it, stores its wait
  /// status in `status` and returns true.
  bool try_reap(int& status) {
    pid_t r;
    do r = ::waitpid(pid_, &status, WNOHANG);
    while (r < 0 && errno == EINTR);
    if (r == 0) return false;
    pid_ = -1;  // reaped (or, r < 0, not ours to wait for any more)
    if (r < 0) status = 0;
    return true;
  }

 private:
  pid_t pid_;
};

/// Blocks SIGPIPE in the calling thread for its lifetime; on destruction consumes a SIGPIPE that
/// became pending meanwhile (a write to a pipe nobody reads) and restores the old mask.
class SigpipeBlock {
 public:
  SigpipeBlock() {
    sigemptyset(&pipe_);
    sigaddset(&pipe_, SIGPIPE);
    sigset_t pending;
    sigemptyset(&pending);
    ::sigpending(&pending);
    was_pending_ = sigismember(&pending, SIGPIPE) == 1;
    ::pthread_sigmask(SIG_BLOCK, &pipe_, &old_);
  }
  SigpipeBlock(const SigpipeBlock&) = delete;
  SigpipeBlock& operator=(const SigpipeBlock&) = delete;
  ~SigpipeBlock() {
    if (!was_pending_) {
      sigset_t pending;
      sigemptyset(&pending);
      ::sigpending(&pending);
      if (sigismember(&pending, SIGPIPE) == 1) {
        timespec zero{0, 0};
        while (::sigtimedwait(&pipe_, nullptr, &zero) < 0 && errno == EINTR) {
        }
      }
    }
    ::pthread_sigmask(SIG_SETMASK, &old_, nullptr);
  }

 private:
  sigset_t pipe_, old_;
  bool was_pending_ = false;
};

/// Fills ProcessResult's exit_code and signal from a wait status.
inline void decode_wait_status(int status, ProcessResult& r) {
  if (WIFEXITED(status)) {
    r.exit_code = WEXITSTATUS(status);
    r.signal = 0;
  } else if (WIFSIGNALED(status)) {
    r.exit_code = -1;
    r.signal = WTERMSIG(status);
  }
}

/// Starts `/bin/sh -c command` in its own process group, with the given descriptors as its
/// stdin, stdout and stderr; throws io_error when it cannot be started.
inline pid_t spawn_shell(const std::string& command, int in_fd, int out_fd, int err_fd) {
  posix_spawn_file_actions_t actions;
  posix_spawnattr_t attr;
  LOOM_CHECK(::posix_spawn_file_actions_init(&actions) == 0, io_error, "command '", command,
             "': cannot start /bin/sh: posix_spawn_file_actions_init failed");
  if (::posix_spawnattr_init(&attr) != 0) {
    ::posix_spawn_file_actions_destroy(&actions);
    throw io_error(loom::detail::concat("command '", command, "': cannot start /bin/sh: posix_spawnattr_init failed"));
  }
  sigset_t none, sigpipe_only;
  sigemptyset(&none);
  sigemptyset(&sigpipe_only);
  sigaddset(&sigpipe_only, SIGPIPE);
  int rc = 0;
  auto step = [&rc](int r) {
    if (rc == 0) rc = r;
  };
  step(::posix_spawn_file_actions_adddup2(&actions, in_fd, 0));
  step(::posix_spawn_file_actions_adddup2(&actions, out_fd, 1));
  step(::posix_spawn_file_actions_adddup2(&actions, err_fd, 2));
  step(::posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF));
  step(::posix_spawnattr_setpgroup(&attr, 0));     // a new group led by the child
  step(::posix_spawnattr_setsigmask(&attr, &none)); // nothing blocked
  step(::posix_spawnattr_setsigdefault(&attr, &sigpipe_only));  // SIGPIPE at its default, even if we ignore it
  pid_t pid = -1;
  if (rc == 0) {
    const char* argv[] = {"sh", "-c", command.c_str(), nullptr};
    rc = ::posix_spawn(&pid, "/bin/sh", &actions, &attr, const_cast<char* const*>(argv), environ);
  }
  ::posix_spawnattr_destroy(&attr);
  ::posix_spawn_file_actions_destroy(&actions);
  LOOM_CHECK(rc == 0, io_error, "command '", command, "': cannot start /bin/sh: ", std::strerror(rc));
  return pid;
}

}  // namespace detail

/// Runs `/bin/sh -c command` with `input` on its stdin (closed after), collecting stdout and stderr.
/// Throws io_error when the process cannot be started, when it writes more than
/// process_output_limit bytes to stdout or stderr, or when it has not finished within timeout_s
/// seconds (it and its children are then killed: it runs in its own process group, and the group
/// gets SIGKILL). "Finished" means exited with both output streams closed, so a background
/// child that keeps them open counts as still running. timeout_s must be > 0 (infinity: no
/// limit); a non-zero exit status or death by a signal is reported in the result, not thrown.
inline ProcessResult run_process(const std::string& command, const std::string& input, double timeout_s) {
  using clock = std::chrono::steady_clock;
  LOOM_CHECK(timeout_s > 0, value_error, "command '", command, "': the time limit must be > 0 seconds, got ",
             timeout_s);
  const bool limited = std::isfinite(timeout_s);
  const auto start = clock::now();
  const auto deadline =
      limited ? start + std::chrono::duration_cast<clock::duration>(std::chrono::duration<double>(timeout_s))
              : clock::time_point::max();

  detail::Pipe in = detail::make_pipe(command), out = detail::make_pipe(command), err = detail::make_pipe(command);
  detail::Child child(detail::spawn_shell(command, in.read.get(), out.write.get(), err.write.get()));
  // The child holds its own copies now; ours must go, or EOF would never come.
  in.read.reset();
  out.write.reset();
  err.write.reset();
  detail::set_nonblocking(in.write.get());
  detail::set_nonblocking(out.read.get());
  detail::set_nonblocking(err.read.get());

  const auto timed_out = [&]() -> io_error {
    child.kill_and_reap();
    return io_error(loom::detail::concat("command '", command, "' did not finish within ", timeout_s,
                                         " s; it was stopped"));
  };
  // Milliseconds left for poll (-1: no limit); 0 once the deadline has passed.
  const auto ms_left = [&]() -> int {
    if (!limited) return -1;
    const auto now = clock::now();
    if (now >= deadline) return 0;
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now).count() + 1;  // round up
    return int(std::min<long long>(left, 1 << 30));
  };

  ProcessResult result;
  size_t written = 0;
  if (input.empty()) in.write.reset();
  {
    detail::SigpipeBlock no_sigpipe;
    char buf[65536];
    while (out.read || err.read) {
      pollfd fds[3];
      nfds_t n = 0;
      int i_in = -1, i_out = -1, i_err = -1;
      if (in.write) i_in = int(n), fds[n++] = pollfd{in.write.get(), POLLOUT, 0};
      if (out.read) i_out = int(n), fds[n++] = pollfd{out.read.get(), POLLIN, 0};
      if (err.read) i_err = int(n), fds[n++] = pollfd{err.read.get(), POLLIN, 0};
      const int wait_ms = ms_left();
      if (wait_ms == 0) throw timed_out();
      int r = ::poll(fds, n, wait_ms);
      if (r < 0) {
        LOOM_CHECK(errno == EINTR, io_error, "command '", command, "': poll failed: ", std::strerror(errno));
        continue;
      }
      if (r == 0) continue;  // the deadline is checked at the top
      if (i_in >= 0 && fds[i_in].revents) {
        ssize_t w = ::write(in.write.get(), input.data() + written, input.size() - written);
        if (w > 0) {
          written += size_t(w);
          if (written == input.size()) in.write.reset();  // all given: the child sees EOF
        } else if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
          in.write.reset();  // EPIPE: the child stopped reading; the rest of the input is dropped
        }
      }
      const auto drain = [&](int idx, detail::UniqueFd& fd, std::string& into, const char* name) {
        if (idx < 0 || !fds[idx].revents) return;
        for (;;) {
          ssize_t got = ::read(fd.get(), buf, sizeof(buf));
          if (got > 0) {
            into.append(buf, size_t(got));
            if (into.size() > process_output_limit) {
              child.kill_and_reap();
              throw io_error(loom::detail::concat("command '", command, "' wrote more than ",
                                                  process_output_limit >> 20, " MiB to ", name, "; it was stopped"));
            }
            continue;
          }
          if (got < 0 && errno == EINTR) continue;
          if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
          fd.reset();  // EOF (or a read error: nothing more will come)
          return;
        }
      };
      drain(i_out, out.read, result.out, "stdout");
      drain(i_err, err.read, result.err, "stderr");
    }
  }
  in.write.reset();

  // Both streams are closed; wait for the exit itself, still within the time limit.
  int status = 0;
  for (auto nap = std::chrono::microseconds(200); !child.try_reap(status);) {
    if (limited && clock::now() >= deadline) throw timed_out();
    std::this_thread::sleep_for(nap);
    nap = std::min<std::chrono::microseconds>(nap * 2, std::chrono::milliseconds(20));
  }
  detail::decode_wait_status(status, result);
  return result;
}

}  // namespace loom::io
