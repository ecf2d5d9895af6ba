#pragma once
/// @file data.hpp
/// Training data: a character-level tokenizer, a train/validation split, and a seeded loader
/// that cuts random windows out of a token sequence held in memory or in loom-data's token shards.
/// (Files are read with io::read_file.)

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "loom/core/tensor.hpp"
#include "loom/data/shards.hpp"

namespace loom::train {

/// A character-level (byte-level) vocabulary: the distinct bytes of a text, sorted.
class CharTokenizer {
 public:
  CharTokenizer() = default;
  /// The vocabulary of `text`'s distinct bytes.
  explicit CharTokenizer(const std::string& text) {
    bool seen[256] = {};
    for (unsigned char c : text) seen[c] = true;
    for (int b = 0; b < 256; ++b)
      if (seen[b]) chars_.push_back(char(b));
    build_index();
  }
  /// The vocabulary from its characters in id order (as saved by chars()).
  static CharTokenizer from_chars(const std::string& chars) {
    CharTokenizer t;
    t.chars_ = chars;
    t.build_index();
    return t;
  }
  /// Number of ids.
  int64_t vocab_size() const { return int64_t(chars_.size()); }
  /// The characters in id order.
  const std::string& chars() const { return chars_; }
  /// Ids of `text`; throws value_error for a byte outside the vocabulary.
  std::vector<int64_t> encode(const std::string& text) const {
    std::vector<int64_t> ids;
    ids.reserve(text.size());
    for (unsigned char c : text) {
      LOOM_CHECK(index_[c] >= 0, value_error, "CharTokenizer: byte ", int(c), " is not in the vocabulary");
      ids.push_back(index_[c]);
    }
    return ids;
  }
  /// The text of `ids`; throws value_error for an id out of range.
  std::string decode(const std::vector<int64_t>& ids) const {
    std::string s;
    for (int64_t i : ids) {
      LOOM_CHECK(i >= 0 && i < vocab_size(), value_error, "CharTokenizer: id ", i, " out of range [0, ", vocab_size(), ")");
      s.push_back(chars_[size_t(i)]);
    }
    return s;
  }

 private:
  void build_index() {
    std::fill(index_, index_ + 256, -1);
    for (size_t i = 0; i < chars_.size(); ++i) index_[(unsigned char)chars_[i]] = int(i);
  }
  std::string chars_;
  int index_[256] = {};
};

/// Token ids with random (B, T) windows: x = ids[o : o + T], y = ids[o + 1 : o + T + 1]. The ids
/// are a vector in memory, or a split of loom-data's token shards read in place (memory-mapped).
class BatchLoader {
 public:
  BatchLoader() = default;
  /// A loader over `ids`; windows need T + 1 tokens, so ids must hold more than T.
  explicit BatchLoader(std::vector<int64_t> ids) : ids_(std::move(ids)) {}
  /// A loader over token shards (data::TokenShards), which stay mapped while any copy of the loader lives.
  explicit BatchLoader(std::shared_ptr<const data::TokenShards> shards) : shards_(std::move(shards)) {}
  /// Number of tokens.
  int64_t size() const { return shards_ ? shards_->size() : int64_t(ids_.size()); }
  /// The tokens of an in-memory loader (empty for one over shards; use token()).
  const std::vector<int64_t>& ids() const { return ids_; }
  /// Token i.
  int64_t token(int64_t i) const {
    LOOM_CHECK(i >= 0 && i < size(), value_error, "BatchLoader: token ", i, " out of range [0, ", size(), ")");
    if (!shards_) return ids_[size_t(i)];
    int64_t t = 0;
    shards_->copy(i, 1, &t);
    return t;
  }

  /// Advances `gen` exactly as batch(B, T, gen) would, without building the batch: a rank of a
  /// data-parallel run draws the other ranks' micro-batches this way and keeps its own.
  void skip(int64_t B, int64_t T, Generator& gen) const {
    LOOM_CHECK(size() > T, value_error, "BatchLoader: ", size(), " tokens are too few for windows of ", T,
               " (+1 target); use a shorter block size or more data");
    (void)randint<int64_t>({B}, 0, size() - T, gen);
  }

  /// B windows of T tokens at offsets drawn from `gen`: inputs and next-token targets, (B, T) each.
  std::pair<Tensor<int64_t>, Tensor<int64_t>> batch(int64_t B, int64_t T, Generator& gen) const {
    LOOM_CHECK(B > 0 && T > 0, value_error, "BatchLoader: batch size ", B, " and length ", T, " must be positive");
    LOOM_CHECK(size() > T, value_error, "BatchLoader: ", size(), " tokens are too few for windows of ", T,
               " (+1 target); use a shorter block size or more data");
    Tensor<int64_t> offsets = randint<int64_t>({B}, 0, size() - T, gen);
    Tensor<int64_t> x = Tensor<int64_t>::empty({B, T}), y = Tensor<int64_t>::empty({B, T});
    int64_t* xd = x.data();  // (B, T)
    int64_t* yd = y.data();  // (B, T)
    std::vector<int64_t> window(shards_ ? size_t(T + 1) : 0);
    for (int64_t b = 0; b < B; ++b) {
      const int64_t o = offsets.data()[b];  // the window ids[o : o + T + 1]
      const int64_t* src = ids_.data() + o;
      if (shards_) shards_->copy(o, T + 1, window.data()), src = window.data();
      for (int64_t t = 0; t < T; ++t) {
        xd[b * T + t] = src[t];
        yd[b * T + t] = src[t + 1];
      }
    }
    return {x, y};
  }

 private:
  std::vector<int64_t> ids_;
  std::shared_ptr<const data::TokenShards> shards_;
};

/// The first `train_fraction` of the ids for training, the rest for validation (nanoGPT's split).
inline std::pair<BatchLoader, BatchLoader> split(const std::vector<int64_t>& ids, double train_fraction = 0.9) {
  LOOM_CHECK(train_fraction > 0 && train_fraction < 1, value_error, "split: train_fraction must lie in (0, 1), got ",
             train_fraction);
  size_t n = size_t(double(ids.size()) * train_fraction);
  return {BatchLoader(std::vector<int64_t>(ids.begin(), ids.begin() + std::ptrdiff_t(n))),
          BatchLoader(std::vector<int64_t>(ids.begin() + std::ptrdiff_t(n), ids.end()))};
}

}  // namespace loom::train
