#pragma once
/// @file dedup.hpp
/// Exact and near-duplicate detection of documents.
///
/// - ExactDedup keeps the 128-bit hash (hash.hpp) of each distinct text in an open-addressing
///   table and reports, for a repeated text, the first document that had it.
/// - MinHasher + NearDupIndex find near-duplicates with MinHash (Broder, "On the resemblance and
///   containment of documents", 1997) and LSH banding (Leskovec, Rajaraman and Ullman, "Mining of
///   Massive Datasets", ch. 3). The defaults are FineWeb's (Penedo et al. 2024; datatrove's
///   MinhashConfig): word 5-grams, 14 bands x 8 rows = 112 hashes, lowest document of each
///   cluster kept. Unlike FineWeb, a candidate pair (equal in some band) is joined only when the
///   two signatures agree on at least `threshold` (default 0.7) of their 112 hashes: with 14x8
///   banding a pair of Jaccard 0.5 is a candidate with probability 1-(1-0.5^8)^14 ~ 5%, and the
///   check removes those (the estimate's std at J = 0.5 is ~0.047, so 0.7 is > 4 std away) while
///   keeping pairs of J >= 0.85 (std ~0.034). threshold = 0 joins every candidate, as FineWeb.
///
/// Words and shingles are those of hash.hpp (word_hashes: ASCII-lowercased, punctuation as
/// separators). Signatures are 32-bit: 448 bytes per document for 112 hashes, half of 64-bit,
/// and 32 bits are plenty to estimate a Jaccard similarity (two different shingle sets' minima
/// tie by chance with probability ~2^-32 per hash). Permutation i of a shingle's 32-bit hash x
/// is Dietzfelbinger's multiply-add-shift, (a_i * x + b_i) mod 2^64 >> 32 with random 64-bit
/// a_i, b_i: strongly universal, and its inner loop over the 112 hashes vectorises.

#include <algorithm>
#include <cstdint>
#include <limits>
#include <string_view>
#include <utility>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "loom/core/error.hpp"
#include "loom/data/hash.hpp"

namespace loom::data {

/// Exact deduplication: remembers the 128-bit hash of each text seen and the first document
/// that had it (24 bytes per slot, table kept at most 70% full).
class ExactDedup {
 public:
  /// Registers document number `doc` (>= 0) with `text`; returns -1 if the text is new, else
  /// the number of the first document that had it.
  int64_t insert(std::string_view text, int64_t doc) {
    LOOM_CHECK(doc >= 0, value_error, "ExactDedup::insert: document number must be >= 0, got ", doc);
    return insert_hash(hash128(text), doc);
  }
  /// Same as insert() for a precomputed hash128 of the text.
  int64_t insert_hash(const Hash128& h, int64_t doc) {
    if ((count_ + 1) * 10 > slots_.size() * 7) grow();
    size_t mask = slots_.size() - 1;
    for (size_t i = size_t(h.lo) & mask;; i = (i + 1) & mask) {
      Slot& s = slots_[i];
      if (s.doc < 0) {
        s.hash = h, s.doc = doc;
        ++count_;
        return -1;
      }
      if (s.hash == h) return s.doc;
    }
  }
  /// Number of distinct texts.
  size_t size() const { return count_; }
  /// Approximate bytes used.
  size_t memory_bytes() const { return sizeof(*this) + slots_.capacity() * sizeof(Slot); }

