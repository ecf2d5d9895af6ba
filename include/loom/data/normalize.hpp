#pragma once
/// @file normalize.hpp
/// Text normalisation, the first thing the pipeline does to every document after reading it, so
/// that the filters, the deduplication and the tokenizer all see one canonical form of the text.
///
/// In this order:
/// 1. Invalid UTF-8 is repaired: each maximal invalid subpart becomes U+FFFD, the "best practice"
///    of the Unicode Standard (ch. 3.9, "U+FFFD Substitution of Maximal Subparts") that the WHATWG
///    Encoding Standard's decoder and Python's bytes.decode("utf-8", "replace") follow.
/// 2. Line ends are unified: "\r\n" and a lone "\r" become "\n", and so do U+2028 LINE SEPARATOR
///    and U+2029 PARAGRAPH SEPARATOR.
/// 3. Control characters are dropped: C0 (U+0000-U+001F) except tab and newline, DEL (U+007F)
///    and C1 (U+0080-U+009F). A byte-order mark U+FEFF at the start of the text is dropped too.
/// 4. Unicode Normalization Form C (UAX #15) through utf8proc, as datatrove's and
///    CCNet's normalisers do (NFC is the form the web mostly uses already, so it changes little
///    and never changes meaning; NFKC would, e.g. "ﬁ" -> "fi", and is left to the tokenizer).
///
/// Speed: English web text is almost all ASCII, so the text is first scanned 8 bytes at a time;
/// a text of printable ASCII, tabs and newlines is returned as it is. Otherwise one pass repairs
/// and cleans, and utf8proc is called only on the non-ASCII runs, each with the ASCII character
/// before it (an ASCII character is always a safe NFC boundary: it is a starter that never
/// composes with what precedes it), so a long English text with a few curly quotes costs a few
/// tiny utf8proc calls rather than one over the whole text.
///
/// NFC needs libutf8proc (apt-get install libutf8proc-dev); CMake defines LOOM_HAVE_UTF8PROC=1
/// when it finds it. Without it, normalize() with nfc=true throws value_error; nfc=false works.

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

#include "loom/core/error.hpp"
#include "loom/tokenizer/utf8.hpp"

#if LOOM_HAVE_UTF8PROC
#include <utf8proc.h>
#endif

namespace loom::data {

/// Options of normalize().
struct NormalizeOptions {
  bool nfc = true;  ///< apply Unicode NFC (needs utf8proc)
};

/// What normalize() changed in one text.
struct NormalizeStats {
  uint64_t invalid_bytes = 0;  ///< bytes of invalid UTF-8 (each maximal invalid subpart became one U+FFFD)
  uint64_t control_chars = 0;  ///< control characters dropped (C0 but tab and newline, DEL, C1)
  uint64_t newlines = 0;       ///< "\r\n", lone "\r", U+2028 and U+2029 turned into "\n"
  bool nfc_changed = false;    ///< NFC changed the text
};

/// True when this build has NFC (utf8proc).
inline bool have_nfc() {
#if LOOM_HAVE_UTF8PROC
  return true;
#else
  return false;
#endif
}

namespace detail {

/// True for a byte that the fast path keeps as it is: printable ASCII, tab or newline.
inline bool is_plain_ascii(unsigned char c) { return (c >= 0x20 && c < 0x7F) || c == '\t' || c == '\n'; }

/// Index of the first byte of `s` that is not plain ASCII (see is_plain_ascii), or s.size().
/// Looks at 8 bytes at a time: a word is checked byte by byte only when it may hold a byte
/// >= 0x80, < 0x20 or == 0x7F (newlines and tabs make a word look suspicious too; that is rare).
inline size_t find_non_plain(std::string_view s) {
  constexpr uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t w;
    std::memcpy(&w, p + i, 8);
    const uint64_t below_space = (w - 0x20 * ones) & ~w & highs;  // some byte < 0x20 (or >= 0x80)
    const uint64_t d = w ^ (0x7F * ones);
    const uint64_t del = (d - ones) & ~d & highs;                  // some byte == 0x7F
    if (((w & highs) | below_space | del) == 0) continue;
    for (size_t k = 0; k < 8; ++k)
      if (!is_plain_ascii(p[i + k])) return i + k;
  }
  for (; i < n; ++i)
    if (!is_plain_ascii(p[i])) return i;
  return n;
}

/// Throws the value_error of a build without utf8proc asked for NFC.
[[noreturn]] inline void throw_no_nfc() {
  throw value_error(
      "normalize: NFC needs utf8proc, but loom was built without it (apt-get install libutf8proc-dev and "
      "reconfigure, or pass nfc=false)");
}

/// Appends the NFC form of `text` (valid UTF-8, only non-ASCII runs with their neighbours) to out.
inline void append_nfc(std::string& out, const char* text, size_t n) {
#if LOOM_HAVE_UTF8PROC
  utf8proc_uint8_t* mapped = nullptr;
  const utf8proc_ssize_t len =
      utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(text), utf8proc_ssize_t(n), &mapped,
                   utf8proc_option_t(UTF8PROC_STABLE | UTF8PROC_COMPOSE));
  if (len < 0) {
    std::free(mapped);
    throw value_error(loom::detail::concat("normalize: utf8proc NFC failed: ", utf8proc_errmsg(len)));
  }
  out.append(reinterpret_cast<const char*>(mapped), size_t(len));
  std::free(mapped);
#else
  (void)out, (void)text, (void)n;
  throw_no_nfc();
#endif
}

