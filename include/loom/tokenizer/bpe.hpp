#pragma once
/// @file bpe.hpp
/// loom::BpeTokenizer: byte-level BPE encoding and decoding with special tokens.
///
/// A tokenizer is a vocabulary (token id -> bytes), a list of merge rules (left id, right id ->
/// new id, with a rank) and a pre-tokenizer pattern. Encoding splits the text into chunks, maps
/// each byte of a chunk to its single-byte token, then repeatedly merges the adjacent pair with
/// the lowest rank (the leftmost one when ranks are equal) until no pair has a rule.
/// docs/06-bpe-tokenizer.md explains it step by step.

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <queue>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "loom/core/error.hpp"
#include "loom/tokenizer/flat_map.hpp"
#include "loom/tokenizer/pretokenizer.hpp"
#include "loom/tokenizer/utf8.hpp"

namespace loom {

namespace tokenizer {

/// One merge rule: the adjacent pair (left, right) becomes token id. Lower rank merges first.
struct MergeRule {
  std::uint32_t left, right, id, rank;
};

/// A special token: text that maps to one id and never goes through BPE (e.g. <|endoftext|>).
struct SpecialToken {
  std::string text;
  std::uint32_t id;
};

/// How encode() treats special-token text in its input.
struct SpecialPolicy {
  /// What to do with special-token text that is not allowed.
  enum class Disallowed { error, as_text };
  bool allow_all = false;             ///< every special token is allowed
  std::vector<std::string> allowed;   ///< these special tokens are allowed (their text -> their id)
  Disallowed disallowed = Disallowed::error;  ///< the others raise value_error, or are plain text

  /// The default, as tiktoken's encode(): any special-token text in the input is an error.
  static SpecialPolicy none() { return {}; }
  /// Every special token's text becomes its id.
  static SpecialPolicy all() { return {true, {}, Disallowed::error}; }
  /// Special-token text is encoded as ordinary text (tiktoken's encode_ordinary).
  static SpecialPolicy as_text() { return {false, {}, Disallowed::as_text}; }
  /// Only the listed special tokens are allowed; the others are an error.
  static SpecialPolicy only(std::vector<std::string> names) { return {false, std::move(names), Disallowed::error}; }
};

namespace detail {

/// Cache from chunk bytes to its token ids, used during one encode call (one per thread).
/// Bounded: it empties itself when it grows past max_entries or max_bytes.
class ChunkCache {
 public:
  static constexpr std::size_t max_entries = 1u << 19;
  static constexpr std::size_t max_bytes = 64u << 20;
  static constexpr std::size_t max_key_len = 256;

  /// Looks key up; on a hit appends its ids to out and returns true.
  bool lookup(std::string_view key, std::uint64_t h, std::vector<std::uint32_t>& out) const {
    if (table_.empty()) return false;
    const std::size_t mask = table_.size() - 1;
    for (std::size_t i = h & mask;; i = (i + 1) & mask) {
      const Entry& e = table_[i];
      if (e.hash == 0) return false;
      if (e.hash == h && e.key_len == key.size() &&
          std::memcmp(keys_.data() + e.key_off, key.data(), key.size()) == 0) {
        out.insert(out.end(), ids_.begin() + e.ids_off, ids_.begin() + e.ids_off + e.ids_len);
        return true;
      }
    }
  }
  /// Stores key -> ids[0, n).
  void insert(std::string_view key, std::uint64_t h, const std::uint32_t* ids, std::size_t n) {
    if (count_ + 1 > max_entries || keys_.size() + ids_.size() * 4 > max_bytes) clear();
    if ((count_ + 1) * 2 > table_.size()) grow();
    const std::size_t mask = table_.size() - 1;
    std::size_t i = h & mask;
    while (table_[i].hash != 0) i = (i + 1) & mask;
    table_[i] = {h, static_cast<std::uint32_t>(keys_.size()), static_cast<std::uint32_t>(key.size()),
                 static_cast<std::uint32_t>(ids_.size()), static_cast<std::uint32_t>(n)};
    keys_.append(key.data(), key.size());
    ids_.insert(ids_.end(), ids, ids + n);
    ++count_;
  }
  /// Hash used as the cache key (never 0, which marks an empty slot).
  static std::uint64_t hash(std::string_view key) { return hash_bytes(key) | 1; }

