#pragma once
/// @file models.hpp
/// Models by name: the architectures the programs offer (`--arch gpt2|llama`), their configs as
/// the JSON that checkpoints carry, and a model built from such a config or checkpoint.
///
/// A checkpoint's "config" metadata names its architecture under "arch"; checkpoints written
/// before Llama existed have none and are GPT-2.
///
/// ModelSpec is what a program's flags fill: the shape both families share (layers, heads, width,
/// context) plus Llama's own choices. From one shape it builds either family at the same
/// parameter count: with n_kv_head = n_head / 2, Llama's attention has 3 C^2 weights instead of
/// 4 C^2, and a SwiGLU of width 3 C has 9 C^2 instead of the GELU MLP's 8 C^2, so each layer has
/// GPT-2's 12 C^2; the tied Llama lacks only GPT-2's position table (block_size x C).

#include <cmath>
#include <memory>
#include <string>

#include "loom/io/checkpoint.hpp"
#include "loom/io/json.hpp"
#include "loom/nn/gpt.hpp"
#include "loom/nn/llama.hpp"

namespace loom::train {

/// A GPTConfig as JSON (with "arch": "gpt2").
inline io::Json to_json(const nn::GPTConfig& c) {
  io::Json j = io::Json::object();
  j.set("arch", "gpt2");
  j.set("vocab_size", c.vocab_size), j.set("block_size", c.block_size), j.set("n_layer", c.n_layer);
  j.set("n_head", c.n_head), j.set("n_embd", c.n_embd), j.set("dropout", c.dropout), j.set("bias", c.bias);
  return j;
}
/// A GPTConfig from JSON written by to_json().
inline nn::GPTConfig gpt_config_from_json(const io::Json& j) {
  nn::GPTConfig c;
  c.vocab_size = j.at("vocab_size").as_int(), c.block_size = j.at("block_size").as_int();
  c.n_layer = j.at("n_layer").as_int(), c.n_head = j.at("n_head").as_int(), c.n_embd = j.at("n_embd").as_int();
  c.dropout = j.at("dropout").as_double(), c.bias = j.at("bias").as_bool();
  return c;
}

/// A LlamaConfig as JSON (with "arch": "llama").
inline io::Json to_json(const nn::LlamaConfig& c) {
  io::Json j = io::Json::object();
  j.set("arch", "llama");
  j.set("vocab_size", c.vocab_size), j.set("block_size", c.block_size), j.set("n_layer", c.n_layer);
  j.set("n_head", c.n_head), j.set("n_kv_head", c.n_kv_head), j.set("n_embd", c.n_embd);
  j.set("intermediate_size", c.intermediate_size), j.set("rope_theta", c.rope_theta), j.set("norm_eps", c.norm_eps);
  j.set("tie_embeddings", c.tie_embeddings), j.set("dropout", c.dropout);
  return j;
}
/// A LlamaConfig from JSON written by to_json().
inline nn::LlamaConfig llama_config_from_json(const io::Json& j) {
  nn::LlamaConfig c;
  c.vocab_size = j.at("vocab_size").as_int(), c.block_size = j.at("block_size").as_int();
  c.n_layer = j.at("n_layer").as_int(), c.n_head = j.at("n_head").as_int(), c.n_kv_head = j.at("n_kv_head").as_int();
  c.n_embd = j.at("n_embd").as_int(), c.intermediate_size = j.at("intermediate_size").as_int();
  c.rope_theta = j.at("rope_theta").as_double(), c.norm_eps = j.at("norm_eps").as_double();
  c.tie_embeddings = j.at("tie_embeddings").as_bool(), c.dropout = j.at("dropout").as_double();
  return c;
}

/// The architecture a config names: its "arch", or "gpt2" when it has none (older checkpoints).
inline std::string config_arch(const io::Json& j) {
  const std::string arch = j.contains("arch") ? j.at("arch").as_string() : "gpt2";
  LOOM_CHECK(arch == "gpt2" || arch == "llama", value_error, "model config: unknown arch '", arch,
             "' (known: gpt2, llama)");
  return arch;
}

/// The config of `model` as JSON, its "arch" included.
inline io::Json config_json(const nn::CausalLM& model) {
  if (auto* g = dynamic_cast<const nn::GPT*>(&model)) return to_json(g->config);
  if (auto* l = dynamic_cast<const nn::Llama*>(&model)) return to_json(l->config);
  throw value_error("config_json: a model of unknown architecture '" + model.arch() + "'");
}

/// `j` written out again through its architecture's config (defaults filled in, "arch" added):
/// two configs of the same model give the same text.
inline io::Json canonical_config(const io::Json& j) {
  return config_arch(j) == "llama" ? to_json(llama_config_from_json(j)) : to_json(gpt_config_from_json(j));
}

/// One line naming the model's architecture and shape, for reports: "gpt2: n_layer 4, n_head 4, ...".
inline std::string config_summary(const nn::CausalLM& model) {
  std::string out = model.arch() + ":";
  const io::Json j = config_json(model);
  for (const auto& [key, value] : j.as_object())
    if (key != "arch" && key != "dropout") out += (out.back() == ':' ? " " : ", ") + key + " " + value.dump();
  return out;
}

/// A freshly initialised model of the architecture and shape `j` describes.
inline std::unique_ptr<nn::CausalLM> model_from_config(const io::Json& j, uint64_t seed = 1337) {
  if (config_arch(j) == "llama") return std::make_unique<nn::Llama>(llama_config_from_json(j), seed);
  return std::make_unique<nn::GPT>(gpt_config_from_json(j), seed);
}

/// The number of parameters of the model `j` describes (nn::parameter_count of its config).
inline int64_t config_parameter_count(const io::Json& j) {
  return config_arch(j) == "llama" ? nn::parameter_count(llama_config_from_json(j))
                                   : nn::parameter_count(gpt_config_from_json(j));
}

/// The model a checkpoint holds: its "config" metadata and its "model.*" tensors. A config that
/// describes more parameters than those tensors hold is refused before the model is built: an
/// edited or damaged config would otherwise allocate without bound.
inline std::unique_ptr<nn::CausalLM> model_from_checkpoint(const io::Checkpoint& c) {
  const io::Json config = c.meta_json("config");
  nn::NamedTensors params;
  int64_t held = 0;
  for (const std::string& n : c.names("model.")) {
    params.emplace_back(n.substr(6), c.get<float>(n));
    held += params.back().second.numel();
  }
  const int64_t wanted = config_parameter_count(config);
  LOOM_CHECK(wanted <= held, io_error, c.source(), ": its config describes a model of ", wanted,
             " parameters, but its model.* tensors hold ", held, " values (the config does not match the tensors)");
  std::unique_ptr<nn::CausalLM> model = model_from_config(config);
  try {
    model->load_state_dict(params);
  } catch (const value_error& e) {
    throw io_error(c.source() + ": " + e.what());
  }
  return model;
}

/// What a program's flags say about the model: the architecture and the shape both families
/// share, and Llama's own choices (0 where the default derived from the shape applies).
struct ModelSpec {
  std::string arch = "gpt2";     ///< "gpt2" or "llama"
  nn::GPTConfig shape;           ///< V, block_size, L, NH, C, dropout (and GPT-2's bias)
  int64_t n_kv_head = 0;         ///< Llama: key/value heads (0: n_head / 2, or n_head when that is odd)
  int64_t intermediate_size = 0; ///< Llama: SwiGLU width (0: GPT-2's parameter count per layer)
  double rope_theta = 10000.0;   ///< Llama: RoPE base
  bool tie_embeddings = true;    ///< Llama: output head tied to the token embedding

