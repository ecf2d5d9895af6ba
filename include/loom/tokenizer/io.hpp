#pragma once
/// @file io.hpp
/// Reading and writing tokenizer files:
///  - loom's own text format (loom::tokenizer::load / save), documented in docs/06-bpe-tokenizer.md;
///  - GPT-2's encoder.json + vocab.bpe;
///  - tiktoken rank files (base64 token, space, rank; one per line);
///  - Hugging Face tokenizer.json for byte-level BPE models.
/// Every loader has a parse_* twin that reads from memory (used by tests and fuzzers). A malformed
/// file raises loom::io_error naming the file and line; sizes are capped so a hostile file cannot
/// make a loader allocate without bound.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "loom/core/error.hpp"
#include "loom/tokenizer/bpe.hpp"
#include "loom/tokenizer/byte_unicode.hpp"
#include "loom/tokenizer/json.hpp"
#include "loom/tokenizer/pretokenizer.hpp"

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

/// Reads a whole file; io_error if it cannot be opened or exceeds max_file_bytes.
inline std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  LOOM_CHECK(f.good(), io_error, "cannot open '", path, "' for reading");
  f.seekg(0, std::ios::end);
  std::streamoff size = f.tellg();
  LOOM_CHECK(size >= 0, io_error, "cannot read '", path, "'");
  LOOM_CHECK(static_cast<std::size_t>(size) <= max_file_bytes, io_error, path, ": file is larger than 1 GiB");
  f.seekg(0, std::ios::beg);
  std::string data(static_cast<std::size_t>(size), '\0');
  f.read(data.data(), size);
  LOOM_CHECK(f.gcount() == size, io_error, "cannot read '", path, "'");
  return data;
}

/// Writes content to path through a temporary file renamed into place.
inline void write_file(const std::string& path, std::string_view content) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    LOOM_CHECK(f.good(), io_error, "cannot open '", tmp, "' for writing");
    f.write(content.data(), static_cast<std::streamsize>(content.size()));
    f.flush();
    LOOM_CHECK(f.good(), io_error, "cannot write '", tmp, "'");
  }
  LOOM_CHECK(std::rename(tmp.c_str(), path.c_str()) == 0, io_error, "cannot rename '", tmp, "' to '", path, "'");
}

/// Iterates over the lines of a text, counting them and capping their length.
class LineReader {
 public:
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

/// Standard base64 (with '=' padding) of bytes.
inline std::string base64_encode(std::string_view bytes) {
  static const char* a = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  std::size_t i = 0;
  for (; i + 3 <= bytes.size(); i += 3) {
    std::uint32_t v = (static_cast<unsigned char>(bytes[i]) << 16) | (static_cast<unsigned char>(bytes[i + 1]) << 8) |
                      static_cast<unsigned char>(bytes[i + 2]);
    out += a[v >> 18]; out += a[(v >> 12) & 63]; out += a[(v >> 6) & 63]; out += a[v & 63];
  }
  if (bytes.size() - i == 1) {
    std::uint32_t v = static_cast<unsigned char>(bytes[i]) << 16;
    out += a[v >> 18]; out += a[(v >> 12) & 63]; out += "==";
  } else if (bytes.size() - i == 2) {
    std::uint32_t v = (static_cast<unsigned char>(bytes[i]) << 16) | (static_cast<unsigned char>(bytes[i + 1]) << 8);
    out += a[v >> 18]; out += a[(v >> 12) & 63]; out += a[(v >> 6) & 63]; out += '=';
  }
  return out;
}

/// Decodes strict standard base64 (length a multiple of 4, padding only at the end, unused bits 0).
inline std::optional<std::string> base64_decode(std::string_view s) {
  if (s.empty() || s.size() % 4 != 0) return std::nullopt;
  auto val = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  std::string out;
  for (std::size_t i = 0; i < s.size(); i += 4) {
    const bool last = i + 4 == s.size();
    int pad = 0;
    if (last && s[i + 3] == '=') pad = s[i + 2] == '=' ? 2 : 1;
    std::uint32_t v = 0;
    for (int k = 0; k < 4; ++k) {
      int d = k >= 4 - pad ? 0 : val(s[i + k]);
      if (d < 0) return std::nullopt;
      v = (v << 6) | static_cast<std::uint32_t>(d);
    }
    out += static_cast<char>(v >> 16);
    if (pad < 2) out += static_cast<char>((v >> 8) & 0xFF);
    if (pad < 1) out += static_cast<char>(v & 0xFF);
    if ((pad == 1 && (v & 0xFF)) || (pad == 2 && (v & 0xFFFF))) return std::nullopt;
  }
  return out;
}

/// Escapes bytes for loom's text format: printable ASCII except '\' stays, the rest is \xNN.
inline std::string escape_bytes(std::string_view bytes) {
  static const char* h = "0123456789abcdef";
  std::string out;
  for (char ch : bytes) {
    unsigned char c = static_cast<unsigned char>(ch);
    if (c > 0x20 && c < 0x7F && c != '\\') out += ch;
    else if (c == '\\') out += "\\\\";
    else { out += "\\x"; out += h[c >> 4]; out += h[c & 15]; }
  }
  return out;
}

/// Reverses escape_bytes; nullopt on a malformed escape.
inline std::optional<std::string> unescape_bytes(std::string_view s) {
  auto hv = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '\\') { out += s[i]; continue; }
    if (i + 1 < s.size() && s[i + 1] == '\\') { out += '\\'; ++i; continue; }
    if (i + 3 < s.size() + 0 && s[i + 1] == 'x' && hv(s[i + 2]) >= 0 && hv(s[i + 3]) >= 0) {
      out += static_cast<char>(hv(s[i + 2]) * 16 + hv(s[i + 3]));
      i += 3;
      continue;
    }
    return std::nullopt;
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

/// Rank-file semantics (tiktoken): a pair merges when the concatenation of its bytes is a token,
/// with that token's rank. So every split of every token into two tokens is a merge rule.
inline std::vector<MergeRule> merges_from_ranks(const std::vector<std::string>& vocab) {
  auto index = bytes_index(vocab);
  std::vector<MergeRule> merges;
  for (std::size_t id = 0; id < vocab.size(); ++id) {
    std::string_view t = vocab[id];
    for (std::size_t k = 1; k < t.size(); ++k) {
      auto l = index.find(t.substr(0, k));
      if (l == index.end()) continue;
      auto r = index.find(t.substr(k));
      if (r == index.end()) continue;
      merges.push_back({l->second, r->second, static_cast<std::uint32_t>(id), static_cast<std::uint32_t>(id)});
    }
  }
  return merges;
}

}  // namespace detail