 private:
  struct Entry {
    std::uint64_t hash;
    std::uint32_t key_off, key_len, ids_off, ids_len;
  };
  void clear() {
    table_.clear();
    keys_.clear();
    ids_.clear();
    count_ = 0;
  }
  void grow() {
    std::vector<Entry> old = std::move(table_);
    table_.assign(old.empty() ? 1024 : old.size() * 2, Entry{0, 0, 0, 0, 0});
    const std::size_t mask = table_.size() - 1;
    for (const Entry& e : old) {
      if (e.hash == 0) continue;
      std::size_t i = e.hash & mask;
      while (table_[i].hash != 0) i = (i + 1) & mask;
      table_[i] = e;
    }
  }
  std::vector<Entry> table_;
  std::string keys_;
  std::vector<std::uint32_t> ids_;
  std::size_t count_ = 0;
};

}  // namespace detail
}  // namespace tokenizer

/// A byte-level BPE tokenizer: vocabulary, merge rules, pre-tokenizer pattern, special tokens.
/// Encoding and decoding are const and thread-safe.
class BpeTokenizer {
 public:
  using Pattern = tokenizer::Pattern;
  using MergeRule = tokenizer::MergeRule;
  using SpecialToken = tokenizer::SpecialToken;
  using SpecialPolicy = tokenizer::SpecialPolicy;

  /// The trivial tokenizer: 256 byte tokens (id = byte value), no merges, no split.
  BpeTokenizer() : BpeTokenizer(Pattern::none, byte_vocab(), {}, {}) {}

  /// Builds a tokenizer from its parts; throws value_error if they do not fit together.
  /// @param vocab   bytes of each ordinary token by id; an empty string marks an unused id.
  ///                Every byte value must have exactly one single-byte token.
  /// @param merges  rules whose bytes agree (vocab[id] == vocab[left] + vocab[right]).
  /// @param specials ids not used by ordinary tokens, distinct non-empty texts.
  BpeTokenizer(Pattern pattern, std::vector<std::string> vocab, std::vector<MergeRule> merges,
               std::vector<SpecialToken> specials)
      : pattern_(pattern), vocab_(std::move(vocab)), merges_(std::move(merges)), specials_(std::move(specials)) {
    using loom::detail::concat;
    LOOM_CHECK(vocab_.size() < 0x7FFFFFFFu, value_error, "BpeTokenizer: vocabulary too large");
    while (!vocab_.empty() && vocab_.back().empty()) vocab_.pop_back();  // canonical: no unused tail
    byte_ids_.fill(~0u);
    for (std::size_t id = 0; id < vocab_.size(); ++id) {
      if (vocab_[id].size() != 1) continue;
      auto b = static_cast<unsigned char>(vocab_[id][0]);
      LOOM_CHECK(byte_ids_[b] == ~0u, value_error, "BpeTokenizer: byte 0x", hex(b),
                 " has two tokens (ids ", byte_ids_[b], " and ", id, ")");
      byte_ids_[b] = static_cast<std::uint32_t>(id);
    }
    for (int b = 0; b < 256; ++b)
      LOOM_CHECK(byte_ids_[b] != ~0u, value_error, "BpeTokenizer: byte 0x", hex(b), " has no token");
    std::stable_sort(merges_.begin(), merges_.end(),
                     [](const MergeRule& a, const MergeRule& b) { return a.rank < b.rank; });
    for (const MergeRule& m : merges_) {
      auto defined = [&](std::uint32_t id) { return id < vocab_.size() && !vocab_[id].empty(); };
      LOOM_CHECK(defined(m.left) && defined(m.right) && defined(m.id), value_error,
                 "BpeTokenizer: merge (", m.left, ", ", m.right, ") -> ", m.id, " uses an unknown token id");
      LOOM_CHECK(m.rank < 0xFFFFFFFFu, value_error, "BpeTokenizer: merge rank too large");
      const std::string& l = vocab_[m.left];
      const std::string& r = vocab_[m.right];
      const std::string& t = vocab_[m.id];
      LOOM_CHECK(t.size() == l.size() + r.size() && t.compare(0, l.size(), l) == 0 &&
                     t.compare(l.size(), r.size(), r) == 0,
                 value_error, "BpeTokenizer: merge (", m.left, ", ", m.right, ") -> ", m.id,
                 ": the token's bytes are not the concatenation of the pair's");
      std::uint64_t key = tokenizer::detail::pack_pair(m.left, m.right);
      LOOM_CHECK(merge_map_.get(key) == tokenizer::detail::PairMap::not_found, value_error,
                 "BpeTokenizer: merge (", m.left, ", ", m.right, ") is listed twice");
      merge_map_.set(key, (static_cast<std::uint64_t>(m.rank) << 32) | m.id);
    }
    std::vector<std::uint32_t> seen_ids;
    for (const SpecialToken& s : specials_) {
      LOOM_CHECK(!s.text.empty(), value_error, "BpeTokenizer: special token ", s.id, " has empty text");
      LOOM_CHECK(s.id >= vocab_.size() || vocab_[s.id].empty(), value_error, "BpeTokenizer: special token '",
                 s.text, "' reuses the id ", s.id, " of an ordinary token");
      LOOM_CHECK(s.id < 0x7FFFFFFFu, value_error, "BpeTokenizer: special token id too large");
      for (const SpecialToken& o : specials_)
        LOOM_CHECK(&o == &s || (o.text != s.text && o.id != s.id), value_error,
                   "BpeTokenizer: special token '", s.text, "' (id ", s.id, ") is listed twice");
    }
  }

