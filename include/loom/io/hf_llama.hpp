#pragma once
/// @file hf_llama.hpp
/// Hugging Face Llama-family models: a folder with `config.json` and `model.safetensors`
/// (and usually `tokenizer.json`, which tokenizer::load_spec("hf:DIR/tokenizer.json") reads),
/// loaded into nn::Llama and written back in the same layout.
///
/// nn::Llama's parameters already carry LlamaForCausalLM's names and nn.Linear's (out, in)
/// layout, so the tensors load as they are. What needs care:
/// - the rotary layout. Hugging Face's q_proj and k_proj rows are ordered for "rotate_half" (pair
///   p of a head is features p and p + HS/2), and loom's RoPE uses that layout. Meta's original
///   checkpoints pair features 2p and 2p + 1 instead; Hugging Face's conversion script permutes
///   the rows of each head (meta_to_hf_rotary below does the same). Loading Meta-ordered weights
///   as if they were Hugging Face's gives a model that runs and talks nonsense, which is why a
///   test checks the permutation against the interleaved rotation;
/// - tied heads: a file of a model with tie_word_embeddings has no lm_head.weight (when one is
///   present it must equal embed_tokens); an untied model's file must have one;
/// - what loom's Llama does not implement is refused with a message naming the setting
///   (rope_scaling, attention or MLP biases, an activation other than SiLU, a head_dim other
///   than hidden_size / num_attention_heads);
/// - F16 and BF16 tensors are converted to float; old files' rotary_emb.inv_freq buffers are skipped.

#include <memory>
#include <string>

#include "loom/io/file.hpp"
#include "loom/io/hf_gpt2.hpp"
#include "loom/io/json.hpp"
#include "loom/io/safetensors.hpp"
#include "loom/nn/llama.hpp"

