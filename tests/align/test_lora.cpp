// LoRA (align/lora.hpp): the adapter against a hand computation, the exact no-op at init,
// freezing and training only the adapters, merging, the PEFT-named adapter file (round trip,
// metadata, errors) and its size against the full model.
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <set>
#include <string>
#include <vector>

#include <loom/align/lora.hpp>
#include <loom/io/safetensors.hpp>
#include <loom/loom.hpp>
#include <loom/nn/gpt.hpp>

#include "catch.hpp"
#include "temp_dir.hpp"

using namespace loom;
using namespace loom::align;
namespace fs = std::filesystem;

namespace {

using loom_test::TempDir;

nn::GPTConfig tiny_config(int64_t n_embd = 32) {
  nn::GPTConfig c;
  c.vocab_size = 50, c.block_size = 16, c.n_layer = 2, c.n_head = 2, c.n_embd = n_embd;
  return c;
}

// A fixed batch (B 4, T 16) of token ids and next-token targets.
std::pair<Tensor<int64_t>, Tensor<int64_t>> fixed_batch() {
  Generator g(7);
  Tensor<int64_t> seq = randint<int64_t>({4, 17}, 0, 50, g);
  return {seq.slice(1, 0, 16).contiguous(), seq.slice(1, 1, 17).contiguous()};
}

std::vector<float> logits_of(const nn::GPT& m, const Tensor<int64_t>& idx) {
  NoGradGuard no_grad;
  return m(idx).logits.to_vector();
}

// max |a - b| / max |b|, in double.
double rel_diff(const std::vector<float>& a, const std::vector<float>& b) {
  REQUIRE(a.size() == b.size());
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num = std::max(num, std::abs(double(a[i]) - double(b[i])));
    den = std::max(den, std::abs(double(b[i])));
  }
  return num / den;
}

// Gives every adapter's B random nonzero values (as if trained), without recording a graph.
void randomise_b(nn::GPT& m, uint64_t seed) {
  Generator g(seed);
  NoGradGuard no_grad;
  for (auto& [name, lin] : lora_modules(m)) {
    Tensor<float> B = lora_of(*lin).B;
    B.copy_(randn<float>(B.shape(), g, 0.0, 0.1));
  }
}

const std::vector<std::string> adapted_tiny = {
    "transformer.h.0.attn.c_attn", "transformer.h.0.attn.c_proj", "transformer.h.0.mlp.c_fc",
    "transformer.h.0.mlp.c_proj",  "transformer.h.1.attn.c_attn", "transformer.h.1.attn.c_proj",
    "transformer.h.1.mlp.c_fc",    "transformer.h.1.mlp.c_proj"};

}  // namespace

TEST_CASE("LoRA adapter output matches a hand computation") {
  const int64_t in = 6, out = 5, r = 3;
  Generator g(1);
  Tensor<float> A = randn<float>({r, in}, g), B = randn<float>({out, r}, g), x = randn<float>({2, 4, in}, g);
  LoraAdapter ad(A, B, /*alpha=*/6.0, /*dropout=*/0.0, g);
  CHECK(ad.scale == 2.0);
  CHECK(ad.rank() == r);
  std::vector<float> y = ad(x).to_vector(), av = A.to_vector(), bv = B.to_vector(), xv = x.to_vector();
  REQUIRE(y.size() == size_t(2 * 4 * out));
  // y[n, o] = scale * sum_k B[o, k] * sum_i A[k, i] x[n, i], in double; float32 tolerance 1e-5 relative
  std::vector<float> want(y.size());
  for (int64_t n = 0; n < 8; ++n)
    for (int64_t o = 0; o < out; ++o) {
      double s = 0;
      for (int64_t k = 0; k < r; ++k) {
        double h = 0;
        for (int64_t i = 0; i < in; ++i) h += double(av[size_t(k * in + i)]) * double(xv[size_t(n * in + i)]);
        s += double(bv[size_t(o * r + k)]) * h;
      }
      want[size_t(n * out + o)] = float(2.0 * s);
    }
  CHECK(rel_diff(y, want) < 1e-5);

  // In a Linear: y = x W^T + b + adapter(x), and parameters named as PEFT names them.
  nn::Linear lin(in, out, true, g);
  std::vector<float> base = lin(x).to_vector();
  auto adapter = std::make_shared<LoraAdapter>(A, B, 6.0, 0.0, g);
  lin.set_adapter(adapter);
  std::vector<std::string> names;
  for (auto& [n, p] : lin.named_parameters()) names.push_back(n);
  CHECK(names == std::vector<std::string>{"weight", "bias", "lora_A.weight", "lora_B.weight"});
  std::vector<float> with = lin(x).to_vector();
  for (size_t i = 0; i < with.size(); ++i) want[i] = base[i] + y[i];
  CHECK(rel_diff(with, want) < 1e-6);
  // Detached again: the plain Linear, bit for bit.
  lin.set_adapter(nullptr);
  CHECK(lin.named_parameters().size() == 2);
  CHECK(lin(x).to_vector() == base);

  // A fresh adapter: A uniform in +-1/sqrt(in) (PEFT's kaiming_uniform_(a=sqrt(5))), B zero.
  LoraAdapter fresh(64, 10, 8, 16.0, 0.0, g);
  CHECK(fresh.A.shape() == Shape{8, 64});
  CHECK(fresh.B.shape() == Shape{10, 8});
  CHECK(fresh.scale == 2.0);
  double amax = 0;
  for (float v : fresh.A.to_vector()) amax = std::max(amax, double(std::abs(v)));
  CHECK(amax <= 1.0 / 8.0);
  CHECK(amax > 0.1);  // 512 draws reach close to the bound
  for (float v : fresh.B.to_vector()) CHECK(v == 0.0f);
}

