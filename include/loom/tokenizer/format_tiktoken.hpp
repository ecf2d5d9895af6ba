#pragma once
/// @file format_tiktoken.hpp
/// tiktoken rank files (cl100k_base.tiktoken, r50k_base.tiktoken): one token a line, as standard
/// base64 of its bytes, a space and its rank. A pair merges when the concatenation of its bytes is
/// a token, with that token's rank.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "loom/core/error.hpp"
#include "loom/io/file.hpp"
#include "loom/tokenizer/bpe.hpp"
#include "loom/tokenizer/format_common.hpp"
#include "loom/tokenizer/pretokenizer.hpp"

namespace loom::tokenizer {

namespace detail {

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
  return parse_tiktoken(io::read_file(path, max_file_bytes), pattern, path, std::move(specials));
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
inline void save_tiktoken(const BpeTokenizer& tok, const std::string& path) {
  io::write_file_atomic(path, to_tiktoken(tok));
}

}  // namespace loom::tokenizer
