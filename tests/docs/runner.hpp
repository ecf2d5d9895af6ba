#pragma once
// The runner of the docs test: the generated translation unit (tests/docs/docs_test.cmake) defines
// one entry per ```cpp block of README.md and docs/*.md and calls loom_docs::main.
//
//   loom_docs               runs every block, prints one line per block and a summary
//   loom_docs ID...         runs the blocks named (IDs as in ctest: 02-autograd:1), exits 77 when
//                           every one of them is a skipped block
//   loom_docs --list        prints the IDs
//
// Each runnable block runs in a fresh directory LOOM_DOCS_RUN_DIR/<ID> in which `tests` links to
// the repository's tests/ folder (LOOM_DOCS_SOURCE_DIR/tests; both paths are compiled in, and an
// environment variable of the same name overrides each, for a binary run on another machine), so that a path the page writes from the repository root (such
// as tests/data/tokenizer) reads the same, and the files a block writes stay in the build tree.
// What a block prints on std::cout is captured, shown, and compared with the page's output block
// when it has one (see compare()).

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#if defined(LOOM_WITH_CUDA) && LOOM_WITH_CUDA
#include "loom/backend/cuda/cuda_api.hpp"
#endif

namespace loom_docs {

/// One ```cpp block of a page.
struct Block {
  const char* id;          ///< "<page>:<n>", n counting the page's ```cpp blocks from 1
  const char* where;       ///< "docs/02-autograd.md:12", the line of the opening fence
  int (*run)();            ///< runs the block (null for a quote or a block the generator refused)
  const char* expected;    ///< the page's output block, or null
  double tolerance;        ///< relative tolerance for the numbers of `expected` (0: exact)
  const char* quote_file;  ///< a file the block must appear in verbatim, or null
  const char* quote_text;  ///< the block's text, for quote_file
  const char* skip;        ///< why the block is compiled but not run, or null
  bool gpu;                ///< run only when this program has loom::cuda and a CUDA device
  const char* error;       ///< why the generator could not classify the block, or null
};

/// The repository root and the folder for the blocks' scratch directories.
inline std::string source_dir() {
  const char* env = std::getenv("LOOM_DOCS_SOURCE_DIR");
  return env ? env : LOOM_DOCS_SOURCE_DIR;
}
inline std::string run_dir() {
  const char* env = std::getenv("LOOM_DOCS_RUN_DIR");
  return env ? env : LOOM_DOCS_RUN_DIR;
}

/// True when this program links loom::cuda and a CUDA device is present.
inline bool gpu_present() {
#if defined(LOOM_WITH_CUDA) && LOOM_WITH_CUDA
  return loom::cuda::is_available();
#else
  return false;
#endif
}

/// main(int, char**) and main() both: a block that is a whole program keeps its signature.
inline int call_main(int (*f)()) { return f(); }
inline int call_main(int (*f)(int, char**)) {
  static char name[] = "doc", *argv[] = {name, nullptr};
  return f(1, argv);
}

/// Drops trailing blanks of every line and trailing blank lines: Markdown editors strip them.
inline std::string normalise(const std::string& s) {
  std::istringstream in(s);
  std::string line, out;
  while (std::getline(in, line)) {
    line.erase(line.find_last_not_of(" \t\r") + 1);
    out += line + "\n";
  }
  while (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

/// Compares printed output with the page's. With tolerance 0 the texts must be equal (after
/// normalise()); otherwise the text between numbers must be equal and each number within
/// tolerance * max(1, |expected|) of the page's. Returns an empty string when they agree.
inline std::string compare(const std::string& got_raw, const std::string& want_raw, double tolerance) {
  const std::string got = normalise(got_raw), want = normalise(want_raw);
  auto show = [&](const std::string& why) {
    return why + "\n--- the page shows ---\n" + want + "\n--- the block printed ---\n" + got + "\n---";
  };
  if (tolerance <= 0) {
    if (got == want) return "";
    std::istringstream a(got), b(want);
    std::string la, lb;
    for (int line = 1;; ++line) {
      bool ha = bool(std::getline(a, la)), hb = bool(std::getline(b, lb));
      if (!ha && !hb) break;
      if (!ha || !hb || la != lb)
        return show("output line " + std::to_string(line) + " differs: printed '" + (ha ? la : "<end>") +
                    "', the page shows '" + (hb ? lb : "<end>") + "'");
    }
    return show("output differs");
  }
  static const std::regex number(R"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?(?:nan|inf))");
  auto split = [](const std::string& s, std::vector<std::string>& text, std::vector<double>& nums) {
    size_t at = 0;
    for (auto it = std::sregex_iterator(s.begin(), s.end(), number); it != std::sregex_iterator(); ++it) {
      text.push_back(s.substr(at, size_t(it->position()) - at));
      nums.push_back(std::strtod(it->str().c_str(), nullptr));
      at = size_t(it->position() + it->length());
    }
    text.push_back(s.substr(at));
  };
  std::vector<std::string> tg, tw;
  std::vector<double> ng, nw;
  split(got, tg, ng);
  split(want, tw, nw);
  if (tg != tw) return show("the text around the numbers differs");
  for (size_t i = 0; i < nw.size(); ++i) {
    bool same = (std::isnan(ng[i]) && std::isnan(nw[i])) || ng[i] == nw[i] ||
                std::fabs(ng[i] - nw[i]) <= tolerance * std::max(1.0, std::fabs(nw[i]));
    if (!same) {
      std::ostringstream why;
      why << "number " << i + 1 << " differs beyond the tolerance " << tolerance << ": printed " << ng[i]
          << ", the page shows " << nw[i];
      return show(why.str());
    }
  }
  return "";
}

/// Empty when `text` appears verbatim in the file, else what is wrong.
inline std::string check_quote(const std::string& file, const std::string& text) {
  std::ifstream in(source_dir() + "/" + file, std::ios::binary);
  if (!in) return "the quoted file " + file + " does not exist";
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string content = ss.str();
  if (content.find(text) != std::string::npos) return "";
  std::istringstream lines(text);
  std::string line;
  while (std::getline(lines, line))
    if (content.find(line) == std::string::npos)
      return "the quote is not in " + file + "; this line of it is nowhere in the file:\n  " + line;
  return "the quote is not in " + file + " as one piece (each line is there, but not in this order)";
}

/// Runs one block; returns 0 (passed), 1 (failed) or 77 (skipped), and says why.
inline int run_one(const Block& b) {
  namespace fs = std::filesystem;
  std::cout << b.id << " (" << b.where << ")" << std::endl;  // shown even if the block crashes
  if (b.error) {
    std::cout << "  FAILED: " << b.error << "\n";
    return 1;
  }
  if (b.quote_file) {
    std::string why = check_quote(b.quote_file, b.quote_text);
    if (!why.empty()) {
      std::cout << "  FAILED: " << why << "\n";
      return 1;
    }
    std::cout << "  quote found in " << b.quote_file << "\n";
  }
  if (!b.run) return 0;
  if (b.gpu && !gpu_present()) {
    std::cout << "  compiled, not run: needs a GPU (a build with loom::cuda, on a machine with a CUDA device)\n";
    return 77;
  }
  if (b.skip) {
    std::cout << "  compiled, not run: " << b.skip << "\n";
    return 77;
  }
  std::string name = b.id;
  for (char& c : name)
    if (c == ':') c = '_';
  const fs::path dir = fs::path(run_dir()) / name;
  const fs::path old = fs::current_path();
  fs::remove_all(dir);
  fs::create_directories(dir);
  fs::create_directory_symlink(fs::path(source_dir()) / "tests", dir / "tests");
  fs::current_path(dir);
  std::ostringstream captured;
  std::streambuf* saved = std::cout.rdbuf(captured.rdbuf());
  int rc = 0;
  std::string failure;
  try {
    rc = b.run();
    if (rc != 0) failure = "the program returned " + std::to_string(rc);
  } catch (const std::exception& e) {
    failure = std::string("threw: ") + e.what();
  } catch (...) {
    failure = "threw something that is not a std::exception";
  }
  std::cout.rdbuf(saved);
  fs::current_path(old);
  std::cout << captured.str();
  if (failure.empty() && b.expected) failure = compare(captured.str(), b.expected, b.tolerance);
  if (!failure.empty()) {
    std::cout << "  FAILED: " << failure << "\n";
    return 1;
  }
  std::cout << "  passed" << (b.expected ? " (output matches the page)" : "") << "\n";
  return 0;
}

template <size_t N>
int main(const Block (&blocks)[N], int argc, char** argv) {
  std::vector<const Block*> chosen;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--list") {
      for (const Block& b : blocks) std::cout << b.id << "\n";
      return 0;
    }
    const Block* found = nullptr;
    for (const Block& b : blocks)
      if (a == b.id) found = &b;
    if (!found) {
      std::cerr << "loom_docs: no block '" << a << "' (see --list)\n";
      return 2;
    }
    chosen.push_back(found);
  }
  if (chosen.empty())
    for (const Block& b : blocks) chosen.push_back(&b);
  int passed = 0, failed = 0, skipped = 0;
  for (const Block* b : chosen) {
    int rc = run_one(*b);
    (rc == 0 ? passed : rc == 77 ? skipped : failed) += 1;
  }
  if (chosen.size() > 1)
    std::cout << passed << " passed, " << failed << " failed, " << skipped << " compiled but not run\n";
  if (failed) return 1;
  return skipped == int(chosen.size()) ? 77 : 0;
}

}  // namespace loom_docs
