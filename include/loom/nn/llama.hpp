#pragma once
/// @file llama.hpp
/// A Llama-style language model, top to bottom in one file: configuration, grouped-query
/// attention with rotary positions (and a KV cache for generation), the SwiGLU MLP, the decoder
/// layer, and the model.
///
///   idx (B, T) ─ embed_tokens ─ [ x + attn(rms(x)); x + mlp(rms(x)) ] x n_layer ─ norm ─ lm_head ─ logits (B, T, V)
///
/// What differs from GPT-2 (nn/gpt.hpp), choice by choice (docs/23-architectures.md compares them):
/// - positions: no learned table; queries and keys are rotated by their position (RoPE, ops/rope.hpp),
///   so attention scores depend on the distance i - j only;
/// - norm: RMSNorm (no mean, no shift, no bias) instead of LayerNorm;
/// - MLP: SwiGLU, down(silu(gate(x)) * up(x)), instead of GELU between two Linears;
/// - no biases anywhere;
/// - grouped-query attention: n_kv_head key/value heads shared by n_head query heads (n_kv_head
///   divides n_head; 1 is multi-query attention), so the KV cache is n_head / n_kv_head times smaller;
/// - the output head may be untied from the token embedding (Llama 2/3 8B: untied; the small
///   Llama 3.2 and SmolLM models: tied).
///
/// Parameter names are Hugging Face's LlamaForCausalLM ("model.layers.0.self_attn.q_proj.weight",
/// ...), with weights (out, in) like nn.Linear, so a Hugging Face state dict loads as it is
/// (io/hf_llama.hpp). The rotary pairs follow Hugging Face's layout (RopeLayout::half).

#include <cmath>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "loom/nn/causal_lm.hpp"
#include "loom/nn/layers.hpp"
#include "loom/ops/attention.hpp"
#include "loom/ops/rope.hpp"

namespace loom::nn {

/// The shape of a Llama model (Hugging Face's LlamaConfig names in the comments; its defaults).
struct LlamaConfig {
  int64_t vocab_size = 32000;          ///< V (vocab_size)
  int64_t block_size = 2048;           ///< the longest sequence (max_position_embeddings)
  int64_t n_layer = 32;                ///< L (num_hidden_layers)
  int64_t n_head = 32;                 ///< NH, query heads (num_attention_heads)
  int64_t n_kv_head = 32;              ///< NKV, key/value heads, divides NH (num_key_value_heads)
  int64_t n_embd = 4096;               ///< C (hidden_size); HS = C / NH
  int64_t intermediate_size = 11008;   ///< the SwiGLU's hidden width (intermediate_size)
  double rope_theta = 10000.0;         ///< RoPE's base: pair p turns by theta^(-2p/HS) per position
  double norm_eps = 1e-6;              ///< RMSNorm's epsilon (rms_norm_eps)
  bool tie_embeddings = false;         ///< the output head reuses embed_tokens (tie_word_embeddings)
  double dropout = 0.0;                ///< on residual branches, in training mode (as GPTConfig's)
};

/// The number of parameters of Llama(c) (its num_parameters()), from the config alone: a config
/// read from a file can be checked against the file's tensors before anything is allocated.
inline int64_t parameter_count(const LlamaConfig& c) {
  const double C = double(c.n_embd), I = double(c.intermediate_size);
  const double kv = c.n_head > 0 ? double(c.n_kv_head) * double(c.n_embd / c.n_head) : C;  // k and v widths
  const double layer = 2 * C + 2 * C * C + 2 * C * kv + 3 * C * I;  // 2 norms; q, o; k, v; gate, up, down
  const double embeddings = double(c.vocab_size) * C * (c.tie_embeddings ? 1 : 2);
  return detail::count_or_max(embeddings + double(c.n_layer) * layer + C);
}

/// Grouped-query self-attention with rotary positions: q, k, v projections, RoPE on q and k,
/// fused causal attention (each group of NH / NKV query heads shares one key/value head), o_proj.
class LlamaAttention : public Module {
 public:
  Linear q_proj;  ///< C -> NH * HS
  Linear k_proj;  ///< C -> NKV * HS
  Linear v_proj;  ///< C -> NKV * HS
  Linear o_proj;  ///< NH * HS -> C
  Dropout resid_dropout;
  int64_t n_head, n_kv_head, head_size;
  double rope_theta;

