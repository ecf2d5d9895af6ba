#pragma once
/// @file causal_lm.hpp
/// What every decoder-only language model in loom shares, whatever its architecture (nn::GPT,
/// nn::Llama): the interface the programs, the trainer and the alignment code use, and the code
/// that does not depend on the architecture, written once here:
///
///   idx (B, T) ─ positions (plain, cached, packed or left-padded) ─ features() ─ logits() ─ loss
///
/// An architecture supplies features() (token ids and their positions -> the final hidden states)
/// and logits() (hidden states -> scores over the vocabulary); forward, decode, hidden and
/// token_losses are built from them.
///
/// Packed sequences (SFT packing, as TRL's `padding_free` / position-id packing): a row may hold
/// several examples one after another, named by a segments tensor (B, T) whose runs of equal ids
/// are the examples. Each example then sees only itself (block-diagonal causal attention through
/// kv_start) and its positions restart at 0, so its losses and gradients equal those of the
/// example run alone.

#include <algorithm>
#include <limits>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "loom/autograd/recompute.hpp"
#include "loom/nn/layers.hpp"
#include "loom/ops/loss.hpp"

namespace loom::nn {

/// Keys and values of the positions seen so far, for one layer (generation only).
struct KVCache {
  Tensor<float> k, v;  ///< (B, NKV, capacity, HS): one slot per key/value head
  int64_t len = 0;     ///< positions filled

  /// Appends the keys and values (B, NKV, T, HS) of T new positions; returns the keys and values
  /// of every position so far, (B, NKV, len, HS) views. Throws value_error when they do not fit.
  std::pair<Tensor<float>, Tensor<float>> append(const Tensor<float>& k_new, const Tensor<float>& v_new) {
    const int64_t T = k_new.size(2);
    LOOM_CHECK(len + T <= k.size(2), value_error, "the KV cache holds ", k.size(2), " positions; ", len + T,
               " needed");
    k.slice(2, len, len + T).copy_(k_new);
    v.slice(2, len, len + T).copy_(v_new);
    len += T;
    return {k.slice(2, 0, len), v.slice(2, 0, len)};
  }
};

/// Where each example of a packed row starts: for segments (B, T), pos (B, T) counts from 0 within
/// each run of equal ids, and kv_start (B, T) is the index of the run's first position.
struct SegmentLayout {
  Tensor<int64_t> pos;       ///< (B, T) position ids, restarting at each example
  Tensor<int32_t> kv_start;  ///< (B, T) first key each query may attend to
};

/// The positions and attention bounds of packed rows, computed on the host (segments come from
/// the batch builder on the CPU; a GPU tensor is copied back). A new example starts at t = 0 and
/// wherever the id changes: ids need not be sorted, nor distinct across rows.
inline SegmentLayout segment_layout(const Tensor<int64_t>& segments) {
  LOOM_CHECK(segments.defined() && segments.dim() == 2, shape_error, "segments must be (B, T), got ",
             segments.defined() ? segments.shape() : Shape{});
  const int64_t B = segments.size(0), T = segments.size(1);
  const Tensor<int64_t> seg = segments.to(Device::cpu()).contiguous();
  SegmentLayout out{Tensor<int64_t>::empty({B, T}), Tensor<int32_t>::empty({B, T})};
  const int64_t* s = seg.data();
  int64_t* pos = out.pos.data();
  int32_t* ks = out.kv_start.data();
  for (int64_t b = 0; b < B; ++b) {
    int64_t start = 0;
    for (int64_t t = 0; t < T; ++t) {
      const int64_t n = b * T + t;
      if (t > 0 && s[n] != s[n - 1]) start = t;  // a new example
      pos[n] = t - start;
      ks[n] = int32_t(start);
    }
  }
  return out;
}

/// Where the tokens of one forward pass sit: their position ids and the first key each query may
/// see. Built by CausalLM from the cache length, packed segments or left padding.
struct Positions {
  Tensor<int64_t> pos;       ///< (T) when every row counts alike, else (B, T); on the model's device
  Tensor<int32_t> kv_start;  ///< (B, T) for packed or left-padded rows, else undefined
};

namespace detail {
/// A parameter count computed in double (a malformed config's may not fit in int64), as int64:
/// INT64_MAX when it is larger.
inline int64_t count_or_max(double n) { return n >= 9.2e18 ? std::numeric_limits<int64_t>::max() : int64_t(n); }
}  // namespace detail

/// A decoder-only language model: token ids in, next-token logits out. The base of nn::GPT and
/// nn::Llama; programs hold models through it.
class CausalLM : public Module {
 public:
  /// Logits and (when targets are given) the mean cross-entropy loss.
  struct Output {
    Tensor<float> logits;  ///< (B, T, V)
    Tensor<float> loss;    ///< scalar, or undefined without targets
  };

