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
/// forward, decode, token_losses and packed rows come from nn::CausalLM (causal_lm.hpp).

#include <cmath>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "loom/nn/causal_lm.hpp"
#include "loom/nn/layers.hpp"
#include "loom/ops/attention.hpp"

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

/// The number of parameters of GPT(c) (its num_parameters()), from the config alone: a config
/// read from a file can be checked against the file's tensors before anything is allocated.
inline int64_t parameter_count(const GPTConfig& c) {
  const double C = double(c.n_embd), b = c.bias ? 1.0 : 0.0, norm = C + b * C;
  const double layer = 2 * norm + (3 * C * C + b * 3 * C) + (C * C + b * C)  // ln_1, ln_2, c_attn, attn.c_proj
                       + (4 * C * C + b * 4 * C) + (4 * C * C + b * C);      // mlp.c_fc, mlp.c_proj
  return detail::count_or_max(double(c.vocab_size) * C + double(c.block_size) * C + double(c.n_layer) * layer + norm);
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
    std::tie(k, v) = cache->append(k, v);  // generation: attend over every cached position too
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
    auto [h, m] = residual_forward(x, Tensor<float>(), cache, kv_start);
    return h + m;
  }
  /// The block with its residual adds left to the norms that follow them: the input is x + r (x
  /// alone when r is undefined), each (B, T, C), and the output {h, m} stands for h + m, which
  /// the next block's ln_1 (or the model's ln_f) adds as it normalises, in one pass (add_layer_norm).
  std::pair<Tensor<float>, Tensor<float>> residual_forward(const Tensor<float>& x, const Tensor<float>& r,
                                                           KVCache* cache = nullptr,
                                                           const Tensor<int32_t>& kv_start = Tensor<int32_t>()) const {
    // s = x + r and ln_1(s) in one op; then h = s + attn(ln_1(s)) and ln_2(h) in one op
    auto [s, a] = r.defined() ? add_layer_norm(x, r, ln_1.weight, ln_1.bias, ln_1.eps) : std::pair(x, ln_1(x));
    auto [h, b] = add_layer_norm(s, attn(a, cache, kv_start), ln_2.weight, ln_2.bias, ln_2.eps);
    return {h, mlp(b)};
  }
};

/// The GPT-2 language model with tied input/output embeddings.
class GPT : public CausalLM {
 public:
  GPTConfig config;
  Embedding wte;  ///< token embeddings (V, C), also the output projection
  Embedding wpe;  ///< position embeddings (block_size, C)
  Dropout drop;
  std::vector<std::unique_ptr<Block>> h;
  LayerNorm ln_f;

  /// A freshly initialised model: GPT-2's scheme, N(0, 0.02) weights, zero biases, and the
  /// residual projections (attn.c_proj, mlp.c_proj) scaled by 1 / sqrt(2 n_layer).
  explicit GPT(const GPTConfig& c, uint64_t seed = 1337)
      : CausalLM(seed), config(c), wte(c.vocab_size, c.n_embd, gen), wpe(c.block_size, c.n_embd, gen),
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

  std::string arch() const override { return "gpt2"; }
  int64_t vocab_size() const override { return config.vocab_size; }
  int64_t block_size() const override { return config.block_size; }
  int64_t n_embd() const override { return config.n_embd; }
  const Embedding& token_embedding() const override { return wte; }
  Embedding& token_embedding() override { return wte; }
  std::vector<std::string> vocab_parameters() const override { return {"transformer.wte.weight"}; }
  std::unique_ptr<CausalLM> with_vocab_size(int64_t vocab_size) const override {
    GPTConfig c = config;
    c.vocab_size = vocab_size;
    return std::make_unique<GPT>(c);
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

 protected:
  // one cache per block, n_head heads of n_embd / n_head
  CacheShape cache_shape() const override {
    return {int64_t(h.size()), config.n_head, config.n_embd / config.n_head};
  }
  // idx (B, T) -> the final hidden states (B, T, C): token + position embeddings, the blocks, ln_f
  Tensor<float> features(const Tensor<int64_t>& idx, const Positions& p, std::vector<KVCache>* caches) const override {
    // the residual stream is x + r: each block's last add is made by the norm after it
    Tensor<float> x = drop(wte(idx) + wpe(p.pos)), r;                               // (B, T, C)
    for (size_t l = 0; l < h.size(); ++l) {
      KVCache* cache = caches ? &(*caches)[l] : nullptr;
      auto block = [b = h[l].get(), cache, kv_start = p.kv_start](const Tensor<float>& x, const Tensor<float>& r) {
        return b->residual_forward(x, r, cache, kv_start);
      };
      std::tie(x, r) = residual_step(block, x, r,
                                     cache != nullptr);  // recomputed in backward when recompute_blocks is set
    }
    return add_layer_norm(x, r, ln_f.weight, ln_f.bias, ln_f.eps).second;
  }
  // (..., C) -> (..., V) through the tied token embedding
  Tensor<float> logits(const Tensor<float>& x) const override { return matmul(x, wte.weight.t()); }
  Tensor<float> output_weight() const override { return wte.weight; }

 private:
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