 private:
  struct Slot {
    Hash128 hash;
    int64_t doc = -1;  // -1: empty
  };
  void grow() {
    std::vector<Slot> old = std::move(slots_);
    slots_.assign(old.empty() ? 1024 : old.size() * 2, Slot{});
    size_t mask = slots_.size() - 1;
    for (const Slot& s : old) {
      if (s.doc < 0) continue;
      size_t i = size_t(s.hash.lo) & mask;
      while (slots_[i].doc >= 0) i = (i + 1) & mask;
      slots_[i] = s;
    }
  }
  std::vector<Slot> slots_;
  size_t count_ = 0;
};

/// MinHash settings (defaults: FineWeb's: 14 bands x 8 rows = 112 hashes, word 5-grams).
struct MinHashOptions {
  int bands = 14;   ///< LSH bands
  int rows = 8;     ///< hashes per band
  int ngram = 5;    ///< words per shingle
  uint64_t seed = 1;  ///< seed of the 112 permutations
  /// Candidate pairs (sharing a band) are joined only if their signatures agree on at least this
  /// fraction of hashes (0: join every candidate, as FineWeb does).
  double threshold = 0.7;
  /// Number of hashes per signature (bands * rows).
  int num_hashes() const { return bands * rows; }
  /// Throws value_error when a field is out of range.
  void validate() const {
    LOOM_CHECK(bands >= 1 && rows >= 1 && bands <= 1024 && rows <= 1024, value_error,
               "MinHashOptions: bands and rows must be in [1, 1024], got bands=", bands, " rows=", rows);
    LOOM_CHECK(ngram >= 1, value_error, "MinHashOptions: ngram must be >= 1, got ", ngram);
    LOOM_CHECK(threshold >= 0.0 && threshold <= 1.0, value_error,
               "MinHashOptions: threshold must be in [0, 1], got ", threshold);
  }
};

/// Appends to `out` (cleared first) the hash of every word n-gram of `text` (words as in
/// word_hashes); a text of 1..n-1 words has one shingle (all its words), an empty text none.
inline void shingle_hashes(std::string_view text, int ngram, std::vector<uint64_t>& out,
                           std::vector<uint64_t>& words_scratch) {
  word_hashes(text, words_scratch);
  out.clear();
  const size_t m = words_scratch.size(), n = size_t(std::max(ngram, 1));
  if (m == 0) return;
  if (m < n) {
    out.push_back(ngram_hash(words_scratch.data(), m));
    return;
  }
  out.reserve(m - n + 1);
  for (size_t i = 0; i + n <= m; ++i) out.push_back(ngram_hash(words_scratch.data() + i, n));
}

/// Computes MinHash signatures of texts.
class MinHasher {
 public:
  /// Draws the bands*rows permutations from options.seed.
  explicit MinHasher(MinHashOptions options = {}) : opt_(options) {
    opt_.validate();
    const int k = opt_.num_hashes();
    a_lo_.resize(k), a_hi_.resize(k), b_.resize(k);
    uint64_t state = opt_.seed;
    auto next = [&state] { return mix64(state += 0x9e3779b97f4a7c15ULL); };  // splitmix64
    for (int i = 0; i < k; ++i) {
      uint64_t a = next();
      a_lo_[i] = uint32_t(a), a_hi_[i] = uint32_t(a >> 32), b_[i] = next();
    }
  }
  /// Writes the signature of `text` (num_hashes() 32-bit min-hashes over its word n-gram
  /// shingles) to out[0..num_hashes()). An empty text (no words) has an all-max signature.
  void signature(std::string_view text, uint32_t* out) const {
    thread_local std::vector<uint64_t> words, shingles;
    shingle_hashes(text, opt_.ngram, shingles, words);
    const int k = opt_.num_hashes();
    std::fill(out, out + k, std::numeric_limits<uint32_t>::max());
    const uint32_t* __restrict alo = a_lo_.data();
    const uint32_t* __restrict ahi = a_hi_.data();
    const uint64_t* __restrict b = b_.data();
    uint32_t* __restrict mins = out;
    for (uint64_t s : shingles) {
      const uint32_t x = uint32_t(s >> 32);
      // (a * x + b) mod 2^64 >> 32 with a = ahi*2^32 + alo: the high word of alo*x + b, plus
      // ahi*x mod 2^32. Written with 32x32->64 products so that the loop vectorises.
      for (int i = 0; i < k; ++i) {
        uint32_t v = uint32_t((uint64_t(alo[i]) * x + b[i]) >> 32) + ahi[i] * x;
        mins[i] = v < mins[i] ? v : mins[i];
      }
    }
  }
  /// The signature of `text` as a new vector (see the pointer overload).
  std::vector<uint32_t> signature(std::string_view text) const {
    std::vector<uint32_t> sig(static_cast<size_t>(opt_.num_hashes()));
    signature(text, sig.data());
    return sig;
  }
  /// The options this hasher was built with.
  const MinHashOptions& options() const { return opt_; }
  /// Number of hashes per signature.
  int num_hashes() const { return opt_.num_hashes(); }

