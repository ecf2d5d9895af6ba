#pragma once
/// @file hash.hpp
/// The hashes the data pipeline shares, and the one word splitter that MinHash deduplication
/// (dedup.hpp) and n-gram decontamination (split.hpp) both use.
///
/// - hash64: a seeded 64-bit hash of bytes, written for this project in the style of wyhash
///   (Wang Yi, 2019): 16 bytes at a time are folded with one 64x64->128-bit multiply ("mum":
///   the product's high and low halves xor-ed), and the result goes through the splitmix64
///   finaliser (Steele, Lea and Flood, "Fast splittable pseudorandom number generators",
///   OOPSLA 2014). Quality: every input bit reaches every output bit; the tests check that
///   flipping one input bit flips 50% (+-5%) of the output bits on average, and that 1e5
///   distinct short strings give 1e5 distinct hashes. It is not a cryptographic hash (an
///   attacker can build collisions); the corpus is not adversarial in that sense.
///   Speed: several GB/s per core, far above the pipeline's 50 MB/s target.
///   The output is defined for little-endian loads (x86, ARM): the same on every such machine.
/// - hash128: two lanes with different keys computed in one pass, for exact deduplication: a
///   false match between two different texts needs both 64-bit lanes to collide (about 2^-128
///   per pair for non-adversarial input; 1e10 documents give ~1e-19 expected collisions).
/// - mix64: the splitmix64 finaliser (a bijection of 64-bit values).
/// - word_hashes / ngram_hash: words are the text lowercased (ASCII), ASCII punctuation,
///   ASCII whitespace and the other ASCII control characters treated as separators; bytes
///   >= 0x80 (UTF-8) are word bytes. This is the word definition of FineWeb's MinHash step
///   (datatrove's simplify_text: lowercase, punctuation removed) and of GPT-3's 13-gram
///   decontamination (Brown et al. 2020, appendix C).

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "loom/core/hash.hpp"

