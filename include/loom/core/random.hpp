#pragma once
/// @file random.hpp
/// Generator: a seeded, counter-based random number generator (Philox4x32-10).
///
/// Element i of a random tensor is a pure function of (seed, counter + i / k), so the values do
/// not depend on the thread count or on how the work is split: the same seed gives the same
/// tensor everywhere. Each call advances the counter past the blocks it used.

#include <array>
#include <cmath>
#include <cstdint>

#include "loom/core/host_device.hpp"

namespace loom {

/// Four 32-bit random words.
struct Philox4 {
  uint32_t w[4];
};

/// The four 32-bit words of block `counter` under key `seed`: Philox4x32 with 10 rounds (Salmon
/// et al., "Parallel random numbers: as easy as 1, 2, 3", 2011). Plain scalar code, so that the
/// CPU and the CUDA kernels draw the same words from the same (counter, seed).
LOOM_HOST_DEVICE inline Philox4 philox4x32(uint64_t counter, uint64_t seed) {
  uint32_t c0 = uint32_t(counter), c1 = uint32_t(counter >> 32), c2 = 0, c3 = 0;
  uint32_t k0 = uint32_t(seed), k1 = uint32_t(seed >> 32);
  for (int round = 0; round < 10; ++round) {
    uint64_t p0 = uint64_t(0xD2511F53u) * c0;
    uint64_t p1 = uint64_t(0xCD9E8D57u) * c2;
    uint32_t n0 = uint32_t(p1 >> 32) ^ c1 ^ k0;
    uint32_t n2 = uint32_t(p0 >> 32) ^ c3 ^ k1;
    c0 = n0, c1 = uint32_t(p1), c2 = n2, c3 = uint32_t(p0);
    k0 += 0x9E3779B9u, k1 += 0xBB67AE85u;
  }
  return {{c0, c1, c2, c3}};
}

/// The 24 random bits that rand<float> takes from word u (its value is bits / 2^24).
LOOM_HOST_DEVICE inline uint32_t random_bits24(uint32_t u) { return u >> 8; }

/// The 53 random bits that rand<double> takes from words hi, lo (its value is bits / 2^53).
LOOM_HOST_DEVICE inline uint64_t random_bits53(uint32_t hi, uint32_t lo) {
  return ((uint64_t(hi) << 21) ^ (uint64_t(lo) >> 11)) & ((uint64_t(1) << 53) - 1);
}

/// Seeded counter-based generator. Copying it copies its state.
class Generator {
 public:
  /// A generator seeded with `seed`, counter at 0.
  explicit Generator(uint64_t seed = 0) : seed_(seed) {}

  /// The seed this generator started from.
  uint64_t seed() const { return seed_; }
  /// How many 128-bit blocks have been used so far.
  uint64_t offset() const { return offset_; }
  /// Restores a state saved from seed() and offset().
  void set_state(uint64_t seed, uint64_t offset) { seed_ = seed, offset_ = offset; }
  /// Reserves `blocks` blocks and returns the first block's counter.
  uint64_t advance(uint64_t blocks) {
    uint64_t first = offset_;
    offset_ += blocks;
    return first;
  }

  /// The four 32-bit words of block `counter` under key `seed` (Philox4x32, 10 rounds).
  static std::array<uint32_t, 4> philox(uint64_t counter, uint64_t seed) {
    Philox4 r = philox4x32(counter, seed);
    return {r.w[0], r.w[1], r.w[2], r.w[3]};
  }

  /// A float uniform in [0, 1) from 24 random bits.
  static float uniform_float(uint32_t u) { return float(random_bits24(u)) * (1.0f / 16777216.0f); }
  /// A double uniform in [0, 1) from 53 random bits.
  static double uniform_double(uint32_t hi, uint32_t lo) { return double(random_bits53(hi, lo)) * (1.0 / 9007199254740992.0); }

 private:
  uint64_t seed_ = 0;
  uint64_t offset_ = 0;
};

}  // namespace loom