  // --- inspection -----------------------------------------------------------------------------

  /// The pre-tokenizer pattern.
  Pattern pattern() const { return pattern_; }
  /// One more than the largest id in use (ordinary or special).
  std::size_t vocab_size() const {
    std::size_t n = vocab_.size();
    for (const SpecialToken& s : specials_) n = std::max<std::size_t>(n, s.id + 1);
    return n;
  }
  /// Ordinary tokens' bytes by id ("" for an unused id).
  const std::vector<std::string>& vocab() const { return vocab_; }
  /// The merge rules in rank order.
  const std::vector<MergeRule>& merges() const { return merges_; }
  /// The special tokens.
  const std::vector<SpecialToken>& special_tokens() const { return specials_; }
  /// The id of the single-byte token for byte b.
  std::uint32_t byte_id(unsigned char b) const { return byte_ids_[b]; }
  /// The id of special token text, if there is one.
  std::optional<std::uint32_t> special_id(std::string_view text) const {
    for (const SpecialToken& s : specials_)
      if (s.text == text) return s.id;
    return std::nullopt;
  }
  /// Whether id is a special token.
  bool is_special(std::uint32_t id) const {
    for (const SpecialToken& s : specials_)
      if (s.id == id) return true;
    return false;
  }
  /// The bytes of token id (ordinary or special); throws value_error for an unknown id.
  std::string_view token_bytes(std::uint32_t id) const {
    if (id < vocab_.size() && !vocab_[id].empty()) return vocab_[id];
    for (const SpecialToken& s : specials_)
      if (s.id == id) return s.text;
    throw value_error(loom::detail::concat("decode: unknown token id ", id, " (vocabulary size ", vocab_size(), ")"));
  }

  // --- encoding -------------------------------------------------------------------------------

  /// Encodes text with special-token text treated as ordinary text (tiktoken encode_ordinary).
  std::vector<std::uint32_t> encode_ordinary(std::string_view text) const {
    std::vector<std::uint32_t> out;
    out.reserve(text.size() / 3 + 4);
    tokenizer::detail::ChunkCache cache;
    encode_ordinary_into(text, out, cache);
    return out;
  }

