#pragma once
/// @file lora.hpp
/// LoRA, low-rank adaptation (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language
/// Models", arXiv:2106.09685): the pretrained weight W (out, in) stays frozen and each adapted
/// Linear learns a low-rank update instead,
///
///   y = x W^T + b + scale * (dropout(x) A^T) B^T,   A (r, in), B (out, r), scale = alpha / r
///
/// so that a fine-tune trains and stores r (in + out) numbers per Linear instead of in * out.
/// B starts at zero, so the adapted model starts as the base model exactly; A starts as PEFT's
/// `nn.init.kaiming_uniform_(lora_A, a=sqrt(5))`, i.e. uniform in +-1/sqrt(in) (PEFT's
/// LoraLayer.reset_lora_parameters with init_lora_weights=True).
///
/// Names and files follow Hugging Face PEFT (github.com/huggingface/peft, tuners/lora): the
/// Linear "transformer.h.0.attn.c_attn" gains "transformer.h.0.attn.c_attn.lora_A.weight" and
/// "...lora_B.weight"; target names match a module's last name components ("c_proj" matches
/// attn.c_proj and mlp.c_proj, as PEFT's target_modules); the adapter file holds only these
/// tensors, named "base_model.model.<module>.lora_A.weight" as in PEFT's adapter_model.safetensors.
/// PEFT keeps r / lora_alpha / target_modules in a separate adapter_config.json; loom puts them
/// (under the same keys) in the safetensors "__metadata__", so that one file is the whole adapter.
///
/// merge_lora folds each update into its weight, W += scale * B A, and removes the adapters:
/// inference then runs at the base model's speed.

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "loom/core/error.hpp"
#include "loom/core/random.hpp"
#include "loom/core/tensor.hpp"
#include "loom/io/safetensors.hpp"
#include "loom/nn/layers.hpp"
#include "loom/nn/module.hpp"
#include "loom/ops/dropout.hpp"
#include "loom/ops/matmul.hpp"

namespace loom::align {

/// Which Linears get an adapter, and its shape.
struct LoraConfig {
  int64_t rank = 8;    ///< r, the rank of the update B A (PEFT: r)
  double alpha = 16;   ///< the update is scaled by alpha / rank (PEFT: lora_alpha)
  std::vector<std::string> targets = {"c_attn", "c_proj", "c_fc"};  ///< module-name suffixes (PEFT: target_modules)
  double dropout = 0;  ///< dropout on the adapter's input in training mode (PEFT: lora_dropout)

  /// The Linear names a target may be, GPT-2's and Llama's: a last name component, or the last two.
  static const std::vector<std::string>& known_targets() {
    static const std::vector<std::string> known = {
        "c_attn",         "c_proj",         "c_fc",           "attn.c_attn",    "attn.c_proj",  "mlp.c_fc",
        "mlp.c_proj",     "q_proj",         "k_proj",         "v_proj",         "o_proj",       "gate_proj",
        "up_proj",        "down_proj",      "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
        "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj",   "mlp.down_proj"};
    return known;
  }
  /// Every Linear of the transformer layers of architecture `arch` ("gpt2" or "llama"): the default targets.
  static std::string all_linear(const std::string& arch) {
    return arch == "llama" ? "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj" : "c_attn,c_proj,c_fc";
  }
  /// Parses a comma-separated list such as "c_attn,c_proj,c_fc" (spaces around names ignored);
  /// throws value_error for an empty list, an empty name or a name not in known_targets().
  static std::vector<std::string> parse_targets(const std::string& list) {
    std::vector<std::string> out;
    std::string item;
    std::istringstream in(list);
    while (std::getline(in, item, ',')) {
      size_t b = item.find_first_not_of(" \t"), e = item.find_last_not_of(" \t");
      std::string name = b == std::string::npos ? std::string() : item.substr(b, e - b + 1);
      LOOM_CHECK(!name.empty(), value_error, "LoRA targets '", list, "': empty name in the list");
      bool known = false;
      for (const auto& k : known_targets()) known = known || k == name;
      LOOM_CHECK(known, value_error, "LoRA targets '", list, "': unknown target '", name,
                 "' (GPT-2: c_attn, c_proj, c_fc; Llama: q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj; "
                 "or with their parent's name, as attn.c_proj or mlp.down_proj)");
      bool repeated = false;
      for (const auto& o : out) repeated = repeated || o == name;
      if (!repeated) out.push_back(name);
    }
    LOOM_CHECK(!out.empty(), value_error, "LoRA targets: the list is empty");
    return out;
  }
  /// The targets joined by commas (the form parse_targets reads).
  std::string targets_string() const {
    std::string s;
    for (const auto& t : targets) s += (s.empty() ? "" : ",") + t;
    return s;
  }
  /// Throws value_error unless rank > 0, alpha > 0, 0 <= dropout < 1 and targets is non-empty.
  void validate() const {
    LOOM_CHECK(rank > 0, value_error, "LoraConfig: rank must be positive, got ", rank);
    LOOM_CHECK(alpha > 0, value_error, "LoraConfig: alpha must be positive, got ", alpha);
    LOOM_CHECK(dropout >= 0 && dropout < 1, value_error, "LoraConfig: dropout must lie in [0, 1), got ", dropout);
    LOOM_CHECK(!targets.empty(), value_error, "LoraConfig: no target modules");
  }
};

/// The low-rank update of one Linear: scale * (dropout(x) A^T) B^T, with parameters named
/// "lora_A.weight" (r, in) and "lora_B.weight" (out, r) as PEFT names them.
class LoraAdapter : public nn::LinearAdapter {
 public:
  Tensor<float> A;  ///< (r, in): projects down
  Tensor<float> B;  ///< (out, r): projects up; zero at initialisation
  double alpha;     ///< the scale's numerator
  double scale;     ///< alpha / r
  double dropout_p; ///< dropout on the input in training mode