  /// Initial weights and dropout masks (seeded: runs are reproducible); mutable, as the const
  /// forward draws its dropout masks from it.
  mutable Generator gen;

  /// When set, a forward that records the graph keeps only each block's input and runs the block
  /// again during backward (activation recomputation, autograd/recompute.hpp): the activations
  /// of one block at a time instead of all of them, for one more forward of the blocks per step
  /// (about 1.2x the step's time on the CPU). The same losses and gradients either way.
  bool recompute_blocks = false;

  /// A model whose weights and dropout masks come from `seed`.
  explicit CausalLM(uint64_t seed) : gen(seed) {}

  /// The architecture's name, as checkpoints and `--arch` spell it: "gpt2" or "llama".
  virtual std::string arch() const = 0;
  /// V, the number of token ids.
  virtual int64_t vocab_size() const = 0;
  /// The longest sequence the model takes.
  virtual int64_t block_size() const = 0;
  /// C, the width of the hidden states.
  virtual int64_t n_embd() const = 0;
  /// Empty KV caches (one per layer) for batch B and up to `capacity` positions: k and v
  /// (B, key/value heads, capacity, head size) each, on the model's device.
  std::vector<KVCache> make_kv_cache(int64_t B, int64_t capacity) const {
    const CacheShape s = cache_shape();
    const Device d = token_embedding().weight.device();
    std::vector<KVCache> caches(size_t(s.layers));
    for (auto& c : caches) {
      c.k = zeros<float>({B, s.kv_heads, capacity, s.head_size}, d);
      c.v = zeros<float>({B, s.kv_heads, capacity, s.head_size}, d);
    }
    return caches;
  }
  /// The token embedding table (V, C).
  virtual const Embedding& token_embedding() const = 0;
  /// The token embedding table (V, C), mutable (to train some of its rows).
  virtual Embedding& token_embedding() = 0;
  /// Names of the parameters with one row per token id (grown with the vocabulary).
  virtual std::vector<std::string> vocab_parameters() const = 0;
  /// A freshly initialised model of the same architecture and shape with `vocab_size` ids.
  virtual std::unique_ptr<CausalLM> with_vocab_size(int64_t vocab_size) const = 0;

  /// idx (B, T) token ids -> logits (B, T, V); with targets (B, T), also the mean cross-entropy
  /// (targets equal to -1 are ignored). With caches (one per layer, see make_kv_cache), idx holds
  /// only the new positions, which continue the cached ones. With segments (B, T) (packed rows,
  /// see segment_layout), each run of equal ids is one example: positions restart at 0 there and
  /// attention stays inside it; not allowed together with caches.
  Output forward(const Tensor<int64_t>& idx_in, const Tensor<int64_t>& targets_in = Tensor<int64_t>(),
                 std::vector<KVCache>* caches = nullptr, const Tensor<int64_t>& segments = Tensor<int64_t>()) const {
    const Tensor<int64_t> idx = on_model(idx_in);
    Output out;
    out.logits = logits_of(idx, caches, segments);                                 // (B, T, V)
    const Tensor<int64_t> targets = checked_targets(targets_in, idx);
    if (targets.defined()) {
      const int64_t B = idx.size(0), T = idx.size(1);
      out.loss = cross_entropy(out.logits.reshape({B * T, vocab_size()}), targets.reshape({B * T}), -1);
    }
    return out;
  }

  /// forward(idx, targets, nullptr, segments).loss without the logits as an output: where the
  /// logits are x @ W^T (output_weight), one op (linear_cross_entropy) makes them and the loss,
  /// so that on CUDA under AutocastGuard their gradient is written once, in bf16. The same value
  /// as forward's loss; what the trainer and evaluate() call.
  Tensor<float> loss(const Tensor<int64_t>& idx_in, const Tensor<int64_t>& targets_in,
                     const Tensor<int64_t>& segments = Tensor<int64_t>()) const {
    const Tensor<float> w = output_weight();
    if (!w.defined()) return forward(idx_in, targets_in, nullptr, segments).loss;
    const Tensor<int64_t> idx = on_model(idx_in);
    const Tensor<int64_t> targets = checked_targets(targets_in, idx);
    LOOM_CHECK(targets.defined(), value_error, arch(), ": loss() needs targets");
    Tensor<float> x = features(idx, positions(idx, nullptr, segments, nullptr), nullptr);  // (B, T, C)
    const int64_t BT = idx.numel();  // (positions() has checked that idx is (B, T))
    return linear_cross_entropy(x.reshape({BT, x.size(-1)}), w, targets.reshape({BT}), -1);
  }