/// Applies NFC to valid UTF-8 `text`, calling utf8proc only on each run of non-ASCII bytes
/// together with the ASCII character before it. Returns true (and sets `out`) when NFC changed it.
inline bool nfc_runs(const std::string& text, std::string& out) {
  const size_t n = text.size();
  const auto* p = reinterpret_cast<const unsigned char*>(text.data());
  std::string seg;
  size_t copied = 0;  // text[0, copied) is already in out (once something changed)
  bool changed = false;
  size_t i = 0;
  while (i < n) {
    size_t first = i;
    while (first < n && p[first] < 0x80) ++first;
    if (first == n) break;
    size_t end = first;
    while (end < n && p[end] >= 0x80) ++end;
    const size_t start = first > 0 ? first - 1 : 0;  // the starter that may compose with the run
    seg.clear();
    append_nfc(seg, text.data() + start, end - start);
    if (seg.size() != end - start || std::memcmp(seg.data(), text.data() + start, seg.size()) != 0) {
      if (!changed) out.reserve(n);
      changed = true;
      out.append(text, copied, start - copied);
      out += seg;
      copied = end;
    }
    i = end;
  }
  if (changed) out.append(text, copied, n - copied);
  return changed;
}

}  // namespace detail

/// The normalised text: invalid UTF-8 repaired (each maximal invalid subpart -> U+FFFD), "\r\n",
/// lone "\r", U+2028 and U+2029 -> "\n", control characters (C0 but tab and newline, DEL, C1)
/// dropped, a leading U+FEFF dropped, then NFC (options.nfc). Sets *stats to what it changed.
inline std::string normalize(std::string_view text, const NormalizeOptions& options = {},
                             NormalizeStats* stats = nullptr) {
  if (options.nfc && !have_nfc()) detail::throw_no_nfc();
  const size_t first = detail::find_non_plain(text);
  if (first == text.size()) {  // fast path: plain ASCII
    if (stats) *stats = NormalizeStats{};
    return std::string(text);
  }

  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  NormalizeStats st;
  std::string out;
  out.reserve(n + 16);
  out.append(text.data(), first);
  bool non_ascii = false;
  size_t i = first;
  while (i < n) {
    const unsigned char c = s[i];
    if (detail::is_plain_ascii(c)) {
      size_t j = i + 1;
      while (j < n && detail::is_plain_ascii(s[j])) ++j;
      out.append(text.data() + i, j - i);
      i = j;
      continue;
    }
    if (c == '\r') {
      out += '\n';
      ++st.newlines;
      i += (i + 1 < n && s[i + 1] == '\n') ? 2 : 1;
      continue;
    }
    if (c < 0x80) {  // C0 control or DEL
      ++st.control_chars;
      ++i;
      continue;
    }
    const tokenizer::Utf8Char ch = tokenizer::decode_utf8(s, i, n);
    if (ch.cp == tokenizer::invalid_code_point) {
      const size_t bad = tokenizer::utf8_maximal_subpart(s, i, n);
      out += "\xEF\xBF\xBD";
      st.invalid_bytes += bad;
      non_ascii = true;
      i += bad;
      continue;
    }
    if (ch.cp <= 0x9F) {  // C1 control
      ++st.control_chars;
    } else if (ch.cp == 0x2028 || ch.cp == 0x2029) {
      out += '\n';
      ++st.newlines;
    } else if (ch.cp == 0xFEFF && out.empty()) {
      // a byte-order mark at the start: dropped (also after dropped controls, so that
      // normalize(normalize(x)) == normalize(x))
    } else {
      out.append(text.data() + i, ch.len);
      non_ascii = true;
    }
    i += ch.len;
  }

  if (options.nfc && non_ascii) {
    std::string composed;
    if (detail::nfc_runs(out, composed)) {
      out.swap(composed);
      st.nfc_changed = true;
    }
  }

  if (stats) *stats = st;
  return out;
}

}  // namespace loom::data
