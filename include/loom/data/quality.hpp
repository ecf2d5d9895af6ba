#pragma once
/// @file quality.hpp
/// Heuristic quality filters for web text: Gopher repetition, Gopher quality and C4, each
/// switchable, run in FineWeb's order (Gopher repetition, then Gopher quality, then C4).
///
/// Sources of the rules and of the default thresholds:
///  - Gopher repetition: Rae et al. 2021, "Scaling Language Models: Methods, Analysis & Insights
///    from Training Gopher", appendix A.1.1 and table A1 (duplicate line / paragraph fractions
///    0.30, their character fractions 0.20, top 2/3/4-gram character fractions 0.20/0.18/0.16,
///    duplicate 5..10-gram character fractions 0.15..0.10). The exact measures follow datatrove's
///    GopherRepetitionFilter (the FineWeb implementation); see check_gopher_repetition below.
///  - Gopher quality: Rae et al. 2021 appendix A.1.1 (50..100,000 words, mean word length 3..10,
///    '#' and ellipsis to word ratios <= 0.1, <= 90% bullet lines, <= 30% lines ending in an
///    ellipsis, >= 80% of words with a letter, >= 2 of the stop words "the be to of and that have
///    with"), as datatrove's GopherQualityFilter applies them.
///  - C4: Raffel et al. 2020 (JMLR 21), section 2.2, and the reference code tensorflow_datasets
///    c4_utils.py: keep lines that end in . ? ! or " (not in "..."), with at least 5 words
///    (_MIN_WORDS_PER_LINE = 5); drop lines mentioning "javascript" or a cookie / terms-of-use
///    phrase; remove Wikipedia citation markers "[1]", "[edit]", "[citation needed]"; drop the page
///    if a kept line has "lorem ipsum" or "{", or if fewer than 3 sentences remain
///    (_MIN_NUM_SENTENCES = 3). datatrove's C4QualityFilter also drops lines with a word longer
///    than 1000 characters (kept here) but defaults to 3 words / 5 sentences; we use the values of
///    the C4 reference code.
///
/// Documented simplifications (where datatrove uses NLTK):
///  - Words are whitespace-separated tokens (ASCII whitespace and the Unicode spaces U+00A0,
///    U+1680, U+2000..U+200A, U+2028, U+2029, U+202F, U+205F, U+3000), not NLTK word_tokenize.
///    For the Gopher quality counts a token made only of ASCII punctuation is not a word.
///  - A word is "alphabetic" when it holds an ASCII letter or any non-ASCII byte (so words in
///    other scripts count as alphabetic without Unicode tables).
///  - Stop words are matched case-sensitively (as datatrove does) after trimming ASCII
///    punctuation from both ends of the token ("the," counts, "The" does not).
///  - Lengths and fractions are in Unicode code points (Python's len on str).
///  - Lines are split on '\n' (a trailing '\r' is dropped); blank lines are ignored by the line
///    ratios (datatrove counts them, so that a text whose paragraphs are separated by blank lines
///    would count every blank line after the first as a duplicate line).
///  - Paragraphs are separated by one or more blank lines; compared after trimming.
///  - Bullet lines start (after spaces) with one of • ● ▪ ◦ ‣ ∙, or with "-" / "*" followed by a
///    space (datatrove looks only at "•").
///  - C4 sentences are counted as runs of . ! ? followed by a space or the end of the line
///    (optionally after closing quotes or brackets), at least one per kept line; the C4
///    reference uses NLTK's punkt sentence splitter. A line is re-trimmed after citation removal.
///  - Documents are limited to 4 GiB (word offsets are 32-bit).
///  - N-grams are compared through 64-bit hashes of their words (a collision, about 1 in 2^64 per
///    pair, could only make a rule a little stricter).

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "loom/core/error.hpp"
#include "loom/data/hash.hpp"

namespace loom::data {

/// Which rule sets run, and their thresholds (defaults: the published values). A numeric
/// threshold of 0 turns that one rule off (datatrove's convention).
struct QualityOptions {
  bool gopher_repetition = true;  ///< Rae et al. 2021 (Gopher), table A1
  bool gopher_quality = true;     ///< Rae et al. 2021, appendix A.1.1
  bool c4 = true;                 ///< Raffel et al. 2020 (C4) line and page rules