  /// forward(idx, targets).
  Output operator()(const Tensor<int64_t>& idx, const Tensor<int64_t>& targets = Tensor<int64_t>()) const {
    return forward(idx, targets);
  }

  /// Batched decoding of left-padded rows: the logits (B, V) of the last position of idx (B, T),
  /// which continues the cached positions. Row b's tokens begin at cache position first[b] (the
  /// padding before it is never attended to, and its positions count from 0 there), so rows of
  /// different lengths decode together and each gets the logits it would get alone.
  Tensor<float> decode(const Tensor<int64_t>& idx_in, std::vector<KVCache>& caches,
                       const std::vector<int64_t>& first) const {
    const Tensor<int64_t> idx = on_model(idx_in);
    LOOM_CHECK(idx.defined() && idx.dim() == 2 && int64_t(first.size()) == idx.size(0), shape_error, arch(),
               "::decode: idx must be (B, T) with one start per row, got ", idx.defined() ? idx.shape() : Shape{},
               " and ", first.size(), " starts");
    return logits_of(idx, &caches, Tensor<int64_t>(), &first, true).select(1, 0);
  }

  /// The final hidden states (B, T, C) (after the last norm, before the output projection), for
  /// heads other than the language model's (a reward model's score). segments as in forward.
  Tensor<float> hidden(const Tensor<int64_t>& idx_in, const Tensor<int64_t>& segments = Tensor<int64_t>()) const {
    const Tensor<int64_t> idx = on_model(idx_in);
    return features(idx, positions(idx, nullptr, segments, nullptr), nullptr);
  }

  /// The cross-entropy of every position, (B, T), without reduction: 0 where the target is -1.
  /// segments as in forward (packed rows). Summing a packed example's losses gives the summed loss
  /// of that example run alone.
  Tensor<float> token_losses(const Tensor<int64_t>& idx_in, const Tensor<int64_t>& targets_in,
                             const Tensor<int64_t>& segments = Tensor<int64_t>()) const {
    const Tensor<int64_t> idx = on_model(idx_in);
    const Tensor<int64_t> targets = checked_targets(targets_in, idx);
    LOOM_CHECK(targets.defined(), value_error, arch(), "::token_losses: targets are required");
    const int64_t B = idx.size(0), T = idx.size(1);
    Tensor<float> logits = logits_of(idx, nullptr, segments);                      // (B, T, V)
    return cross_entropy(logits.reshape({B * T, vocab_size()}), targets.reshape({B * T}), -1, Reduction::none)
        .reshape({B, T});
  }

 protected:
  /// block(x, r), through recompute() when recompute_blocks is set, the graph is recorded and the
  /// block writes no KV cache (`cached` false). `block` is one block on the residual stream:
  /// (x, r) -> {h, m}, the block's input being x + r (x alone when r is undefined) and its output
  /// h + m. It may run again in backward, so it must hold its own copies of what it reads (no
  /// references to the caller's locals); it is wrapped in a std::function only then.
  template <class Block>
  std::pair<Tensor<float>, Tensor<float>> residual_step(const Block& block, const Tensor<float>& x,
                                                        const Tensor<float>& r, bool cached) const {
    if (!recompute_blocks || !GradMode::is_enabled() || cached) return block(x, r);
    RecomputeFn<float> f = [block](const std::vector<Tensor<float>>& in) {
      auto [h, m] = block(in[0], in.size() > 1 ? in[1] : Tensor<float>());
      return std::vector<Tensor<float>>{h, m};
    };
    // the dropout layers draw from gen through pointers taken at construction; recompute() sets
    // its state back for the second run
    std::vector<Tensor<float>> out =
        recompute(f, r.defined() ? std::vector<Tensor<float>>{x, r} : std::vector<Tensor<float>>{x}, &gen);
    return {out[0], out[1]};
  }

