#pragma once
/// @file hf_gpt2.hpp
/// Hugging Face GPT-2 checkpoints: load a `model.safetensors` of a GPT-2 model into nn::GPT,
/// and export nn::GPT in the same layout.
///
/// Hugging Face stores GPT-2's four projection matrices (attn.c_attn, attn.c_proj, mlp.c_fc,
/// mlp.c_proj) as Conv1D weights, (in, out); loom's Linear stores (out, in), so they are
/// transposed on the way in and out. Other differences handled here: the hub's GPT2Model files
/// name tensors without the "transformer." prefix; files may carry the causal-mask buffers
/// "attn.bias" / "attn.masked_bias" (not parameters: skipped); "lm_head.weight" is tied to
/// "wte.weight" (skipped on import, after checking it equals wte when present; not exported).
/// F16 and BF16 files are converted to float.

#include <string>

#include "loom/io/safetensors.hpp"
#include "loom/nn/gpt.hpp"
#include "loom/ops/reduce.hpp"

namespace loom::io {

namespace detail {
inline bool ends_with(const std::string& s, const char* suffix) {
  std::string t(suffix);
  return s.size() >= t.size() && s.compare(s.size() - t.size(), t.size(), t) == 0;
}
inline Tensor<float> as_float(const AnyTensor& t, const std::string& name, const std::string& file) {
  switch (t.dtype()) {
    case DType::float32: return t.get<float>(name);
    case DType::float16: return t.get<half>(name).to<float>();
    case DType::bfloat16: return t.get<bf16>(name).to<float>();
    case DType::float64: return t.get<double>(name).to<float>();
    default:
      throw io_error(loom::detail::concat(file, ": tensor '", name, "' has dtype ", dtype_name(t.dtype()),
                                          ", expected a floating type"));
  }
}
}  // namespace detail

/// The model's parameters named and laid out as Hugging Face's GPT2LMHeadModel stores them.
inline NamedTensors hf_gpt2_state(const nn::GPT& model) {
  NamedTensors out;
  for (auto& [name, p] : model.named_parameters()) {
    Tensor<float> t = p.detach();
    out.emplace_back(name, nn::GPT::hf_conv1d_weight(name) ? AnyTensor(t.t().contiguous()) : AnyTensor(t));
  }
  return out;
}

/// Writes `model` as a Hugging Face GPT-2 safetensors file (Conv1D layout, "transformer." names).
inline void save_hf_gpt2(const std::string& path, const nn::GPT& model) {
  save_safetensors(path, hf_gpt2_state(model), {{"format", "pt"}});
}

/// Loads a Hugging Face GPT-2 `model.safetensors` into `model`, whose config must match the
/// file's shapes. Throws io_error naming the file and the tensor on any mismatch or omission.
inline void load_hf_gpt2(const std::string& path, nn::GPT& model) {
  SafetensorsFile f = load_safetensors(path);
  nn::NamedTensors state;
  bool have_lm_head = false;
  for (const std::string& raw : f.names) {
    if (detail::ends_with(raw, ".attn.bias") || detail::ends_with(raw, ".attn.masked_bias")) continue;
    if (raw == "lm_head.weight") {
      have_lm_head = true;
      continue;
    }
    std::string name = raw.rfind("transformer.", 0) == 0 ? raw : "transformer." + raw;
    Tensor<float> t = detail::as_float(f.at(raw), raw, path);
    if (nn::GPT::hf_conv1d_weight(name)) {
      LOOM_CHECK(t.dim() == 2, io_error, path, ": tensor '", raw, "' should be a matrix, got shape ", t.shape());
      t = t.t().contiguous();
    }
    state.emplace_back(name, t);
  }
  try {
    model.load_state_dict(state);
  } catch (const value_error& e) {
    throw io_error(path + ": " + e.what());
  }
  if (have_lm_head) {  // a tied head must equal the token embedding
    Tensor<float> head = detail::as_float(f.at("lm_head.weight"), "lm_head.weight", path);
    LOOM_CHECK(head.shape() == model.wte.weight.shape() &&
                   max(abs(head - model.wte.weight.detach())).item() == 0.0f,
               io_error, path, ": lm_head.weight differs from wte.weight; loom's GPT ties them");
  }
}

}  // namespace loom::io