  /// Encodes text; special-token text is handled as `policy` says (default: value_error).
  std::vector<std::uint32_t> encode(std::string_view text, const SpecialPolicy& policy = SpecialPolicy::none()) const {
    std::vector<std::uint32_t> out;
    out.reserve(text.size() / 3 + 4);
    tokenizer::detail::ChunkCache cache;
    for (const Piece& p : split_specials(text, policy)) {
      if (p.special) out.push_back(p.id);
      else encode_ordinary_into(p.text, out, cache);
    }
    return out;
  }

  /// Same result as encode(), using up to num_threads OpenMP threads (0 = all). The text is cut
  /// only where every pattern starts a chunk, so the ids are identical to the one-thread result.
  std::vector<std::uint32_t> encode_parallel(std::string_view text, const SpecialPolicy& policy = SpecialPolicy::none(),
                                             int num_threads = 0) const {
    std::vector<Piece> pieces;
    int threads = 1;
#ifdef _OPENMP
    threads = num_threads > 0 ? num_threads : omp_get_max_threads();
#else
    (void)num_threads;
#endif
    const std::size_t target = std::max<std::size_t>(1u << 16, text.size() / (static_cast<std::size_t>(threads) * 8 + 1));
    for (const Piece& p : split_specials(text, policy)) {
      if (p.special || pattern_ == Pattern::none || p.text.size() <= target) {
        pieces.push_back(p);
        continue;
      }
      std::string_view rest = p.text;
      while (rest.size() > target) {
        std::size_t cut = tokenizer::safe_split_point(rest, target, target);
        if (cut == std::string_view::npos) break;
        pieces.push_back(Piece{false, 0, rest.substr(0, cut)});
        rest = rest.substr(cut);
      }
      pieces.push_back(Piece{false, 0, rest});
    }
    std::vector<std::vector<std::uint32_t>> parts(pieces.size());
    const long n = static_cast<long>(pieces.size());
    auto encode_range = [&](tokenizer::detail::ChunkCache& cache, long i) {
      if (pieces[i].special) {
        parts[i].push_back(pieces[i].id);
      } else {
        // Encode into a local vector and move it in at the end: appending to parts[i] directly
        // would write the vector headers of neighbouring pieces, which share a cache line, from
        // two threads at once (false sharing), and the threads would run no faster than one.
        std::vector<std::uint32_t> ids;
        ids.reserve(pieces[i].text.size() / 3 + 16);
        encode_ordinary_into(pieces[i].text, ids, cache);
        parts[i] = std::move(ids);
      }
    };
#ifdef _OPENMP
#pragma omp parallel num_threads(threads) if (n > 1)
    {
      tokenizer::detail::ChunkCache cache;
#pragma omp for schedule(dynamic, 1)
      for (long i = 0; i < n; ++i) encode_range(cache, i);
    }
#else
    tokenizer::detail::ChunkCache cache;
    for (long i = 0; i < n; ++i) encode_range(cache, i);
#endif
    std::size_t total = 0;
    for (const auto& v : parts) total += v.size();
    std::vector<std::uint32_t> out;
    out.reserve(total);
    for (const auto& v : parts) out.insert(out.end(), v.begin(), v.end());
    return out;
  }

  /// Runs BPE on one pre-tokenized chunk (no cache), appending its ids to out.
  void encode_chunk(std::string_view chunk, std::vector<std::uint32_t>& out) const {
    if (chunk.size() <= small_chunk) bpe_small(chunk, out);
    else bpe_large(chunk, out);
  }

  // --- decoding -------------------------------------------------------------------------------

  /// The exact bytes of the tokens (which may be invalid UTF-8 if the ids split a character).
  /// Throws value_error for an unknown id.
  std::string decode(const std::uint32_t* ids, std::size_t n) const {
    std::string out;
    for (std::size_t i = 0; i < n; ++i) {
      const std::uint32_t id = ids[i];
      if (id < vocab_.size() && !vocab_[id].empty()) out += vocab_[id];
      else out += token_bytes(id);
    }
    return out;
  }
  /// The exact bytes of the tokens.
  std::string decode(const std::vector<std::uint32_t>& ids) const { return decode(ids.data(), ids.size()); }
  /// The tokens as valid UTF-8 text: invalid byte sequences become U+FFFD.
  std::string decode_lossy(const std::vector<std::uint32_t>& ids) const {
    return tokenizer::to_valid_utf8(decode(ids));
  }