  /// The Llama config of this spec, its defaults filled in (see the file comment).
  nn::LlamaConfig llama() const {
    nn::LlamaConfig c;
    c.vocab_size = shape.vocab_size, c.block_size = shape.block_size, c.n_layer = shape.n_layer;
    c.n_head = shape.n_head, c.n_embd = shape.n_embd, c.dropout = shape.dropout;
    c.n_kv_head = n_kv_head > 0 ? n_kv_head : (shape.n_head % 2 == 0 ? shape.n_head / 2 : shape.n_head);
    const int64_t C = shape.n_embd, HS = shape.n_head > 0 ? C / shape.n_head : 0;
    // 12 C^2 per layer as GPT-2: the attention's q, o (2 C^2) and k, v (2 C NKV HS), the rest to the MLP (3 C I)
    const double mlp = 12.0 * double(C) * double(C) - 2.0 * double(C) * double(C) - 2.0 * double(C * c.n_kv_head * HS);
    c.intermediate_size = intermediate_size > 0 ? intermediate_size : std::max<int64_t>(1, std::llround(mlp / (3.0 * C)));
    c.rope_theta = rope_theta, c.tie_embeddings = tie_embeddings;
    return c;
  }
  /// The config of this spec as checkpoints store it.
  io::Json config() const {
    LOOM_CHECK(arch == "gpt2" || arch == "llama", value_error, "--arch must be gpt2 or llama, got '", arch, "'");
    return arch == "llama" ? to_json(llama()) : to_json(shape);
  }
  /// A freshly initialised model of this spec.
  std::unique_ptr<nn::CausalLM> make(uint64_t seed) const { return model_from_config(config(), seed); }
};

}  // namespace loom::train