  /// A fresh adapter for a Linear (in -> out): A Kaiming-uniform (bound 1/sqrt(in), PEFT's
  /// init), B zeros, on `device`; dropout masks come from a generator seeded from `gen`.
  LoraAdapter(int64_t in, int64_t out, int64_t rank, double alpha_, double dropout, Generator& gen,
              Device device = Device())
      : LoraAdapter(rand<float>({rank, in}, gen, -1.0 / std::sqrt(double(in)), 1.0 / std::sqrt(double(in))),
                    zeros<float>({out, rank}), alpha_, dropout, gen, device) {}
  /// An adapter from given A (r, in) and B (out, r) (copied to `device`).
  LoraAdapter(const Tensor<float>& A_, const Tensor<float>& B_, double alpha_, double dropout, Generator& gen,
              Device device = Device())
      : alpha(alpha_), dropout_p(dropout), gen_(draw_seed(gen)) {
    LOOM_CHECK(A_.dim() == 2 && B_.dim() == 2 && A_.size(0) == B_.size(1) && A_.size(0) > 0, shape_error,
               "LoraAdapter: A must be (r, in) and B (out, r), got A ", A_.shape(), " and B ", B_.shape());
    scale = alpha / double(A_.size(0));
    A = A_.detach().to(device).clone();  // its own storage: the caller's tensor stays untouched
    B = B_.detach().to(device).clone();
    register_parameter("lora_A.weight", A);
    register_parameter("lora_B.weight", B);
  }
  /// The rank r.
  int64_t rank() const { return A.size(0); }
  /// x (..., in) -> scale * (dropout(x) A^T) B^T (..., out).
  Tensor<float> operator()(const Tensor<float>& x) const override {
    Tensor<float> h = dropout_p > 0 ? loom::dropout(x, dropout_p, gen_, is_training()) : x;
    return matmul(matmul(h, A.t()), B.t()) * scale;  // (..., r) then (..., out)
  }
  /// scale * B A (out, in): the update merge_lora adds to the Linear's weight (no graph).
  Tensor<float> delta_weight() const {
    NoGradGuard no_grad;
    return matmul(B.detach(), A.detach()) * scale;
  }

