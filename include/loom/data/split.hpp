#pragma once
/// @file split.hpp
/// Train/val/test assignment and decontamination.
///
/// - assign_split draws a document's split from a hash of its duplicate cluster's key (the text
///   of the cluster's kept document) and a seed, so near-copies always land in the same split and
///   cannot leak from train into val/test, and the same corpus splits the same way wherever its
///   files lie (an id holds the file's path). Default fractions 98/1/1.
/// - Decontaminator implements GPT-3's 13-gram rule (Brown et al. 2020, "Language Models are
///   Few-Shot Learners", appendix C): a training document that shares any word 13-gram with a
///   val/test document is contaminated. Words are those of hash.hpp's word_hashes (ASCII
///   lowercase, punctuation as separators), so case and punctuation differences still match.
///   A text of fewer than 13 words is one "n-gram" of all its words (the shingle rule of
///   dedup.hpp): a short train text is contaminated only when some reference text has exactly
///   its word sequence, or when some short reference text equals it word for word.
///   The n-grams are kept as 64-bit hashes in an open-addressing set (8 bytes per slot).

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "loom/core/error.hpp"
#include "loom/data/dedup.hpp"
#include "loom/data/hash.hpp"

namespace loom::data {

/// The three splits.
enum class Split { train = 0, val = 1, test = 2 };

/// "train", "val", "test".
inline const char* split_name(Split s) {
  switch (s) {
    case Split::train: return "train";
    case Split::val: return "val";
    case Split::test: return "test";
  }
  return "unknown";
}

/// Split fractions (default 98/1/1).
struct SplitFractions {
  double train = 0.98;  ///< fraction of clusters in train
  double val = 0.01;    ///< fraction in val
  double test = 0.01;   ///< fraction in test

  /// Parses "0.98,0.01,0.01": three non-negative numbers summing to 1 (+-1e-6); value_error
  /// naming the problem otherwise.
  static SplitFractions parse(const std::string& s) {
    double v[3];
    size_t pos = 0;
    for (int k = 0; k < 3; ++k) {
      size_t comma = s.find(',', pos);
      LOOM_CHECK((k < 2) == (comma != std::string::npos), value_error, "split fractions '", s,
                 "': expected three comma-separated numbers (train,val,test)");
      std::string part = s.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
      const char* begin = part.c_str();
      char* end = nullptr;
      v[k] = std::strtod(begin, &end);
      while (end && (*end == ' ' || *end == '\t')) ++end;
      LOOM_CHECK(!part.empty() && end != begin && *end == '\0', value_error, "split fractions '", s,
                 "': '", part, "' is not a number");
      LOOM_CHECK(std::isfinite(v[k]) && v[k] >= 0.0, value_error, "split fractions '", s, "': '",
                 part, "' must be a finite non-negative number");
      pos = comma == std::string::npos ? s.size() : comma + 1;
    }
    double sum = v[0] + v[1] + v[2];
    LOOM_CHECK(std::fabs(sum - 1.0) <= 1e-6, value_error, "split fractions '", s,
               "': must sum to 1, sum is ", sum);
    SplitFractions f;
    f.train = v[0], f.val = v[1], f.test = v[2];
    return f;
  }
};

/// The split of a duplicate cluster, from a hash of its key (the text of the cluster's kept
/// document) and the seed: near-copies share a cluster and so a split.
inline Split assign_split(std::string_view cluster_key, const SplitFractions& f, uint64_t seed) {
  const double u = double(hash64(cluster_key, seed) >> 11) * 0x1.0p-53;  // uniform in [0, 1)
  if (u < f.train) return Split::train;
  if (u < f.train + f.val) return Split::val;
  // Here only through rounding when test is 0 (fractions sum to 1 +- 1e-6): never give a split
  // with fraction 0.
  if (f.test > 0.0) return Split::test;
  return f.val > 0.0 ? Split::val : Split::train;
}

/// Decontamination: remembers the word n-grams (default 13) of the val and test documents; a
/// train document sharing any of them is contaminated.
class Decontaminator {
 public:
  /// An empty reference set; n-grams of `ngram` words (>= 1).
  explicit Decontaminator(int ngram = 13) : ngram_(ngram) {
    LOOM_CHECK(ngram >= 1, value_error, "Decontaminator: ngram must be >= 1, got ", ngram);
  }
  /// Adds a reference (val/test) text's n-grams.
  void add_reference(std::string_view text) {
    shingle_hashes(text, ngram_, grams_, words_);
    for (uint64_t h : grams_) insert(h);
  }
  /// Adds one reference n-gram by its hash (as shingle_hashes(text, ngram()) gives it), for
  /// reference sets built elsewhere and merged.
  void add_reference_hash(uint64_t h) { insert(h); }
  /// True when `text` shares at least one n-gram with a reference text (a text shorter than n
  /// words: when its whole word sequence is one of the reference hashes; see the file comment).
  bool contaminated(std::string_view text) const {
    if (count_ == 0) return false;
    thread_local std::vector<uint64_t> words, grams;
    shingle_hashes(text, ngram_, grams, words);
    for (uint64_t h : grams)
      if (contains(h)) return true;
    return false;
  }
  /// Number of distinct reference n-grams.
  size_t size() const { return count_; }
  /// Approximate bytes used.
  size_t memory_bytes() const {
    return sizeof(*this) + slots_.capacity() * sizeof(uint64_t) +
           (grams_.capacity() + words_.capacity()) * sizeof(uint64_t);
  }
  /// The n-gram length.
  int ngram() const { return ngram_; }

 private:
  // 0 marks an empty slot, so a hash of 0 is stored as 1 (a 2^-64 effect).
  static uint64_t key(uint64_t h) { return h == 0 ? 1 : h; }
  void insert(uint64_t h) {
    h = key(h);
    if ((count_ + 1) * 10 > slots_.size() * 7) grow();
    size_t mask = slots_.size() - 1;
    for (size_t i = size_t(h) & mask;; i = (i + 1) & mask) {
      if (slots_[i] == h) return;
      if (slots_[i] == 0) {
        slots_[i] = h;
        ++count_;
        return;
      }
    }
  }
  bool contains(uint64_t h) const {
    h = key(h);
    size_t mask = slots_.size() - 1;
    for (size_t i = size_t(h) & mask;; i = (i + 1) & mask) {
      if (slots_[i] == h) return true;
      if (slots_[i] == 0) return false;
    }
  }
  void grow() {
    std::vector<uint64_t> old = std::move(slots_);
    slots_.assign(old.empty() ? 1024 : old.size() * 2, 0);
    size_t mask = slots_.size() - 1;
    for (uint64_t h : old) {
      if (h == 0) continue;
      size_t i = size_t(h) & mask;
      while (slots_[i] != 0) i = (i + 1) & mask;
      slots_[i] = h;
    }
  }

  int ngram_;
  std::vector<uint64_t> slots_;
  size_t count_ = 0;
  std::vector<uint64_t> grams_, words_;  // scratch of add_reference
};

}  // namespace loom::data