namespace loom::io {

/// The config.json Hugging Face's LlamaForCausalLM reads for a model of config `c`.
inline Json hf_llama_config(const nn::LlamaConfig& c) {
  Json j = Json::object();
  Json archs = Json::array();
  archs.push_back("LlamaForCausalLM");
  j.set("architectures", archs);
  j.set("model_type", "llama");
  j.set("vocab_size", c.vocab_size), j.set("max_position_embeddings", c.block_size);
  j.set("num_hidden_layers", c.n_layer), j.set("num_attention_heads", c.n_head);
  j.set("num_key_value_heads", c.n_kv_head), j.set("hidden_size", c.n_embd);
  j.set("head_dim", c.n_embd / c.n_head), j.set("intermediate_size", c.intermediate_size);
  j.set("rope_theta", c.rope_theta), j.set("rms_norm_eps", c.norm_eps);
  j.set("tie_word_embeddings", c.tie_embeddings), j.set("hidden_act", "silu");
  j.set("attention_bias", false), j.set("mlp_bias", false), j.set("rope_scaling", Json());
  j.set("torch_dtype", "float32");
  return j;
}

/// The LlamaConfig of a Hugging Face config.json (`file` names it in errors). Missing optional
/// keys take Hugging Face's defaults; settings loom's Llama lacks throw io_error.
inline nn::LlamaConfig llama_config_from_hf(const Json& j, const std::string& file) {
  auto need = [&](const char* key) -> const Json& {
    LOOM_CHECK(j.contains(key), io_error, file, ": no \"", key, "\" (is this a Llama config.json?)");
    return j.at(key);
  };
  if (j.contains("model_type")) {
    const std::string type = j.at("model_type").as_string();
    LOOM_CHECK(type == "llama" || type == "mistral" || type == "qwen2" || type == "smollm", io_error, file,
               ": model_type '", type, "' is not a Llama-family model");
  }
  nn::LlamaConfig c;
  c.vocab_size = need("vocab_size").as_int(), c.n_embd = need("hidden_size").as_int();
  c.n_layer = need("num_hidden_layers").as_int(), c.n_head = need("num_attention_heads").as_int();
  c.intermediate_size = need("intermediate_size").as_int();
  c.n_kv_head = j.contains("num_key_value_heads") && !j.at("num_key_value_heads").is_null()
                    ? j.at("num_key_value_heads").as_int() : c.n_head;
  c.block_size = j.contains("max_position_embeddings") ? j.at("max_position_embeddings").as_int() : 2048;
  c.rope_theta = j.contains("rope_theta") ? j.at("rope_theta").as_double() : 10000.0;
  c.norm_eps = j.contains("rms_norm_eps") ? j.at("rms_norm_eps").as_double() : 1e-6;
  c.tie_embeddings = j.contains("tie_word_embeddings") && j.at("tie_word_embeddings").as_bool();
  const bool scaled = j.contains("rope_scaling") && !j.at("rope_scaling").is_null();
  LOOM_CHECK(!scaled, io_error, file, ": rope_scaling ", j.at("rope_scaling").dump(),
             " is not supported (loom's RoPE has no frequency scaling)");
  for (const char* key : {"attention_bias", "mlp_bias"})
    LOOM_CHECK(!j.contains(key) || !j.at(key).as_bool(), io_error, file, ": ", key,
               " is true, but loom's Llama has no biases");
  LOOM_CHECK(!j.contains("hidden_act") || j.at("hidden_act").as_string() == "silu", io_error, file, ": hidden_act '",
             j.at("hidden_act").as_string(), "' is not supported (loom's SwiGLU uses silu)");
  LOOM_CHECK(c.n_head > 0 && c.n_embd % c.n_head == 0, io_error, file, ": hidden_size ", c.n_embd,
             " is not a multiple of num_attention_heads ", c.n_head);
  LOOM_CHECK(!j.contains("head_dim") || j.at("head_dim").is_null() || j.at("head_dim").as_int() == c.n_embd / c.n_head,
             io_error, file, ": head_dim ", j.at("head_dim").dump(), " differs from hidden_size / num_attention_heads = ",
             c.n_embd / c.n_head, " (not supported)");
  return c;
}

/// The rows of a q_proj or k_proj weight (heads * HS, C) reordered from Meta's interleaved rotary
/// pairs (2p, 2p + 1) to Hugging Face's halves (p, p + HS/2), head by head: the permutation of
/// Hugging Face's convert_llama_weights_to_hf.py.
inline Tensor<float> meta_to_hf_rotary(const Tensor<float>& w, int64_t heads) {
  LOOM_CHECK(w.dim() == 2 && heads > 0 && w.size(0) % heads == 0 && (w.size(0) / heads) % 2 == 0, shape_error,
             "meta_to_hf_rotary: weight ", w.shape(), " does not split into ", heads, " heads of even size");
  const int64_t HS = w.size(0) / heads, C = w.size(1);
  // (heads, HS/2, 2, C) -> (heads, 2, HS/2, C): row 2p + i of a head becomes row i * HS/2 + p
  return w.reshape({heads, HS / 2, 2, C}).transpose(1, 2).contiguous().reshape({heads * HS, C});
}

/// Loads the tensors of a Llama `model.safetensors`, read as `f`, into `model`, whose config must
/// match the file's shapes. Throws io_error naming the file and the tensor on any mismatch or omission.
inline void load_hf_llama_weights(const SafetensorsFile& f, nn::Llama& model) {
  const std::string& path = f.path;
  nn::NamedTensors state;
  bool have_lm_head = false;
  for (const std::string& name : f.names) {
    if (detail::ends_with(name, ".rotary_emb.inv_freq")) continue;  // a buffer of older files, recomputed here
    if (name == "lm_head.weight") have_lm_head = true;
    if (name == "lm_head.weight" && model.config.tie_embeddings) continue;  // checked below
    state.emplace_back(name, detail::as_float(f.at(name), name, path));
  }
  LOOM_CHECK(have_lm_head || model.config.tie_embeddings, io_error, path,
             ": no lm_head.weight, and the config does not tie the embeddings (tie_word_embeddings: false)");
  try {
    model.load_state_dict(state);
  } catch (const value_error& e) {
    throw io_error(path + ": " + e.what());
  }
  if (have_lm_head && model.config.tie_embeddings) {  // a tied head must equal the token embedding
    Tensor<float> head = detail::as_float(f.at("lm_head.weight"), "lm_head.weight", path);
    const Tensor<float> wte = model.embed_tokens.weight.detach().to(Device::cpu());
    LOOM_CHECK(head.shape() == wte.shape() && max(abs(head - wte)).item() == 0.0f, io_error, path,
               ": lm_head.weight differs from model.embed_tokens.weight, but the config ties them");
  }
}

/// Loads a Llama `model.safetensors` into `model`, whose config must match the file's shapes.
/// Throws io_error naming the file and the tensor on any mismatch or omission.
inline void load_hf_llama_weights(const std::string& path, nn::Llama& model) {
  load_hf_llama_weights(load_safetensors(path), model);
}

/// A Llama from a Hugging Face model folder: `dir`/config.json and `dir`/model.safetensors. The
/// weights are read first: a config that describes more parameters than they hold is refused
/// before the model is built.
inline std::unique_ptr<nn::Llama> load_hf_llama(const std::string& dir) {
  const std::string config_path = dir + "/config.json";
  const Json j = parse_json(read_file(config_path), {}, config_path);
  LOOM_CHECK(j.is_object(), io_error, config_path, ": expected a JSON object, got ", j.type_phrase());
  const nn::LlamaConfig config = llama_config_from_hf(j, config_path);
  const SafetensorsFile f = load_safetensors(dir + "/model.safetensors");
  const int64_t wanted = nn::parameter_count(config);
  int64_t held = 0;
  for (const auto& [name, t] : f.tensors) held += t.numel();
  LOOM_CHECK(wanted <= held, io_error, config_path, ": describes a model of ", wanted, " parameters, but ", f.path,
             " holds ", held, " values");
  auto model = std::make_unique<nn::Llama>(config);
  load_hf_llama_weights(f, *model);
  return model;
}

/// Writes `model` as a Hugging Face model folder: `dir`/config.json and `dir`/model.safetensors
/// (float32; no lm_head.weight when tied, as transformers saves it). Creates `dir`.
inline void save_hf_llama(const std::string& dir, const nn::Llama& model) {
  make_directories(dir);
  NamedTensors state;
  for (auto& [name, p] : model.named_parameters()) state.emplace_back(name, AnyTensor(p.detach().to(Device::cpu())));
  save_safetensors(dir + "/model.safetensors", state, {{"format", "pt"}});
  write_file_atomic(dir + "/config.json", hf_llama_config(model.config).dump(2) + "\n");
}

}  // namespace loom::io
