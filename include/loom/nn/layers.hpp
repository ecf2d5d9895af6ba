#pragma once
/// @file layers.hpp
/// The basic layers: Linear, Embedding, LayerNorm, RMSNorm, SwiGLU, Dropout.
/// A Linear may carry an adapter whose output adds to its own (LoRA: align/lora.hpp).

#include <cmath>
#include <memory>
#include <string>
#include <utility>

#include "loom/nn/module.hpp"
#include "loom/ops/dropout.hpp"
#include "loom/ops/embedding.hpp"
#include "loom/ops/layer_norm.hpp"
#include "loom/ops/matmul.hpp"

namespace loom::nn {

/// Something that adds to a Linear's output: y = x W^T + b + adapter(x) (e.g. a LoRA update).
struct LinearAdapter : Module {
  /// x (..., in) -> (..., out), added to the Linear's output.
  virtual Tensor<float> operator()(const Tensor<float>& x) const = 0;
};

/// y = x @ weight^T + bias (+ adapter(x) when one is attached), with weight (out, in) as in
/// PyTorch's nn.Linear.
class Linear : public Module {
 public:
  Tensor<float> weight;  ///< (out_features, in_features)
  Tensor<float> bias;    ///< (out_features), or undefined without bias
  std::shared_ptr<LinearAdapter> adapter;  ///< null unless set_adapter attached one

  /// Weights uniform in +-1/sqrt(in) (PyTorch's default); GPT re-initialises its own.
  Linear(int64_t in_features, int64_t out_features, bool with_bias, Generator& gen) {
    double bound = 1.0 / std::sqrt(double(std::max<int64_t>(in_features, 1)));
    weight = rand<float>({out_features, in_features}, gen, -bound, bound);
    register_parameter("weight", weight);
    if (with_bias) {
      bias = rand<float>({out_features}, gen, -bound, bound);
      register_parameter("bias", bias);
    }
  }
  /// x (..., in) -> (..., out).
  Tensor<float> operator()(const Tensor<float>& x) const {
    Tensor<float> y = linear(x, weight, bias);  // the GEMM reads weight (out, in) in place, and adds the bias
    return adapter ? y + (*adapter)(x) : y;
  }
  /// Attaches `a` (replacing any adapter; null removes it), registered as a sub-module called
  /// `name`: its parameters appear as "<this>.<name>.<param>", or "<this>.<param>" when `name`
  /// is empty (LoRA's "lora_A.weight" beside "weight", as PEFT names them).
  void set_adapter(std::shared_ptr<LinearAdapter> a, const std::string& name = "") {
    if (adapter) unregister_module(*adapter);
    adapter = std::move(a);
    if (!adapter) return;
    register_module(name, *adapter);
    adapter->train(is_training());
  }
};

/// A lookup table: row i of weight is the vector of token (or position) i.
class Embedding : public Module {
 public:
  Tensor<float> weight;  ///< (num_embeddings, dim)

  /// Weights from N(0, 1) (PyTorch's default).
  Embedding(int64_t num_embeddings, int64_t dim, Generator& gen) {
    weight = randn<float>({num_embeddings, dim}, gen);
    register_parameter("weight", weight);
  }
  /// idx (...) -> (..., dim).
  Tensor<float> operator()(const Tensor<int64_t>& idx) const { return embedding(weight, idx); }
};

/// LayerNorm over the last dimension, with a learned scale and (optionally) shift.
class LayerNorm : public Module {
 public:
  Tensor<float> weight;  ///< (dim), initialised to 1
  Tensor<float> bias;    ///< (dim), initialised to 0; undefined without bias
  double eps;

  /// A LayerNorm of width `dim`.
  explicit LayerNorm(int64_t dim, bool with_bias = true, double eps_ = 1e-5) : eps(eps_) {
    weight = ones<float>({dim});
    register_parameter("weight", weight);
    if (with_bias) {
      bias = zeros<float>({dim});
      register_parameter("bias", bias);
    }
  }
  /// x (..., dim) -> (..., dim).
  Tensor<float> operator()(const Tensor<float>& x) const { return layer_norm(x, weight, bias, eps); }
};

/// RMSNorm over the last dimension with a learned scale (Llama's norm: no mean, no shift).
class RMSNorm : public Module {
 public:
  Tensor<float> weight;  ///< (dim), initialised to 1
  double eps;

  /// An RMSNorm of width `dim`.
  explicit RMSNorm(int64_t dim, double eps_ = 1e-6) : eps(eps_) {
    weight = ones<float>({dim});
    register_parameter("weight", weight);
  }
  /// x (..., dim) -> (..., dim).
  Tensor<float> operator()(const Tensor<float>& x) const { return rms_norm(x, weight, eps); }
};

/// Llama's MLP: down_proj(silu(gate_proj(x)) * up_proj(x)), three Linear layers without bias
/// (parameter names as Hugging Face's LlamaMLP).
class SwiGLU : public Module {
 public:
  Linear gate_proj, up_proj, down_proj;

  /// dim -> hidden (gate and up) -> dim.
  SwiGLU(int64_t dim, int64_t hidden, Generator& gen)
      : gate_proj(dim, hidden, false, gen), up_proj(dim, hidden, false, gen), down_proj(hidden, dim, false, gen) {
    register_module("gate_proj", gate_proj);
    register_module("up_proj", up_proj);
    register_module("down_proj", down_proj);
  }
  /// x (..., dim) -> (..., dim).
  Tensor<float> operator()(const Tensor<float>& x) const { return down_proj(swiglu(gate_proj(x), up_proj(x))); }
};

/// Dropout with probability p in training mode; the identity in eval mode.
class Dropout : public Module {
 public:
  double p;

  /// Draws its masks from `gen`, which must outlive the module.
  Dropout(double p_, Generator& gen) : p(p_), gen_(&gen) {
    LOOM_CHECK(p >= 0.0 && p < 1.0, value_error, "Dropout: p must lie in [0, 1), got ", p);
  }
  /// x with elements zeroed with probability p and the rest scaled by 1 / (1 - p).
  Tensor<float> operator()(const Tensor<float>& x) const { return dropout(x, p, *gen_, is_training()); }

 private:
  Generator* gen_;
};

}  // namespace loom::nn