/// The special tokens OpenAI defines for a rank file, chosen by pattern and number of ranks:
/// GPT-2 (50256 ranks): <|endoftext|> 50256; cl100k_base (100256 ranks): <|endoftext|> 100257,
/// <|fim_prefix|> 100258, <|fim_middle|> 100259, <|fim_suffix|> 100260, <|endofprompt|> 100276.
inline std::vector<SpecialToken> openai_special_tokens(Pattern pattern, std::size_t num_ranks) {
  if (pattern == Pattern::gpt2 && num_ranks == 50256) return {{"<|endoftext|>", 50256}};
  if (pattern == Pattern::cl100k && num_ranks == 100256)
    return {{"<|endoftext|>", 100257}, {"<|fim_prefix|>", 100258}, {"<|fim_middle|>", 100259},
            {"<|fim_suffix|>", 100260}, {"<|endofprompt|>", 100276}};
  return {};
}

// --- tiktoken ---------------------------------------------------------------------------------

/// Parses a tiktoken rank file held in memory (`name` is used in errors). With no specials
/// given, OpenAI's are used when the pattern and size match (openai_special_tokens).
inline BpeTokenizer parse_tiktoken(std::string_view content, Pattern pattern, std::string_view name,
                                   std::optional<std::vector<SpecialToken>> specials = std::nullopt) {
  detail::LineReader lines(content, name);
  std::vector<std::pair<std::uint32_t, std::string>> entries;
  std::vector<std::size_t> line_of;
  std::string_view line;
  while (lines.next(line)) {
    if (line.empty()) continue;
    auto f = detail::fields(line);
    if (f.size() != 2) lines.fail("expected '<base64 token> <rank>'");
    auto bytes = detail::base64_decode(f[0]);
    if (!bytes) lines.fail(loom::detail::concat("bad base64 '", f[0].substr(0, 64), "'"));
    auto rank = detail::parse_uint(f[1], 0x7FFFFFFF);
    if (!rank) lines.fail(loom::detail::concat("bad rank '", f[1].substr(0, 32), "'"));
    if (entries.size() >= max_vocab_size) lines.fail("too many tokens");
    entries.emplace_back(static_cast<std::uint32_t>(*rank), std::move(*bytes));
    line_of.push_back(lines.line_no());
  }
  LOOM_CHECK(!entries.empty(), io_error, name, ": no tokens (empty or truncated file)");
  const std::size_t limit = 2 * entries.size() + 256;
  std::vector<std::string> vocab;
  std::unordered_map<std::string, std::size_t> seen;
  for (std::size_t k = 0; k < entries.size(); ++k) {
    auto& [rank, bytes] = entries[k];
    LOOM_CHECK(rank < limit, io_error, name, ":", line_of[k], ": rank ", rank,
               " is too large for a file of ", entries.size(), " tokens");
    if (vocab.size() <= rank) vocab.resize(rank + 1);
    LOOM_CHECK(vocab[rank].empty(), io_error, name, ":", line_of[k], ": rank ", rank, " is used twice");
    auto ins = seen.emplace(bytes, line_of[k]);
    LOOM_CHECK(ins.second, io_error, name, ":", line_of[k], ": duplicate token (same bytes as line ",
               ins.first->second, ")");
    vocab[rank] = std::move(bytes);
  }
  std::vector<SpecialToken> sp = specials ? std::move(*specials) : openai_special_tokens(pattern, entries.size());
  std::vector<MergeRule> merges = detail::merges_from_ranks(vocab);
  return detail::build(name, pattern, std::move(vocab), std::move(merges), std::move(sp));
}

