#pragma once
/// @file tokenizer.hpp
/// Byte-level BPE tokenizer: encoding/decoding (bpe.hpp), pre-tokenizer (pretokenizer.hpp),
/// file formats (io.hpp) and training (train.hpp). Independent of the tensor library.

#include "loom/tokenizer/bpe.hpp"
#include "loom/tokenizer/byte_unicode.hpp"
#include "loom/tokenizer/io.hpp"
#include "loom/tokenizer/pretokenizer.hpp"
#include "loom/tokenizer/train.hpp"
#include "loom/tokenizer/utf8.hpp"