 private:
  MinHashOptions opt_;
  std::vector<uint32_t> a_lo_, a_hi_;
  std::vector<uint64_t> b_;
};

/// The fraction of equal entries of two signatures (an estimate of the Jaccard similarity of
/// the shingle sets). n = 0 gives 1.
inline double estimated_jaccard(const uint32_t* a, const uint32_t* b, size_t n) {
  if (n == 0) return 1.0;
  size_t eq = 0;
  for (size_t i = 0; i < n; ++i) eq += a[i] == b[i];
  return double(eq) / double(n);
}

/// The exact Jaccard similarity of two texts' shingle sets (shingles compared by their 64-bit
/// hashes). Two texts without words give 1; one empty and one not give 0.
inline double shingle_jaccard(std::string_view a, std::string_view b, int ngram = 5) {
  std::vector<uint64_t> sa, sb, words;
  shingle_hashes(a, ngram, sa, words);
  shingle_hashes(b, ngram, sb, words);
  if (sa.empty() && sb.empty()) return 1.0;
  std::sort(sa.begin(), sa.end());
  sa.erase(std::unique(sa.begin(), sa.end()), sa.end());
  std::sort(sb.begin(), sb.end());
  sb.erase(std::unique(sb.begin(), sb.end()), sb.end());
  size_t i = 0, j = 0, common = 0;
  while (i < sa.size() && j < sb.size()) {
    if (sa[i] < sb[j]) ++i;
    else if (sb[j] < sa[i]) ++j;
    else ++common, ++i, ++j;
  }
  return double(common) / double(sa.size() + sb.size() - common);
}

/// The LSH key of band `b` of a signature: a hash of its `rows` hashes from b * rows on.
inline uint64_t band_key(const uint32_t* signature, int b, int rows) {
  const char* p = reinterpret_cast<const char*>(signature + size_t(b) * size_t(rows));
  return hash64(std::string_view(p, size_t(rows) * 4), uint64_t(b));
}

/// True when two signatures are similar enough to join: threshold 0, or the fraction of equal
/// hashes is at least the threshold.
inline bool signatures_similar(const uint32_t* a, const uint32_t* b, const MinHashOptions& options) {
  return options.threshold <= 0.0 || estimated_jaccard(a, b, size_t(options.num_hashes())) >= options.threshold;
}

/// In one band, a document is compared with its group's first document and, when that fails,
/// with up to this many documents just before it in the group (all pairs in small groups,
/// linear cost in big ones).
inline constexpr int band_window = 16;

/// The pairs to join in one band. `keys` holds every document's (band key, number), sorted;
/// documents with equal keys form a group, and similar(x, y) decides a pair of the group
/// (head first, then the band_window documents before, as NearDupIndex does).
template <class Similar>
void band_pairs(const std::vector<std::pair<uint64_t, int64_t>>& keys, const Similar& similar,
                std::vector<std::pair<int64_t, int64_t>>& out) {
  for (size_t g = 0; g < keys.size();) {
    size_t e = g + 1;
    while (e < keys.size() && keys[e].first == keys[g].first) ++e;
    const int64_t head = keys[g].second;
    for (size_t j = g + 1; j < e; ++j) {
      const int64_t d = keys[j].second;
      if (similar(head, d)) {
        out.emplace_back(head, d);
        continue;
      }
      for (size_t m = std::max(g + 1, j > size_t(band_window) ? j - size_t(band_window) : 0); m < j; ++m)
        if (similar(keys[m].second, d)) out.emplace_back(keys[m].second, d);
    }
    g = e;
  }
}

/// Union-find over documents 0 .. count-1 joined by `edges` (any order): for every document, the
/// lowest-numbered document of its component, or -1 when it is that lowest one (kept).
inline std::vector<int64_t> lowest_in_component(int64_t count,
                                                const std::vector<std::vector<std::pair<int64_t, int64_t>>>& edges) {
  // The root of a set is always its lowest number (union by lowest number).
  std::vector<int64_t> parent(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) parent[size_t(i)] = i;
  auto find = [&parent](int64_t x) {
    while (parent[size_t(x)] != x) {
      parent[size_t(x)] = parent[size_t(parent[size_t(x)])];  // path halving
      x = parent[size_t(x)];
    }
    return x;
  };
  for (const auto& list : edges)  // the components, and so the result, do not depend on the order
    for (const auto& e : list) {
      int64_t ra = find(e.first), rb = find(e.second);
      if (ra == rb) continue;
      if (ra < rb) parent[size_t(rb)] = ra;
      else parent[size_t(ra)] = rb;
    }
  std::vector<int64_t> result(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) {
    int64_t r = find(i);
    result[size_t(i)] = r == i ? -1 : r;
  }
  return result;
}

/// Near-duplicate clustering: documents added in order (numbers 0, 1, 2, ...), clustered by LSH
/// bands + union-find. Stores each document's full signature (4 * bands * rows bytes: 448 by
/// default), which the threshold check needs. Documents without words all have the all-max
/// signature and so form one cluster (exact dedup normally removes them first).
class NearDupIndex {
 public:
  /// See band_window.
  static constexpr int window = band_window;

