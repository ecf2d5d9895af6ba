#pragma once
/// @file pretokenizer.hpp
/// Pre-tokenization: splitting text into chunks before BPE, exactly as the GPT-2 and cl100k
/// (GPT-4) regular expressions do, but with a hand-written matcher over generated Unicode tables.
///
/// GPT-2:  '(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s
/// cl100k: '(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|
///         \s++$|\s*[\r\n]|\s+(?!\S)|\s
/// \s is Unicode White_Space. Bytes that are not valid UTF-8 count as one "other" character
/// each (neither letter, number nor space), so any byte string can be split and round-trips.
/// See docs/06-bpe-tokenizer.md for a walk through each alternative.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "loom/core/error.hpp"
#include "loom/tokenizer/unicode_tables.hpp"
#include "loom/tokenizer/utf8.hpp"

namespace loom::tokenizer {

/// Which pre-tokenizer splits the text before BPE.
enum class Pattern {
  none,    ///< no split: the whole text (between special tokens) is one chunk (minbpe "basic")
  gpt2,    ///< GPT-2 / r50k_base
  cl100k,  ///< GPT-4's cl100k_base (minbpe calls it "gpt4")
};

/// The pattern's name as used in files and on the command line: "none", "gpt2", "cl100k".
inline const char* pattern_name(Pattern p) {
  switch (p) {
    case Pattern::gpt2: return "gpt2";
    case Pattern::cl100k: return "cl100k";
    default: return "none";
  }
}

/// The regular expression a pattern implements (tiktoken's spelling), or "" for none.
inline const char* pattern_regex(Pattern p) {
  switch (p) {
    case Pattern::gpt2:
      return R"('(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s)";
    case Pattern::cl100k:
      return R"('(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s)";
    default: return "";
  }
}

/// Parses a pattern name: none/basic, gpt2/r50k, cl100k/gpt4. Throws value_error otherwise.
inline Pattern parse_pattern(std::string_view name) {
  if (name == "none" || name == "basic") return Pattern::none;
  if (name == "gpt2" || name == "r50k") return Pattern::gpt2;
  if (name == "cl100k" || name == "gpt4") return Pattern::cl100k;
  throw value_error(loom::detail::concat("unknown pre-tokenizer pattern '", name,
                                   "' (expected none, gpt2 or cl100k)"));
}

namespace detail {

using unicode::CharClass;

/// A cursor over text that decodes one character at a time and classifies it.
struct CharScanner {
  const unsigned char* s;
  std::size_t n;

  struct Ch {
    std::uint32_t cp;  // invalid_code_point for a stray byte
    std::uint32_t len;
    CharClass cls;
  };