namespace loom::data {

using loom::mix64;  ///< the splitmix64 finaliser (core/hash.hpp)

namespace hash_detail {

// Odd 64-bit keys of hash64 / hash128 (random digits; any odd constants with mixed bits work).
inline constexpr uint64_t hash_k0 = 0x9e3779b97f4a7c15ULL;  // 2^64 / golden ratio
inline constexpr uint64_t hash_k1 = 0xd6e8feb86659fd93ULL;
inline constexpr uint64_t hash_k2 = 0xa5cb9243b6f1c3d1ULL;
inline constexpr uint64_t hash_k3 = 0xc2b2ae3d27d4eb4fULL;
inline constexpr uint64_t hash_k4 = 0x8cb92ba72f3d8dd7ULL;

/// The 128-bit product of a and b, its high and low halves xor-ed ("multiply and fold").
inline uint64_t mum(uint64_t a, uint64_t b) {
#ifdef __SIZEOF_INT128__
  __uint128_t r = static_cast<__uint128_t>(a) * b;
  return static_cast<uint64_t>(r) ^ static_cast<uint64_t>(r >> 64);
#else
  uint64_t al = a & 0xffffffffu, ah = a >> 32, bl = b & 0xffffffffu, bh = b >> 32;
  uint64_t ll = al * bl, lh = al * bh, hl = ah * bl, hh = ah * bh;
  uint64_t mid = (ll >> 32) + (lh & 0xffffffffu) + (hl & 0xffffffffu);
  uint64_t lo = (ll & 0xffffffffu) | (mid << 32);
  uint64_t hi = hh + (lh >> 32) + (hl >> 32) + (mid >> 32);
  return lo ^ hi;
#endif
}

/// 8 bytes at p as a little-endian 64-bit value (memcpy: no alignment requirement).
inline uint64_t load64(const unsigned char* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

/// 4 bytes at p as a 32-bit value.
inline uint64_t load32(const unsigned char* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

/// The last 0..15 bytes of an input as two 64-bit words (overlapping loads; the length is
/// mixed into the state separately, so overlapping reads do not make inputs ambiguous).
inline void load_tail(const unsigned char* p, size_t n, uint64_t& a, uint64_t& b) {
  if (n >= 8) {
    a = load64(p), b = load64(p + n - 8);
  } else if (n >= 4) {
    a = load32(p), b = load32(p + n - 4);
  } else if (n > 0) {
    a = (uint64_t(p[0]) << 16) | (uint64_t(p[n / 2]) << 8) | p[n - 1];
    b = 0;
  } else {
    a = b = 0;
  }
}

}  // namespace hash_detail

/// A fast seeded 64-bit hash of bytes (wyhash-style multiply-fold, splitmix64 finaliser; passes
/// the avalanche and collision checks of tests/pipeline/test_dedup.cpp).
inline uint64_t hash64(std::string_view bytes, uint64_t seed = 0) {
  using namespace hash_detail;
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  size_t n = bytes.size();
  uint64_t h = mix64(seed ^ hash_k0) ^ (uint64_t(n) * hash_k1);
  size_t i = 0;
  for (; i + 16 <= n; i += 16) h = mum(load64(p + i) ^ hash_k1 ^ h, load64(p + i + 8) ^ hash_k2);
  uint64_t a, b;
  load_tail(p + i, n - i, a, b);
  return mix64(mum(a ^ hash_k3 ^ h, b ^ hash_k4) ^ h);
}

/// A 128-bit hash: two 64-bit lanes with independent keys.
struct Hash128 {
  uint64_t lo = 0;  ///< first lane
  uint64_t hi = 0;  ///< second lane
  /// Both lanes equal.
  bool operator==(const Hash128& o) const { return lo == o.lo && hi == o.hi; }
  /// Either lane differs.
  bool operator!=(const Hash128& o) const { return !(*this == o); }
};

/// A 128-bit hash of bytes for exact deduplication (both lanes computed in one pass).
inline Hash128 hash128(std::string_view bytes) {
  using namespace hash_detail;
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  size_t n = bytes.size();
  uint64_t h1 = mix64(hash_k2) ^ (uint64_t(n) * hash_k1);
  uint64_t h2 = mix64(hash_k4) ^ (uint64_t(n) * hash_k3);
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    uint64_t a = load64(p + i), b = load64(p + i + 8);
    h1 = mum(a ^ hash_k1 ^ h1, b ^ hash_k2);
    h2 = mum(a ^ hash_k3 ^ h2, b ^ hash_k0);
  }
  uint64_t a, b;
  load_tail(p + i, n - i, a, b);
  Hash128 r;
  r.lo = mix64(mum(a ^ hash_k3 ^ h1, b ^ hash_k4) ^ h1);
  r.hi = mix64(mum(a ^ hash_k0 ^ h2, b ^ hash_k2) ^ h2);
  return r;
}

namespace hash_detail {

/// For each byte: its lowercase form when it is a word byte, 0 when it separates words
/// (ASCII whitespace, other ASCII control characters, ASCII punctuation).
struct WordByteTable {
  unsigned char map[256];
  constexpr WordByteTable() : map() {
    for (int c = 0; c < 256; ++c) {
      bool sep = c < 0x21 || c == 0x7f ||          // whitespace and control characters
                 (c >= 0x21 && c <= 0x2f) ||        // !"#$%&'()*+,-./
                 (c >= 0x3a && c <= 0x40) ||        // :;<=>?@
                 (c >= 0x5b && c <= 0x60) ||        // [\]^_`
                 (c >= 0x7b && c <= 0x7e);          // {|}~
      map[c] = sep ? 0 : static_cast<unsigned char>((c >= 'A' && c <= 'Z') ? c + 32 : c);
    }
  }
};
inline constexpr WordByteTable word_byte_table{};

}  // namespace hash_detail

/// Seed of the word hashes (fixed: word hashes must agree between runs and programs).
inline constexpr uint64_t word_hash_seed = 0x5eed0f3a11b0a7d5ULL;

/// Appends to `out` (cleared first) the hash64 of every word of `text`: the text lowercased
/// (ASCII), split at ASCII whitespace, control characters and punctuation; UTF-8 bytes are
/// word bytes. "Don't stop!" has the words "don", "t", "stop".
inline void word_hashes(std::string_view text, std::vector<uint64_t>& out) {
  out.clear();
  const auto& map = hash_detail::word_byte_table.map;
  const auto* p = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  constexpr size_t kShort = 64;  // words up to this long are lowercased into a stack buffer
  char buf[kShort];
  std::string long_word;
  size_t i = 0;
  while (i < n) {
    while (i < n && map[p[i]] == 0) ++i;
    if (i == n) break;
    size_t start = i, len = 0;
    for (; i < n && map[p[i]] != 0; ++i, ++len)
      if (len < kShort) buf[len] = static_cast<char>(map[p[i]]);
    if (len <= kShort) {
      out.push_back(hash64(std::string_view(buf, len), word_hash_seed));
    } else {
      long_word.resize(len);
      for (size_t k = 0; k < len; ++k) long_word[k] = static_cast<char>(map[p[start + k]]);
      out.push_back(hash64(long_word, word_hash_seed));
    }
  }
}

/// The hash of the word sequence words[0..count) (order-sensitive; the count is mixed in, so a
/// shorter sequence never equals a longer one by construction of the inputs).
inline uint64_t ngram_hash(const uint64_t* words, size_t count) {
  uint64_t h = uint64_t(count) * hash_detail::hash_k3;
  for (size_t k = 0; k < count; ++k) {
    h = (h ^ words[k]) * hash_detail::hash_k0;
    h ^= h >> 32;
  }
  return mix64(h);
}

}  // namespace loom::data
