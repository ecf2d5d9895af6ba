// Fuzzes the GPT-2 loader (encoder.json + vocab.bpe, split at the first NUL byte): malformed
// input must give loom::io_error, nothing else.
#include "fuzz_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const unsigned char* data, size_t size) {
  const std::string s(reinterpret_cast<const char*>(data), size);
  const size_t cut = s.find('\0');
  const std::string enc = s.substr(0, cut), bpe = cut == std::string::npos ? "" : s.substr(cut + 1);
  try {
    auto tok = loom::tokenizer::parse_gpt2(enc, bpe, "encoder.json", "vocab.bpe");
    loom_fuzz::check_roundtrip(tok, "Hello, world! 123 \xff");
  } catch (const loom::io_error&) {
  }
  return 0;
}
