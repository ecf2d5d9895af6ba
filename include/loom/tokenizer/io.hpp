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