/// Loads a tiktoken rank file (e.g. cl100k_base.tiktoken) with the given pre-tokenizer pattern.
inline BpeTokenizer load_tiktoken(const std::string& path, Pattern pattern,
                                  std::optional<std::vector<SpecialToken>> specials = std::nullopt) {
  return parse_tiktoken(detail::read_file(path), pattern, path, std::move(specials));
}

/// The tokenizer as a tiktoken rank file (ordinary tokens only; the rank is the id). Throws
/// value_error if two tokens have the same bytes, which the format cannot express.
inline std::string to_tiktoken(const BpeTokenizer& tok) {
  std::string out;
  auto index = detail::bytes_index(tok.vocab());
  for (std::size_t id = 0; id < tok.vocab().size(); ++id) {
    const std::string& t = tok.vocab()[id];
    if (t.empty()) continue;
    LOOM_CHECK(index.at(t) == id, value_error, "to_tiktoken: tokens ", index.at(t), " and ", id,
               " have the same bytes; a rank file cannot hold both");
    out += detail::base64_encode(t);
    out += ' ';
    out += std::to_string(id);
    out += '\n';
  }
  return out;
}

/// Writes the tokenizer as a tiktoken rank file.
inline void save_tiktoken(const BpeTokenizer& tok, const std::string& path) { detail::write_file(path, to_tiktoken(tok)); }

// --- GPT-2 encoder.json + vocab.bpe -------------------------------------------------------------

