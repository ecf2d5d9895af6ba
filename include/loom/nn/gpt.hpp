#pragma once
/// @file gpt.hpp
/// A GPT-2 style language model, top to bottom in one file: configuration, causal
/// self-attention (with a KV cache for generation), MLP, transformer block, and the model.
///
///   idx (B, T) ─ wte + wpe ─ dropout ─ [ x + attn(ln_1(x)); x + mlp(ln_2(x)) ] x n_layer ─ ln_f ─ @ wte^T ─ logits (B, T, V)
///
/// Parameter names follow Hugging Face's GPT-2 ("transformer.h.0.attn.c_attn.weight", ...);
/// loom stores Linear weights as (out, in) like PyTorch's nn.Linear, where Hugging Face's Conv1D
/// stores (in, out): io code transposes them on import and export (see hf_conv1d_weight()).
///
/// Packed sequences (SFT packing, as TRL's `padding_free` / position-id packing): a row may hold
/// several examples one after another, named by a segments tensor (B, T) whose runs of equal ids
/// are the examples. Each example then sees only itself (block-diagonal causal attention through
/// kv_start) and its positions restart at 0, so its losses and gradients equal those of the
/// example run alone.

#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "loom/nn/layers.hpp"
#include "loom/ops/attention.hpp"
#include "loom/ops/loss.hpp"