TEST_CASE("LoRA dropout acts in training mode only") {
  Generator g(3);
  Tensor<float> A = randn<float>({2, 8}, g), B = randn<float>({3, 2}, g), x = randn<float>({4, 8}, g);
  LoraAdapter plain(A, B, 2.0, 0.0, g), dropped(A, B, 2.0, 0.5, g);
  dropped.eval();
  CHECK(dropped(x).to_vector() == plain(x).to_vector());
  dropped.train();
  CHECK(dropped(x).to_vector() != plain(x).to_vector());
}

TEST_CASE("LoraConfig parses target lists") {
  CHECK(LoraConfig::parse_targets("c_attn,c_proj,c_fc") == std::vector<std::string>{"c_attn", "c_proj", "c_fc"});
  CHECK(LoraConfig::parse_targets(" c_attn , mlp.c_proj,c_attn") == std::vector<std::string>{"c_attn", "mlp.c_proj"});
  CHECK(LoraConfig::parse_targets("q_proj,mlp.down_proj") == std::vector<std::string>{"q_proj", "mlp.down_proj"});
  CHECK(LoraConfig::parse_targets(LoraConfig::all_linear("llama")).size() == 7);
  CHECK_THROWS_AS(LoraConfig::parse_targets("c_attn,wq"), value_error);
  CHECK_THROWS_WITH(LoraConfig::parse_targets("c_attn,wq"), LOOM_CONTAINS("unknown target 'wq'"));
  CHECK_THROWS_AS(LoraConfig::parse_targets(""), value_error);
  CHECK_THROWS_AS(LoraConfig::parse_targets("c_attn,,c_fc"), value_error);
  LoraConfig c;
  CHECK(c.targets_string() == "c_attn,c_proj,c_fc");
  c.rank = 0;
  CHECK_THROWS_AS(c.validate(), value_error);
}

TEST_CASE("apply_lora: the adapted GPT starts as the base model exactly") {
  nn::GPT base(tiny_config()), model(tiny_config());
  auto [idx, targets] = fixed_batch();
  std::vector<float> before = logits_of(model, idx);
  const int64_t n_base = model.num_parameters();
  Generator g(11);
  std::vector<std::string> adapted = apply_lora(model, LoraConfig{}, g);
  CHECK(adapted == adapted_tiny);  // "c_proj" matches attn.c_proj and mlp.c_proj, as in PEFT
  CHECK(logits_of(model, idx) == before);
  CHECK(logits_of(base, idx) == before);
  // Adapter parameters: r (in + out) per adapted Linear, with PEFT's names.
  const int64_t C = 32, r = 8;
  CHECK(model.num_parameters() - n_base == 2 * r * ((C + 3 * C) + (C + C) + (C + 4 * C) + (4 * C + C)));
  std::set<std::string> names;
  for (auto& [n, p] : model.named_parameters()) names.insert(n);
  CHECK(names.count("transformer.h.0.attn.c_attn.lora_A.weight"));
  CHECK(names.count("transformer.h.1.mlp.c_proj.lora_B.weight"));
  for (auto& [n, p] : model.named_parameters())
    if (n == "transformer.h.0.attn.c_attn.lora_A.weight") CHECK(p.shape() == Shape{8, 32});
    else if (n == "transformer.h.0.attn.c_attn.lora_B.weight") CHECK(p.shape() == Shape{96, 8});

  // Narrower targets: only the attention's input projection.
  nn::GPT m2(tiny_config());
  LoraConfig c2;
  c2.targets = {"c_attn"};
  CHECK(apply_lora(m2, c2, g) == std::vector<std::string>{"transformer.h.0.attn.c_attn", "transformer.h.1.attn.c_attn"});
  LoraConfig c3;
  c3.targets = {"mlp.c_proj"};
  nn::GPT m3(tiny_config());
  CHECK(apply_lora(m3, c3, g) == std::vector<std::string>{"transformer.h.0.mlp.c_proj", "transformer.h.1.mlp.c_proj"});

  // Errors: no match; a second adapter on the same Linear.
  nn::GPT m4(tiny_config());
  LoraConfig none;
  none.targets = {"q_proj"};
  CHECK_THROWS_AS(apply_lora(m4, none, g), value_error);
  CHECK_THROWS_WITH(apply_lora(m4, none, g), LOOM_CONTAINS("no Linear matches") && LOOM_CONTAINS("transformer.h.0.attn.c_attn"));
  CHECK_THROWS_WITH(apply_lora(m2, c2, g), LOOM_CONTAINS("already has an adapter"));
}