  // --- Gopher repetition (table A1) ---
  double dup_para_frac = 0.30;       ///< max fraction of paragraphs that repeat an earlier one
  double dup_para_char_frac = 0.20;  ///< max fraction of characters in repeated paragraphs
  double dup_line_frac = 0.30;       ///< max fraction of lines that repeat an earlier one
  double dup_line_char_frac = 0.20;  ///< max fraction of characters in repeated lines
  /// (n, max fraction of characters in the most frequent n-gram times its count).
  std::vector<std::pair<int, double>> top_ngram_char_frac = {{2, 0.20}, {3, 0.18}, {4, 0.16}};
  /// (n, max fraction of characters in repeated n-grams).
  std::vector<std::pair<int, double>> dup_ngram_char_frac = {
      {5, 0.15}, {6, 0.14}, {7, 0.13}, {8, 0.12}, {9, 0.11}, {10, 0.10}};

  // --- Gopher quality (appendix A.1.1) ---
  int64_t min_words = 50;                 ///< fewer words: dropped
  int64_t max_words = 100000;             ///< more words: dropped
  double min_mean_word_length = 3;        ///< mean word length (code points) below: dropped
  double max_mean_word_length = 10;       ///< mean word length above: dropped
  double max_symbol_word_ratio = 0.1;     ///< max '#' per word, and max ("..." or "…") per word
  double max_bullet_lines_ratio = 0.9;    ///< max fraction of lines starting with a bullet
  double max_ellipsis_lines_ratio = 0.3;  ///< max fraction of lines ending in "..." or "…"
  double min_alpha_words_ratio = 0.8;     ///< min fraction of words holding a letter
  int64_t min_stop_words = 2;             ///< min count of the stop words the/be/to/of/and/that/have/with

  // --- C4 (section 2.2 and tensorflow_datasets c4_utils.py) ---
  int64_t c4_min_words_per_line = 5;      ///< lines with fewer words are removed
  int64_t c4_min_sentences = 3;           ///< pages with fewer sentences left are dropped
  int64_t c4_max_word_length = 1000;      ///< lines with a longer word (code points) are removed
  bool c4_remove_citations = true;        ///< remove "[12]", "[]", "[edit]", "[citation needed]"
  bool c4_terminal_punct = true;          ///< remove lines not ending in . ? ! " (or ending in "...")
  bool c4_javascript = true;              ///< remove lines containing "javascript" (any case)
  bool c4_policy = true;                  ///< remove lines with a cookie / terms-of-use phrase
  bool c4_lorem_ipsum = true;             ///< drop pages with "lorem ipsum" (any case) in a kept line
  bool c4_curly_bracket = true;           ///< drop pages with "{" in a kept line