  /// Layers for `c`, drawing initial weights and dropout masks from `gen`.
  LlamaAttention(const LlamaConfig& c, Generator& gen)
      : q_proj(c.n_embd, c.n_embd, false, gen), k_proj(c.n_embd, kv_width(c), false, gen),
        v_proj(c.n_embd, kv_width(c), false, gen), o_proj(c.n_embd, c.n_embd, false, gen),
        resid_dropout(c.dropout, gen), n_head(c.n_head), n_kv_head(c.n_kv_head), head_size(c.n_embd / c.n_head),
        rope_theta(c.rope_theta) {
    register_module("q_proj", q_proj);
    register_module("k_proj", k_proj);
    register_module("v_proj", v_proj);
    register_module("o_proj", o_proj);
    register_module("resid_dropout", resid_dropout);
  }

  /// x (B, T, C) at positions pos (B, T) -> (B, T, C). With a cache, x holds the new positions only
  /// and attention runs over every cached position plus these (inference: call under
  /// NoGradGuard). kv_start (B, T), optional: packed rows or left padding (see CausalLM).
  Tensor<float> operator()(const Tensor<float>& x, const Tensor<int64_t>& pos, KVCache* cache = nullptr,
                           const Tensor<int32_t>& kv_start = Tensor<int32_t>()) const {
    const int64_t B = x.size(0), T = x.size(1), C = x.size(2), HS = head_size;
    // rotate the queries and keys of each head by their position: (B, T, heads, HS), then heads first
    Tensor<float> q = rope(q_proj(x).reshape({B, T, n_head, HS}), pos, rope_theta).transpose(1, 2);     // (B, NH, T, HS)
    Tensor<float> k = rope(k_proj(x).reshape({B, T, n_kv_head, HS}), pos, rope_theta).transpose(1, 2);  // (B, NKV, T, HS)
    Tensor<float> v = v_proj(x).reshape({B, T, n_kv_head, HS}).transpose(1, 2);                         // (B, NKV, T, HS)
    if (cache) std::tie(k, v) = cache->append(k, v);  // generation: attend over every cached position too
    Tensor<float> y = causal_attention(q, k, v, kv_start);  // (B, NH, T, HS), stored (B, T, NH, HS)
    return resid_dropout(o_proj(y.transpose(1, 2).reshape({B, T, C})));
  }

 private:
  static int64_t kv_width(const LlamaConfig& c) {
    LOOM_CHECK(c.n_head > 0 && c.n_embd % c.n_head == 0, value_error, "LlamaConfig: n_embd (", c.n_embd,
               ") must be a multiple of n_head (", c.n_head, ")");
    LOOM_CHECK(c.n_kv_head > 0 && c.n_head % c.n_kv_head == 0, value_error, "LlamaConfig: n_kv_head (", c.n_kv_head,
               ") must divide n_head (", c.n_head, ")");
    LOOM_CHECK((c.n_embd / c.n_head) % 2 == 0, value_error, "LlamaConfig: the head size n_embd / n_head (",
               c.n_embd / c.n_head, ") must be even for RoPE");
    return c.n_kv_head * (c.n_embd / c.n_head);
  }
};

/// One pre-norm decoder layer: x + attn(input_layernorm(x)), then + mlp(post_attention_layernorm(x)).
class LlamaDecoderLayer : public Module {
 public:
  RMSNorm input_layernorm;
  LlamaAttention self_attn;
  RMSNorm post_attention_layernorm;
  SwiGLU mlp;
  Dropout mlp_dropout;