TEST_CASE("apply_lora trains only the adapters and leaves the base weights bit-identical") {
  nn::GPT model(tiny_config());
  auto [idx, targets] = fixed_batch();
  Generator g(5);
  apply_lora(model, LoraConfig{}, g);
  std::vector<Tensor<float>> lora = lora_parameters(model);
  CHECK(lora.size() == 16);
  std::set<const void*> lora_ptrs;
  for (auto& p : lora) lora_ptrs.insert(p.data());
  std::map<std::string, std::vector<float>> base_before;
  int n_trainable = 0;
  for (auto& [n, p] : model.named_parameters()) {
    bool is_lora = n.find(".lora_A.weight") != std::string::npos || n.find(".lora_B.weight") != std::string::npos;
    CHECK(p.requires_grad() == is_lora);
    CHECK(lora_ptrs.count(p.data()) == size_t(is_lora));
    n_trainable += p.requires_grad();
    if (!is_lora) base_before[n] = p.to_vector();
  }
  CHECK(n_trainable == 16);

  // One backward: gradients reach the adapters only (B gets one at once; A once B is nonzero).
  auto out = model(idx, targets);
  out.loss.backward();
  for (auto& [n, p] : model.named_parameters()) {
    bool is_lora = lora_ptrs.count(p.data()) != 0;
    CHECK(p.grad().defined() == is_lora);
    if (n.find("lora_B") != std::string::npos) CHECK(max(abs(p.grad())).item() > 0.0f);
  }
  model.zero_grad();

  // A few AdamW steps on a fixed batch lower the loss.
  AdamWOptions o;
  o.lr = 1e-2;
  AdamW opt(lora_parameters(model), o);
  const float first = model(idx, targets).loss.item();
  float last = first;
  for (int step = 0; step < 10; ++step) {
    opt.zero_grad();
    auto l = model(idx, targets).loss;
    l.backward();
    opt.step();
    last = model(idx, targets).loss.item();
  }
  INFO("loss " << first << " -> " << last);
  CHECK(last < first - 0.05f);
  for (auto& [n, p] : model.named_parameters())
    if (base_before.count(n)) CHECK(p.to_vector() == base_before[n]);
  // The adapters did move: A got gradients once B was nonzero.
  for (auto& [name, lin] : lora_modules(model)) CHECK(max(abs(lora_of(*lin).B)).item() > 0.0f);

  // Full fine-tuning is untouched by the library: a model without apply_lora trains everything.
  nn::GPT full(tiny_config());
  for (auto& [n, p] : full.named_parameters()) {
    CHECK(p.requires_grad());
    CHECK(n.find("lora") == std::string::npos);
  }
  CHECK(lora_parameters(full).empty());
}