 private:
  struct Piece {
    bool special;
    std::uint32_t id;
    std::string_view text;
  };
  static constexpr std::size_t small_chunk = 128;
  static constexpr std::uint64_t no_merge = tokenizer::detail::PairMap::not_found;

  static std::vector<std::string> byte_vocab() {
    std::vector<std::string> v(256);
    for (int b = 0; b < 256; ++b) v[b] = std::string(1, static_cast<char>(b));
    return v;
  }
  static std::string hex(unsigned b) {
    const char* d = "0123456789ABCDEF";
    return {d[(b >> 4) & 15], d[b & 15]};
  }

  std::uint64_t merge_value(std::uint32_t left, std::uint32_t right) const {
    return merge_map_.get(tokenizer::detail::pack_pair(left, right));
  }

  /// Splits text at allowed special tokens (earliest first; the longest on a tie); checks that
  /// no disallowed special token appears when the policy says so.
  std::vector<Piece> split_specials(std::string_view text, const SpecialPolicy& policy) const {
    std::vector<const SpecialToken*> allowed;
    for (const SpecialToken& s : specials_) {
      bool ok = policy.allow_all ||
                std::find(policy.allowed.begin(), policy.allowed.end(), s.text) != policy.allowed.end();
      if (ok) {
        allowed.push_back(&s);
      } else if (policy.disallowed == SpecialPolicy::Disallowed::error) {
        std::size_t at = text.find(s.text);
        LOOM_CHECK(at == std::string_view::npos, value_error, "encode: the text contains the special token '",
                   s.text, "' at byte ", at,
                   ", which is not allowed; allow it (SpecialPolicy::all(), --allow-special) or encode it as "
                   "ordinary text (encode_ordinary)");
      }
    }
    for (const std::string& name : policy.allowed)
      LOOM_CHECK(special_id(name).has_value(), value_error, "encode: '", name, "' is not a special token");
    std::vector<Piece> pieces;
    std::vector<std::size_t> next(allowed.size());
    for (std::size_t k = 0; k < allowed.size(); ++k) next[k] = text.find(allowed[k]->text);
    std::size_t pos = 0;
    while (true) {
      std::size_t best = std::string_view::npos;
      const SpecialToken* tok = nullptr;
      for (std::size_t k = 0; k < allowed.size(); ++k) {
        if (next[k] != std::string_view::npos && next[k] < pos) next[k] = text.find(allowed[k]->text, pos);
        if (next[k] == std::string_view::npos) continue;
        if (next[k] < best || (next[k] == best && allowed[k]->text.size() > tok->text.size())) {
          best = next[k];
          tok = allowed[k];
        }
      }
      if (!tok) break;
      if (best > pos) pieces.push_back(Piece{false, 0, text.substr(pos, best - pos)});
      pieces.push_back(Piece{true, tok->id, {}});
      pos = best + tok->text.size();
    }
    if (pos < text.size()) pieces.push_back(Piece{false, 0, text.substr(pos)});
    return pieces;
  }

  void encode_ordinary_into(std::string_view text, std::vector<std::uint32_t>& out,
                            tokenizer::detail::ChunkCache& cache) const {
    tokenizer::for_each_chunk(text, pattern_, [&](std::string_view chunk) {
      if (chunk.size() == 1) {
        out.push_back(byte_ids_[static_cast<unsigned char>(chunk[0])]);
        return;
      }
      if (chunk.size() > tokenizer::detail::ChunkCache::max_key_len) {
        encode_chunk(chunk, out);
        return;
      }
      const std::uint64_t h = tokenizer::detail::ChunkCache::hash(chunk);
      if (cache.lookup(chunk, h, out)) return;
      const std::size_t start = out.size();
      encode_chunk(chunk, out);
      cache.insert(chunk, h, out.data() + start, out.size() - start);
    });
  }

