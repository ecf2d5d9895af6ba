// Fuzzes the JSON parser (io/json.hpp), which reads checkpoint metadata, safetensors headers,
// tokenizer.json and every JSONL data file: malformed input must give io::json_error, and a
// text that parses must write out to a text that parses to the same value.
#include <loom/io/json.hpp>

#include "fuzz_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const unsigned char* data, size_t size) {
  namespace io = loom::io;
  const std::string_view s(reinterpret_cast<const char*>(data), size);
  io::JsonLimits limits;
  limits.max_values = 1 << 14;  // loom's readers set their own caps; this keeps each run short
  io::Json value;
  try {
    value = io::parse_json(s, limits, "fuzz.json");
  } catch (const io::json_error&) {
    return 0;
  }
  for (int indent : {-1, 2}) {
    const std::string text = indent < 0 ? value.dump() : value.dump(indent);
    const io::Json back = io::parse_json(text);  // what loom writes, loom reads (no limits needed)
    LOOM_FUZZ_ASSERT(back == value);
    LOOM_FUZZ_ASSERT((indent < 0 ? back.dump() : back.dump(indent)) == text);
  }
  return 0;
}