TEST_CASE("merge_lora folds the adapters into the weights with the same outputs") {
  nn::GPT model(tiny_config());
  auto [idx, targets] = fixed_batch();
  Generator g(9);
  apply_lora(model, LoraConfig{}, g);
  randomise_b(model, 21);
  std::vector<float> base_logits;
  {
    nn::GPT base(tiny_config());
    base_logits = logits_of(base, idx);
  }
  std::vector<float> before = logits_of(model, idx);
  CHECK(rel_diff(before, base_logits) > 1e-3);  // the adapters do change the model
  std::vector<float> w0 = model.h[0]->attn.c_attn.weight.to_vector();
  const int64_t n_params = model.num_parameters();

  CHECK(merge_lora(model) == adapted_tiny);
  CHECK(lora_modules(model).empty());
  CHECK(lora_parameters(model).empty());
  CHECK(!model.h[0]->attn.c_attn.adapter);
  for (auto& [n, p] : model.named_parameters()) CHECK(n.find("lora") == std::string::npos);
  CHECK(model.num_parameters() < n_params);
  CHECK(model.h[0]->attn.c_attn.weight.to_vector() != w0);
  // float32 outputs after merging: the same up to rounding (tolerance 1e-5 relative)
  double d = rel_diff(logits_of(model, idx), before);
  INFO("merged vs unmerged: " << d);
  CHECK(d <= 1e-5);
  CHECK(merge_lora(model).empty());  // nothing left to merge
}

TEST_CASE("save_lora_adapter and load_lora_adapter round trip with PEFT names and metadata") {
  TempDir dir;
  const std::string path = dir.file("adapter_model.safetensors");
  nn::GPT model(tiny_config());
  auto [idx, targets] = fixed_batch();
  Generator g(13);
  LoraConfig cfg;
  cfg.rank = 4, cfg.alpha = 8.5, cfg.targets = {"c_attn", "c_proj", "c_fc"};
  apply_lora(model, cfg, g);
  randomise_b(model, 33);
  std::vector<float> want = logits_of(model, idx);
  save_lora_adapter(model, path, cfg);

  io::SafetensorsFile f = io::load_safetensors(path);
  REQUIRE(f.names.size() == 16);
  std::set<std::string> names(f.names.begin(), f.names.end());
  for (const auto& m : adapted_tiny) {
    CHECK(names.count("base_model.model." + m + ".lora_A.weight"));
    CHECK(names.count("base_model.model." + m + ".lora_B.weight"));
  }
  CHECK(f.at("base_model.model.transformer.h.0.attn.c_attn.lora_A.weight").shape() == Shape{4, 32});
  CHECK(f.at("base_model.model.transformer.h.0.attn.c_attn.lora_B.weight").shape() == Shape{96, 4});
  CHECK(f.at("base_model.model.transformer.h.1.mlp.c_proj.lora_A.weight").shape() == Shape{4, 128});
  CHECK(f.at("base_model.model.transformer.h.0.attn.c_attn.lora_A.weight").dtype() == DType::float32);
  CHECK(f.metadata.at("r") == "4");
  CHECK(f.metadata.at("lora_alpha") == "8.5");
  CHECK(f.metadata.at("target_modules") == "c_attn,c_proj,c_fc");
  CHECK(f.metadata.at("lora_dropout") == "0");
  CHECK(f.metadata.at("peft_type") == "LORA");
  CHECK(f.metadata.at("format") == "pt");

  // A fresh model with the same base: identical logits, adapters trainable, base frozen.
  nn::GPT fresh(tiny_config());
  LoraConfig got = load_lora_adapter(fresh, path);
  CHECK(got.rank == 4);
  CHECK(got.alpha == 8.5);
  CHECK(got.targets == cfg.targets);
  CHECK(logits_of(fresh, idx) == want);
  CHECK(lora_parameters(fresh).size() == 16);
  for (auto& [n, p] : fresh.named_parameters()) CHECK(p.requires_grad() == (n.find(".lora_") != std::string::npos));
  CHECK_THROWS_WITH(load_lora_adapter(fresh, path), LOOM_CONTAINS("already has an adapter"));

  // Another size: the error names the tensor, and the model is left unchanged.
  nn::GPT wider(tiny_config(48));
  std::vector<float> wider_logits = logits_of(wider, idx);
  CHECK_THROWS_AS(load_lora_adapter(wider, path), value_error);
  CHECK_THROWS_WITH(load_lora_adapter(wider, path),
                    LOOM_CONTAINS("base_model.model.transformer.h.0.attn.c_attn.lora_A.weight") &&
                        LOOM_CONTAINS("[4, 32]") && LOOM_CONTAINS("[4, 48]"));
  CHECK(lora_modules(wider).empty());
  CHECK(logits_of(wider, idx) == wider_logits);
  // Fewer layers: the file names a module the model lacks.
  nn::GPTConfig one = tiny_config();
  one.n_layer = 1;
  nn::GPT shallow(one);
  CHECK_THROWS_WITH(load_lora_adapter(shallow, path),
                    LOOM_CONTAINS("base_model.model.transformer.h.1.attn.c_attn.lora_A.weight") &&
                        LOOM_CONTAINS("not a Linear of the model"));

  // A file without LoRA tensors, one without metadata, one with a lora_A but no lora_B.
  const std::string plain = dir.file("plain.safetensors");
  io::save_safetensors(plain, {{"transformer.wte.weight", AnyTensor(zeros<float>({2, 2}))}},
                       {{"r", "4"}, {"lora_alpha", "8"}, {"target_modules", "c_attn"}});
  CHECK_THROWS_AS(load_lora_adapter(fresh, plain), io_error);
  CHECK_THROWS_WITH(load_lora_adapter(fresh, plain), LOOM_CONTAINS("no LoRA tensors"));
  const std::string nometa = dir.file("nometa.safetensors");
  io::save_safetensors(nometa, {{"base_model.model.transformer.h.0.attn.c_attn.lora_A.weight", AnyTensor(zeros<float>({4, 32}))}});
  CHECK_THROWS_WITH(load_lora_adapter(shallow, nometa), LOOM_CONTAINS("lacks 'r'"));
  const std::string half = dir.file("half.safetensors");
  io::save_safetensors(half, {{"base_model.model.transformer.h.0.attn.c_attn.lora_A.weight", AnyTensor(zeros<float>({4, 32}))}},
                       {{"r", "4"}, {"lora_alpha", "8"}, {"target_modules", "c_attn"}});
  CHECK_THROWS_WITH(load_lora_adapter(shallow, half), LOOM_CONTAINS("has no partner"));
  CHECK(lora_modules(shallow).empty());

  // Saving needs adapters, and a config that matches them.
  nn::GPT bare(tiny_config());
  CHECK_THROWS_AS(save_lora_adapter(bare, dir.file("x.safetensors"), cfg), value_error);
  LoraConfig other = cfg;
  other.rank = 8;
  CHECK_THROWS_WITH(save_lora_adapter(model, dir.file("x.safetensors"), other), LOOM_CONTAINS("rank 4"));
  CHECK(!fs::exists(dir.file("x.safetensors")));
}

