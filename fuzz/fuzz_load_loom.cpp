// Fuzzes the loader of loom's own format: malformed input must give loom::io_error; a file that
// loads must save back to a file that loads to the same tokenizer.
#include "fuzz_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const unsigned char* data, size_t size) {
  namespace tk = loom::tokenizer;
  const std::string s(reinterpret_cast<const char*>(data), size);
  try {
    auto tok = tk::parse_loom_text(s, "fuzz.loom");
    loom_fuzz::check_roundtrip(tok, "Hello, world! 123 \xff");
    auto text = tk::to_loom_text(tok);
    auto back = tk::parse_loom_text(text, "again.loom");
    LOOM_FUZZ_ASSERT(tk::to_loom_text(back) == text);
  } catch (const loom::io_error&) {
  }
  return 0;
}
