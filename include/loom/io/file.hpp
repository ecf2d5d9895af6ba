#pragma once
/// @file file.hpp
/// Atomic file writes: the bytes go to `path.tmp.<pid>`, are flushed and fsync'ed, and the
/// temporary file is renamed over `path`. A crash or an error at any point leaves either the old
/// file or the complete new one at `path`, never a half-written one. (POSIX: rename(2) replaces
/// the target atomically within one file system.) A process killed mid-write leaves its
/// `path.tmp.<pid>` behind; remove_stale_temp_files clears those once the writer is gone.

#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include "loom/core/error.hpp"

namespace loom::io {

/// An open output file that checks every write; handed to the body of write_file_atomic.
class FileWriter {
 public:
  /// Wraps an open FILE*; `name` is used in error messages.
  FileWriter(std::FILE* f, std::string name) : f_(f), name_(std::move(name)) {}
  /// Appends n bytes; throws io_error when the write fails (disk full, I/O error).
  void write(const void* data, size_t n) {
    if (n == 0) return;
    LOOM_CHECK(std::fwrite(data, 1, n, f_) == n, io_error, name_, ": write of ", n, " bytes failed: ",
               std::strerror(errno));
    written_ += n;
  }
  /// Appends a string's bytes.
  void write(std::string_view s) { write(s.data(), s.size()); }
  /// Bytes written so far.
  size_t bytes_written() const { return written_; }

 private:
  std::FILE* f_;
  std::string name_;
  size_t written_ = 0;
};

/// The temporary file name write_file_atomic uses for `path`: `path.tmp.<pid>`.
inline std::string atomic_temp_path(const std::string& path) {
  return path + ".tmp." + std::to_string(long(::getpid()));
}

/// Writes a file atomically: `body` writes the contents through a FileWriter into a temporary
/// file next to `path`, which is then flushed, fsync'ed and renamed over `path`. If `body` throws
/// or any step fails, the temporary file is removed, `path` is left untouched, and the error
/// (an io_error for file-system failures) propagates.
inline void write_file_atomic(const std::string& path, const std::function<void(FileWriter&)>& body) {
  const std::string tmp = atomic_temp_path(path);
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  LOOM_CHECK(f != nullptr, io_error, path, ": cannot create the temporary file '", tmp, "': ", std::strerror(errno));
  try {
    FileWriter w(f, path);
    body(w);
    LOOM_CHECK(std::fflush(f) == 0, io_error, path, ": flushing '", tmp, "' failed: ", std::strerror(errno));
    LOOM_CHECK(::fsync(::fileno(f)) == 0, io_error, path, ": fsync of '", tmp, "' failed: ", std::strerror(errno));
    std::FILE* g = f;
    f = nullptr;
    LOOM_CHECK(std::fclose(g) == 0, io_error, path, ": closing '", tmp, "' failed: ", std::strerror(errno));
    LOOM_CHECK(std::rename(tmp.c_str(), path.c_str()) == 0, io_error, path, ": renaming '", tmp,
               "' into place failed: ", std::strerror(errno));
  } catch (...) {
    if (f) std::fclose(f);
    std::remove(tmp.c_str());
    throw;
  }
  // Make the rename itself durable: fsync the directory (best effort; some file systems refuse).
  std::string dir = ".";
  size_t slash = path.find_last_of('/');
  if (slash != std::string::npos) dir = slash == 0 ? "/" : path.substr(0, slash);
  int fd = ::open(dir.c_str(), O_RDONLY);
  if (fd >= 0) {
    (void)::fsync(fd);
    ::close(fd);
  }
}

/// Writes `bytes` to `path` atomically (see the overload taking a body).
inline void write_file_atomic(const std::string& path, std::string_view bytes) {
  write_file_atomic(path, [&](FileWriter& w) { w.write(bytes); });
}

/// Throws io_error "<path> is a directory, not a file" when `path` names a folder. Readers call it
/// first: opening a folder for reading succeeds on POSIX, and only the reads fail, obscurely.
inline void require_not_directory(const std::string& path) {
  struct stat st {};
  LOOM_CHECK(::stat(path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode), io_error, path, " is a directory, not a file");
}

/// Reads a whole file; throws io_error naming the file when it is a folder, cannot be opened or
/// read, or is larger than `max_bytes`.
inline std::string read_file(const std::string& path, size_t max_bytes = size_t(-1)) {
  require_not_directory(path);
  std::FILE* f = std::fopen(path.c_str(), "rb");
  LOOM_CHECK(f != nullptr, io_error, path, ": cannot open for reading: ", std::strerror(errno));
  std::string out;
  char buf[1 << 16];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), f)) > 0) {
    if (out.size() + n > max_bytes) {
      std::fclose(f);
      throw io_error(loom::detail::concat(path, ": file is larger than the limit of ", max_bytes, " bytes"));
    }
    out.append(buf, n);
  }
  bool err = std::ferror(f) != 0;
  int read_errno = errno;
  std::fclose(f);
  LOOM_CHECK(!err, io_error, path, ": read error: ", std::strerror(read_errno));
  return out;
}

/// Creates folder `dir` and any missing parents (nothing to do when it exists); throws io_error
/// naming the folder when it cannot be made, or when `dir` exists but is not a folder.
inline void make_directories(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  LOOM_CHECK(!ec, io_error, dir, ": cannot create the folder: ", ec.message());
  LOOM_CHECK(std::filesystem::is_directory(dir, ec), io_error, dir, " exists and is not a folder");
}

/// Removes the temporary files `path.tmp.<pid>` that write_file_atomic left next to `path` when
/// its process was killed mid-write: only those whose <pid> is not a running process (another
/// live writer's file stays, and so does this process's own). Returns the paths removed; a file
/// that cannot be removed is skipped. A missing folder means there is nothing to remove.
inline std::vector<std::string> remove_stale_temp_files(const std::string& path) {
  namespace fs = std::filesystem;
  const fs::path target(path);
  const fs::path dir = target.has_parent_path() ? target.parent_path() : fs::path(".");
  const std::string prefix = target.filename().string() + ".tmp.";
  std::vector<std::string> removed;
  std::error_code ec;
  fs::directory_iterator it(dir, ec), end;
  for (; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.size() <= prefix.size() || name.compare(0, prefix.size(), prefix) != 0) continue;
    const char* first = name.data() + prefix.size();
    const char* last = name.data() + name.size();
    pid_t pid = 0;
    auto r = std::from_chars(first, last, pid);
    if (r.ec != std::errc() || r.ptr != last || pid <= 0) continue;  // not one of ours
    if (pid == ::getpid() || ::kill(pid, 0) == 0 || errno == EPERM) continue;  // the writer lives
    std::error_code rm;
    if (fs::remove(it->path(), rm)) removed.push_back(it->path().string());
  }
  return removed;
}

}  // namespace loom::io
