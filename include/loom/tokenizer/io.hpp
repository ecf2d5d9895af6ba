#pragma once
/// @file io.hpp
/// Reading and writing tokenizer files, one header a format:
///  - format_loom.hpp: loom's own text format (loom::tokenizer::load / save), documented in
///    docs/06-bpe-tokenizer.md;
///  - format_gpt2.hpp: GPT-2's encoder.json + vocab.bpe;
///  - format_tiktoken.hpp: tiktoken rank files (base64 token, space, rank; one per line);
///  - format_hf.hpp: Hugging Face tokenizer.json for byte-level BPE models.
/// What they share (size limits, the line reader, JSON documents) is in format_common.hpp. Every
/// loader has a parse_* twin that reads from memory (used by tests and fuzzers). A malformed
/// file raises loom::io_error naming the file and line; sizes are capped so a hostile file cannot
/// make a loader allocate without bound. Files are written atomically (loom::io::write_file_atomic).

#include "loom/tokenizer/format_common.hpp"
#include "loom/tokenizer/format_gpt2.hpp"
#include "loom/tokenizer/format_hf.hpp"
#include "loom/tokenizer/format_loom.hpp"
#include "loom/tokenizer/format_tiktoken.hpp"

#include <string>

namespace loom::tokenizer {

/// The tokenizer named by a command-line spec, as loom-data, loom-train and loom-finetune take it:
///   bytes                      256 byte tokens, no merges, <|endoftext|> = 256
///   gpt2:DIR                   GPT-2's DIR/encoder.json + DIR/vocab.bpe
///   tiktoken:FILE:gpt2|cl100k  a tiktoken rank file and its pre-tokenizer pattern
///   hf:FILE                    a Hugging Face tokenizer.json (byte-level BPE)
///   loom:FILE, or a bare FILE  a model saved by loom-bpe
/// Throws value_error for an unknown kind, io_error for a file that cannot be read or parsed.
inline BpeTokenizer load_spec(const std::string& spec) {
  if (spec == "bytes") {
    std::vector<std::string> vocab(256);
    for (int b = 0; b < 256; ++b) vocab[size_t(b)] = std::string(1, char(b));
    return BpeTokenizer(Pattern::none, std::move(vocab), {}, {{"<|endoftext|>", 256}});
  }
  const size_t colon = spec.find(':');
  const std::string kind = colon == std::string::npos ? "" : spec.substr(0, colon),
                    arg = colon == std::string::npos ? spec : spec.substr(colon + 1);
  LOOM_CHECK(!arg.empty(), value_error, "tokenizer '", spec,
             "': expected bytes, gpt2:DIR, tiktoken:FILE:gpt2|cl100k, hf:FILE or loom:FILE");
  if (kind == "gpt2") return load_gpt2(arg);
  if (kind == "hf") return load_hf_json(arg);
  if (kind == "loom" || kind.empty()) return load(arg);
  if (kind == "tiktoken") {
    const size_t c2 = arg.rfind(':');
    LOOM_CHECK(c2 != std::string::npos, value_error, "tokenizer '", spec, "': tiktoken needs FILE:gpt2 or FILE:cl100k");
    const std::string file = arg.substr(0, c2), name = arg.substr(c2 + 1);
    LOOM_CHECK(name == "gpt2" || name == "cl100k", value_error, "tokenizer '", spec, "': unknown tiktoken pattern '",
               name, "' (gpt2 or cl100k)");
    return load_tiktoken(file, name == "gpt2" ? Pattern::gpt2 : Pattern::cl100k);
  }
  throw value_error("tokenizer '" + spec + "': unknown kind '" + kind + "' (bytes, gpt2, tiktoken, hf or loom)");
}

}  // namespace loom::tokenizer
