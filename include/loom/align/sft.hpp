#pragma once
/// @file sft.hpp
/// Batches for supervised fine-tuning: rendered conversations (ids + loss mask, chat.hpp) become
/// (B, T) inputs and targets in which only the assistant's tokens carry loss, one example per row
/// (padded) or several per row (packed, with segment ids for block-diagonal attention).
///
/// **Targets.** An example of L tokens takes L - 1 positions of a row: input t is ids[t], its
/// target is ids[t + 1] when mask[t + 1] == 1 and -1 otherwise (the model's ignore index), as in
/// TRL's completion-only loss. So an example may have at most T + 1 tokens: render with
/// max_len = T + 1 (render_examples does) and the longest example fills a row exactly. Padding
/// has input 0 and target -1.
///
/// **Packing** puts several examples in one row (TRL's `packing=True` with its best-fit
/// decreasing strategy, as in "Fewer Truncations Improve Language Modeling", Ding et al. 2024):
/// examples are never cut, and `segments` gives each position the index of its example inside
/// the row (0, 1, 2, ...; the padding at the end gets the next id), so that attention can be
/// limited to positions of the same segment and no example sees another.
///
/// **Loader.** SftLoader::next() draws training batches: the rows (one example each, or the
/// packed bins, which are fixed once at construction because best-fit decreasing depends only on
/// the lengths) are visited in epochs, each a fresh permutation from a std::mt19937_64 seeded with
/// the seed (Fisher-Yates with unbiased bounded draws on the raw 64-bit output, so the order is the
/// same on every platform and standard library). A batch that reaches the end of an epoch takes
/// its remaining rows from the next one. SftLoader::all() gives every example exactly once, in
/// the order given, for evaluation (packed in order: a row is closed when the next example does
/// not fit; the last batch may have fewer than B rows).

#include <algorithm>
#include <cstdint>
#include <random>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "loom/align/chat.hpp"
#include "loom/core/tensor.hpp"

namespace loom::align {

/// One training example: token ids and the loss mask (1 = trained on), of equal length.
struct SftExample {
  std::vector<uint32_t> ids;   ///< token ids, BOS first
  std::vector<uint8_t> mask;   ///< 1 where the token is to be learned (assistant content and <|end|>)
};

/// One batch: inputs, targets (-1 = no loss) and, for packed rows, segment ids; (B, T) each, CPU.
struct SftBatch {
  Tensor<int64_t> idx;       ///< (B, T) input ids; 0 on padding
  Tensor<int64_t> targets;   ///< (B, T) next ids where they carry loss, else -1
  Tensor<int64_t> segments;  ///< (B, T) example index within the row (padding: its own id); undefined when unpacked
  int64_t loss_tokens = 0;   ///< number of targets that are not -1
  int64_t tokens = 0;        ///< number of positions holding an example's token (not padding)
  std::vector<int64_t> row_examples;  ///< how many examples each row holds (1 each when unpacked)
  /// The share of the non-padding positions that carry loss (0 for an empty batch).
  double loss_share() const { return tokens > 0 ? double(loss_tokens) / double(tokens) : 0.0; }
};

/// How many conversations render_examples rendered and how many it had to shorten.
struct RenderStats {
  int64_t examples = 0;             ///< conversations rendered
  int64_t truncated_examples = 0;   ///< of which lost prompt tokens to the length limit
  int64_t truncated_tokens = 0;     ///< prompt tokens dropped in all
};

/// Renders every conversation with max_len (use T + 1 for a context of T); throws value_error
/// naming the conversation's index when its final answer alone does not fit.
inline std::vector<SftExample> render_examples(const ChatTemplate& tmpl, const std::vector<Conversation>& convs,
                                               int64_t max_len, RenderStats* stats = nullptr) {
  std::vector<SftExample> out;
  out.reserve(convs.size());
  RenderStats s;
  for (size_t i = 0; i < convs.size(); ++i) {
    Rendered r;
    try {
      r = tmpl.render(convs[i], max_len);
    } catch (const value_error& e) {
      throw value_error(loom::detail::concat("conversation ", i, ": ", e.what()));
    }
    ++s.examples;
    s.truncated_examples += r.truncated_prompt_tokens > 0;
    s.truncated_tokens += r.truncated_prompt_tokens;
    out.push_back({std::move(r.ids), std::move(r.mask)});
  }
  if (stats) *stats = s;
  return out;
}

/// Best-fit decreasing bin packing: examples by decreasing length (ties: lower index first), each
/// into the open bin with the least remaining room that still holds it (ties: the older bin), else
/// a new bin. Returns the bins in order of creation, each listing example indices in the order
/// placed. Examples are never cut; throws value_error for a length < 1 or > capacity.
inline std::vector<std::vector<int64_t>> pack_best_fit(const std::vector<int64_t>& lengths, int64_t capacity) {
  LOOM_CHECK(capacity > 0, value_error, "pack_best_fit: capacity must be positive, got ", capacity);
  std::vector<int64_t> order(lengths.size());
  for (size_t i = 0; i < order.size(); ++i) {
    const int64_t n = lengths[i];
    LOOM_CHECK(n >= 1 && n <= capacity, value_error, "pack_best_fit: example ", i, " has length ", n,
               ", outside [1, ", capacity, "] (examples are never cut; shorten it or raise the capacity)");
    order[i] = int64_t(i);
  }
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return lengths[a] > lengths[b]; });
  std::vector<std::vector<int64_t>> bins;
  std::set<std::pair<int64_t, int64_t>> room;  // (remaining room, bin index) of every bin with room left
  for (int64_t i : order) {
    const int64_t n = lengths[size_t(i)];
    auto it = room.lower_bound({n, -1});  // the least room >= n, then the oldest such bin
    if (it == room.end()) {
      bins.push_back({i});
      if (capacity - n > 0) room.insert({capacity - n, int64_t(bins.size()) - 1});
    } else {
      const auto [left, b] = *it;
      room.erase(it);
      bins[size_t(b)].push_back(i);
      if (left - n > 0) room.insert({left - n, b});
    }
  }
  return bins;
}

