#pragma once
// Running loom's command-line programs (loom-train, loom-sample, loom-bpe) from a test: CMake
// passes their paths as LOOM_TRAIN_EXE, LOOM_SAMPLE_EXE and LOOM_BPE_EXE when it builds them
// (LOOM_BUILD_EXAMPLES), and the tests that need them are compiled only then.
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>

#include <loom/io/file.hpp>

namespace loom_test {

/// What a program did: its exit status (-1 when a signal ended it) and its stdout and stderr.
struct ProgramRun {
  int status = -1;
  std::string output;
};

/// `s` quoted for the POSIX shell.
inline std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

/// Runs shell command `command` in folder `dir`; stdout and stderr are captured together.
inline ProgramRun run_program(const std::string& command, const std::string& dir = ".") {
  static int counter = 0;
  const std::string log = (std::filesystem::temp_directory_path() /
                           ("loom_program_" + std::to_string(long(::getpid())) + "_" + std::to_string(counter++) + ".log"))
                              .string();
  const std::string line = "cd " + shell_quote(dir) + " && " + command + " > " + shell_quote(log) + " 2>&1";
  const int rc = std::system(line.c_str());
  ProgramRun run;
  run.status = rc != -1 && WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
  run.output = loom::io::read_file(log);
  std::filesystem::remove(log);
  return run;
}

}  // namespace loom_test