  /// An empty index with these options (only bands, rows and threshold are used here).
  explicit NearDupIndex(MinHashOptions options = {}) : opt_(options) { opt_.validate(); }
  /// Adds the signature (num_hashes() values) of the next document (its number is the count
  /// added so far).
  void add(const uint32_t* signature) {
    sigs_.insert(sigs_.end(), signature, signature + opt_.num_hashes());
    ++count_;
  }
  /// Number of documents added.
  int64_t size() const { return count_; }
  /// For every document, the number of the document it duplicates (the lowest-numbered
  /// document of its cluster), or -1 when it is its cluster's lowest (kept). The result is
  /// identical for any thread count (threads: OpenMP, 0 = all).
  std::vector<int64_t> resolve(int threads = 0) const {
    const int nb = opt_.bands;
    std::vector<std::vector<std::pair<int64_t, int64_t>>> edges(static_cast<size_t>(nb));
#ifdef _OPENMP
    int nt = threads > 0 ? threads : omp_get_max_threads();
    nt = std::max(1, std::min(nt, nb));
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt)
#else
    (void)threads;
#endif
    for (int b = 0; b < nb; ++b) band_edges(b, edges[size_t(b)]);
    return lowest_in_component(count_, edges);
  }
  /// Approximate bytes used.
  size_t memory_bytes() const { return sizeof(*this) + sigs_.capacity() * sizeof(uint32_t); }
  /// The options of this index.
  const MinHashOptions& options() const { return opt_; }

 private:
  const uint32_t* sig(int64_t doc) const { return sigs_.data() + size_t(doc) * size_t(opt_.num_hashes()); }
  // The pairs to join in band b (band_pairs over every document's key).
  void band_edges(int b, std::vector<std::pair<int64_t, int64_t>>& out) const {
    std::vector<std::pair<uint64_t, int64_t>> keys(static_cast<size_t>(count_));
    for (int64_t d = 0; d < count_; ++d) keys[size_t(d)] = {band_key(sig(d), b, opt_.rows), d};
    std::sort(keys.begin(), keys.end());
    band_pairs(keys, [this](int64_t x, int64_t y) { return signatures_similar(sig(x), sig(y), opt_); }, out);
  }

  MinHashOptions opt_;
  std::vector<uint32_t> sigs_;
  int64_t count_ = 0;
};

}  // namespace loom::data
