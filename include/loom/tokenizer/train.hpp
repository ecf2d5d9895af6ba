#pragma once
/// @file train.hpp
/// Training a byte-level BPE vocabulary from text.
///
/// The text is pre-tokenized; identical chunks are counted once with their frequency. Pair counts
/// are kept incrementally: each merge touches only the places where its pair occurs (found through
/// a per-pair occurrence list), so the corpus is never rescanned. A max-heap with lazy deletion
/// picks the next pair.
///
/// Tie rule ("first occurrence wins", as karpathy/minbpe): the pair with the highest count is
/// merged; among equal counts, the one whose first occurrence comes first, where unique chunks are
/// numbered in order of first appearance and positions run left to right within a chunk. With
/// this rule the merges are exactly minbpe's.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <queue>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "loom/core/error.hpp"
#include "loom/tokenizer/bpe.hpp"
#include "loom/tokenizer/flat_map.hpp"
#include "loom/tokenizer/pretokenizer.hpp"

namespace loom::tokenizer {

/// What to train.
struct TrainOptions {
  std::size_t vocab_size = 512;              ///< ordinary tokens: 256 bytes + the merges
  Pattern pattern = Pattern::cl100k;         ///< pre-tokenizer used for training and encoding
  std::vector<std::string> special_tokens;   ///< get ids vocab_size, vocab_size + 1, ...
  /// Called after every 1/200th of the merges wanted (and after the last), with (merges done,
  /// merges wanted); may be empty. A program can draw a bar with it (train::MergeProgressBar).
  std::function<void(std::size_t, std::size_t)> on_progress;
};

/// What training produced besides the tokenizer.
struct TrainReport {
  std::vector<std::int64_t> merge_counts;  ///< the pair count when each merge was chosen
  std::size_t unique_chunks = 0;           ///< distinct pre-tokenized chunks
  std::size_t total_chunks = 0;            ///< chunks in the text
};

namespace detail {

/// Incremental BPE trainer over deduplicated chunks.
class BpeTrainer {
 public:
  static constexpr std::uint32_t none = ~0u;

  /// Adds a unique chunk (in order of first appearance) with its frequency.
  void add_chunk(std::string_view bytes, std::int64_t count) {
    if (bytes.size() < 2) return;  // no pairs
    const auto chunk = static_cast<std::uint32_t>(weights_.size());
    weights_.push_back(count);
    const auto base = static_cast<std::uint32_t>(ids_.size());
    for (std::size_t i = 0; i < bytes.size(); ++i) {
      ids_.push_back(static_cast<unsigned char>(bytes[i]));
      prev_.push_back(i == 0 ? none : base + static_cast<std::uint32_t>(i) - 1);
      next_.push_back(i + 1 == bytes.size() ? none : base + static_cast<std::uint32_t>(i) + 1);
      chunk_.push_back(chunk);
    }
  }

  /// Runs up to num_merges merges; returns them (rank = index, new ids from 256).
  std::vector<MergeRule> run(std::size_t num_merges, std::vector<std::int64_t>& counts,
                             const std::function<void(std::size_t, std::size_t)>& progress) {
    LOOM_CHECK(ids_.size() < 0xFFFFFFF0u, value_error, "train_bpe: text too large (over 4G symbols in unique chunks)");
    for (std::uint32_t i = 0; i < ids_.size(); ++i)
      if (next_[i] != none) add(ids_[i], ids_[next_[i]], i, weights_[chunk_[i]]);
    for (std::uint32_t p : touched_) push(p);
    touched_.clear();
    std::vector<MergeRule> merges;
    std::vector<std::uint32_t> where;
    const std::size_t step = std::max<std::size_t>(1, num_merges / 200);
    while (merges.size() < num_merges && !heap_.empty()) {
      HeapEntry top = heap_.top();
      heap_.pop();
      Pair& p = pairs_[top.pair];
      if (p.count <= 0) continue;
      if (p.count != top.count || p.first != top.first) {
        push(top.pair);  // stale entry: requeue with the current key
        continue;
      }
      // The recorded first position is a lower bound; find the true one among live occurrences.
      where.clear();
      for (std::uint32_t q : p.occ)
        if (is_at(q, p.left, p.right)) where.push_back(q);
      std::sort(where.begin(), where.end());
      p.occ = where;
      if (where.empty()) {  // cannot happen while counts and lists agree; never loop on it
        p.count = 0;
        continue;
      }
      const std::uint32_t first = where.front();
      if (first != p.first) {
        p.first = first;
        push(top.pair);
        continue;
      }
      const auto new_id = static_cast<std::uint32_t>(256 + merges.size());
      merges.push_back({p.left, p.right, new_id, static_cast<std::uint32_t>(merges.size())});
      counts.push_back(p.count);
      merge(top.pair, new_id, where);
      if (progress && (merges.size() % step == 0 || merges.size() == num_merges)) progress(merges.size(), num_merges);
    }
    return merges;
  }