 private:
  static uint64_t draw_seed(Generator& gen) {
    auto r = Generator::philox(gen.advance(1), gen.seed());
    return (uint64_t(r[0]) << 32) | r[1];
  }
  mutable Generator gen_;  // dropout masks (operator() is const, as every module's forward)
};

/// Every Linear in `model` that carries a LoraAdapter, with its dotted name, in module order.
inline std::vector<std::pair<std::string, nn::Linear*>> lora_modules(nn::Module& model) {
  std::vector<std::pair<std::string, nn::Linear*>> out;
  std::set<const nn::Module*> seen;
  for (auto& [name, m] : model.named_modules()) {
    auto* lin = dynamic_cast<nn::Linear*>(m);
    if (lin && lin->adapter && dynamic_cast<LoraAdapter*>(lin->adapter.get()) && seen.insert(lin).second)
      out.emplace_back(name, lin);
  }
  return out;
}

/// The LoraAdapter of `lin` (which lora_modules listed).
inline LoraAdapter& lora_of(nn::Linear& lin) { return static_cast<LoraAdapter&>(*lin.adapter); }

/// The adapter parameters (lora_A, lora_B of every adapted Linear, in module order): what the
/// optimizer trains after apply_lora.
inline std::vector<Tensor<float>> lora_parameters(nn::Module& model) {
  std::vector<Tensor<float>> out;
  for (auto& [name, lin] : lora_modules(model)) {
    out.push_back(lora_of(*lin).A);
    out.push_back(lora_of(*lin).B);
  }
  return out;
}

/// The adapter parameters with the model's names ("<module>.lora_A.weight", ...), detached.
inline nn::NamedTensors lora_state_dict(nn::Module& model) {
  nn::NamedTensors out;
  for (auto& [name, lin] : lora_modules(model)) {
    out.emplace_back(name + ".lora_A.weight", lora_of(*lin).A.detach());
    out.emplace_back(name + ".lora_B.weight", lora_of(*lin).B.detach());
  }
  return out;
}

namespace lora_detail {

// True when module `name` is matched by target `t`: equal, or ending in "." + t (PEFT's rule).
inline bool matches(const std::string& name, const std::string& t) {
  if (name == t) return true;
  return name.size() > t.size() && name.compare(name.size() - t.size(), t.size(), t) == 0 &&
         name[name.size() - t.size() - 1] == '.';
}

// Sets requires_grad on every parameter of `model`: true for adapter parameters, false otherwise.
inline void freeze_all_but_lora(nn::Module& model) {
  std::set<const void*> lora;
  for (auto& p : lora_parameters(model)) lora.insert(p.data());
  for (auto& [name, p] : model.named_parameters()) p.requires_grad_(lora.count(p.data()) != 0);
}

// The shortest decimal text that reads back as `v`.
inline std::string number_text(double v) {
  for (int prec = 6; prec <= 17; ++prec) {
    std::ostringstream s;
    s.precision(prec);
    s << v;
    if (std::strtod(s.str().c_str(), nullptr) == v) return s.str();
  }
  return std::to_string(v);
}

// Metadata value `key` of adapter file `path` as a number; throws io_error when absent or malformed.
inline double metadata_number(const io::SafetensorsFile& f, const std::string& key, bool integer) {
  auto it = f.metadata.find(key);
  LOOM_CHECK(it != f.metadata.end(), io_error, f.path, ": LoRA adapter metadata lacks '", key,
             "' (expected r, lora_alpha and target_modules in __metadata__)");
  const std::string& s = it->second;
  char* end = nullptr;
  errno = 0;
  double v = integer ? double(std::strtoll(s.c_str(), &end, 10)) : std::strtod(s.c_str(), &end);
  LOOM_CHECK(!s.empty() && errno == 0 && end == s.c_str() + s.size(), io_error, f.path, ": LoRA adapter metadata '",
             key, "' is '", s, "', not ", integer ? "an integer" : "a number");
  return v;
}

inline const std::string& peft_prefix() {
  static const std::string p = "base_model.model.";
  return p;
}

}  // namespace lora_detail

/// Attaches a fresh LoraAdapter (A Kaiming-uniform from `gen`, B zero, on the weight's device)
/// to every Linear whose dotted name equals or ends with ".<target>" for a target of `config`,
/// then freezes every other parameter (requires_grad false), so that only lora_A / lora_B train.
/// Returns the adapted modules' names in module order. Throws value_error for a bad config,
/// when no module matches (listing the model's Linears), or when a match already has an adapter.
inline std::vector<std::string> apply_lora(nn::Module& model, const LoraConfig& config, Generator& gen) {
  config.validate();
  std::vector<std::pair<std::string, nn::Linear*>> hits;
  std::string linears;
  std::set<const nn::Module*> seen;
  for (auto& [name, m] : model.named_modules()) {
    auto* lin = dynamic_cast<nn::Linear*>(m);
    if (!lin || !seen.insert(lin).second) continue;
    if (linears.size() < 200) linears += (linears.empty() ? "" : ", ") + name;
    bool hit = false;
    for (const auto& t : config.targets) hit = hit || lora_detail::matches(name, t);
    if (!hit) continue;
    LOOM_CHECK(!lin->adapter, value_error, "apply_lora: '", name,
               "' already has an adapter (merge_lora first, or load into a fresh model)");
    hits.emplace_back(name, lin);
  }
  LOOM_CHECK(!hits.empty(), value_error, "apply_lora: no Linear matches the targets '", config.targets_string(),
             "' (the model's Linears: ", linears.empty() ? "none" : linears, ")");
  std::vector<std::string> names;
  for (auto& [name, lin] : hits) {
    const int64_t out = lin->weight.size(0), in = lin->weight.size(1);
    lin->set_adapter(std::make_shared<LoraAdapter>(in, out, config.rank, config.alpha, config.dropout, gen,
                                                   lin->weight.device()));
    names.push_back(name);
  }
  lora_detail::freeze_all_but_lora(model);
  return names;
}

/// Folds every adapter into its Linear, W += scale * B A, and removes the adapters: the model's
/// outputs stay the same (up to rounding) and run at the base model's speed. The weights keep
/// the requires_grad they had (frozen after apply_lora). Returns the merged modules' names.
inline std::vector<std::string> merge_lora(nn::Module& model) {
  std::vector<std::string> names;
  NoGradGuard no_grad;
  for (auto& [name, lin] : lora_modules(model)) {
    Tensor<float> w = lin->weight.detach();
    w.copy_(w + lora_of(*lin).delta_weight());  // (out, in)
    lin->set_adapter(nullptr);
    names.push_back(name);
  }
  return names;
}

/// Writes the adapters of `model` to a safetensors file at `path` (atomically), named as PEFT's
/// adapter_model.safetensors ("base_model.model.<module>.lora_A.weight", F32), with `config` in
/// "__metadata__" under PEFT's keys: r, lora_alpha, lora_dropout, target_modules (comma-separated),
/// plus peft_type "LORA" and format "pt". Throws value_error when the model has no adapters or
/// an adapter's rank or alpha differs from `config`; io_error when the file cannot be written.
inline void save_lora_adapter(nn::Module& model, const std::string& path, const LoraConfig& config) {
  config.validate();
  auto mods = lora_modules(model);
  LOOM_CHECK(!mods.empty(), value_error, "save_lora_adapter: the model has no LoRA adapters (call apply_lora first)");
  io::NamedTensors tensors;
  for (auto& [name, lin] : mods) {
    const LoraAdapter& a = lora_of(*lin);
    LOOM_CHECK(a.rank() == config.rank && a.alpha == config.alpha, value_error, "save_lora_adapter: '", name,
               "' has rank ", a.rank(), " and alpha ", a.alpha, " but the config says rank ", config.rank,
               " and alpha ", config.alpha);
    tensors.emplace_back(lora_detail::peft_prefix() + name + ".lora_A.weight", AnyTensor(a.A.detach()));
    tensors.emplace_back(lora_detail::peft_prefix() + name + ".lora_B.weight", AnyTensor(a.B.detach()));
  }
  std::map<std::string, std::string> meta = {
      {"format", "pt"},
      {"peft_type", "LORA"},
      {"r", std::to_string(config.rank)},
      {"lora_alpha", lora_detail::number_text(config.alpha)},
      {"lora_dropout", lora_detail::number_text(config.dropout)},
      {"target_modules", config.targets_string()},
  };
  io::save_safetensors(path, tensors, meta);
}

/// Reads an adapter file written by save_lora_adapter and attaches its adapters to the Linears
/// of `model` it names, then freezes every other parameter (as apply_lora). Returns the config
/// from the file's metadata. Everything is checked before the model changes: throws io_error
/// for an unreadable file, missing or malformed metadata, a file without LoRA tensors, a module
/// with lora_A but no lora_B (or the reverse), or a non-F32 tensor; value_error naming the
/// tensor for a module the model lacks, a shape that does not fit the model's Linear, or a
/// Linear that already has an adapter.
inline LoraConfig load_lora_adapter(nn::Module& model, const std::string& path) {
  io::SafetensorsFile f = io::load_safetensors(path);
  LoraConfig config;
  config.rank = int64_t(lora_detail::metadata_number(f, "r", true));
  config.alpha = lora_detail::metadata_number(f, "lora_alpha", false);
  config.dropout = f.metadata.count("lora_dropout") ? lora_detail::metadata_number(f, "lora_dropout", false) : 0.0;
  auto tm = f.metadata.find("target_modules");
  LOOM_CHECK(tm != f.metadata.end(), io_error, path, ": LoRA adapter metadata lacks 'target_modules'");
  config.targets.clear();
  std::istringstream ts(tm->second);
  for (std::string t; std::getline(ts, t, ',');)
    if (!t.empty()) config.targets.push_back(t);
  try {
    config.validate();
  } catch (const value_error& e) {
    throw io_error(loom::detail::concat(path, ": bad LoRA metadata: ", e.what()));
  }

  // module name -> (A, B) from the file
  std::map<std::string, std::pair<const AnyTensor*, const AnyTensor*>> found;
  std::vector<std::string> order;
  const std::string& pre = lora_detail::peft_prefix();
  for (const auto& tname : f.names) {
    for (int which = 0; which < 2; ++which) {
      const std::string suffix = which == 0 ? ".lora_A.weight" : ".lora_B.weight";
      if (tname.size() <= pre.size() + suffix.size() || tname.compare(0, pre.size(), pre) != 0 ||
          tname.compare(tname.size() - suffix.size(), suffix.size(), suffix) != 0)
        continue;
      std::string mod = tname.substr(pre.size(), tname.size() - pre.size() - suffix.size());
      if (!found.count(mod)) order.push_back(mod);
      (which == 0 ? found[mod].first : found[mod].second) = &f.tensors.at(tname);
    }
  }
  LOOM_CHECK(!found.empty(), io_error, path, ": no LoRA tensors (expected names like '", pre,
             "transformer.h.0.attn.c_attn.lora_A.weight'; the file has ", f.names.size(), " tensors)");

  std::map<std::string, nn::Linear*> linears;
  for (auto& [name, m] : model.named_modules())
    if (auto* lin = dynamic_cast<nn::Linear*>(m)) linears.emplace(name, lin);

  struct Plan {
    nn::Linear* lin;
    Tensor<float> A, B;
  };
  std::vector<Plan> plan;
  for (const auto& mod : order) {
    auto [a, b] = found[mod];
    const std::string an = pre + mod + ".lora_A.weight", bn = pre + mod + ".lora_B.weight";
    LOOM_CHECK(a && b, io_error, path, ": '", a ? an : bn, "' has no partner '", a ? bn : an, "'");
    Tensor<float> A = f.get<float>(an), B = f.get<float>(bn);
    auto it = linears.find(mod);
    LOOM_CHECK(it != linears.end(), value_error, path, ": tensor '", an, "' adapts '", mod,
               "', which is not a Linear of the model");
    nn::Linear* lin = it->second;
    const int64_t out = lin->weight.size(0), in = lin->weight.size(1);
    const Shape a_shape({config.rank, in}), b_shape({out, config.rank});
    LOOM_CHECK(A.shape() == a_shape, value_error, path, ": tensor '", an, "' has shape ", A.shape(),
               " but the model's '", mod, "' (", in, " -> ", out, ") at rank ", config.rank, " needs ", a_shape);
    LOOM_CHECK(B.shape() == b_shape, value_error, path, ": tensor '", bn, "' has shape ", B.shape(),
               " but the model's '", mod, "' (", in, " -> ", out, ") at rank ", config.rank, " needs ", b_shape);
    LOOM_CHECK(!lin->adapter, value_error, path, ": the model's '", mod, "' already has an adapter");
    plan.push_back({lin, A, B});
  }
  Generator gen(0x10aaULL);  // dropout masks only; the weights come from the file
  for (auto& p : plan)
    p.lin->set_adapter(std::make_shared<LoraAdapter>(p.A, p.B, config.alpha, config.dropout, gen, p.lin->weight.device()));
  lora_detail::freeze_all_but_lora(model);
  return config;
}

}  // namespace loom::align
