#pragma once
/// @file flat_map.hpp
/// Small open-addressing hash tables used by the tokenizer's hot loops: a map from a packed pair
/// of token ids (uint64) to a uint64 value, and a string hash.

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>
#include <vector>

#include "loom/core/hash.hpp"

namespace loom::tokenizer::detail {

/// Packs two token ids into one 64-bit key.
inline std::uint64_t pack_pair(std::uint32_t left, std::uint32_t right) {
  return (static_cast<std::uint64_t>(left) << 32) | right;
}

using loom::mix64;  // core/hash.hpp

/// A fast hash of a byte string (8 bytes at a time, then mixed).
inline std::uint64_t hash_bytes(std::string_view s) {
  std::uint64_t h = 0x9E3779B97F4A7C15ull ^ (s.size() * 0xC2B2AE3D27D4EB4Full);
  const char* p = s.data();
  std::size_t n = s.size();
  while (n >= 8) {
    std::uint64_t w;
    std::memcpy(&w, p, 8);
    h = (h ^ mix64(w)) * 0x9E3779B97F4A7C15ull;
    p += 8;
    n -= 8;
  }
  if (n) {
    std::uint64_t w = 0;
    std::memcpy(&w, p, n);
    h = (h ^ mix64(w ^ (static_cast<std::uint64_t>(n) << 56))) * 0x9E3779B97F4A7C15ull;
  }
  return mix64(h);
}

/// Open-addressing map uint64 -> uint64 with linear probing. The key ~0 is reserved (empty).
class PairMap {
 public:
  static constexpr std::uint64_t empty_key = ~std::uint64_t{0};
  static constexpr std::uint64_t not_found = ~std::uint64_t{0};

  /// Inserts or overwrites key -> value.
  void set(std::uint64_t key, std::uint64_t value) {
    if ((size_ + 1) * 2 > keys_.size()) grow();
    std::size_t i = slot(key);
    if (keys_[i] == empty_key) { keys_[i] = key; ++size_; }
    values_[i] = value;
  }
  /// The value for key, or not_found.
  std::uint64_t get(std::uint64_t key) const {
    if (keys_.empty()) return not_found;
    std::size_t i = slot(key);
    return keys_[i] == empty_key ? not_found : values_[i];
  }
  /// Number of keys stored.
  std::size_t size() const { return size_; }
  /// Removes everything.
  void clear() { keys_.clear(); values_.clear(); size_ = 0; }

 private:
  std::size_t slot(std::uint64_t key) const {
    const std::size_t mask = keys_.size() - 1;
    std::size_t i = mix64(key) & mask;
    while (keys_[i] != empty_key && keys_[i] != key) i = (i + 1) & mask;
    return i;
  }
  void grow() {
    std::vector<std::uint64_t> old_keys = std::move(keys_), old_values = std::move(values_);
    std::size_t cap = old_keys.empty() ? 64 : old_keys.size() * 2;
    keys_.assign(cap, empty_key);
    values_.assign(cap, 0);
    size_ = 0;
    for (std::size_t i = 0; i < old_keys.size(); ++i)
      if (old_keys[i] != empty_key) set(old_keys[i], old_values[i]);
  }
  std::vector<std::uint64_t> keys_, values_;
  std::size_t size_ = 0;
};

}  // namespace loom::tokenizer::detail