 private:
  struct Pair {
    std::uint32_t left, right;
    std::int64_t count = 0;
    std::uint32_t first = none;  // lower bound of the first live occurrence
    std::vector<std::uint32_t> occ;  // left positions (may hold stale entries)
    bool queued = false;             // in touched_ for the current merge
  };
  struct HeapEntry {
    std::int64_t count;
    std::uint32_t first, pair;
    bool operator<(const HeapEntry& o) const {  // max-heap: higher count, then earlier first
      if (count != o.count) return count < o.count;
      return first > o.first;
    }
  };

  // Whether the pair (a, b) still starts at position q (occurrence lists keep stale entries).
  bool is_at(std::uint32_t q, std::uint32_t a, std::uint32_t b) const {
    return ids_[q] == a && next_[q] != none && ids_[next_[q]] == b;
  }
  // The pair's slot in pairs_, created on first use.
  std::uint32_t pair_index(std::uint32_t a, std::uint32_t b) {
    const std::uint64_t key = pack_pair(a, b);
    std::uint64_t v = index_.get(key);
    if (v != PairMap::not_found) return static_cast<std::uint32_t>(v);
    const auto idx = static_cast<std::uint32_t>(pairs_.size());
    pairs_.push_back(Pair{a, b, 0, none, {}, false});
    index_.set(key, idx);
    return idx;
  }
  // A new occurrence of (a, b) at pos in a chunk of weight w: count it, remember where, and
  // queue the pair for a heap push once the current merge is done.
  void add(std::uint32_t a, std::uint32_t b, std::uint32_t pos, std::int64_t w) {
    const std::uint32_t idx = pair_index(a, b);
    Pair& p = pairs_[idx];
    p.count += w;
    p.occ.push_back(pos);
    if (pos < p.first) p.first = pos;
    if (!p.queued) {
      p.queued = true;
      touched_.push_back(idx);
    }
  }
  // An occurrence of (a, b) disappeared: only the count changes; the occurrence list and the heap
  // entry are cleaned up lazily.
  void remove(std::uint32_t a, std::uint32_t b, std::int64_t w) {
    std::uint64_t v = index_.get(pack_pair(a, b));
    if (v != PairMap::not_found) pairs_[v].count -= w;  // its heap entry goes stale lazily
  }
  // Pushes the pair's current (count, first) key.
  void push(std::uint32_t idx) {
    Pair& p = pairs_[idx];
    p.queued = false;
    if (p.count > 0) heap_.push({p.count, p.first, idx});
  }
  // Replaces (a, b) by new_id at each position in `where` (sorted, so left to right within a
  // chunk), updating the counts of the neighbouring pairs that appear and disappear.
  void merge(std::uint32_t pair, std::uint32_t new_id, const std::vector<std::uint32_t>& where) {
    const std::uint32_t a = pairs_[pair].left, b = pairs_[pair].right;
    for (std::uint32_t q : where) {
      if (!is_at(q, a, b)) continue;  // consumed by an overlapping merge just before (a == b)
      const std::int64_t w = weights_[chunk_[q]];
      const std::uint32_t r = next_[q], pq = prev_[q], nr = next_[r];
      if (pq != none) {
        remove(ids_[pq], a, w);
        add(ids_[pq], new_id, pq, w);
      }
      if (nr != none) {
        remove(b, ids_[nr], w);
        add(new_id, ids_[nr], q, w);
      }
      pairs_[pair].count -= w;
      ids_[q] = new_id;
      ids_[r] = none;
      next_[q] = nr;
      if (nr != none) prev_[nr] = q;
    }
    Pair& done = pairs_[pair];
    done.count = 0;
    std::vector<std::uint32_t>().swap(done.occ);
    for (std::uint32_t p : touched_) push(p);
    touched_.clear();
  }