namespace loom::nn {

/// The shape of a GPT model.
struct GPTConfig {
  int64_t vocab_size = 50257;  ///< V
  int64_t block_size = 1024;   ///< the longest sequence (number of learned positions)
  int64_t n_layer = 12;        ///< L
  int64_t n_head = 12;         ///< NH
  int64_t n_embd = 768;        ///< C (HS = C / NH)
  double dropout = 0.0;        ///< on embeddings and residual branches, in training mode
  bool bias = true;            ///< biases in Linear and LayerNorm layers (GPT-2: true)
};

/// Keys and values of the positions seen so far, for one layer (generation only).
struct KVCache {
  Tensor<float> k, v;  ///< (B, NH, capacity, HS)
  int64_t len = 0;     ///< positions filled
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
  LOOM_CHECK(segments.defined() && segments.dim() == 2, shape_error, "GPT: segments must be (B, T), got ",
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

/// Multi-head causal self-attention: qkv = c_attn(x), fused attention per head, c_proj.
class CausalSelfAttention : public Module {
 public:
  Linear c_attn;  ///< C -> 3C: queries, keys and values of every head at once
  Linear c_proj;  ///< C -> C: mixes the heads' outputs
  Dropout resid_dropout;
  int64_t n_head, n_embd;

  /// Layers for `c`, drawing initial weights and dropout masks from `gen`.
  CausalSelfAttention(const GPTConfig& c, Generator& gen)
      : c_attn(c.n_embd, 3 * c.n_embd, c.bias, gen), c_proj(c.n_embd, c.n_embd, c.bias, gen),
        resid_dropout(c.dropout, gen), n_head(c.n_head), n_embd(c.n_embd) {
    LOOM_CHECK(c.n_head > 0 && c.n_embd % c.n_head == 0, value_error, "GPTConfig: n_embd (", c.n_embd,
               ") must be a multiple of n_head (", c.n_head, ")");
    register_module("c_attn", c_attn);
    register_module("c_proj", c_proj);
    register_module("resid_dropout", resid_dropout);
  }

  /// x (B, T, C) -> (B, T, C). With a cache, x holds the new positions only, and attention
  /// runs over every cached position plus these (inference: call under NoGradGuard). kv_start
  /// (B, T), optional, packs examples: query t sees keys kv_start[b, t] .. t only; with a cache it
  /// hides the left padding of batched decoding (keys before it are never seen).
  Tensor<float> operator()(const Tensor<float>& x, KVCache* cache = nullptr,
                           const Tensor<int32_t>& kv_start = Tensor<int32_t>()) const {
    const int64_t B = x.size(0), T = x.size(1), C = n_embd, NH = n_head, HS = C / NH;
    Tensor<float> qkv = c_attn(x);                                       // (B, T, 3C)
    if (!cache) return resid_dropout(c_proj(causal_attention_packed(qkv, NH, kv_start)));  // training: one fused op
    auto head_view = [&](int64_t i) {                                    // (B, NH, T, HS), no copy
      return qkv.slice(-1, i * C, (i + 1) * C).reshape({B, T, NH, HS}).transpose(1, 2);
    };
    Tensor<float> q = head_view(0), k = head_view(1), v = head_view(2);
    // Generation: append the new keys and values to the cache, then attend over all of it.
    LOOM_CHECK(cache->len + T <= cache->k.size(2), value_error, "CausalSelfAttention: the KV cache holds ",
               cache->k.size(2), " positions; ", cache->len + T, " needed");
    cache->k.slice(2, cache->len, cache->len + T).copy_(k);
    cache->v.slice(2, cache->len, cache->len + T).copy_(v);
    cache->len += T;
    k = cache->k.slice(2, 0, cache->len);
    v = cache->v.slice(2, 0, cache->len);
    Tensor<float> y = causal_attention(q, k, v, kv_start);               // (B, NH, T, HS), stored (B, T, NH, HS)
    y = y.transpose(1, 2).reshape({B, T, C});                            // heads side by side: a view
    return resid_dropout(c_proj(y));
  }
};

/// The feed-forward network: C -> 4C, GELU (tanh form, as GPT-2), 4C -> C.
class MLP : public Module {
 public:
  Linear c_fc, c_proj;
  Dropout dropout;

  /// Layers for `c`.
  MLP(const GPTConfig& c, Generator& gen)
      : c_fc(c.n_embd, 4 * c.n_embd, c.bias, gen), c_proj(4 * c.n_embd, c.n_embd, c.bias, gen), dropout(c.dropout, gen) {
    register_module("c_fc", c_fc);
    register_module("c_proj", c_proj);
    register_module("dropout", dropout);
  }
  /// x (B, T, C) -> (B, T, C).
  Tensor<float> operator()(const Tensor<float>& x) const {
    return dropout(c_proj(gelu(c_fc(x), GeluApprox::tanh)));
  }
};

/// One pre-norm transformer block: x + attn(ln_1(x)), then + mlp(ln_2(x)).
class Block : public Module {
 public:
  LayerNorm ln_1;
  CausalSelfAttention attn;
  LayerNorm ln_2;
  MLP mlp;

  /// Layers for `c`.
  Block(const GPTConfig& c, Generator& gen)
      : ln_1(c.n_embd, c.bias), attn(c, gen), ln_2(c.n_embd, c.bias), mlp(c, gen) {
    register_module("ln_1", ln_1);
    register_module("attn", attn);
    register_module("ln_2", ln_2);
    register_module("mlp", mlp);
  }
  /// x (B, T, C) -> (B, T, C); kv_start (B, T) optional, for packed rows (see CausalSelfAttention).
  Tensor<float> operator()(const Tensor<float>& x, KVCache* cache = nullptr,
                           const Tensor<int32_t>& kv_start = Tensor<int32_t>()) const {
    Tensor<float> h = x + attn(ln_1(x), cache, kv_start);
    return h + mlp(ln_2(h));
  }
};

/// The GPT-2 language model with tied input/output embeddings.
class GPT : public Module {
 public:
  GPTConfig config;
  Generator gen;  ///< initial weights and dropout masks (seeded: runs are reproducible)
  Embedding wte;  ///< token embeddings (V, C), also the output projection
  Embedding wpe;  ///< position embeddings (block_size, C)
  Dropout drop;
  std::vector<std::unique_ptr<Block>> h;
  LayerNorm ln_f;

  /// Logits and (when targets are given) the mean cross-entropy loss.
  struct Output {
    Tensor<float> logits;  ///< (B, T, V)
    Tensor<float> loss;    ///< scalar, or undefined without targets
  };

  /// A freshly initialised model: GPT-2's scheme, N(0, 0.02) weights, zero biases, and the
  /// residual projections (attn.c_proj, mlp.c_proj) scaled by 1 / sqrt(2 n_layer).
  explicit GPT(const GPTConfig& c, uint64_t seed = 1337)
      : config(c), gen(seed), wte(c.vocab_size, c.n_embd, gen), wpe(c.block_size, c.n_embd, gen),
        drop(c.dropout, gen), ln_f(c.n_embd, c.bias) {
    LOOM_CHECK(c.vocab_size > 0 && c.block_size > 0 && c.n_layer > 0 && c.n_embd > 0, value_error,
               "GPTConfig: sizes must be positive (vocab_size ", c.vocab_size, ", block_size ", c.block_size,
               ", n_layer ", c.n_layer, ", n_embd ", c.n_embd, ")");
    register_module("transformer.wte", wte);
    register_module("transformer.wpe", wpe);
    register_module("transformer.drop", drop);
    for (int64_t i = 0; i < c.n_layer; ++i) {
      h.push_back(std::make_unique<Block>(c, gen));
      register_module("transformer.h." + std::to_string(i), *h.back());
    }
    register_module("transformer.ln_f", ln_f);
    init_weights();
  }

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
      out.loss = cross_entropy(out.logits.reshape({B * T, config.vocab_size}), targets.reshape({B * T}), -1);
    }
    return out;
  }

