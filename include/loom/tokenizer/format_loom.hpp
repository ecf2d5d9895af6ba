#pragma once
/// @file format_loom.hpp
/// loom's own tokenizer file (loom::tokenizer::load / save), a line-based text format documented
/// in docs/06-bpe-tokenizer.md: it keeps every merge with its rank and names each token's bytes,
/// so a file can be read and checked by eye.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "loom/core/error.hpp"
#include "loom/io/file.hpp"
#include "loom/tokenizer/bpe.hpp"
#include "loom/tokenizer/format_common.hpp"
#include "loom/tokenizer/pretokenizer.hpp"

namespace loom::tokenizer {

namespace detail {

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
    if (i + 3 < s.size() && s[i + 1] == 'x' && hv(s[i + 2]) >= 0 && hv(s[i + 3]) >= 0) {
      out += static_cast<char>(hv(s[i + 2]) * 16 + hv(s[i + 3]));
      i += 3;
      continue;
    }
    return std::nullopt;
  }
  return out;
}

}  // namespace detail

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
inline BpeTokenizer load(const std::string& path) {
  return parse_loom_text(io::read_file(path, max_file_bytes), path);
}

/// Saves the tokenizer in loom's text format.
inline void save(const BpeTokenizer& tok, const std::string& path) { io::write_file_atomic(path, to_loom_text(tok)); }

}  // namespace loom::tokenizer
