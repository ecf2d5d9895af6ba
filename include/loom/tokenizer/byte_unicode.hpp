#pragma once
/// @file byte_unicode.hpp
/// GPT-2's reversible byte <-> Unicode mapping, used to write token bytes as printable text in
/// encoder.json, vocab.bpe and Hugging Face tokenizer.json files.
///
/// The 188 bytes that are printable Latin-1 ('!'..'~', '¡'..'¬', '®'..'ÿ') stand for
/// themselves; the other 68 bytes (controls, space, DEL, NBSP, soft hyphen) are shifted to
/// U+0100.. in byte order, so the space 0x20 becomes 'Ġ' (U+0120) and '\n' becomes 'Ċ' (U+010A).

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "loom/tokenizer/utf8.hpp"

namespace loom::tokenizer {

/// The code point that stands for byte b in GPT-2's byte-level alphabet.
inline std::uint32_t byte_to_unicode(std::uint8_t b) {
  static const std::array<std::uint32_t, 256> table = [] {
    std::array<std::uint32_t, 256> t{};
    std::uint32_t next = 256;
    for (int c = 0; c < 256; ++c) {
      bool printable = (c >= '!' && c <= '~') || (c >= 0xA1 && c <= 0xAC) || (c >= 0xAE && c <= 0xFF);
      t[c] = printable ? static_cast<std::uint32_t>(c) : next++;
    }
    return t;
  }();
  return table[b];
}

/// The byte that code point cp stands for, or -1 when cp is not in the alphabet.
inline int unicode_to_byte(std::uint32_t cp) {
  static const std::array<std::int16_t, 512> table = [] {
    std::array<std::int16_t, 512> t{};
    t.fill(-1);
    for (int b = 0; b < 256; ++b) t[byte_to_unicode(static_cast<std::uint8_t>(b))] = static_cast<std::int16_t>(b);
    return t;
  }();
  return cp < 512 ? table[cp] : -1;
}

/// Writes raw token bytes in the byte-level alphabet (b"\x20hi" -> "Ġhi"), as UTF-8.
inline std::string bytes_to_byte_level(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char b : bytes) append_utf8(out, byte_to_unicode(b));
  return out;
}

/// Reads a byte-level string back into raw bytes; nullopt if it is not valid UTF-8 or uses a
/// character outside the 256-character alphabet.
inline std::optional<std::string> byte_level_to_bytes(std::string_view text) {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size();) {
    Utf8Char ch = decode_utf8(s, i, text.size());
    if (ch.cp == invalid_code_point) return std::nullopt;
    int b = unicode_to_byte(ch.cp);
    if (b < 0) return std::nullopt;
    out += static_cast<char>(b);
    i += ch.len;
  }
  return out;
}

}  // namespace loom::tokenizer
