// Fuzzes encode/decode: decode(encode(x)) == x for GPT-2, cl100k and a small trained tokenizer;
// the pre-tokenizer covers the input; parallel encoding equals serial; decoding arbitrary ids
// either works or throws value_error.
#include "fuzz_common.hpp"

namespace tk = loom::tokenizer;

extern "C" int LLVMFuzzerTestOneInput(const unsigned char* data, size_t size) {
  static const loom::BpeTokenizer gpt2 = tk::load_gpt2(std::string(LOOM_TEST_DATA_DIR) + "/tokenizer");
  static const loom::BpeTokenizer cl100k =
      tk::load_tiktoken(std::string(LOOM_TEST_DATA_DIR) + "/tokenizer/cl100k_base.tiktoken", tk::Pattern::cl100k);
  const std::string s(reinterpret_cast<const char*>(data), size);
  for (const loom::BpeTokenizer* t : {&gpt2, &cl100k}) {
    loom_fuzz::check_roundtrip(*t, s);
    LOOM_FUZZ_ASSERT(t->encode_parallel(s, tk::SpecialPolicy::as_text(), 2) == t->encode_ordinary(s));
  }
  for (auto p : {tk::Pattern::gpt2, tk::Pattern::cl100k}) {
    std::string joined;
    for (auto c : tk::split_chunks(s, p)) {
      LOOM_FUZZ_ASSERT(!c.empty());
      joined.append(c.data(), c.size());
    }
    LOOM_FUZZ_ASSERT(joined == s);
  }
  // Arbitrary ids: 3 bytes each.
  std::vector<std::uint32_t> ids;
  for (size_t i = 0; i + 3 <= size; i += 3) ids.push_back(data[i] | (data[i + 1] << 8) | ((data[i + 2] & 1u) << 16));
  try {
    (void)cl100k.decode(ids);
  } catch (const loom::value_error&) {
  }
  return 0;
}