  /// Layers for `c`.
  LlamaDecoderLayer(const LlamaConfig& c, Generator& gen)
      : input_layernorm(c.n_embd, c.norm_eps), self_attn(c, gen), post_attention_layernorm(c.n_embd, c.norm_eps),
        mlp(c.n_embd, c.intermediate_size, gen), mlp_dropout(c.dropout, gen) {
    register_module("input_layernorm", input_layernorm);
    register_module("self_attn", self_attn);
    register_module("post_attention_layernorm", post_attention_layernorm);
    register_module("mlp", mlp);
    register_module("mlp_dropout", mlp_dropout);
  }
  /// x (B, T, C) at positions pos (B, T) -> (B, T, C); cache and kv_start as in LlamaAttention.
  Tensor<float> operator()(const Tensor<float>& x, const Tensor<int64_t>& pos, KVCache* cache = nullptr,
                           const Tensor<int32_t>& kv_start = Tensor<int32_t>()) const {
    auto [h, m] = residual_forward(x, Tensor<float>(), pos, cache, kv_start);
    return h + m;
  }
  /// The layer with its residual adds left to the norms that follow them: the input is x + r (x
  /// alone when r is undefined), each (B, T, C), and the output {h, m} stands for h + m, which
  /// the next layer's input_layernorm (or the model's norm) adds as it normalises (add_rms_norm).
  std::pair<Tensor<float>, Tensor<float>> residual_forward(const Tensor<float>& x, const Tensor<float>& r,
                                                           const Tensor<int64_t>& pos, KVCache* cache = nullptr,
                                                           const Tensor<int32_t>& kv_start = Tensor<int32_t>()) const {
    // s = x + r and input_layernorm(s) in one op; then h = s + self_attn(...) and post_attention_layernorm(h)
    auto [s, a] = r.defined() ? add_rms_norm(x, r, input_layernorm.weight, input_layernorm.eps)
                              : std::pair(x, input_layernorm(x));
    auto [h, b] = add_rms_norm(s, self_attn(a, pos, cache, kv_start), post_attention_layernorm.weight,
                               post_attention_layernorm.eps);
    return {h, mlp_dropout(mlp(b))};
  }
};

/// The Llama language model.
class Llama : public CausalLM {
 public:
  LlamaConfig config;
  Embedding embed_tokens;  ///< token embeddings (V, C)
  std::vector<std::unique_ptr<LlamaDecoderLayer>> layers;
  RMSNorm norm;
  std::unique_ptr<Linear> lm_head;  ///< C -> V; null when tied to embed_tokens

  /// A freshly initialised model, initialised as loom's GPT-2 (so that the two compare on
  /// architecture alone): N(0, 0.02) weights, RMSNorm scales 1, and the residual projections
  /// (o_proj, down_proj) scaled by 1 / sqrt(2 n_layer).
  explicit Llama(const LlamaConfig& c, uint64_t seed = 1337)
      : CausalLM(seed), config(c), embed_tokens(checked(c).vocab_size, c.n_embd, gen), norm(c.n_embd, c.norm_eps) {
    register_module("model.embed_tokens", embed_tokens);
    for (int64_t i = 0; i < c.n_layer; ++i) {
      layers.push_back(std::make_unique<LlamaDecoderLayer>(c, gen));
      register_module("model.layers." + std::to_string(i), *layers.back());
    }
    register_module("model.norm", norm);
    if (!c.tie_embeddings) {
      lm_head = std::make_unique<Linear>(c.n_embd, c.vocab_size, false, gen);
      register_module("lm_head", *lm_head);
    }
    init_weights();
  }

