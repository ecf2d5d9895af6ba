// Fuzzes the Hugging Face tokenizer.json loader: malformed input must give loom::io_error.
#include "fuzz_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const unsigned char* data, size_t size) {
  const std::string s(reinterpret_cast<const char*>(data), size);
  try {
    auto tok = loom::tokenizer::parse_hf_json(s, "tokenizer.json");
    loom_fuzz::check_roundtrip(tok, "Hello, world! 123 \xff");
  } catch (const loom::io_error&) {
  }
  return 0;
}