  /// What make_kv_cache allocates per layer: the number of layers, key/value heads, head size.
  struct CacheShape {
    int64_t layers, kv_heads, head_size;
  };
  /// The architecture's cache shape.
  virtual CacheShape cache_shape() const = 0;
  /// idx (B, T) on the model's device at `pos` -> the final hidden states (B, T, C); with caches,
  /// each layer appends its keys and values to its cache and attends over all of it.
  virtual Tensor<float> features(const Tensor<int64_t>& idx, const Positions& pos,
                                 std::vector<KVCache>* caches) const = 0;
  /// Hidden states (..., C) -> logits (..., V).
  virtual Tensor<float> logits(const Tensor<float>& x) const = 0;
  /// The (V, C) matrix W when logits(x) is exactly x @ W^T (for loss()), else an undefined tensor.
  virtual Tensor<float> output_weight() const { return Tensor<float>(); }

 private:
  // token ids from anywhere (the batch loader makes them on the CPU) go to the model's device
  Tensor<int64_t> on_model(const Tensor<int64_t>& t) const {
    return t.defined() ? t.to(token_embedding().weight.device()) : t;
  }

  // targets on the model's device, checked against idx (undefined stays undefined)
  Tensor<int64_t> checked_targets(const Tensor<int64_t>& targets_in, const Tensor<int64_t>& idx) const {
    const Tensor<int64_t> targets = on_model(targets_in);
    LOOM_CHECK(!targets.defined() || targets.shape() == idx.shape(), shape_error, arch(), ": targets ",
               targets.shape(), " must have the shape of idx ", idx.shape());
    return targets;
  }

  // idx (B, T) on the model's device -> logits (B, T, V), with caches or packed segments; only
  // the last position's (B, 1, V) when last_only. first: see decode().
  Tensor<float> logits_of(const Tensor<int64_t>& idx, std::vector<KVCache>* caches, const Tensor<int64_t>& segments,
                          const std::vector<int64_t>* first = nullptr, bool last_only = false) const {
    Tensor<float> x = features(idx, positions(idx, caches, segments, first), caches);  // (B, T, C)
    if (last_only) x = x.slice(1, x.size(1) - 1, x.size(1));                           // (B, 1, C)
    return logits(x);                                                                  // (B, T, V)
  }

  // The positions of idx (B, T): after the cached ones, restarting in each packed example, or
  // counted from each row's first token (left-padded decoding).
  Positions positions(const Tensor<int64_t>& idx, std::vector<KVCache>* caches, const Tensor<int64_t>& segments,
                      const std::vector<int64_t>* first) const {
    LOOM_CHECK(idx.defined() && idx.dim() == 2, shape_error, arch(), ": idx must be (B, T), got ",
               idx.defined() ? idx.shape() : Shape{});
    const int64_t B = idx.size(0), T = idx.size(1), start = caches ? (*caches)[0].len : 0;
    LOOM_CHECK(start + T <= block_size() || first, value_error, arch(), ": sequence of ", start + T,
               " positions is longer than block_size ", block_size());
    Positions out;
    if (first) {  // left-padded rows: row b's position p is p - first[b]; its queries skip the padding
      LOOM_CHECK(caches, value_error, arch(), ": row starts apply to decoding with KV caches");
      Tensor<int64_t> p = Tensor<int64_t>::empty({B, T});
      Tensor<int32_t> ks = Tensor<int32_t>::empty({B, T});
      for (int64_t b = 0; b < B; ++b) {
        const int64_t f = (*first)[size_t(b)];
        LOOM_CHECK(f >= 0, value_error, arch(), ": row ", b, " starts at ", f);
        for (int64_t t = 0; t < T; ++t) {
          const int64_t at = start + t;  // the cache position of this token
          p.data()[b * T + t] = std::max<int64_t>(at - f, 0);
          ks.data()[b * T + t] = int32_t(at >= f ? f : 0);  // padding queries see padding only (unused)
          LOOM_CHECK(at - f < block_size(), value_error, arch(), ": row ", b, " reaches position ", at - f,
                     ", beyond block_size ", block_size());
        }
      }
      out.pos = p.to(idx.device()), out.kv_start = ks.to(idx.device());
    } else if (segments.defined()) {
      LOOM_CHECK(!caches, value_error, arch(), ": segments (packed rows) cannot be used with KV caches");
      LOOM_CHECK(segments.shape() == idx.shape(), shape_error, arch(), ": segments ", segments.shape(),
                 " must have the shape of idx ", idx.shape());
      SegmentLayout lay = segment_layout(segments);
      out.pos = lay.pos.to(idx.device()), out.kv_start = lay.kv_start.to(idx.device());
    } else {
      out.pos = arange<int64_t>(double(start), double(start + T)).to(idx.device());
    }
    return out;
  }
};

}  // namespace loom::nn
