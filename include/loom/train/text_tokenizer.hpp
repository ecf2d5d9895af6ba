#pragma once
/// @file text_tokenizer.hpp
/// The tokenizer of a training run, and how a checkpoint carries it. A run uses one token per
/// distinct byte of its text (CharTokenizer) or a byte-level BPE model (BpeTokenizer); either way
/// the checkpoint's "tokenizer" metadata holds the whole tokenizer, so the checkpoint file alone
/// is enough to sample from the model, wherever it is moved:
///   {"kind":"char","chars_hex":"0a2021..."}        the characters in id order, hex-encoded
///   {"kind":"bpe","loom":"loom-bpe 1\n...","path":"jargon.bpe"}
///                                                 the model in loom's text format, and the file
///                                                 it came from (for reference only)
/// Checkpoints written before the model was embedded hold only {"kind":"bpe","path":...}; they
/// still load while that file can be read from the current folder.

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "loom/core/error.hpp"
#include "loom/io/checkpoint.hpp"
#include "loom/io/json.hpp"
#include "loom/tokenizer/bpe.hpp"
#include "loom/tokenizer/format_loom.hpp"
#include "loom/train/data.hpp"

namespace loom::train {

/// Characters or a BPE model: encodes text to ids and back, and saves itself as JSON metadata.
class TextTokenizer {
 public:
  /// One token per distinct byte of `text`.
  static TextTokenizer chars(const std::string& text) {
    TextTokenizer t;
    t.chars_ = CharTokenizer(text);
    return t;
  }
  /// A byte-level BPE model; `source` (the file it was read from) is recorded for reference.
  static TextTokenizer bpe(BpeTokenizer tok, std::string source = "") {
    TextTokenizer t;
    t.bpe_ = std::make_shared<const BpeTokenizer>(std::move(tok));
    t.source_ = std::move(source);
    return t;
  }
  /// The tokenizer saved by to_json(); `name` (the checkpoint's path) starts error messages.
  /// Throws io_error for malformed metadata, and for an old checkpoint that names its BPE model
  /// only by a path that cannot be read.
  static TextTokenizer from_json(const std::string& json, const std::string& name) {
    io::Json j;
    try {
      j = io::parse_json(json);
    } catch (const io::json_error& e) {
      throw io_error(loom::detail::concat(name, ": the tokenizer metadata is not valid JSON: ", e.what()));
    }
    auto text = [&](const char* key) -> std::string {
      const io::Json* v = j.is_object() ? j.find(key) : nullptr;
      LOOM_CHECK(v != nullptr && v->is_string(), io_error, name, ": the tokenizer metadata has no string \"", key,
                 "\"");
      return v->as_string();
    };
    const std::string kind = text("kind");
    if (kind == "char") return from_chars_hex(text("chars_hex"), name);
    LOOM_CHECK(kind == "bpe", io_error, name, ": unknown tokenizer kind '", kind, "' (expected char or bpe)");
    if (j.contains("loom")) {
      const std::string path = j.contains("path") ? text("path") : std::string();
      return bpe(tokenizer::parse_loom_text(text("loom"), name + " (its tokenizer)"), path);
    }
    const std::string path = text("path");
    try {
      return bpe(tokenizer::load(path), path);
    } catch (const io_error& e) {
      throw io_error(loom::detail::concat(
          name, ": this checkpoint does not contain its tokenizer, only the path '", path,
          "' it was trained with, which cannot be read (", e.what(),
          "); run from the folder it was trained in, give the tokenizer file (loom-sample --tokenizer FILE), or "
          "retrain with this loom so that the checkpoint carries it"));
    }
  }
  /// The tokenizer a checkpoint made by loom-train carries (its "tokenizer" metadata).
  static TextTokenizer from_checkpoint(const io::Checkpoint& c) { return from_json(c.meta("tokenizer"), c.source()); }

  /// True for a BPE model, false for characters.
  bool is_bpe() const { return bpe_ != nullptr; }
  /// The BPE model; throws value_error for a character tokenizer.
  const BpeTokenizer& bpe_model() const {
    LOOM_CHECK(is_bpe(), value_error, "TextTokenizer: a character tokenizer has no BPE model");
    return *bpe_;
  }
  /// The character vocabulary (empty for a BPE model).
  const CharTokenizer& char_model() const { return chars_; }
  /// Number of ids (the model's vocab_size).
  int64_t vocab_size() const { return is_bpe() ? int64_t(bpe_->vocab_size()) : chars_.vocab_size(); }
  /// Ids of `text`. BPE: special-token text is encoded as plain text; characters: throws
  /// value_error for a byte outside the vocabulary.
  std::vector<int64_t> encode(const std::string& text) const {
    if (!is_bpe()) return chars_.encode(text);
    std::vector<int64_t> ids;
    for (uint32_t id : bpe_->encode_parallel(text, tokenizer::SpecialPolicy::as_text())) ids.push_back(id);
    return ids;
  }
  /// The text of `ids` (BPE: bytes that are not valid UTF-8 become U+FFFD).
  std::string decode(const std::vector<int64_t>& ids) const {
    if (!is_bpe()) return chars_.decode(ids);
    std::vector<uint32_t> u;
    for (int64_t id : ids) {
      LOOM_CHECK(id >= 0 && id < vocab_size(), value_error, "TextTokenizer: id ", id, " out of range [0, ",
                 vocab_size(), ")");
      u.push_back(uint32_t(id));
    }
    return bpe_->decode_lossy(u);
  }
  /// Where an unconditional sample starts (an empty prompt): <|endoftext|> when the BPE model has
  /// it, else the id(s) of a newline; for characters, the newline, or id 0 when the text had none.
  std::vector<int64_t> start_ids() const {
    if (is_bpe()) {
      if (auto eot = bpe_->special_id("<|endoftext|>")) return {int64_t(*eot)};
      return encode("\n");
    }
    for (int64_t i = 0; i < chars_.vocab_size(); ++i)
      if (chars_.chars()[size_t(i)] == '\n') return {i};
    return {0};
  }
  /// The JSON metadata that from_json() reads back (see the file comment).
  std::string to_json() const {
    io::Json j = io::Json::object();
    if (!is_bpe()) {
      j.set("kind", "char");
      j.set("chars_hex", hex(chars_.chars()));
    } else {
      j.set("kind", "bpe");
      j.set("loom", tokenizer::to_loom_text(*bpe_));
      if (!source_.empty()) j.set("path", source_);  // older loom-sample reads the model from here
    }
    return j.dump();
  }

 private:
  static std::string hex(const std::string& s) {
    static const char* d = "0123456789abcdef";
    std::string h;
    for (unsigned char c : s) h += d[c >> 4], h += d[c & 15];
    return h;
  }
  static TextTokenizer from_chars_hex(const std::string& h, const std::string& name) {
    auto v = [&](char c) {
      if (c >= '0' && c <= '9') return c - '0';
      if (c >= 'a' && c <= 'f') return c - 'a' + 10;
      throw io_error(loom::detail::concat(name, ": the tokenizer's chars_hex holds '", c, "', not a hex digit"));
    };
    LOOM_CHECK(h.size() % 2 == 0, io_error, name, ": the tokenizer's chars_hex has an odd length ", h.size());
    std::string s;
    for (size_t i = 0; i < h.size(); i += 2) s.push_back(char(v(h[i]) * 16 + v(h[i + 1])));
    TextTokenizer t;
    t.chars_ = CharTokenizer::from_chars(s);
    return t;
  }

  CharTokenizer chars_;
  std::shared_ptr<const BpeTokenizer> bpe_;
  std::string source_;
};

}  // namespace loom::train
