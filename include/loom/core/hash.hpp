#pragma once
/// @file hash.hpp
/// mix64: the splitmix64 finaliser (Steele, Lea and Flood 2014), a bijection of 64-bit values with
/// full avalanche. The tokenizer's hash tables and the data pipeline's hashes both build on it.

#include <cstdint>

namespace loom {

/// Mixes one 64-bit value into a well-spread hash (the splitmix64 finaliser).
inline std::uint64_t mix64(std::uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  x ^= x >> 31;
  return x;
}

}  // namespace loom
