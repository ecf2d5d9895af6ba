// Fuzzes the tiktoken rank-file loader: malformed input must give loom::io_error, nothing else.
#include "fuzz_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const unsigned char* data, size_t size) {
  const std::string s(reinterpret_cast<const char*>(data), size);
  try {
    auto tok = loom::tokenizer::parse_tiktoken(s, loom::tokenizer::Pattern::cl100k, "fuzz.tiktoken");
    loom_fuzz::check_roundtrip(tok, "Hello, world! 123 \xff");
  } catch (const loom::io_error&) {
  }
  return 0;
}