/// Builds one batch whose row r holds the examples rows[r] (each one's L - 1 positions, in the
/// listed order), padded to T; `packed` fills `segments`. Throws value_error for a row that does
/// not fit in T positions, or an example with fewer than 2 tokens or a mask of another length.
inline SftBatch make_batch(const std::vector<SftExample>& examples, const std::vector<std::vector<int64_t>>& rows,
                           int64_t T, bool packed) {
  LOOM_CHECK(T > 0, value_error, "make_batch: T must be positive, got ", T);
  LOOM_CHECK(!rows.empty(), value_error, "make_batch: no rows");
  const int64_t B = int64_t(rows.size());
  SftBatch b;
  b.idx = full<int64_t>({B, T}, 0);
  b.targets = full<int64_t>({B, T}, -1);
  if (packed) b.segments = Tensor<int64_t>::empty({B, T});
  int64_t* x = b.idx.data();        // (B, T)
  int64_t* y = b.targets.data();    // (B, T)
  int64_t* seg = packed ? b.segments.data() : nullptr;  // (B, T)
  for (int64_t r = 0; r < B; ++r) {
    LOOM_CHECK(packed || rows[size_t(r)].size() == 1, value_error, "make_batch: an unpacked row holds one example, row ",
               r, " has ", rows[size_t(r)].size());
    int64_t t = 0, s = 0;
    for (int64_t e : rows[size_t(r)]) {
      LOOM_CHECK(e >= 0 && e < int64_t(examples.size()), value_error, "make_batch: example ", e, " out of range [0, ",
                 examples.size(), ")");
      const SftExample& ex = examples[size_t(e)];
      const int64_t L = int64_t(ex.ids.size());
      LOOM_CHECK(ex.mask.size() == ex.ids.size(), value_error, "make_batch: example ", e, " has ", L, " ids but ",
                 ex.mask.size(), " mask entries");
      LOOM_CHECK(L >= 2, value_error, "make_batch: example ", e, " has ", L, " tokens; it needs at least 2 (input and target)");
      LOOM_CHECK(t + L - 1 <= T, value_error, "make_batch: row ", r, " needs more than T = ", T,
                 " positions (example ", e, " has ", L, " tokens and takes ", L - 1,
                 "); render with max_len = T + 1");
      for (int64_t k = 0; k + 1 < L; ++k, ++t) {
        x[r * T + t] = ex.ids[size_t(k)];
        if (ex.mask[size_t(k + 1)]) {
          y[r * T + t] = ex.ids[size_t(k + 1)];
          ++b.loss_tokens;
        }
        if (seg) seg[r * T + t] = s;
      }
      b.tokens += L - 1;
      ++s;
    }
    if (seg)
      for (int64_t k = t; k < T; ++k) seg[r * T + k] = s;
    b.row_examples.push_back(s);
  }
  return b;
}

/// Throws value_error when no target of the batch carries loss (the masks are all zeros) or every
/// one does (the masks are all ones: the prompt is being trained on); says what usually causes it.
inline void check_loss_share(const SftBatch& b) {
  LOOM_CHECK(b.tokens > 0, value_error, "check_loss_share: the batch holds no tokens");
  LOOM_CHECK(b.loss_tokens > 0, value_error, "check_loss_share: no target in the batch carries loss (the loss masks are "
             "all zeros, over ", b.tokens, " positions): the examples have no assistant tokens; usually the answers "
             "were cut off by a length limit, the data has no assistant turns, or the masks were not built by the "
             "chat template");
  LOOM_CHECK(b.loss_tokens < b.tokens, value_error, "check_loss_share: every target in the batch carries loss (the "
             "loss masks are all ones, over ", b.tokens, " positions): the prompt is being trained on; usually the "
             "masks were set to 1 everywhere (plain language-model data) instead of coming from the chat template");
}

