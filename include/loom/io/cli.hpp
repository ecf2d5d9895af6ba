#pragma once
/// @file cli.hpp
/// Command-line options for loom's programs: a table from each option's name to what it does
/// with its value, applied to argv by one loop, and strict number parsing, so that every program
/// refuses a bad option the same way and names it. A number must be the whole of its argument:
/// `--steps 10x`, `--steps 1e3`, `--seed -1` and `--lr nan` are errors, not 10, 1, 2^64 - 1
/// and NaN (what std::stoll, std::stoull and std::stod would make of them).

#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <limits>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>

#include "loom/core/error.hpp"

namespace loom::io {

/// The whole of s as a decimal integer in [lo, hi]: "12", "-3", "+4". Anything else ("", "12x",
/// " 3", "1e3", "0x10") throws std::invalid_argument, a value outside the range std::out_of_range.
inline int64_t to_integer(const std::string& s, int64_t lo = std::numeric_limits<int64_t>::min(),
                          int64_t hi = std::numeric_limits<int64_t>::max()) {
  size_t i = s.size() > 0 && (s[0] == '-' || s[0] == '+') ? 1 : 0;
  if (i == s.size()) throw std::invalid_argument("not an integer: '" + s + "'");
  for (size_t k = i; k < s.size(); ++k)
    if (s[k] < '0' || s[k] > '9') throw std::invalid_argument("not an integer: '" + s + "'");
  errno = 0;
  const long long v = std::strtoll(s.c_str(), nullptr, 10);
  if (errno == ERANGE || v < lo || v > hi) throw std::out_of_range("out of range: '" + s + "'");
  return int64_t(v);
}

/// The whole of s as a non-negative decimal integer ("0" .. "18446744073709551615"): a seed.
/// A sign, other characters or an overflow throw, as for to_integer.
inline uint64_t to_unsigned(const std::string& s) {
  if (s.empty()) throw std::invalid_argument("not a non-negative integer: ''");
  for (char c : s)
    if (c < '0' || c > '9') throw std::invalid_argument("not a non-negative integer: '" + s + "'");
  errno = 0;
  const unsigned long long v = std::strtoull(s.c_str(), nullptr, 10);
  if (errno == ERANGE) throw std::out_of_range("out of range: '" + s + "'");
  return uint64_t(v);
}

/// The whole of s as a finite number: "0.5", "-2", "3e-4", ".5". Trailing characters, "nan",
/// "inf", hexadecimal floats and overflow throw std::invalid_argument or std::out_of_range.
inline double to_number(const std::string& s) {
  const bool plain = !s.empty() && s.find_first_not_of("0123456789+-.eE") == std::string::npos;
  if (!plain) throw std::invalid_argument("not a number: '" + s + "'");
  errno = 0;
  char* end = nullptr;
  const double v = std::strtod(s.c_str(), &end);
  if (end != s.c_str() + s.size()) throw std::invalid_argument("not a number: '" + s + "'");
  if (errno == ERANGE && std::isinf(v)) throw std::out_of_range("out of range: '" + s + "'");
  return v;
}

/// A program's options: what each one does with its value(s). A handler parses and stores the
/// value (see store) or checks it and throws a value_error that says what is allowed (parse_options
/// passes it on as a usage_error).
struct OptionTable {
  using Handler = std::function<void(const std::string&)>;
  std::map<std::string, Handler> values;                  ///< --name VALUE
  std::map<std::string, std::function<void()>> switches;  ///< --name, with no value
  std::map<std::string, Handler> lists;  ///< --name V1 V2 ...: called once per value, up to the next --option
};

/// A handler that stores its value as it is.
inline OptionTable::Handler store(std::string& dst) {
  return [&dst](const std::string& v) { dst = v; };
}
/// A handler that stores a whole number (see to_integer).
inline OptionTable::Handler store(int64_t& dst) {
  return [&dst](const std::string& v) { dst = to_integer(v); };
}
/// A handler that stores a whole number that fits an int.
inline OptionTable::Handler store(int& dst) {
  return [&dst](const std::string& v) {
    dst = int(to_integer(v, std::numeric_limits<int>::min(), std::numeric_limits<int>::max()));
  };
}
/// A handler that stores a non-negative whole number (a seed; see to_unsigned).
inline OptionTable::Handler store(uint64_t& dst) {
  return [&dst](const std::string& v) { dst = to_unsigned(v); };
}
/// A handler that stores a finite number (see to_number).
inline OptionTable::Handler store(double& dst) {
  return [&dst](const std::string& v) { dst = to_number(v); };
}

/// Applies argv[first, argc) to the table, in order. Returns false at --help or -h (the options
/// after it are not applied; the caller prints its usage). Throws usage_error for an option the
/// table does not have ("unknown option '--x' for <context> (see --help)"), an option without its
/// value, a value its handler cannot parse ("option --steps: '10x' is not a number") and a
/// value_error its handler raises (with the handler's message).
inline bool parse_options(int argc, char** argv, int first, const OptionTable& table, const std::string& context = "") {
  for (int i = first; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--help" || a == "-h") return false;
    if (auto s = table.switches.find(a); s != table.switches.end()) {
      s->second();
      continue;
    }
    auto list = table.lists.find(a);
    auto value = table.values.find(a);
    LOOM_CHECK(list != table.lists.end() || value != table.values.end(), usage_error, "unknown option '", a, "'",
               context.empty() ? "" : " for ", context, " (see --help)");
    const bool has_value = i + 1 < argc && std::string(argv[i + 1]).rfind("--", 0) != 0;
    LOOM_CHECK(has_value || (value != table.values.end() && i + 1 < argc), usage_error, "option ", a, " needs a value");
    do {
      const std::string v = argv[++i];
      try {
        (list != table.lists.end() ? list->second : value->second)(v);
      } catch (const std::invalid_argument&) {
        throw usage_error("option " + a + ": '" + v + "' is not a number");
      } catch (const std::out_of_range&) {
        throw usage_error("option " + a + ": '" + v + "' is out of range");
      } catch (const usage_error&) {
        throw;
      } catch (const value_error& e) {
        throw usage_error(e.what());
      }
    } while (list != table.lists.end() && i + 1 < argc && std::string(argv[i + 1]).rfind("--", 0) != 0);
  }
  return true;
}

/// The exit status of a program that stops at `e`: 2 for a usage_error (how it was called), 1 for
/// any other error (what happened while it ran).
inline int exit_status(const std::exception& e) { return dynamic_cast<const usage_error*>(&e) ? 2 : 1; }

/// parse_options for a program with one usage text, as its main() uses it:
///   if (auto code = io::parse_options_or_usage(argc, argv, 1, table, "bench_gpt", usage)) return *code;
/// At --help it prints the usage to `out` and returns 0; for a bad option, or an error from
/// `check` (run after the options: a required one missing, say), it prints "PROGRAM: what is
/// wrong" and the usage to `err` and returns 2. It returns nothing when the program should go on.
inline std::optional<int> parse_options_or_usage(int argc, char** argv, int first, const OptionTable& table,
                                                 const std::string& program, const std::string& usage,
                                                 const std::function<void()>& check = nullptr, std::FILE* out = stdout,
                                                 std::FILE* err = stderr) {
  try {
    if (!parse_options(argc, argv, first, table, program)) {
      std::fprintf(out, "%s", usage.c_str());
      return 0;
    }
    if (check) check();
  } catch (const std::exception& e) {
    std::fprintf(err, "%s: %s\n%s", program.c_str(), e.what(), usage.c_str());
    return 2;
  }
  return std::nullopt;
}

}  // namespace loom::io
