#pragma once
/// @file format_common.hpp
/// What the tokenizer file formats share: the size limits, a line reader and a JSON document that
/// name the file and line in their errors, small field parsers, and the final consistency check.
/// The formats themselves are format_loom.hpp, format_tiktoken.hpp, format_gpt2.hpp and
/// format_hf.hpp; io.hpp includes them all. Files are read with loom::io::read_file and written
/// with loom::io::write_file_atomic.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "loom/core/error.hpp"
#include "loom/io/json.hpp"
#include "loom/tokenizer/bpe.hpp"
#include "loom/tokenizer/pretokenizer.hpp"
#include "loom/tokenizer/utf8.hpp"

namespace loom::tokenizer {

/// Largest tokenizer file any loader accepts.
inline constexpr std::size_t max_file_bytes = std::size_t{1} << 30;
/// Longest line accepted in the line-based formats (vocab.bpe, *.tiktoken, loom).
inline constexpr std::size_t max_line_bytes = std::size_t{1} << 16;
/// Most ordinary tokens a vocabulary may have.
inline constexpr std::size_t max_vocab_size = std::size_t{1} << 22;
/// Largest JSON document (encoder.json, tokenizer.json) the loaders accept.
inline constexpr std::size_t max_json_bytes = std::size_t{1} << 27;

namespace detail {

/// Iterates over the lines of a text, counting them and capping their length.
class LineReader {
 public:
  /// A reader over `text`; `name` (the file name) starts every error message.
  LineReader(std::string_view text, std::string_view name) : s_(text), name_(name) {}
  /// The next line without its '\n' (and a trailing '\r'); false at the end.
  bool next(std::string_view& line) {
    if (pos_ >= s_.size()) return false;
    std::size_t end = s_.find('\n', pos_);
    if (end == std::string_view::npos) end = s_.size();
    ++line_no_;
    LOOM_CHECK(end - pos_ <= max_line_bytes, io_error, name_, ":", line_no_, ": line is longer than ",
               max_line_bytes, " bytes");
    line = s_.substr(pos_, end - pos_);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    pos_ = end + 1;
    return true;
  }
  /// 1-based number of the line last returned.
  std::size_t line_no() const { return line_no_; }
  /// Throws io_error "name:line: what".
  [[noreturn]] void fail(const std::string& what) const {
    throw io_error(loom::detail::concat(name_, ":", line_no_, ": ", what));
  }

 private:
  std::string_view s_, name_;
  std::size_t pos_ = 0, line_no_ = 0;
};

/// A tokenizer's JSON file (encoder.json, tokenizer.json), parsed, with the name and text its
/// messages need: a malformed or oversized file is an io_error "name:line: malformed JSON: ...",
/// and where() names the line of any value the loader cannot use.
class JsonDocument {
 public:
  /// Parses `text` (the contents of file `name`). Keys may repeat: the loaders report a repeated
  /// token themselves, with its line.
  JsonDocument(std::string_view text, std::string_view name) : text_(text), name_(name) {
    LOOM_CHECK(text.size() <= max_json_bytes, io_error, name, ": JSON file is larger than 128 MiB");
    io::JsonLimits limits;
    limits.max_bytes = max_json_bytes;
    limits.max_depth = 64;
    limits.max_values = max_json_bytes;  // every value takes at least one byte
    limits.unique_keys = false;
    root_ = io::parse_json(text, limits, name);
  }
  /// The top-level value.
  const io::Json& root() const { return root_; }
  /// The file name.
  std::string_view name() const { return name_; }
  /// "name:line" of a value of this document, to start a message.
  std::string where(const io::Json& v) const {
    return loom::detail::concat(name_, ":", io::json_line(text_, v.offset()));
  }

 private:
  std::string_view text_, name_;
  io::Json root_;
};

/// True for a JSON integer in [0, limit): a token id.
inline bool is_token_id(const io::Json& v, std::size_t limit) {
  return v.is_int() && v.as_int() >= 0 && static_cast<std::uint64_t>(v.as_int()) < limit;
}

/// Parses a decimal number in [0, max]; nullopt otherwise.
inline std::optional<std::uint64_t> parse_uint(std::string_view s, std::uint64_t max) {
  if (s.empty() || s.size() > 19) return std::nullopt;
  std::uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    v = v * 10 + static_cast<unsigned>(c - '0');
  }
  if (v > max) return std::nullopt;
  return v;
}

/// Splits a line into fields separated by single spaces or tabs.
inline std::vector<std::string_view> fields(std::string_view line) {
  std::vector<std::string_view> out;
  std::size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && (line[i] == ' ' || line[i] == '\t')) ++i;
    std::size_t j = i;
    while (j < line.size() && line[j] != ' ' && line[j] != '\t') ++j;
    if (j > i) out.push_back(line.substr(i, j - i));
    i = j;
  }
  return out;
}

/// Builds the tokenizer, turning its consistency errors into io_error naming the file.
inline BpeTokenizer build(std::string_view name, Pattern pattern, std::vector<std::string> vocab,
                          std::vector<MergeRule> merges, std::vector<SpecialToken> specials) {
  try {
    return BpeTokenizer(pattern, std::move(vocab), std::move(merges), std::move(specials));
  } catch (const value_error& e) {
    throw io_error(loom::detail::concat(name, ": ", e.what()));
  }
}

/// Map from token bytes to id over a vocabulary (unused ids skipped).
inline std::unordered_map<std::string_view, std::uint32_t> bytes_index(const std::vector<std::string>& vocab) {
  std::unordered_map<std::string_view, std::uint32_t> m;
  m.reserve(vocab.size());
  for (std::size_t id = 0; id < vocab.size(); ++id)
    if (!vocab[id].empty()) m.emplace(vocab[id], static_cast<std::uint32_t>(id));
  return m;
}

/// Throws value_error unless every ordinary token has distinct bytes and every special token is
/// valid UTF-8 (needed by the formats keyed by token text: encoder.json and tokenizer.json).
inline void require_unique_tokens(const BpeTokenizer& tok, const char* what) {
  auto index = bytes_index(tok.vocab());
  for (std::size_t id = 0; id < tok.vocab().size(); ++id)
    if (!tok.vocab()[id].empty())
      LOOM_CHECK(index.at(tok.vocab()[id]) == id, value_error, what, ": tokens ", index.at(tok.vocab()[id]), " and ",
                 id, " have the same bytes; the format cannot hold both");
  for (const SpecialToken& s : tok.special_tokens())
    LOOM_CHECK(to_valid_utf8(s.text) == s.text, value_error, what, ": special token text must be valid UTF-8");
}

}  // namespace detail
}  // namespace loom::tokenizer
