#pragma once
/// @file format_gpt2.hpp
/// GPT-2's own pair of files: encoder.json (byte-level token text -> id) and vocab.bpe (the
/// merges in rank order, one "left right" pair a line after a "#version" header).

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "loom/core/error.hpp"
#include "loom/io/file.hpp"
#include "loom/io/json.hpp"
#include "loom/tokenizer/bpe.hpp"
#include "loom/tokenizer/byte_unicode.hpp"
#include "loom/tokenizer/format_common.hpp"
#include "loom/tokenizer/pretokenizer.hpp"

namespace loom::tokenizer {

/// Parses GPT-2's encoder.json and vocab.bpe held in memory. Entries of encoder.json that no
/// merge produces and that look like <|...|> become special tokens (<|endoftext|>).
inline BpeTokenizer parse_gpt2(std::string_view encoder_json, std::string_view vocab_bpe, std::string_view encoder_name,
                               std::string_view bpe_name, Pattern pattern = Pattern::gpt2) {
  const detail::JsonDocument doc(encoder_json, encoder_name);
  const io::Json& root = doc.root();
  LOOM_CHECK(root.is_object(), io_error, encoder_name, ": expected a JSON object mapping tokens to ids");
  LOOM_CHECK(root.size() <= max_vocab_size, io_error, encoder_name, ": too many tokens");
  const std::size_t limit = 2 * root.size() + 256;
  std::unordered_map<std::string, std::uint32_t> encoder;  // byte-level text -> id
  std::vector<std::string> vocab;
  std::vector<std::string> raw;  // token text as written, by id
  std::vector<SpecialToken> specials;
  for (const auto& [key, v] : root.as_object()) {
    LOOM_CHECK(detail::is_token_id(v, limit), io_error, doc.where(v), ": token id must be an integer in [0, ", limit,
               ")");
    const auto id = static_cast<std::uint32_t>(v.as_int());
    LOOM_CHECK(!key.empty(), io_error, doc.where(v), ": empty token");
    LOOM_CHECK(encoder.emplace(key, id).second, io_error, doc.where(v), ": duplicate token '", key.substr(0, 64), "'");
    if (raw.size() <= id) raw.resize(id + 1);
    LOOM_CHECK(raw[id].empty(), io_error, doc.where(v), ": id ", id, " is used twice");
    raw[id] = key;
  }
  vocab.resize(raw.size());
  std::vector<char> made(raw.size(), 0);  // produced by a merge, or a single byte
  for (std::size_t id = 0; id < raw.size(); ++id) {
    if (raw[id].empty()) continue;
    auto bytes = byte_level_to_bytes(raw[id]);
    if (bytes && bytes->size() == 1) made[id] = 1;
    if (bytes) vocab[id] = std::move(*bytes);
  }
  detail::LineReader lines(vocab_bpe, bpe_name);
  std::vector<MergeRule> merges;
  std::string_view line;
  while (lines.next(line)) {
    if (line.empty() || (lines.line_no() == 1 && line.substr(0, 8) == "#version")) continue;
    auto f = detail::fields(line);
    if (f.size() != 2) lines.fail("expected '<left> <right>'");
    auto l = encoder.find(std::string(f[0]));
    auto r = encoder.find(std::string(f[1]));
    if (l == encoder.end() || r == encoder.end())
      lines.fail(loom::detail::concat("merge '", line.substr(0, 64), "' uses a token that is not in ", encoder_name));
    auto t = encoder.find(std::string(f[0]) + std::string(f[1]));
    if (t == encoder.end())
      lines.fail(loom::detail::concat("the result of merge '", line.substr(0, 64), "' is not in ", encoder_name));
    if (vocab[l->second].empty() || vocab[r->second].empty() || vocab[t->second].empty())
      lines.fail("merge uses a token that is not in GPT-2's byte-level alphabet");
    if (merges.size() >= max_vocab_size) lines.fail("too many merges");
    merges.push_back({l->second, r->second, t->second, static_cast<std::uint32_t>(merges.size())});
    made[t->second] = 1;
  }
  for (std::size_t id = 0; id < raw.size(); ++id) {
    if (raw[id].empty() || made[id]) continue;
    const std::string& k = raw[id];
    if (k.size() >= 4 && k.compare(0, 2, "<|") == 0 && k.compare(k.size() - 2, 2, "|>") == 0) {
      specials.push_back({k, static_cast<std::uint32_t>(id)});
      vocab[id].clear();
    } else {
      LOOM_CHECK(!vocab[id].empty(), io_error, encoder_name, ": token '", k.substr(0, 64),
                 "' is not in GPT-2's byte-level alphabet");
      throw io_error(loom::detail::concat(encoder_name, ": token '", k.substr(0, 64), "' (id ", id,
                                          ") is made by no merge in ", bpe_name, " (is ", bpe_name, " truncated?)"));
    }
  }
  return detail::build(encoder_name, pattern, std::move(vocab), std::move(merges), std::move(specials));
}

/// Loads GPT-2's tokenizer from a folder holding encoder.json and vocab.bpe.
inline BpeTokenizer load_gpt2(const std::string& dir, Pattern pattern = Pattern::gpt2) {
  const std::string enc = dir + "/encoder.json", bpe = dir + "/vocab.bpe";
  const std::string enc_text = io::read_file(enc, max_file_bytes);  // first: a missing folder names encoder.json
  return parse_gpt2(enc_text, io::read_file(bpe, max_file_bytes), enc, bpe, pattern);
}

/// GPT-2's two files as strings: {encoder.json, vocab.bpe}.
inline std::pair<std::string, std::string> to_gpt2(const BpeTokenizer& tok) {
  detail::require_unique_tokens(tok, "to_gpt2");
  std::vector<char> made(tok.vocab().size(), 0);
  for (const MergeRule& m : tok.merges()) made[m.id] = 1;
  for (std::size_t id = 0; id < tok.vocab().size(); ++id)
    LOOM_CHECK(tok.vocab()[id].size() <= 1 || made[id], value_error, "to_gpt2: token ", id,
               " is made by no merge, which vocab.bpe cannot express");
  std::string enc = "{";
  bool first = true;
  auto add = [&](const std::string& key, std::uint32_t id) {
    if (!first) enc += ", ";
    first = false;
    io::json_write_string(enc, key);
    enc += ": " + std::to_string(id);
  };
  for (std::size_t id = 0; id < tok.vocab().size(); ++id)
    if (!tok.vocab()[id].empty()) add(bytes_to_byte_level(tok.vocab()[id]), static_cast<std::uint32_t>(id));
  for (const SpecialToken& s : tok.special_tokens()) add(s.text, s.id);
  enc += "}";
  std::string bpe = "#version: 0.2\n";
  for (const MergeRule& m : tok.merges())
    bpe += bytes_to_byte_level(tok.vocab()[m.left]) + " " + bytes_to_byte_level(tok.vocab()[m.right]) + "\n";
  return {enc, bpe};
}

/// Writes encoder.json and vocab.bpe into folder dir, creating the folder (and its parents) if needed.
inline void save_gpt2(const BpeTokenizer& tok, const std::string& dir) {
  auto [enc, bpe] = to_gpt2(tok);
  io::make_directories(dir);
  io::write_file_atomic(dir + "/encoder.json", enc);
  io::write_file_atomic(dir + "/vocab.bpe", bpe);
}

}  // namespace loom::tokenizer
