#pragma once
/// @file utf8.hpp
/// Strict UTF-8 decoding of one code point, UTF-8 encoding, and lossy repair of byte strings.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace loom::tokenizer {

/// Marks a byte that does not start a valid UTF-8 sequence (decode_utf8 returns it with length 1).
inline constexpr std::uint32_t invalid_code_point = 0xFFFFFFFFu;

/// One decoded code point and the number of bytes it used.
struct Utf8Char {
  std::uint32_t cp;   ///< the code point, or invalid_code_point
  std::uint32_t len;  ///< bytes consumed (1 for an invalid byte)
};

/// Decodes the code point at s[i] (i < n), strictly: overlong forms, surrogates and values above
/// U+10FFFF are invalid. An invalid sequence gives {invalid_code_point, 1}.
inline Utf8Char decode_utf8(const unsigned char* s, std::size_t i, std::size_t n) {
  const unsigned c = s[i];
  if (c < 0x80) return {c, 1};
  auto cont = [&](std::size_t k) { return i + k < n && (s[i + k] & 0xC0) == 0x80; };
  if (c >= 0xC2 && c <= 0xDF) {
    if (cont(1)) return {((c & 0x1Fu) << 6) | (s[i + 1] & 0x3Fu), 2};
  } else if (c >= 0xE0 && c <= 0xEF) {
    if (cont(1) && cont(2)) {
      std::uint32_t cp = ((c & 0x0Fu) << 12) | ((s[i + 1] & 0x3Fu) << 6) | (s[i + 2] & 0x3Fu);
      if (cp >= 0x800 && (cp < 0xD800 || cp > 0xDFFF)) return {cp, 3};
    }
  } else if (c >= 0xF0 && c <= 0xF4) {
    if (cont(1) && cont(2) && cont(3)) {
      std::uint32_t cp = ((c & 0x07u) << 18) | ((s[i + 1] & 0x3Fu) << 12) |
                         ((s[i + 2] & 0x3Fu) << 6) | (s[i + 3] & 0x3Fu);
      if (cp >= 0x10000 && cp <= 0x10FFFF) return {cp, 4};
    }
  }
  return {invalid_code_point, 1};
}

/// Appends the UTF-8 encoding of code point cp (which must be <= U+10FFFF) to out.
inline void append_utf8(std::string& out, std::uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

/// Length of the longest prefix of s[i..n) that could still start a valid sequence
/// (the "maximal subpart" of Unicode §3.9), at least 1. Used for U+FFFD replacement.
inline std::size_t utf8_maximal_subpart(const unsigned char* s, std::size_t i, std::size_t n) {
  const unsigned c = s[i];
  std::size_t need = 0;
  unsigned lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (c >= 0xC2 && c <= 0xDF) need = 1;
  else if (c >= 0xE0 && c <= 0xEF) { need = 2; if (c == 0xE0) lo = 0xA0; if (c == 0xED) hi = 0x9F; }
  else if (c >= 0xF0 && c <= 0xF4) { need = 3; if (c == 0xF0) lo = 0x90; if (c == 0xF4) hi = 0x8F; }
  else return 1;
  std::size_t k = 1;
  for (; k <= need && i + k < n; ++k) {
    unsigned b = s[i + k];
    if (k == 1 ? (b < lo || b > hi) : (b & 0xC0) != 0x80) break;
  }
  return k;
}

/// Returns bytes as valid UTF-8: each invalid sequence (maximal subpart) becomes U+FFFD, as
/// Python's bytes.decode("utf-8", errors="replace") does.
inline std::string to_valid_utf8(std::string_view bytes) {
  const auto* s = reinterpret_cast<const unsigned char*>(bytes.data());
  const std::size_t n = bytes.size();
  std::string out;
  out.reserve(n);
  for (std::size_t i = 0; i < n;) {
    Utf8Char ch = decode_utf8(s, i, n);
    if (ch.cp != invalid_code_point) {
      out.append(bytes.data() + i, ch.len);
      i += ch.len;
    } else {
      out += "\xEF\xBF\xBD";
      i += utf8_maximal_subpart(s, i, n);
    }
  }
  return out;
}

}  // namespace loom::tokenizer