  /// Batched decoding of left-padded rows: the logits (B, V) of the last position of idx (B, T),
  /// which continues the cached positions. Row b's tokens begin at cache position first[b] (the
  /// padding before it is never attended to, and its positions count from 0 there), so rows of
  /// different lengths decode together and each gets the logits it would get alone.
  Tensor<float> decode(const Tensor<int64_t>& idx_in, std::vector<KVCache>& caches,
                       const std::vector<int64_t>& first) const {
    const Tensor<int64_t> idx = on_model(idx_in);
    LOOM_CHECK(idx.defined() && idx.dim() == 2 && int64_t(first.size()) == idx.size(0), shape_error,
               "GPT::decode: idx must be (B, T) with one start per row, got ", idx.defined() ? idx.shape() : Shape{},
               " and ", first.size(), " starts");
    return logits_of(idx, &caches, Tensor<int64_t>(), &first, true).select(1, 0);
  }

  /// The final hidden states (B, T, C) (after ln_f, before the output projection), for heads other
  /// than the language model's (a reward model's score). segments as in forward.
  Tensor<float> hidden(const Tensor<int64_t>& idx_in, const Tensor<int64_t>& segments = Tensor<int64_t>()) const {
    return features(on_model(idx_in), nullptr, segments, nullptr);
  }

  /// The cross-entropy of every position, (B, T), without reduction: 0 where the target is -1.
  /// segments as in forward (packed rows). Summing a packed example's losses gives the summed loss
  /// of that example run alone.
  Tensor<float> token_losses(const Tensor<int64_t>& idx_in, const Tensor<int64_t>& targets_in,
                             const Tensor<int64_t>& segments = Tensor<int64_t>()) const {
    const Tensor<int64_t> idx = on_model(idx_in);
    const Tensor<int64_t> targets = checked_targets(targets_in, idx);
    LOOM_CHECK(targets.defined(), value_error, "GPT::token_losses: targets are required");
    const int64_t B = idx.size(0), T = idx.size(1);
    Tensor<float> logits = logits_of(idx, nullptr, segments);                      // (B, T, V)
    return cross_entropy(logits.reshape({B * T, config.vocab_size}), targets.reshape({B * T}), -1, Reduction::none)
        .reshape({B, T});
  }
  /// forward(idx, targets).
  Output operator()(const Tensor<int64_t>& idx, const Tensor<int64_t>& targets = Tensor<int64_t>()) const {
    return forward(idx, targets);
  }

  /// Empty KV caches (one per layer) for batch B and up to `capacity` positions.
  std::vector<KVCache> make_kv_cache(int64_t B, int64_t capacity) const {
    std::vector<KVCache> caches(h.size());
    int64_t NH = config.n_head, HS = config.n_embd / config.n_head;
    for (auto& c : caches) {
      c.k = zeros<float>({B, NH, capacity, HS}, wte.weight.device());
      c.v = zeros<float>({B, NH, capacity, HS}, wte.weight.device());
    }
    return caches;
  }

  /// True for parameters stored as Hugging Face Conv1D weights, (in, out) instead of (out, in).
  static bool hf_conv1d_weight(const std::string& name) {
    auto ends = [&](const char* s) {
      std::string t(s);
      return name.size() >= t.size() && name.compare(name.size() - t.size(), t.size(), t) == 0;
    };
    return ends("attn.c_attn.weight") || ends("attn.c_proj.weight") || ends("mlp.c_fc.weight") ||
           ends("mlp.c_proj.weight");
  }

 private:
  // token ids from anywhere (the batch loader makes them on the CPU) go to the model's device
  Tensor<int64_t> on_model(const Tensor<int64_t>& t) const { return t.defined() ? t.to(wte.weight.device()) : t; }

  // targets on the model's device, checked against idx (undefined stays undefined)
  Tensor<int64_t> checked_targets(const Tensor<int64_t>& targets_in, const Tensor<int64_t>& idx) const {
    const Tensor<int64_t> targets = on_model(targets_in);
    LOOM_CHECK(!targets.defined() || targets.shape() == idx.shape(), shape_error, "GPT: targets ", targets.shape(),
               " must have the shape of idx ", idx.shape());
    return targets;
  }

