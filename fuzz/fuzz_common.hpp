// Shared helpers for loom's tokenizer fuzz targets (libFuzzer).
#pragma once
#include <loom/tokenizer.hpp>

#include <cstdio>
#include <cstdlib>
#include <string>

#ifndef LOOM_TEST_DATA_DIR
#define LOOM_TEST_DATA_DIR "tests/data"
#endif

namespace loom_fuzz {

/// Aborts (a fuzzer "crash") when an invariant fails.
#define LOOM_FUZZ_ASSERT(cond)                                                  \
  do {                                                                          \
    if (!(cond)) {                                                              \
      std::fprintf(stderr, "invariant failed: %s (%s:%d)\n", #cond, __FILE__, __LINE__); \
      std::abort();                                                             \
    }                                                                           \
  } while (0)

/// Checks the encode/decode invariants of a tokenizer on one input.
inline void check_roundtrip(const loom::BpeTokenizer& tok, const std::string& s) {
  namespace tk = loom::tokenizer;
  auto ids = tok.encode_ordinary(s);
  LOOM_FUZZ_ASSERT(tok.decode(ids) == s);
  auto lossy = tok.decode_lossy(ids);
  LOOM_FUZZ_ASSERT(tk::to_valid_utf8(lossy) == lossy);
  try {
    auto with_special = tok.encode(s, tk::SpecialPolicy::all());
    LOOM_FUZZ_ASSERT(tok.decode(with_special) == s);
  } catch (const loom::value_error&) {
    LOOM_FUZZ_ASSERT(false);  // allowing every special token never fails
  }
}

}  // namespace loom_fuzz