/// Seeded SFT batches (see the file comment): next() for training, all() for evaluation.
class SftLoader {
 public:
  /// A loader over `examples` (each of 2..T + 1 tokens) with B rows of T positions per batch;
  /// `pack` puts several examples in a row (best-fit decreasing), `seed` fixes the order.
  SftLoader(std::vector<SftExample> examples, int64_t B, int64_t T, bool pack, uint64_t seed)
      : examples_(std::move(examples)), B_(B), T_(T), pack_(pack), rng_(seed) {
    LOOM_CHECK(B > 0 && T > 0, value_error, "SftLoader: batch size ", B, " and context ", T, " must be positive");
    LOOM_CHECK(!examples_.empty(), value_error, "SftLoader: no examples");
    std::vector<int64_t> lengths(examples_.size());
    for (size_t i = 0; i < examples_.size(); ++i) {
      const int64_t L = int64_t(examples_[i].ids.size());
      LOOM_CHECK(L >= 2 && L <= T + 1 && examples_[i].mask.size() == examples_[i].ids.size(), value_error,
                 "SftLoader: example ", i, " has ", L, " tokens and ", examples_[i].mask.size(),
                 " mask entries; it needs equal counts and 2 to T + 1 = ", T + 1,
                 " tokens (render with max_len = T + 1)");
      lengths[i] = L - 1;
    }
    if (pack_) {
      rows_ = pack_best_fit(lengths, T);
    } else {
      for (size_t i = 0; i < examples_.size(); ++i) rows_.push_back({int64_t(i)});
    }
    order_.resize(rows_.size());
  }

  /// The examples.
  const std::vector<SftExample>& examples() const { return examples_; }
  /// The training rows: example indices of each row (one each when unpacked).
  const std::vector<std::vector<int64_t>>& rows() const { return rows_; }
  /// Rows per batch.
  int64_t batch_size() const { return B_; }
  /// Positions per row (the model's block size).
  int64_t context() const { return T_; }
  /// Whether rows are packed.
  bool packed() const { return pack_; }
  /// Epochs begun so far by next() (0 before the first batch).
  int64_t epoch() const { return epoch_; }

  /// The next training batch of B rows from the epoch-shuffled rows.
  SftBatch next() {
    std::vector<std::vector<int64_t>> rows;
    rows.reserve(size_t(B_));
    while (int64_t(rows.size()) < B_) {
      if (pos_ == order_.size() || epoch_ == 0) start_epoch();
      rows.push_back(rows_[order_[pos_++]]);
    }
    return make_batch(examples_, rows, T_, pack_);
  }

  /// Every example exactly once, in order, in batches of at most B rows (for evaluation).
  std::vector<SftBatch> all() const {
    std::vector<std::vector<int64_t>> rows;
    int64_t used = 0;
    for (size_t i = 0; i < examples_.size(); ++i) {
      const int64_t n = int64_t(examples_[i].ids.size()) - 1;
      if (rows.empty() || !pack_ || used + n > T_) rows.emplace_back(), used = 0;
      rows.back().push_back(int64_t(i));
      used += n;
    }
    std::vector<SftBatch> out;
    for (size_t r = 0; r < rows.size(); r += size_t(B_)) {
      std::vector<std::vector<int64_t>> chunk(rows.begin() + long(r), rows.begin() + long(std::min(rows.size(), r + size_t(B_))));
      out.push_back(make_batch(examples_, chunk, T_, pack_));
    }
    return out;
  }

 private:
  /// A uniform integer in [0, n) from the raw 64-bit output (rejection keeps it unbiased).
  uint64_t below(uint64_t n) {
    const uint64_t limit = ~uint64_t(0) - (~uint64_t(0) % n + 1) % n;  // accept v < 2^64 - (2^64 mod n)
    uint64_t v;
    do v = rng_();
    while (v > limit);
    return v % n;
  }
  void start_epoch() {
    for (size_t i = 0; i < order_.size(); ++i) order_[i] = i;
    for (size_t i = order_.size(); i > 1; --i) std::swap(order_[i - 1], order_[size_t(below(i))]);
    pos_ = 0;
    ++epoch_;
  }

  std::vector<SftExample> examples_;
  int64_t B_, T_;
  bool pack_;
  std::mt19937_64 rng_;
  std::vector<std::vector<int64_t>> rows_;
  std::vector<size_t> order_;
  size_t pos_ = 0;
  int64_t epoch_ = 0;
};

}  // namespace loom::align