  std::vector<std::uint32_t> ids_, prev_, next_, chunk_;
  std::vector<std::int64_t> weights_;
  std::vector<Pair> pairs_;
  PairMap index_;
  std::priority_queue<HeapEntry> heap_;
  std::vector<std::uint32_t> touched_;
};

/// Hash for string_view keys in the chunk counter.
struct ChunkHash {
  std::size_t operator()(std::string_view s) const { return static_cast<std::size_t>(hash_bytes(s)); }
};

}  // namespace detail

/// Trains a BPE tokenizer on text. Special-token text in the training text is cut out (it is
/// never merged with its neighbours); the special tokens get the ids after the ordinary ones.
/// Training stops early when no pair is left. Throws value_error if vocab_size < 256.
inline BpeTokenizer train_bpe(std::string_view text, const TrainOptions& options, TrainReport* report = nullptr) {
  LOOM_CHECK(options.vocab_size >= 256, value_error, "train_bpe: vocab_size must be at least 256, got ",
             options.vocab_size);
  LOOM_CHECK(options.vocab_size <= (std::size_t{1} << 22), value_error, "train_bpe: vocab_size too large (",
             options.vocab_size, ")");
  // 1. Unique chunks with counts, numbered in order of first appearance.
  std::unordered_map<std::string_view, std::uint32_t, detail::ChunkHash> index;
  std::vector<std::string_view> chunks;
  std::vector<std::int64_t> counts;
  std::size_t total = 0;
  auto count_chunk = [&](std::string_view c) {
    ++total;
    auto [it, inserted] = index.try_emplace(c, static_cast<std::uint32_t>(chunks.size()));
    if (inserted) {
      chunks.push_back(c);
      counts.push_back(1);
    } else {
      ++counts[it->second];
    }
  };
  std::size_t pos = 0;
  while (pos < text.size()) {  // cut out special tokens (earliest, longest first)
    std::size_t best = std::string_view::npos, len = 0;
    for (const std::string& s : options.special_tokens) {
      if (s.empty()) continue;
      std::size_t at = text.find(s, pos);
      if (at < best || (at == best && s.size() > len)) { best = at; len = s.size(); }
    }
    std::string_view seg = text.substr(pos, best == std::string_view::npos ? std::string_view::npos : best - pos);
    for_each_chunk(seg, options.pattern, count_chunk);
    if (best == std::string_view::npos) break;
    pos = best + len;
  }
  // 2. Merge.
  detail::BpeTrainer trainer;
  for (std::size_t i = 0; i < chunks.size(); ++i) trainer.add_chunk(chunks[i], counts[i]);
  std::vector<std::int64_t> merge_counts;
  std::vector<MergeRule> merges = trainer.run(options.vocab_size - 256, merge_counts, options.on_progress);
  // 3. Assemble the tokenizer.
  std::vector<std::string> vocab(256 + merges.size());
  for (int b = 0; b < 256; ++b) vocab[b] = std::string(1, static_cast<char>(b));
  for (const MergeRule& m : merges) vocab[m.id] = vocab[m.left] + vocab[m.right];
  std::vector<SpecialToken> specials;
  for (const std::string& s : options.special_tokens)
    specials.push_back({s, static_cast<std::uint32_t>(vocab.size() + specials.size())});
  if (report) {
    report->merge_counts = std::move(merge_counts);
    report->unique_chunks = chunks.size();
    report->total_chunks = total;
  }
  return BpeTokenizer(options.pattern, std::move(vocab), std::move(merges), std::move(specials));
}

}  // namespace loom::tokenizer