/// Parses GPT-2's encoder.json and vocab.bpe held in memory. Entries of encoder.json that no
/// merge produces and that look like <|...|> become special tokens (<|endoftext|>).
inline BpeTokenizer parse_gpt2(std::string_view encoder_json, std::string_view vocab_bpe, std::string_view encoder_name,
                               std::string_view bpe_name, Pattern pattern = Pattern::gpt2) {
  LOOM_CHECK(encoder_json.size() <= max_json_bytes, io_error, encoder_name, ": JSON file is larger than 128 MiB");
  detail::JsonValue root = detail::JsonParser::parse(encoder_json, encoder_name);
  LOOM_CHECK(root.type == detail::JsonValue::Type::object, io_error, encoder_name,
             ": expected a JSON object mapping tokens to ids");
  LOOM_CHECK(root.object.size() <= max_vocab_size, io_error, encoder_name, ": too many tokens");
  const std::size_t limit = 2 * root.object.size() + 256;
  std::unordered_map<std::string, std::uint32_t> encoder;  // byte-level text -> id
  std::vector<std::string> vocab;
  std::vector<std::string> raw;  // token text as written, by id
  std::vector<SpecialToken> specials;
  for (auto& [key, v] : root.object) {
    LOOM_CHECK(v.type == detail::JsonValue::Type::number && v.is_integer && v.integer >= 0 &&
                   static_cast<std::size_t>(v.integer) < limit,
               io_error, encoder_name, ":", v.line, ": token id must be an integer in [0, ", limit, ")");
    const auto id = static_cast<std::uint32_t>(v.integer);
    LOOM_CHECK(!key.empty(), io_error, encoder_name, ":", v.line, ": empty token");
    LOOM_CHECK(encoder.emplace(key, id).second, io_error, encoder_name, ":", v.line, ": duplicate token '",
               key.substr(0, 64), "'");
    if (raw.size() <= id) raw.resize(id + 1);
    LOOM_CHECK(raw[id].empty(), io_error, encoder_name, ":", v.line, ": id ", id, " is used twice");
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
  return parse_gpt2(detail::read_file(enc), detail::read_file(bpe), enc, bpe, pattern);
}

namespace detail {
/// Throws value_error unless every ordinary token has distinct bytes (needed by the formats
/// keyed by token text: encoder.json and tokenizer.json).
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
    detail::json_write_string(enc, key);
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

/// Writes encoder.json and vocab.bpe into folder dir (which must exist).
inline void save_gpt2(const BpeTokenizer& tok, const std::string& dir) {
  auto [enc, bpe] = to_gpt2(tok);
  detail::write_file(dir + "/encoder.json", enc);
  detail::write_file(dir + "/vocab.bpe", bpe);
}

// --- Hugging Face tokenizer.json ------------------------------------------------------------------

namespace detail {
/// Collects every "Regex" string in a pre_tokenizer tree.
inline void find_regexes(const JsonValue& v, std::vector<std::string>& out) {
  if (v.type == JsonValue::Type::object) {
    for (const auto& kv : v.object) {
      if (kv.first == "Regex" && kv.second.type == JsonValue::Type::string) out.push_back(kv.second.string);
      find_regexes(kv.second, out);
    }
  } else if (v.type == JsonValue::Type::array) {
    for (const JsonValue& e : v.array) find_regexes(e, out);
  }
}
/// Whether any object in the tree has "type": "ByteLevel" with use_regex not false.
inline bool byte_level_uses_regex(const JsonValue& v) {
  if (v.type == JsonValue::Type::object) {
    const JsonValue* t = v.find("type");
    if (t && t->type == JsonValue::Type::string && t->string == "ByteLevel") {
      const JsonValue* u = v.find("use_regex");
      if (!u || u->type != JsonValue::Type::boolean || u->boolean) return true;
    }
    for (const auto& kv : v.object)
      if (byte_level_uses_regex(kv.second)) return true;
  } else if (v.type == JsonValue::Type::array) {
    for (const JsonValue& e : v.array)
      if (byte_level_uses_regex(e)) return true;
  }
  return false;
}
}  // namespace detail

/// Parses a Hugging Face tokenizer.json for a byte-level BPE model held in memory. Merges may be
/// "a b" strings or ["a", "b"] arrays; added_tokens become special tokens. The pre-tokenizer is
/// recognised as GPT-2 (ByteLevel with use_regex), cl100k (a Split with that regex) or none.
inline BpeTokenizer parse_hf_json(std::string_view content, std::string_view name) {
  using detail::JsonValue;
  LOOM_CHECK(content.size() <= max_json_bytes, io_error, name, ": JSON file is larger than 128 MiB");
  JsonValue root = detail::JsonParser::parse(content, name);
  LOOM_CHECK(root.type == JsonValue::Type::object, io_error, name, ": expected a JSON object");
  const JsonValue* model = root.find("model");
  LOOM_CHECK(model && model->type == JsonValue::Type::object, io_error, name, ": no \"model\" object");
  const JsonValue* type = model->find("type");
  LOOM_CHECK(!type || (type->type == JsonValue::Type::string && type->string == "BPE"), io_error, name, ":",
             model->line, ": model type is not BPE");
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix", "dropout"}) {
    const JsonValue* v = model->find(key);
    LOOM_CHECK(!v || v->type == JsonValue::Type::null || (v->type == JsonValue::Type::string && v->string.empty()),
               io_error, name, ":", v ? v->line : 0, ": unsupported model option \"", key, "\"");
  }
  const JsonValue* ignore = model->find("ignore_merges");
  LOOM_CHECK(!ignore || ignore->type != JsonValue::Type::boolean || !ignore->boolean, io_error, name, ":",
             ignore ? ignore->line : 0, ": \"ignore_merges\": true is not supported");
  const JsonValue* vocab_json = model->find("vocab");
  const JsonValue* merges_json = model->find("merges");
  LOOM_CHECK(vocab_json && vocab_json->type == JsonValue::Type::object, io_error, name, ": no model.vocab object");
  LOOM_CHECK(merges_json && merges_json->type == JsonValue::Type::array, io_error, name, ": no model.merges array");
  LOOM_CHECK(vocab_json->object.size() <= max_vocab_size, io_error, name, ": too many tokens");
  const std::size_t limit = 2 * vocab_json->object.size() + 256;

  // Added tokens first: they are special, even when the vocabulary lists them too.
  std::vector<SpecialToken> specials;
  if (const JsonValue* added = root.find("added_tokens")) {
    LOOM_CHECK(added->type == JsonValue::Type::array, io_error, name, ":", added->line, ": added_tokens is not an array");
    for (const JsonValue& a : added->array) {
      const JsonValue* id = a.find("id");
      const JsonValue* content_v = a.find("content");
      LOOM_CHECK(id && id->type == JsonValue::Type::number && id->is_integer && id->integer >= 0 &&
                     static_cast<std::size_t>(id->integer) < limit && content_v &&
                     content_v->type == JsonValue::Type::string && !content_v->string.empty(),
                 io_error, name, ":", a.line, ": an added token needs an integer \"id\" and a non-empty \"content\"");
      specials.push_back({content_v->string, static_cast<std::uint32_t>(id->integer)});
    }
  }
  auto is_special_id = [&](std::uint32_t id) {
    for (const SpecialToken& s : specials)
      if (s.id == id) return true;
    return false;
  };
  std::unordered_map<std::string, std::uint32_t> encoder;
  std::vector<std::string> vocab;
  for (const auto& [key, v] : vocab_json->object) {
    LOOM_CHECK(v.type == JsonValue::Type::number && v.is_integer && v.integer >= 0 &&
                   static_cast<std::size_t>(v.integer) < limit,
               io_error, name, ":", v.line, ": token id must be an integer in [0, ", limit, ")");
    const auto id = static_cast<std::uint32_t>(v.integer);
    LOOM_CHECK(encoder.emplace(key, id).second, io_error, name, ":", v.line, ": duplicate token '", key.substr(0, 64), "'");
    if (is_special_id(id)) continue;
    auto bytes = byte_level_to_bytes(key);
    LOOM_CHECK(bytes && !bytes->empty(), io_error, name, ":", v.line, ": token '", key.substr(0, 64),
               "' is not in the byte-level alphabet (only byte-level BPE models are supported)");
    if (vocab.size() <= id) vocab.resize(id + 1);
    LOOM_CHECK(vocab[id].empty(), io_error, name, ":", v.line, ": id ", id, " is used twice");
    vocab[id] = std::move(*bytes);
  }
  LOOM_CHECK(merges_json->array.size() <= max_vocab_size, io_error, name, ": too many merges");
  std::vector<MergeRule> merges;
  for (const JsonValue& m : merges_json->array) {
    std::string left, right;
    if (m.type == JsonValue::Type::string) {
      std::size_t sp = m.string.find(' ');
      LOOM_CHECK(sp != std::string::npos && m.string.find(' ', sp + 1) == std::string::npos, io_error, name, ":",
                 m.line, ": merge '", m.string.substr(0, 64), "' is not 'left right'");
      left = m.string.substr(0, sp);
      right = m.string.substr(sp + 1);
    } else {
      LOOM_CHECK(m.type == JsonValue::Type::array && m.array.size() == 2 &&
                     m.array[0].type == JsonValue::Type::string && m.array[1].type == JsonValue::Type::string,
                 io_error, name, ":", m.line, ": a merge must be \"left right\" or [\"left\", \"right\"]");
      left = m.array[0].string;
      right = m.array[1].string;
    }
    auto l = encoder.find(left), r = encoder.find(right), t = encoder.find(left + right);
    LOOM_CHECK(l != encoder.end() && r != encoder.end(), io_error, name, ":", m.line, ": merge '",
               (left + " " + right).substr(0, 64), "' uses a token that is not in the vocabulary");
    LOOM_CHECK(t != encoder.end(), io_error, name, ":", m.line, ": the result of merge '",
               (left + " " + right).substr(0, 64), "' is not in the vocabulary");
    merges.push_back({l->second, r->second, t->second, static_cast<std::uint32_t>(merges.size())});
  }
  Pattern pattern = Pattern::none;
  if (const JsonValue* pre = root.find("pre_tokenizer")) {
    std::vector<std::string> regexes;
    detail::find_regexes(*pre, regexes);
    const std::string gpt2_orig = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
    const std::string cl100k_hf = R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
    for (const std::string& re : regexes) {
      if (re == pattern_regex(Pattern::cl100k) || re == cl100k_hf) pattern = Pattern::cl100k;
      else if (re == pattern_regex(Pattern::gpt2) || re == gpt2_orig) pattern = Pattern::gpt2;
      else LOOM_CHECK(false, io_error, name, ":", pre->line, ": unsupported pre-tokenizer regex '", re.substr(0, 80), "'");
    }
    if (regexes.empty() && detail::byte_level_uses_regex(*pre)) pattern = Pattern::gpt2;
  }
  return detail::build(name, pattern, std::move(vocab), std::move(merges), std::move(specials));
}

/// Loads a Hugging Face tokenizer.json (byte-level BPE).
inline BpeTokenizer load_hf_json(const std::string& path) { return parse_hf_json(detail::read_file(path), path); }

/// The tokenizer as a Hugging Face tokenizer.json document.
inline std::string to_hf_json(const BpeTokenizer& tok) {
  detail::require_unique_tokens(tok, "to_hf_json");
  std::string o = "{\n  \"version\": \"1.0\",\n  \"truncation\": null,\n  \"padding\": null,\n  \"added_tokens\": [";
  bool first = true;
  for (const SpecialToken& s : tok.special_tokens()) {
    o += first ? "\n    " : ",\n    ";
    first = false;
    o += "{\"id\": " + std::to_string(s.id) + ", \"content\": ";
    detail::json_write_string(o, s.text);
    o += ", \"single_word\": false, \"lstrip\": false, \"rstrip\": false, \"normalized\": false, \"special\": true}";
  }
  o += "\n  ],\n  \"normalizer\": null,\n  \"pre_tokenizer\": ";
  if (tok.pattern() == Pattern::gpt2) {
    o += "{\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"trim_offsets\": true, \"use_regex\": true}";
  } else if (tok.pattern() == Pattern::cl100k) {
    o += "{\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Split\", \"pattern\": {\"Regex\": ";
    detail::json_write_string(o, pattern_regex(Pattern::cl100k));
    o += "}, \"behavior\": \"Isolated\", \"invert\": false}, {\"type\": \"ByteLevel\", \"add_prefix_space\": false, "
         "\"trim_offsets\": true, \"use_regex\": false}]}";
  } else {
    o += "{\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"trim_offsets\": true, \"use_regex\": false}";
  }
  o += ",\n  \"post_processor\": null,\n  \"decoder\": {\"type\": \"ByteLevel\", \"add_prefix_space\": true, "
       "\"trim_offsets\": true, \"use_regex\": true},\n  \"model\": {\n    \"type\": \"BPE\",\n    \"dropout\": null,\n"
       "    \"unk_token\": null,\n    \"continuing_subword_prefix\": null,\n    \"end_of_word_suffix\": null,\n"
       "    \"fuse_unk\": false,\n    \"byte_fallback\": false,\n    \"vocab\": {";
  first = true;
  for (std::size_t id = 0; id < tok.vocab().size(); ++id) {
    if (tok.vocab()[id].empty()) continue;
    o += first ? "\n      " : ",\n      ";
    first = false;
    detail::json_write_string(o, bytes_to_byte_level(tok.vocab()[id]));
    o += ": " + std::to_string(id);
  }
  o += "\n    },\n    \"merges\": [";
  first = true;
  for (const MergeRule& m : tok.merges()) {
    o += first ? "\n      " : ",\n      ";
    first = false;
    detail::json_write_string(o, bytes_to_byte_level(tok.vocab()[m.left]) + " " + bytes_to_byte_level(tok.vocab()[m.right]));
  }
  o += "\n    ]\n  }\n}\n";
  return o;
}

/// Writes the tokenizer as a Hugging Face tokenizer.json.
inline void save_hf_json(const BpeTokenizer& tok, const std::string& path) { detail::write_file(path, to_hf_json(tok)); }

// --- loom's own format ------------------------------------------------------------------------------

/// The tokenizer in loom's text format (see docs/06-bpe-tokenizer.md):
///   loom-bpe 1 / pattern NAME / vocab N / special ID TEXT... / byte B ID (256 lines) /
///   merge LEFT RIGHT ID [readable token] ... / token ID BYTES (tokens no merge makes) / end
/// Merges are listed in rank order; consecutive lines that make the same id share a rank.
inline std::string to_loom_text(const BpeTokenizer& tok) {
  std::ostringstream o;
  o << "loom-bpe 1\n";
  o << "pattern " << pattern_name(tok.pattern()) << "\n";
  o << "vocab " << tok.vocab().size() << "\n";
  for (const SpecialToken& s : tok.special_tokens()) o << "special " << s.id << ' ' << detail::escape_bytes(s.text) << "\n";
  for (int b = 0; b < 256; ++b) o << "byte " << b << ' ' << tok.byte_id(static_cast<unsigned char>(b)) << "\n";
  std::vector<char> made(tok.vocab().size(), 0);
  for (int b = 0; b < 256; ++b) made[tok.byte_id(static_cast<unsigned char>(b))] = 1;
  const MergeRule* prev = nullptr;
  for (const MergeRule& m : tok.merges()) {
    // Keep ranks: a new rank that happens to follow a rule with the same id needs a marker.
    if (prev && prev->id == m.id && prev->rank != m.rank) o << "rank-break\n";
    o << "merge " << m.left << ' ' << m.right << ' ' << m.id << "    " << detail::escape_bytes(tok.vocab()[m.id]) << "\n";
    made[m.id] = 1;
    prev = &m;
  }
  for (std::size_t id = 0; id < tok.vocab().size(); ++id)
    if (!tok.vocab()[id].empty() && !made[id]) o << "token " << id << ' ' << detail::escape_bytes(tok.vocab()[id]) << "\n";
  o << "end\n";
  return o.str();
}

/// Parses loom's text format held in memory.
inline BpeTokenizer parse_loom_text(std::string_view content, std::string_view name) {
  detail::LineReader lines(content, name);
  std::string_view line;
  auto next_line = [&]() {
    while (lines.next(line)) {
      if (line.find_first_not_of(" \t") != std::string_view::npos && line[0] != '#') return true;
    }
    return false;
  };
  if (!next_line() || detail::fields(line) != std::vector<std::string_view>{"loom-bpe", "1"})
    lines.fail("not a loom tokenizer file (expected the header 'loom-bpe 1')");
  Pattern pattern = Pattern::none;
  std::size_t vocab_n = 0;
  bool have_vocab = false, have_pattern = false, ended = false;
  std::vector<std::string> vocab;
  std::vector<MergeRule> merges;
  std::vector<SpecialToken> specials;
  std::vector<int> byte_seen(256, 0);
  std::uint32_t rank = 0;
  std::vector<std::size_t> merge_lines;
  auto need_id = [&](std::string_view s) {
    auto v = detail::parse_uint(s, vocab_n ? vocab_n - 1 : 0);
    if (!v || !have_vocab) lines.fail(loom::detail::concat("bad token id '", s.substr(0, 32), "' (vocab is ", vocab_n, ")"));
    return static_cast<std::uint32_t>(*v);
  };
  while (next_line()) {
    auto f = detail::fields(line);
    const std::string_view key = f[0];
    if (ended) lines.fail("text after 'end'");
    if (key == "pattern" && f.size() == 2 && !have_pattern) {
      try { pattern = parse_pattern(f[1]); } catch (const value_error& e) { lines.fail(e.what()); }
      have_pattern = true;
    } else if (key == "vocab" && f.size() == 2 && !have_vocab) {
      // Every id needs a line, so a small file cannot ask for a huge table.
      const std::size_t line_count = static_cast<std::size_t>(std::count(content.begin(), content.end(), '\n')) + 1;
      const std::size_t limit = std::min(max_vocab_size, 2 * line_count + 256);
      auto v = detail::parse_uint(f[1], limit);
      if (!v || *v < 256) lines.fail(loom::detail::concat("bad vocab size (256 to ", limit, " for a file of ", line_count, " lines)"));
      vocab_n = *v;
      vocab.assign(vocab_n, std::string());
      have_vocab = true;
    } else if (key == "special" && f.size() == 3) {
      auto id = detail::parse_uint(f[1], 0x7FFFFFFE);
      auto text = detail::unescape_bytes(f[2]);
      if (!id || !text || text->empty()) lines.fail("expected 'special <id> <escaped text>'");
      if (specials.size() >= 65536) lines.fail("too many special tokens");
      specials.push_back({std::move(*text), static_cast<std::uint32_t>(*id)});
    } else if (key == "byte" && f.size() == 3) {
      auto b = detail::parse_uint(f[1], 255);
      if (!b) lines.fail("bad byte value");
      std::uint32_t id = need_id(f[2]);
      if (byte_seen[*b]++) lines.fail(loom::detail::concat("byte ", *b, " is listed twice"));
      if (!vocab[id].empty()) lines.fail(loom::detail::concat("id ", id, " is used twice"));
      vocab[id] = std::string(1, static_cast<char>(*b));
    } else if (key == "merge" && f.size() >= 4) {
      std::uint32_t l = need_id(f[1]), r = need_id(f[2]), id = need_id(f[3]);
      if (merges.size() >= max_vocab_size) lines.fail("too many merges");
      const bool same_as_prev = !merges.empty() && merges.back().id == id;
      if (!same_as_prev && !merges.empty()) ++rank;
      merges.push_back({l, r, id, rank});
      merge_lines.push_back(lines.line_no());
    } else if (key == "rank-break" && f.size() == 1) {
      ++rank;
    } else if (key == "token" && f.size() == 3) {
      std::uint32_t id = need_id(f[1]);
      auto bytes = detail::unescape_bytes(f[2]);
      if (!bytes || bytes->empty()) lines.fail("bad token bytes");
      if (!vocab[id].empty()) lines.fail(loom::detail::concat("id ", id, " is used twice"));
      vocab[id] = std::move(*bytes);
    } else if (key == "end" && f.size() == 1) {
      ended = true;
    } else {
      lines.fail(loom::detail::concat("unexpected line '", line.substr(0, 64), "'"));
    }
  }
  LOOM_CHECK(ended, io_error, name, ": truncated file (no 'end' line)");
  LOOM_CHECK(have_vocab && have_pattern, io_error, name, ": missing 'pattern' or 'vocab' line");
  for (int b = 0; b < 256; ++b) LOOM_CHECK(byte_seen[b], io_error, name, ": byte ", b, " has no 'byte' line");
  // Spell every merged token. A rule may use a token that a later line makes (rank files have
  // such tokens), so resolve the definitions depth first, with an explicit stack and a cycle check.
  std::vector<std::uint32_t> def(vocab_n, ~0u);  // first merge line that makes each id
  for (std::size_t k = 0; k < merges.size(); ++k)
    if (def[merges[k].id] == ~0u && vocab[merges[k].id].empty()) def[merges[k].id] = static_cast<std::uint32_t>(k);
  std::vector<std::uint8_t> state(vocab_n, 0);  // 0 = not yet, 1 = in progress, 2 = spelled
  std::size_t total_bytes = 0;
  for (std::size_t k = 0; k < merges.size(); ++k) {
    std::vector<std::uint32_t> stack{merges[k].id};
    while (!stack.empty()) {
      const std::uint32_t id = stack.back();
      if (!vocab[id].empty() || state[id] == 2) { stack.pop_back(); continue; }
      const std::uint32_t d = def[id];
      LOOM_CHECK(d != ~0u, io_error, name, ":", merge_lines[k], ": merge uses token ", id,
                 ", which no 'byte', 'merge' or 'token' line defines");
      const MergeRule& m = merges[d];
      bool ready = true;
      for (std::uint32_t part : {m.left, m.right}) {
        if (!vocab[part].empty()) continue;
        LOOM_CHECK(state[part] != 1, io_error, name, ":", merge_lines[d], ": merges define token ", part,
                   " in terms of itself");
        LOOM_CHECK(def[part] != ~0u, io_error, name, ":", merge_lines[d], ": merge uses token ", part,
                   ", which no 'byte', 'merge' or 'token' line defines");
        ready = false;
        state[id] = 1;
        stack.push_back(part);
      }
      if (!ready) continue;
      total_bytes += vocab[m.left].size() + vocab[m.right].size();
      LOOM_CHECK(vocab[m.left].size() + vocab[m.right].size() <= max_line_bytes && total_bytes <= max_file_bytes,
                 io_error, name, ":", merge_lines[d], ": tokens are too long");
      vocab[id] = vocab[m.left] + vocab[m.right];
      state[id] = 2;
      stack.pop_back();
    }
  }
  for (std::size_t k = 0; k < merges.size(); ++k) {
    const MergeRule& m = merges[k];
    LOOM_CHECK(vocab[m.id].size() == vocab[m.left].size() + vocab[m.right].size() &&
                   vocab[m.id] == vocab[m.left] + vocab[m.right],
               io_error, name, ":", merge_lines[k], ": merge (", m.left, ", ", m.right, ") -> ", m.id,
               " does not spell the token that id ", m.id, " already is");
  }
  return detail::build(name, pattern, std::move(vocab), std::move(merges), std::move(specials));
}

/// Loads a tokenizer saved by save().
inline BpeTokenizer load(const std::string& path) { return parse_loom_text(detail::read_file(path), path); }

/// Saves the tokenizer in loom's text format.
inline void save(const BpeTokenizer& tok, const std::string& path) { detail::write_file(path, to_loom_text(tok)); }

}  // namespace loom::tokenizer