  /// Every rule set off (check_quality keeps everything, text unchanged).
  static QualityOptions none() {
    QualityOptions o;
    o.gopher_repetition = o.gopher_quality = o.c4 = false;
    return o;
  }
  /// Rule sets from a comma-separated list of "gopher" (both Gopher sets), "gopher_quality",
  /// "gopher_repetition", "c4", "all" or "none"; value_error naming an unknown name.
  static QualityOptions parse(const std::string& list);
};

/// The verdict on one document.
struct QualityResult {
  bool keep = true;     ///< false when a rule dropped the document
  std::string reason;   ///< when dropped: "quality:<rule>", e.g. "quality:gopher_min_words"
  std::string text;     ///< the text after the C4 line rules; the input when C4 is off; empty when dropped
  uint64_t lines_removed = 0;  ///< non-blank lines the C4 line rules removed
};

inline QualityOptions QualityOptions::parse(const std::string& list) {
  QualityOptions o = none();
  size_t i = 0;
  while (i <= list.size()) {
    size_t j = list.find(',', i);
    if (j == std::string::npos) j = list.size();
    size_t a = i, b = j;
    while (a < b && (list[a] == ' ' || list[a] == '\t')) ++a;
    while (b > a && (list[b - 1] == ' ' || list[b - 1] == '\t')) --b;
    std::string name = list.substr(a, b - a);
    if (name == "gopher") {
      o.gopher_quality = o.gopher_repetition = true;
    } else if (name == "gopher_quality") {
      o.gopher_quality = true;
    } else if (name == "gopher_repetition") {
      o.gopher_repetition = true;
    } else if (name == "c4") {
      o.c4 = true;
    } else if (name == "all") {
      o.gopher_quality = o.gopher_repetition = o.c4 = true;
    } else if (name == "none" || (name.empty() && list.find_first_not_of(" \t") == std::string::npos)) {
      // "none" (or an empty list) adds nothing
    } else {
      LOOM_CHECK(false, value_error, "quality filters: unknown name '", name, "' in '", list,
                 "' (expected gopher, gopher_quality, gopher_repetition, c4, all or none)");
    }
    i = j + 1;
  }
  return o;
}

namespace detail_quality {

/// The hash of a sequence extended by one more element hash.
inline uint64_t combine(uint64_t seq, uint64_t next) {
  return (((seq << 23) | (seq >> 41)) ^ next) * 0x9e3779b97f4a7c15ULL + 0x2545f4914f6cdd1dULL;
}

/// Byte length of the whitespace character at p (0 if none): ASCII space, \t \n \v \f \r and
/// the Unicode spaces listed in the file comment.
inline size_t space_len(const unsigned char* p, const unsigned char* end) {
  unsigned char c = p[0];
  if (c < 0x80) return (c == ' ' || (c >= '\t' && c <= '\r')) ? 1 : 0;
  if (c == 0xC2) return (end - p >= 2 && p[1] == 0xA0) ? 2 : 0;
  if (c == 0xE1) return (end - p >= 3 && p[1] == 0x9A && p[2] == 0x80) ? 3 : 0;
  if (c == 0xE3) return (end - p >= 3 && p[1] == 0x80 && p[2] == 0x80) ? 3 : 0;
  if (c == 0xE2 && end - p >= 3) {
    if (p[1] == 0x80 && ((p[2] >= 0x80 && p[2] <= 0x8A) || p[2] == 0xA8 || p[2] == 0xA9 || p[2] == 0xAF))
      return 3;
    if (p[1] == 0x81 && p[2] == 0x9F) return 3;
  }
  return 0;
}

/// Number of code points in s (bytes that are not UTF-8 continuation bytes).
inline size_t count_chars(std::string_view s) {
  size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

/// s without leading and trailing whitespace.
inline std::string_view trim(std::string_view s) {
  const unsigned char* b = reinterpret_cast<const unsigned char*>(s.data());
  const unsigned char* e = b + s.size();
  while (b < e) {
    size_t k = space_len(b, e);
    if (!k) break;
    b += k;
  }
  while (b < e) {  // trailing: check 1-, 2- and 3-byte spaces ending at e
    if (space_len(e - 1, e) == 1) { --e; continue; }
    if (e - b >= 2 && space_len(e - 2, e) == 2) { e -= 2; continue; }
    if (e - b >= 3 && space_len(e - 3, e) == 3) { e -= 3; continue; }
    break;
  }
  return std::string_view(reinterpret_cast<const char*>(b), size_t(e - b));
}

/// One whitespace-separated token: byte offset, byte length, length in code points.
struct Word {
  uint32_t begin, bytes, chars;
};

/// Byte classes for the word scanners: 0 an ASCII non-space, 1 an ASCII space, 2 a UTF-8
/// continuation byte, 3 a lead byte that may start a Unicode space, 4 another lead byte.
inline const uint8_t* byte_classes() {
  static const auto table = [] {
    struct T { uint8_t v[256]; } t{};
    for (int c = 0; c < 256; ++c) {
      if (c < 0x80) t.v[c] = (c == ' ' || (c >= '\t' && c <= '\r')) ? 1 : 0;
      else if (c < 0xC0) t.v[c] = 2;
      else t.v[c] = (c == 0xC2 || c == 0xE1 || c == 0xE2 || c == 0xE3) ? 3 : 4;
    }
    return t;
  }();
  return table.v;
}

/// Calls f(begin, end, chars) for each whitespace-separated token of [p, end).
template <class F>
void for_each_word(const unsigned char* p, const unsigned char* end, F&& f) {
  const uint8_t* cls = byte_classes();
  while (p < end) {
    // skip spaces
    while (p < end) {
      uint8_t k = cls[*p];
      if (k == 1) { ++p; continue; }
      if (k == 3) {
        size_t n = space_len(p, end);
        if (n) { p += n; continue; }
      }
      break;
    }
    if (p >= end) break;
    const unsigned char* w = p;
    uint32_t chars = 0;
    while (p < end) {
      uint8_t k = cls[*p];
      if (k == 0 || k == 4) {
        ++chars;
      } else if (k == 1) {
        break;
      } else if (k == 3) {
        if (space_len(p, end)) break;
        ++chars;
      }
      ++p;
    }
    f(w, p, chars);
  }
}

/// Appends the whitespace-separated tokens of s (offsets relative to `base`) to out.
inline void split_words(std::string_view s, size_t base, std::vector<Word>& out) {
  const unsigned char* start = reinterpret_cast<const unsigned char*>(s.data());
  for_each_word(start, start + s.size(), [&](const unsigned char* w, const unsigned char* e, uint32_t chars) {
    out.push_back({uint32_t(base + size_t(w - start)), uint32_t(e - w), chars});
  });
}

/// Calls f(line) for each '\n'-separated line (a trailing '\r' dropped; no empty last line
/// after a final '\n').
template <class F>
void for_each_line(std::string_view text, F&& f) {
  size_t i = 0, n = text.size();
  while (i < n) {
    const void* nl = std::memchr(text.data() + i, '\n', n - i);
    size_t j = nl ? size_t(static_cast<const char*>(nl) - text.data()) : n;
    std::string_view line = text.substr(i, j - i);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    f(line);
    i = j + 1;
  }
}

/// A reusable open-addressing table from 64-bit keys to (count, first index): 16-byte slots,
/// key 0 marks an empty slot (a key of 0 is stored as 1), cleared with one memset per reset.
class HashCounter {
 public:
  /// Empties the table and sizes it for up to n keys.
  void reset(size_t n) {
    size_t cap = 64;
    int bits = 6;
    while (cap < 2 * n + 2) {
      cap <<= 1;
      ++bits;
    }
    if (cap > slots_.size()) slots_.resize(cap);
    std::memset(static_cast<void*>(slots_.data()), 0, cap * sizeof(Slot));
    shift_ = 64 - bits;
    mask_ = cap - 1;
  }
  /// Adds one occurrence of key, first seen at `index`; returns the slot.
  size_t add(uint64_t key, uint32_t index) {
    if (key == 0) key = 1;
    size_t s = size_t((key * 0x9e3779b97f4a7c15ULL) >> shift_);
    while (true) {
      Slot& sl = slots_[s];
      if (sl.key == key) {
        ++sl.count;
        return s;
      }
      if (sl.key == 0) {
        sl = {key, 1, index};
        return s;
      }
      s = (s + 1) & mask_;
    }
  }
  /// The occurrence count in a slot.
  uint32_t count(size_t slot) const { return slots_[slot].count; }
  /// The index given with the first occurrence of a slot's key.
  uint32_t first(size_t slot) const { return slots_[slot].first; }

 private:
  struct Slot {
    uint64_t key;
    uint32_t count, first;
  };
  std::vector<Slot> slots_;
  size_t mask_ = 0;
  int shift_ = 58;
};

/// Scratch buffers reused across documents on one thread.
struct Scratch {
  std::vector<Word> words;         ///< tokens of the whole text
  std::vector<uint64_t> hashes;    ///< word hashes, then n-gram hashes in place
  std::vector<uint64_t> word_hash; ///< word hashes (kept)
  std::vector<uint64_t> prefix;    ///< prefix sums of word lengths in code points
  HashCounter table, seen;         ///< n-gram counts; n-grams seen by the duplicate walk
  std::vector<uint32_t> cand, next, slot;  ///< n-gram positions still worth looking at
  std::vector<uint8_t> dup;        ///< per position: the n-gram there occurs more than once
  std::string lower;               ///< a lower-cased line
  std::string line_buf;            ///< a line with citations removed
  std::vector<std::string_view> paras, lines;  ///< paragraphs and non-blank lines
};

/// The thread's scratch buffers.
inline Scratch& scratch() {
  static thread_local Scratch s;
  return s;
}

/// Checks a fraction against a maximum (0 = rule off).
inline bool over(double value, double max) { return max > 0 && value > max; }

/// Characters (code points) of the duplicates in a list of items: returns (duplicate items,
/// characters of the items that repeat an earlier one).
template <class Items>
std::pair<uint64_t, uint64_t> find_duplicates(const Items& items, HashCounter& table) {
  table.reset(items.size());
  uint64_t dup = 0, dup_chars = 0;
  for (uint32_t i = 0; i < items.size(); ++i) {
    std::string_view s = items[i];
    size_t slot = table.add(hash64(s), i);
    if (table.count(slot) > 1) {
      ++dup;
      dup_chars += count_chars(s);
    }
  }
  return {dup, dup_chars};
}

/// Gopher repetition rules; returns the rule name that fails, or "" when the text passes.
///
/// As datatrove's GopherRepetitionFilter: duplicate paragraphs / lines are those equal to an
/// earlier one, and their character fraction is relative to the whole text; the top n-gram
/// fraction is (characters of the most frequent n-gram, words joined by one space) x (its
/// count) / (characters of the text), ties going to the n-gram seen first; the duplicate n-gram
/// fraction walks the n-grams left to right, and when an n-gram was seen before adds its
/// characters and jumps n words ahead (so overlapping repeats are not counted twice, and the
/// first occurrence is not counted), else remembers it and moves one word on.
inline std::string check_gopher_repetition(std::string_view text, const QualityOptions& o,
                                           Scratch& S) {
  double total = double(count_chars(text));
  if (total == 0) return "";
  // paragraphs: blocks of non-blank lines
  auto& paras = S.paras;
  auto& lines = S.lines;
  paras.clear();
  lines.clear();
  {
    size_t para_begin = std::string_view::npos, para_end = 0;
    for_each_line(text, [&](std::string_view line) {
      size_t off = size_t(line.data() - text.data());
      std::string_view t = trim(line);
      if (t.empty()) {
        if (para_begin != std::string_view::npos)
          paras.push_back(trim(text.substr(para_begin, para_end - para_begin)));
        para_begin = std::string_view::npos;
      } else {
        lines.push_back(t);
        if (para_begin == std::string_view::npos) para_begin = off;
        para_end = off + line.size();
      }
    });
    if (para_begin != std::string_view::npos)
      paras.push_back(trim(text.substr(para_begin, para_end - para_begin)));
  }
  if (!paras.empty()) {
    auto [dup, dup_chars] = find_duplicates(paras, S.table);
    if (over(double(dup) / double(paras.size()), o.dup_para_frac)) return "gopher_dup_para_frac";
    if (over(double(dup_chars) / total, o.dup_para_char_frac)) return "gopher_dup_para_char_frac";
  }
  if (!lines.empty()) {
    auto [dup, dup_chars] = find_duplicates(lines, S.table);
    if (over(double(dup) / double(lines.size()), o.dup_line_frac)) return "gopher_dup_line_frac";
    if (over(double(dup_chars) / total, o.dup_line_char_frac)) return "gopher_dup_line_char_frac";
  }

  // word hashes and a prefix sum of word lengths (the words were split by the caller)
  const auto& W = S.words;
  size_t nw = W.size();
  S.word_hash.resize(nw);
  S.prefix.resize(nw + 1);
  S.prefix[0] = 0;
  for (size_t i = 0; i < nw; ++i) {
    S.word_hash[i] = hash64(text.substr(W[i].begin, W[i].bytes));
    S.prefix[i + 1] = S.prefix[i] + W[i].chars;
  }
  auto ngram_chars = [&](size_t i, size_t n) { return double(S.prefix[i + n] - S.prefix[i] + n - 1); };
  auto frac_for = [](const std::vector<std::pair<int, double>>& list, size_t n) {
    for (auto [k, f] : list)
      if (k >= 1 && size_t(k) == n) return f;
    return 0.0;
  };
  size_t max_n = 0;
  for (auto [k, f] : o.top_ngram_char_frac)
    if (k >= 1 && f > 0) max_n = std::max(max_n, size_t(k));
  for (auto [k, f] : o.dup_ngram_char_frac)
    if (k >= 1 && f > 0) max_n = std::max(max_n, size_t(k));
  max_n = std::min(max_n, nw);
  // n grows from 1 to max_n. An n-gram can only repeat where the (n-1)-gram at the same position
  // repeats, so only those positions ("candidates") are hashed and counted at the next n; every
  // other n-gram occurs once. H[i] holds the hash of the n-gram at candidate position i.
  auto& H = S.hashes;
  H = S.word_hash;
  auto& cand = S.cand;
  cand.resize(nw);
  for (size_t i = 0; i < nw; ++i) cand[i] = uint32_t(i);
  auto& dup = S.dup;
  for (size_t n = 1; n <= max_n; ++n) {
    size_t count = nw - n + 1;  // n-grams in the text
    if (n > 1)
      for (uint32_t i : cand) H[i] = combine(H[i], S.word_hash[i + n - 1]);
    // count the candidates' n-grams; remember which repeat
    S.table.reset(cand.size());
    S.slot.resize(cand.size());
    for (size_t k = 0; k < cand.size(); ++k) S.slot[k] = uint32_t(S.table.add(H[cand[k]], cand[k]));
    uint32_t best_count = 1, best_first = 0;  // with no repeats: the first n-gram, once
    S.next.clear();
    dup.assign(count, 0);
    for (size_t k = 0; k < cand.size(); ++k) {
      uint32_t c = S.table.count(S.slot[k]);
      if (c < 2) continue;
      uint32_t i = cand[k];
      dup[i] = 1;
      if (i + n < nw) S.next.push_back(i);
      uint32_t f = S.table.first(S.slot[k]);
      if (c > best_count || (c == best_count && f < best_first)) {
        best_count = c;
        best_first = f;
      }
    }
    double top = frac_for(o.top_ngram_char_frac, n);
    if (top > 0 && over(ngram_chars(best_first, n) * best_count / total, top))
      return "gopher_top_" + std::to_string(n) + "_gram";
    double dfrac = frac_for(o.dup_ngram_char_frac, n);
    if (dfrac > 0 && best_count > 1) {
      // datatrove's walk; an n-gram that occurs once is never found again, so it need not be
      // remembered
      S.seen.reset(cand.size());
      double repeated = 0;
      size_t i = 0;
      while (i < count) {
        if (dup[i] && S.seen.count(S.seen.add(H[i], uint32_t(i))) > 1) {
          repeated += ngram_chars(i, n);
          i += n;
        } else {
          ++i;
        }
      }
      if (over(repeated / total, dfrac)) return "gopher_dup_" + std::to_string(n) + "_gram";
    }
    cand.swap(S.next);
  }
  return "";
}

/// True for an ASCII punctuation character.
inline bool is_punct(unsigned char c) {
  return (c >= '!' && c <= '/') || (c >= ':' && c <= '@') || (c >= '[' && c <= '`') ||
         (c >= '{' && c <= '~');
}

/// True when the line (already trimmed on the left) starts with a bullet.
inline bool starts_with_bullet(std::string_view t) {
  static const char* const bullets[] = {"\xE2\x80\xA2", "\xE2\x97\x8F", "\xE2\x96\xAA",
                                        "\xE2\x97\xA6", "\xE2\x80\xA3", "\xE2\x88\x99"};
  if (t.size() >= 2 && (t[0] == '-' || t[0] == '*') && t[1] == ' ') return true;
  for (const char* b : bullets)
    if (t.size() >= 3 && t.compare(0, 3, b) == 0) return true;
  return false;
}

/// True when s ends with "..." or "…".
inline bool ends_with_ellipsis(std::string_view s) {
  return (s.size() >= 3 && s.compare(s.size() - 3, 3, "...") == 0) ||
         (s.size() >= 3 && s.compare(s.size() - 3, 3, "\xE2\x80\xA6") == 0);
}

/// Gopher quality rules; returns the failing rule name, or "".
inline std::string check_gopher_quality(std::string_view text, const QualityOptions& o, Scratch& S) {
  const auto& W = S.words;  // split by the caller
  uint64_t n_words = 0, word_chars = 0, alpha = 0, stop = 0;
  for (const Word& w : W) {
    const unsigned char* p = reinterpret_cast<const unsigned char*>(text.data()) + w.begin;
    bool all_punct = true, has_alpha = false;
    for (uint32_t k = 0; k < w.bytes; ++k) {
      unsigned char c = p[k];
      if (!is_punct(c)) all_punct = false;
      if (c >= 0x80 || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z')) has_alpha = true;
    }
    if (all_punct) continue;
    ++n_words;
    word_chars += w.chars;
    alpha += has_alpha;
    // stop word: the token with ASCII punctuation trimmed from both ends
    uint32_t a = 0, b = w.bytes;
    while (a < b && is_punct(p[a])) ++a;
    while (b > a && is_punct(p[b - 1])) --b;
    std::string_view core(reinterpret_cast<const char*>(p) + a, b - a);
    if (core.size() >= 2 && core.size() <= 4) {
      if (core == "the" || core == "be" || core == "to" || core == "of" || core == "and" ||
          core == "that" || core == "have" || core == "with")
        ++stop;
    }
  }
  if (o.min_words > 0 && int64_t(n_words) < o.min_words) return "gopher_min_words";
  if (o.max_words > 0 && int64_t(n_words) > o.max_words) return "gopher_max_words";
  if (n_words == 0) return "";  // nothing more can be measured
  double mean = double(word_chars) / double(n_words);
  if (o.min_mean_word_length > 0 && mean < o.min_mean_word_length) return "gopher_min_mean_word_length";
  if (o.max_mean_word_length > 0 && mean > o.max_mean_word_length) return "gopher_max_mean_word_length";
  // '#' and ellipsis counts ("..." counted without overlap, as Python's str.count)
  uint64_t hashes = 0, ellipses = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (c == '#') {
      ++hashes;
    } else if (c == '.') {
      size_t j = i;
      while (j < text.size() && text[j] == '.') ++j;
      ellipses += (j - i) / 3;
      i = j - 1;
    } else if (c == '\xE2' && i + 2 < text.size() && text[i + 1] == '\x80' && text[i + 2] == '\xA6') {
      ++ellipses;
      i += 2;
    }
  }
  if (over(double(hashes) / double(n_words), o.max_symbol_word_ratio)) return "gopher_hash_ratio";
  if (over(double(ellipses) / double(n_words), o.max_symbol_word_ratio)) return "gopher_ellipsis_ratio";
  uint64_t lines = 0, bullets = 0, ellipsis_lines = 0;
  for_each_line(text, [&](std::string_view line) {
    std::string_view t = trim(line);
    if (t.empty()) return;
    ++lines;
    bullets += starts_with_bullet(t);
    ellipsis_lines += ends_with_ellipsis(t);
  });
  if (lines > 0) {
    if (over(double(bullets) / double(lines), o.max_bullet_lines_ratio)) return "gopher_bullet_lines";
    if (over(double(ellipsis_lines) / double(lines), o.max_ellipsis_lines_ratio))
      return "gopher_ellipsis_lines";
  }
  if (o.min_alpha_words_ratio > 0 && double(alpha) / double(n_words) < o.min_alpha_words_ratio)
    return "gopher_alpha_words";
  if (o.min_stop_words > 0 && int64_t(stop) < o.min_stop_words) return "gopher_stop_words";
  return "";
}

/// Sentences in a kept C4 line: runs of . ! ? followed by a space or the line end (closing
/// quotes and brackets allowed in between); at least 1.
inline uint64_t count_sentences(std::string_view line) {
  uint64_t n = 0;
  size_t i = 0, len = line.size();
  while (i < len) {
    char c = line[i];
    if (c == '.' || c == '!' || c == '?') {
      size_t j = i;
      while (j < len && (line[j] == '.' || line[j] == '!' || line[j] == '?')) ++j;
      size_t k = j;
      while (k < len && (line[k] == '"' || line[k] == '\'' || line[k] == ')' || line[k] == ']')) ++k;
      if (k == len || line[k] == ' ' || line[k] == '\t') ++n;
      i = j;
    } else {
      ++i;
    }
  }
  return n ? n : 1;
}

/// Number of whitespace-separated tokens in s; `longest` gets the longest one's code points.
inline size_t count_words(std::string_view s, uint32_t& longest) {
  size_t n = 0;
  longest = 0;
  const unsigned char* p = reinterpret_cast<const unsigned char*>(s.data());
  for_each_word(p, p + s.size(), [&](const unsigned char*, const unsigned char*, uint32_t chars) {
    ++n;
    longest = std::max(longest, chars);
  });
  return n;
}

/// `line` with Wikipedia citation markers removed into `out`; returns false (out untouched)
/// when there are none.
inline bool remove_citations(std::string_view line, std::string& out) {
  if (line.find('[') == std::string_view::npos) return false;
  bool any = false;
  out.clear();
  size_t i = 0;
  while (i < line.size()) {
    if (line[i] == '[') {
      size_t j = i + 1;
      while (j < line.size() && line[j] >= '0' && line[j] <= '9') ++j;
      size_t skip = 0;
      if (j < line.size() && line[j] == ']') skip = j + 1 - i;
      else if (line.compare(i, 6, "[edit]") == 0) skip = 6;
      else if (line.compare(i, 17, "[citation needed]") == 0) skip = 17;
      if (skip) {
        any = true;
        i += skip;
        continue;
      }
    }
    out.push_back(line[i]);
    ++i;
  }
  return any;
}

/// The C4 rules: fills r (text, lines_removed; keep/reason when the page is dropped).
inline void apply_c4(std::string_view text, const QualityOptions& o, Scratch& S, QualityResult& r) {
  static const char* const policy[] = {"terms of use",  "privacy policy", "cookie policy",
                                       "uses cookies",  "use of cookies", "use cookies"};
  std::string out;
  out.reserve(text.size());
  uint64_t sentences = 0, removed = 0;
  std::string reason;
  for_each_line(text, [&](std::string_view raw) {
    if (!reason.empty()) return;
    std::string_view line = trim(raw);
    if (line.empty()) return;  // blank lines vanish without counting as removed
    ++removed;                 // undone below when the line is kept
    uint32_t longest = 0;
    size_t n_words = count_words(line, longest);
    if (o.c4_max_word_length > 0 && int64_t(longest) > o.c4_max_word_length) return;
    if (o.c4_remove_citations && remove_citations(line, S.line_buf)) {
      line = trim(S.line_buf);
      n_words = count_words(line, longest);
    }
    if (o.c4_terminal_punct) {
      char last = line.empty() ? 0 : line.back();
      if (!(last == '.' || last == '?' || last == '!' || last == '"')) return;
      if (line.size() >= 3 && line.compare(line.size() - 3, 3, "...") == 0) return;
    }
    if (o.c4_min_words_per_line > 0 && int64_t(n_words) < o.c4_min_words_per_line) return;
    S.lower.assign(line.data(), line.size());
    for (char& c : S.lower)
      if (c >= 'A' && c <= 'Z') c = char(c + 32);
    std::string_view low = S.lower;
    if (o.c4_lorem_ipsum && low.find("lorem ipsum") != std::string_view::npos) {
      reason = "c4_lorem_ipsum";
      return;
    }
    if (o.c4_javascript && low.find("javascript") != std::string_view::npos) return;
    if (o.c4_curly_bracket && line.find('{') != std::string_view::npos) {
      reason = "c4_curly_bracket";
      return;
    }
    if (o.c4_policy)
      for (const char* p : policy)
        if (low.find(p) != std::string_view::npos) return;
    --removed;
    sentences += count_sentences(line);
    if (!out.empty()) out.push_back('\n');
    out.append(line.data(), line.size());
  });
  if (reason.empty() && o.c4_min_sentences > 0 && int64_t(sentences) < o.c4_min_sentences)
    reason = "c4_min_sentences";
  r.lines_removed = removed;
  if (!reason.empty()) {
    r.keep = false;
    r.reason = "quality:" + reason;
    r.text.clear();
  } else {
    r.text = std::move(out);
  }
}

}  // namespace detail_quality

/// Runs the enabled rules in FineWeb's order (Gopher repetition, Gopher quality, C4) on one
/// normalised text; stops at the first rule that drops it.
inline QualityResult check_quality(std::string_view text, const QualityOptions& options) {
  using namespace detail_quality;
  Scratch& S = scratch();
  QualityResult r;
  std::string fail;
  if (options.gopher_repetition || options.gopher_quality) {
    S.words.clear();
    split_words(text, 0, S.words);
  }
  if (options.gopher_repetition) fail = check_gopher_repetition(text, options, S);
  if (fail.empty() && options.gopher_quality) fail = check_gopher_quality(text, options, S);
  if (!fail.empty()) {
    r.keep = false;
    r.reason = "quality:" + fail;
    return r;
  }
  if (options.c4) {
    apply_c4(text, options, S, r);
  } else {
    r.text.assign(text.data(), text.size());
  }
  return r;
}

/// All reason codes this header can produce with the default n-gram lists (for reports/docs).
inline const std::vector<std::string>& quality_reasons() {
  static const std::vector<std::string> reasons = [] {
    std::vector<std::string> v = {"quality:gopher_dup_para_frac", "quality:gopher_dup_para_char_frac",
                                  "quality:gopher_dup_line_frac", "quality:gopher_dup_line_char_frac"};
    for (int n = 2; n <= 4; ++n) v.push_back("quality:gopher_top_" + std::to_string(n) + "_gram");
    for (int n = 5; n <= 10; ++n) v.push_back("quality:gopher_dup_" + std::to_string(n) + "_gram");
    for (const char* s : {"gopher_min_words", "gopher_max_words", "gopher_min_mean_word_length",
                          "gopher_max_mean_word_length", "gopher_hash_ratio", "gopher_ellipsis_ratio",
                          "gopher_bullet_lines", "gopher_ellipsis_lines", "gopher_alpha_words",
                          "gopher_stop_words", "c4_lorem_ipsum", "c4_curly_bracket", "c4_min_sentences"})
      v.push_back(std::string("quality:") + s);
    return v;
  }();
  return reasons;
}

}  // namespace loom::data