  std::string arch() const override { return "llama"; }
  int64_t vocab_size() const override { return config.vocab_size; }
  int64_t block_size() const override { return config.block_size; }
  int64_t n_embd() const override { return config.n_embd; }
  const Embedding& token_embedding() const override { return embed_tokens; }
  Embedding& token_embedding() override { return embed_tokens; }
  std::vector<std::string> vocab_parameters() const override {
    if (lm_head) return {"model.embed_tokens.weight", "lm_head.weight"};
    return {"model.embed_tokens.weight"};
  }
  std::unique_ptr<CausalLM> with_vocab_size(int64_t vocab_size) const override {
    LlamaConfig c = config;
    c.vocab_size = vocab_size;
    return std::make_unique<Llama>(c);
  }

 protected:
  // one cache per layer, n_kv_head heads (grouped-query attention) of n_embd / n_head
  CacheShape cache_shape() const override {
    return {int64_t(layers.size()), config.n_kv_head, config.n_embd / config.n_head};
  }
  // idx (B, T) -> the final hidden states (B, T, C): embeddings, the layers (RoPE at p.pos), norm
  Tensor<float> features(const Tensor<int64_t>& idx, const Positions& p, std::vector<KVCache>* caches) const override {
    const int64_t B = idx.size(0), T = idx.size(1);
    // every row at the same positions: one (T) row broadcast to (B, T)
    const Tensor<int64_t> pos = p.pos.dim() == 1 ? p.pos.reshape({1, T}).expand({B, T}) : p.pos;
    // the residual stream is x + r: each layer's last add is made by the norm after it
    Tensor<float> x = embed_tokens(idx), r;                                          // (B, T, C)
    for (size_t l = 0; l < layers.size(); ++l) {
      KVCache* cache = caches ? &(*caches)[l] : nullptr;
      auto layer =
          [d = layers[l].get(), cache, pos, kv_start = p.kv_start](const Tensor<float>& x, const Tensor<float>& r) {
        return d->residual_forward(x, r, pos, cache, kv_start);
      };
      std::tie(x, r) = residual_step(layer, x, r,
                                     cache != nullptr);  // recomputed in backward when recompute_blocks is set
    }
    return add_rms_norm(x, r, norm.weight, norm.eps).second;
  }
  // (..., C) -> (..., V): lm_head, or the tied token embedding
  Tensor<float> logits(const Tensor<float>& x) const override {
    return lm_head ? (*lm_head)(x) : matmul(x, embed_tokens.weight.t());
  }
  // lm_head's weight (or the tied embedding), unless an adapter or a bias changes the product
  Tensor<float> output_weight() const override {
    if (!lm_head) return embed_tokens.weight;
    return lm_head->adapter || lm_head->bias.defined() ? Tensor<float>() : lm_head->weight;
  }

 private:
  static const LlamaConfig& checked(const LlamaConfig& c) {
    LOOM_CHECK(c.vocab_size > 0 && c.block_size > 0 && c.n_layer > 0 && c.n_embd > 0 && c.intermediate_size > 0,
               value_error, "LlamaConfig: sizes must be positive (vocab_size ", c.vocab_size, ", block_size ",
               c.block_size, ", n_layer ", c.n_layer, ", n_embd ", c.n_embd, ", intermediate_size ",
               c.intermediate_size, ")");
    LOOM_CHECK(c.rope_theta > 0 && c.norm_eps >= 0, value_error, "LlamaConfig: rope_theta (", c.rope_theta,
               ") must be positive and norm_eps (", c.norm_eps, ") non-negative");
    return c;
  }

  void init_weights() {
    NoGradGuard no_grad;
    const double residual_std = 0.02 / std::sqrt(2.0 * double(config.n_layer));
    for (auto& [name, p] : named_parameters()) {
      if (name.find("layernorm") != std::string::npos || name == "model.norm.weight") continue;  // scales: 1
      const bool residual = name.find("o_proj.weight") != std::string::npos ||
                            name.find("down_proj.weight") != std::string::npos;
      p.copy_(randn<float>(p.shape(), gen, 0.0, residual ? residual_std : 0.02));
    }
  }
};

}  // namespace loom::nn
