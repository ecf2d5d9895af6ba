// Fuzzes training: any text trains without error for each pattern, the merges are consistent,
// and the trained tokenizer round-trips the text and survives save/load in loom's format.
#include "fuzz_common.hpp"

namespace tk = loom::tokenizer;

extern "C" int LLVMFuzzerTestOneInput(const unsigned char* data, size_t size) {
  if (size < 1) return 0;
  const std::string s(reinterpret_cast<const char*>(data) + 1, size - 1);
  tk::TrainOptions opt;
  opt.vocab_size = 256 + data[0] % 64;
  opt.pattern = static_cast<tk::Pattern>(data[0] % 3);
  opt.special_tokens = {"<|x|>"};
  loom::BpeTokenizer tok = tk::train_bpe(s, opt);
  LOOM_FUZZ_ASSERT(tok.merges().size() <= opt.vocab_size - 256);
  loom_fuzz::check_roundtrip(tok, s);
  loom::BpeTokenizer back = tk::parse_loom_text(tk::to_loom_text(tok), "mem");
  LOOM_FUZZ_ASSERT(back.encode_ordinary(s) == tok.encode_ordinary(s));
  return 0;
}