TEST_CASE("the adapter file is small next to the model (char preset, rank 8)") {
  TempDir dir;
  // loom-train's char preset: 4 layers, 4 heads, C 128, T 64, no biases; vocab 65 (Shakespeare).
  nn::GPTConfig c;
  c.vocab_size = 65, c.block_size = 64, c.n_layer = 4, c.n_head = 4, c.n_embd = 128, c.bias = false;
  nn::GPT model(c);
  const int64_t model_bytes = model.num_parameters() * 4;
  Generator g(2);
  LoraConfig cfg;  // rank 8 on c_attn, c_proj (both), c_fc
  apply_lora(model, cfg, g);
  const std::string path = dir.file("adapter_model.safetensors");
  save_lora_adapter(model, path, cfg);
  const int64_t file_bytes = int64_t(fs::file_size(path));
  // r (in + out) per Linear: c_attn 8*(128+384), attn.c_proj 8*256, c_fc 8*(128+512), mlp.c_proj 8*(512+128)
  const int64_t lora_numel = 4 * 8 * ((128 + 384) + 256 + (128 + 512) + (512 + 128));
  CHECK(lora_numel == 65536);
  const double ratio = double(file_bytes) / double(model_bytes);
  INFO("adapter file " << file_bytes << " bytes, model " << model_bytes << " parameter bytes: " << 100 * ratio << "%");
  CHECK(file_bytes > lora_numel * 4);
  CHECK(file_bytes < lora_numel * 4 + 8192);  // the header is small
  CHECK(ratio < 0.09);
  // At width 128 the update's share is r (in + out) / (in out) ~ 8% at rank 8; rank 4 halves it.
  nn::GPT model4(c);
  LoraConfig cfg4;
  cfg4.rank = 4, cfg4.alpha = 8;
  apply_lora(model4, cfg4, g);
  save_lora_adapter(model4, path, cfg4);
  const double ratio4 = double(fs::file_size(path)) / double(model_bytes);
  INFO("rank 4: " << 100 * ratio4 << "%");
  CHECK(ratio4 < 0.05);
  WARN("LoRA adapter size (char preset, vocab 65): rank 8 " << file_bytes << " B = " << 100 * ratio
       << "% of " << model_bytes << " B; rank 4 " << 100 * ratio4 << "%");
}