  /// BPE for a short chunk: arrays of ids and pair values; O(n^2) but n <= small_chunk.
  void bpe_small(std::string_view chunk, std::vector<std::uint32_t>& out) const {
    std::uint32_t ids[small_chunk];
    std::uint64_t val[small_chunk];  // val[i]: merge of (ids[i], ids[i+1]): rank << 32 | new id
    std::size_t m = chunk.size();
    for (std::size_t i = 0; i < m; ++i) ids[i] = byte_ids_[static_cast<unsigned char>(chunk[i])];
    for (std::size_t i = 0; i + 1 < m; ++i) val[i] = merge_value(ids[i], ids[i + 1]);
    while (m > 1) {
      std::size_t best = 0;
      for (std::size_t i = 1; i + 1 < m; ++i)
        if (val[i] < val[best]) best = i;  // strict: the leftmost of equal ranks
      if (val[best] == no_merge) break;
      ids[best] = static_cast<std::uint32_t>(val[best]);
      for (std::size_t i = best + 1; i + 1 < m; ++i) {
        ids[i] = ids[i + 1];
        val[i] = val[i + 1];
      }
      --m;
      if (best + 1 < m) val[best] = merge_value(ids[best], ids[best + 1]);
      if (best > 0) val[best - 1] = merge_value(ids[best - 1], ids[best]);
    }
    out.insert(out.end(), ids, ids + m);
  }

  /// BPE for a long chunk: a linked list of symbols and a min-heap of (value, position) with
  /// lazy deletion; O(n log n).
  void bpe_large(std::string_view chunk, std::vector<std::uint32_t>& out) const {
    const std::size_t n = chunk.size();
    std::vector<std::uint32_t> ids(n), prev(n), next(n);
    constexpr std::uint32_t none = ~0u;
    for (std::size_t i = 0; i < n; ++i) {
      ids[i] = byte_ids_[static_cast<unsigned char>(chunk[i])];
      prev[i] = i == 0 ? none : static_cast<std::uint32_t>(i - 1);
      next[i] = i + 1 == n ? none : static_cast<std::uint32_t>(i + 1);
    }
    using Entry = std::pair<std::uint64_t, std::uint32_t>;  // (value, left position)
    std::priority_queue<Entry, std::vector<Entry>, std::greater<Entry>> heap;
    for (std::size_t i = 0; i + 1 < n; ++i) {
      std::uint64_t v = merge_value(ids[i], ids[i + 1]);
      if (v != no_merge) heap.push({v, static_cast<std::uint32_t>(i)});
    }
    std::vector<char> alive(n, 1);
    while (!heap.empty()) {
      auto [v, i] = heap.top();
      heap.pop();
      if (!alive[i] || next[i] == none || merge_value(ids[i], ids[next[i]]) != v) continue;  // stale
      const std::uint32_t j = next[i];
      ids[i] = static_cast<std::uint32_t>(v);
      alive[j] = 0;
      next[i] = next[j];
      if (next[j] != none) prev[next[j]] = i;
      if (prev[i] != none) {
        std::uint64_t pv = merge_value(ids[prev[i]], ids[i]);
        if (pv != no_merge) heap.push({pv, prev[i]});
      }
      if (next[i] != none) {
        std::uint64_t nv = merge_value(ids[i], ids[next[i]]);
        if (nv != no_merge) heap.push({nv, i});
      }
    }
    for (std::uint32_t i = 0; i != none; i = next[i]) out.push_back(ids[i]);
  }

  Pattern pattern_;
  std::vector<std::string> vocab_;
  std::vector<MergeRule> merges_;
  std::vector<SpecialToken> specials_;
  std::array<std::uint32_t, 256> byte_ids_{};
  tokenizer::detail::PairMap merge_map_;
};

}  // namespace loom