  // idx (B, T) on the model's device -> logits (B, T, V), with caches or packed segments; only
  // the last position's (B, 1, V) when last_only. first: see decode().
  Tensor<float> logits_of(const Tensor<int64_t>& idx, std::vector<KVCache>* caches, const Tensor<int64_t>& segments,
                          const std::vector<int64_t>* first = nullptr, bool last_only = false) const {
    Tensor<float> x = features(idx, caches, segments, first);                       // (B, T, C)
    if (last_only) x = x.slice(1, x.size(1) - 1, x.size(1));                        // (B, 1, C)
    return matmul(x, wte.weight.t());                                               // (B, T, V), tied weights
  }

  // idx (B, T) on the model's device -> the final hidden states (B, T, C)
  Tensor<float> features(const Tensor<int64_t>& idx, std::vector<KVCache>* caches, const Tensor<int64_t>& segments,
                         const std::vector<int64_t>* first) const {
    LOOM_CHECK(idx.defined() && idx.dim() == 2, shape_error, "GPT: idx must be (B, T), got ",
               idx.defined() ? idx.shape() : Shape{});
    const int64_t B = idx.size(0), T = idx.size(1), start = caches ? (*caches)[0].len : 0;
    LOOM_CHECK(start + T <= config.block_size || first, value_error, "GPT: sequence of ", start + T,
               " positions is longer than block_size ", config.block_size);
    Tensor<int64_t> pos;     // (T), or (B, T) for packed or left-padded rows
    Tensor<int32_t> kv_start;  // (B, T) for packed or left-padded rows, else undefined
    if (first) {  // left-padded rows: row b's position p is p - first[b]; its queries skip the padding
      LOOM_CHECK(caches, value_error, "GPT: row starts apply to decoding with KV caches");
      Tensor<int64_t> p = Tensor<int64_t>::empty({B, T});
      Tensor<int32_t> ks = Tensor<int32_t>::empty({B, T});
      for (int64_t b = 0; b < B; ++b) {
        const int64_t f = (*first)[size_t(b)];
        LOOM_CHECK(f >= 0, value_error, "GPT: row ", b, " starts at ", f);
        for (int64_t t = 0; t < T; ++t) {
          const int64_t at = start + t;  // the cache position of this token
          p.data()[b * T + t] = std::max<int64_t>(at - f, 0);
          ks.data()[b * T + t] = int32_t(at >= f ? f : 0);  // padding queries see padding only (unused)
          LOOM_CHECK(at - f < config.block_size, value_error, "GPT: row ", b, " reaches position ", at - f,
                     ", beyond block_size ", config.block_size);
        }
      }
      pos = p.to(idx.device()), kv_start = ks.to(idx.device());
    } else if (segments.defined()) {
      LOOM_CHECK(!caches, value_error, "GPT: segments (packed rows) cannot be used with KV caches");
      LOOM_CHECK(segments.shape() == idx.shape(), shape_error, "GPT: segments ", segments.shape(),
                 " must have the shape of idx ", idx.shape());
      SegmentLayout lay = segment_layout(segments);
      pos = lay.pos.to(idx.device()), kv_start = lay.kv_start.to(idx.device());
    } else {
      pos = arange<int64_t>(double(start), double(start + T)).to(idx.device());
    }
    Tensor<float> x = drop(wte(idx) + wpe(pos));                                    // (B, T, C)
    for (size_t l = 0; l < h.size(); ++l) x = (*h[l])(x, caches ? &(*caches)[l] : nullptr, kv_start);
    return ln_f(x);
  }

  void init_weights() {
    NoGradGuard no_grad;
    const double residual_std = 0.02 / std::sqrt(2.0 * double(config.n_layer));
    for (auto& [name, p] : named_parameters()) {
      bool is_bias = name.size() >= 5 && name.compare(name.size() - 5, 5, ".bias") == 0;
      bool is_ln = name.find(".ln_") != std::string::npos;
      if (is_ln) continue;                     // LayerNorm: weight 1, bias 0 already
      if (is_bias) {
        p.fill_(0.0f);
      } else {
        bool residual = name.find("c_proj.weight") != std::string::npos;
        p.copy_(randn<float>(p.shape(), gen, 0.0, residual ? residual_std : 0.02));
      }
    }
  }
};

}  // namespace loom::nn