  /// Decodes and classifies the character at byte offset i (< n).
  Ch at(std::size_t i) const {
    const unsigned char c = s[i];
    if (c < 0x80) return {c, 1, static_cast<CharClass>(unicode::latin1_class[c])};
    Utf8Char u = decode_utf8(s, i, n);
    CharClass cls = u.cp == invalid_code_point ? CharClass::other : unicode::char_class(u.cp);
    return {u.cp, u.len, cls};
  }
  /// Class of the character at i, or `other`-but-absent when i == n (reported via ok=false).
  bool class_at(std::size_t i, CharClass& cls) const {
    if (i >= n) return false;
    cls = at(i).cls;
    return true;
  }
  /// End of the run of characters of class cls that starts at i.
  std::size_t run(std::size_t i, CharClass cls) const {
    while (i < n) {
      const unsigned char c = s[i];
      if (c < 0x80) {
        if (static_cast<CharClass>(unicode::latin1_class[c]) != cls) break;
        ++i;
      } else {
        Ch ch = at(i);
        if (ch.cls != cls) break;
        i += ch.len;
      }
    }
    return i;
  }
};

/// Length of a contraction after the apostrophe at i ('s 'd 'm 't 'll 've 're), or 0.
/// case_insensitive adds upper case and U+017F LATIN SMALL LETTER LONG S (which folds to s).
inline std::size_t contraction_len(const CharScanner& sc, std::size_t i, bool case_insensitive) {
  const unsigned char* s = sc.s;
  const std::size_t n = sc.n;
  if (i + 1 >= n) return 0;
  auto lower = [&](unsigned char c) -> unsigned char {
    return case_insensitive && c >= 'A' && c <= 'Z' ? static_cast<unsigned char>(c + 32) : c;
  };
  unsigned char c1 = lower(s[i + 1]);
  if (c1 == 's' || c1 == 'd' || c1 == 'm' || c1 == 't') return 2;
  if (case_insensitive && s[i + 1] == 0xC5 && i + 2 < n && s[i + 2] == 0xBF) return 3;  // 'ſ
  if (i + 2 >= n) return 0;
  unsigned char c2 = lower(s[i + 2]);
  if ((c1 == 'l' && c2 == 'l') || (c1 == 'v' && c2 == 'e') || (c1 == 'r' && c2 == 'e')) return 3;
  return 0;
}

/// The whitespace alternatives shared by both patterns, for a space run starting at i.
/// newline_rule adds cl100k's \s*[\r\n] (match up to and including the run's last \r or \n).
inline std::size_t whitespace_end(const CharScanner& sc, std::size_t i, bool newline_rule) {
  std::size_t j = i, last_start = i, count = 0, after_newline = 0;
  while (j < sc.n) {
    CharScanner::Ch ch = sc.at(j);
    if (ch.cls != CharClass::space) break;
    last_start = j;
    j += ch.len;
    ++count;
    if (ch.cp == '\r' || ch.cp == '\n') after_newline = j;
  }
  if (j == sc.n) return j;                        // \s++$
  if (newline_rule && after_newline) return after_newline;  // \s*[\r\n]
  if (count >= 2) return last_start;              // \s+(?!\S): leave the last space
  return j;                                       // \s
}

/// End of the GPT-2 match starting at i (i < n).
inline std::size_t gpt2_match(const CharScanner& sc, std::size_t i) {
  CharScanner::Ch ch = sc.at(i);
  if (ch.cp == '\'') {
    if (std::size_t k = contraction_len(sc, i, false)) return i + k;
  }
  if (ch.cls == CharClass::space) {
    CharClass next;
    if (ch.cp == ' ' && sc.class_at(i + 1, next) && next != CharClass::space)
      return sc.run(i + 1, next);  // ' ?\p{L}+', ' ?\p{N}+', ' ?[^\s\p{L}\p{N}]+'
    return whitespace_end(sc, i, false);
  }
  return sc.run(i + ch.len, ch.cls);
}

/// End of the cl100k match starting at i (i < n).
inline std::size_t cl100k_match(const CharScanner& sc, std::size_t i) {
  CharScanner::Ch ch = sc.at(i);
  if (ch.cp == '\'') {
    if (std::size_t k = contraction_len(sc, i, true)) return i + k;
  }
  if (ch.cls == CharClass::letter) return sc.run(i + ch.len, CharClass::letter);
  if (ch.cls == CharClass::number) {  // \p{N}{1,3}
    std::size_t j = i + ch.len;
    for (int k = 1; k < 3 && j < sc.n; ++k) {
      CharScanner::Ch c2 = sc.at(j);
      if (c2.cls != CharClass::number) break;
      j += c2.len;
    }
    return j;
  }
  // [^\r\n\p{L}\p{N}]?+\p{L}++ : one non-letter, non-number, non-newline then letters
  CharClass next;
  bool has_next = sc.class_at(i + ch.len, next);
  if (ch.cp != '\r' && ch.cp != '\n' && has_next && next == CharClass::letter)
    return sc.run(i + ch.len, CharClass::letter);
  // ' ?[^\s\p{L}\p{N}]++[\r\n]*+'
  std::size_t j = 0;
  if (ch.cls == CharClass::other) j = sc.run(i + ch.len, CharClass::other);
  else if (ch.cp == ' ' && has_next && next == CharClass::other) j = sc.run(i + 1, CharClass::other);
  if (j) {
    while (j < sc.n && (sc.s[j] == '\r' || sc.s[j] == '\n')) ++j;
    return j;
  }
  return whitespace_end(sc, i, true);
}

}  // namespace detail

/// Calls on_chunk(std::string_view) for each pre-tokenized chunk of text, in order. The chunks
/// are contiguous and cover the text exactly.
template <class F>
void for_each_chunk(std::string_view text, Pattern pattern, F&& on_chunk) {
  if (text.empty()) return;
  if (pattern == Pattern::none) {
    on_chunk(text);
    return;
  }
  detail::CharScanner sc{reinterpret_cast<const unsigned char*>(text.data()), text.size()};
  std::size_t i = 0;
  while (i < text.size()) {
    std::size_t j = pattern == Pattern::gpt2 ? detail::gpt2_match(sc, i) : detail::cl100k_match(sc, i);
    on_chunk(text.substr(i, j - i));
    i = j;
  }
}

/// The pre-tokenized chunks of text, as views into it.
inline std::vector<std::string_view> split_chunks(std::string_view text, Pattern pattern) {
  std::vector<std::string_view> out;
  for_each_chunk(text, pattern, [&](std::string_view c) { out.push_back(c); });
  return out;
}

/// A position near `hint` (searching forward up to `limit` bytes) where every pattern is sure to
/// start a chunk: a space between two ASCII letters ("x y" splits before " y"). Returns npos if
/// none is found. Used to cut long texts for parallel encoding without changing the result.
inline std::size_t safe_split_point(std::string_view text, std::size_t hint, std::size_t limit) {
  auto is_alpha = [](char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); };
  std::size_t end = hint + limit < text.size() ? hint + limit : text.size();
  for (std::size_t p = hint < 1 ? 1 : hint; p + 1 < end; ++p)
    if (text[p] == ' ' && is_alpha(text[p - 1]) && is_alpha(text[p + 1])) return p;
  return std::string_view::npos;
}

}  // namespace loom::tokenizer
