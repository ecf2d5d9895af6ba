// Fuzzes the safetensors reader (io/safetensors.hpp), under every checkpoint and Hugging Face
// weights file: malformed bytes must give loom::io_error, never a crash or an allocation larger
// than the input; a file that parses must write out to bytes that parse to the same tensors.
#include <cstring>

#include <loom/io/safetensors.hpp>

#include "fuzz_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const unsigned char* data, size_t size) {
  namespace io = loom::io;
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  io::SafetensorsFile f;
  try {
    f = io::parse_safetensors(bytes, "fuzz.safetensors");
  } catch (const loom::io_error&) {
    return 0;
  }
  size_t total = 0;
  io::NamedTensors tensors;
  for (const std::string& name : f.names) {
    total += f.at(name).nbytes();
    tensors.emplace_back(name, f.at(name));
  }
  LOOM_FUZZ_ASSERT(total <= size);  // every tensor's bytes come from the input
  const io::SafetensorsFile back = io::parse_safetensors(io::serialize_safetensors(tensors, f.metadata));
  LOOM_FUZZ_ASSERT(back.names == f.names && back.metadata == f.metadata);
  for (const std::string& name : f.names) {
    const loom::AnyTensor &a = f.at(name), &b = back.at(name);
    LOOM_FUZZ_ASSERT(a.dtype() == b.dtype() && a.shape() == b.shape());
    LOOM_FUZZ_ASSERT(std::memcmp(a.data(), b.data(), a.nbytes()) == 0);
  }
  return 0;
}
