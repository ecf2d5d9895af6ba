#pragma once
// A fresh folder for one test case, removed when the case ends, and a file writer (tests share
// them; they need only the standard library, so the data tests stay light to compile).
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

namespace loom_test {

/// $TMPDIR/loom_test_<pid>_<n>, created empty and removed with everything in it at the end.
struct TempDir {
  std::filesystem::path path;
  TempDir() {
    static int counter = 0;
    path = std::filesystem::temp_directory_path() /
           ("loom_test_" + std::to_string(long(::getpid())) + "_" + std::to_string(counter++));
    std::filesystem::remove_all(path);
    std::filesystem::create_directories(path);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  /// The path of `name` inside the folder.
  std::string file(const std::string& name) const { return (path / name).string(); }
  /// The same, as `dir / "name"`.
  std::string operator/(const std::string& name) const { return file(name); }
  /// Names of the entries in the folder, sorted.
  std::vector<std::string> list() const {
    std::vector<std::string> out;
    for (const auto& e : std::filesystem::directory_iterator(path)) out.push_back(e.path().filename().string());
    std::sort(out.begin(), out.end());
    return out;
  }
};

/// Writes `bytes` to `path`, creating its folders; throws std::runtime_error when it cannot.
inline void write_file(const std::string& path, const std::string& bytes) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), std::streamsize(bytes.size()));
  if (!out.good()) throw std::runtime_error("cannot write " + path);
}

}  // namespace loom_test
