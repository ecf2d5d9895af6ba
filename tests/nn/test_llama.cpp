// nn::Llama: Hugging Face names and the parameter count against GPT-2 at one shape, the loss at
// initialisation, cached and left-padded decoding, packed rows, overfitting one batch, config
// errors, checkpoints through train::model_from_checkpoint, and the Hugging Face folder round trip
// (io/hf_llama.hpp) with the rotary layout permutation; parameter_count, and the refusal of a
// config that asks for more parameters than a file holds. PyTorch parity is in
// tests/autograd/test_torch_parity.cpp.
#include <cmath>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include <loom/align/lora.hpp>
#include <loom/io/hf_llama.hpp>
#include <loom/loom.hpp>
#include <loom/train/models.hpp>
#include <loom/train/trainer.hpp>

#include "../temp_dir.hpp"
#include "catch.hpp"
#include "gradients.hpp"

using namespace loom;
using loom_test::TempDir;

namespace {

nn::LlamaConfig tiny_llama(bool tie = false) {
  nn::LlamaConfig c;
  c.vocab_size = 29, c.block_size = 24, c.n_layer = 2, c.n_head = 4, c.n_kv_head = 2, c.n_embd = 32;
  c.intermediate_size = 48, c.tie_embeddings = tie;
  return c;
}

double max_abs_diff(const Tensor<float>& a, const Tensor<float>& b) {
  return max(abs(a.to<double>() - b.to<double>())).item();
}

Tensor<int64_t> random_ids(int64_t B, int64_t T, int64_t V, Generator& g) { return randint<int64_t>({B, T}, 0, V, g); }

}  // namespace

TEST_CASE("Llama parameters follow Hugging Face's LlamaForCausalLM names") {
  nn::Llama model(tiny_llama());
  std::vector<std::string> names;
  for (auto& [n, p] : model.named_parameters()) names.push_back(n);
  REQUIRE(names.size() == 2 + 2 * 9 + 1);
  CHECK(names.front() == "model.embed_tokens.weight");
  CHECK(names[1] == "model.layers.0.input_layernorm.weight");
  CHECK(names[2] == "model.layers.0.self_attn.q_proj.weight");
  CHECK(names.back() == "lm_head.weight");
  nn::NamedTensors state = model.state_dict();
  auto shape_of = [&](const std::string& n) {
    for (auto& [k, t] : state)
      if (k == n) return t.shape();
    FAIL("no parameter " << n);
    return Shape{};
  };
  // 4 query heads of 8 share 2 key/value heads: k_proj and v_proj are half of q_proj
  CHECK(shape_of("model.layers.1.self_attn.q_proj.weight") == Shape{32, 32});
  CHECK(shape_of("model.layers.1.self_attn.k_proj.weight") == Shape{16, 32});
  CHECK(shape_of("model.layers.1.mlp.gate_proj.weight") == Shape{48, 32});
  CHECK(shape_of("model.layers.1.mlp.down_proj.weight") == Shape{32, 48});
  CHECK(shape_of("model.norm.weight") == Shape{32});
  // tied: no lm_head, the embedding is the output projection
  nn::Llama tied(tiny_llama(true));
  CHECK(tied.num_parameters() == model.num_parameters() - 29 * 32);
  CHECK(tied.vocab_parameters() == std::vector<std::string>{"model.embed_tokens.weight"});
  CHECK(model.vocab_parameters().size() == 2);
}

TEST_CASE("ModelSpec builds GPT-2 and Llama at the same parameter count") {
  for (auto [L, NH, C, T] : std::vector<std::array<int64_t, 4>>{{4, 4, 128, 64}, {6, 6, 384, 256}, {2, 3, 48, 32}}) {
    CAPTURE(L, NH, C, T);
    train::ModelSpec spec;
    spec.shape.vocab_size = 65, spec.shape.block_size = T, spec.shape.n_layer = L, spec.shape.n_head = NH;
    spec.shape.n_embd = C, spec.shape.bias = false;
    std::unique_ptr<nn::CausalLM> gpt = spec.make(1);
    spec.arch = "llama";
    std::unique_ptr<nn::CausalLM> llama = spec.make(1);
    CHECK(gpt->arch() == "gpt2");
    CHECK(llama->arch() == "llama");
    const nn::LlamaConfig lc = spec.llama();
    if (NH % 2 == 0) {
      // n_kv_head = n_head / 2 and a SwiGLU of 3 C: 12 C^2 per layer, as GPT-2; the tied Llama has
      // no position table
      CHECK(lc.n_kv_head == NH / 2);
      CHECK(lc.intermediate_size == 3 * C);
      CHECK(llama->num_parameters() == gpt->num_parameters() - T * C);
    } else {
      CHECK(lc.n_kv_head == NH);  // an odd head count keeps full attention; the MLP takes the rest
      CHECK(std::abs(double(llama->num_parameters() + T * C - gpt->num_parameters())) < 3.0 * C * L);
    }
  }
}

TEST_CASE("parameter_count gives a config's parameter count without building the model") {
  for (bool bias : {false, true}) {
    nn::GPTConfig g;
    g.vocab_size = 29, g.block_size = 24, g.n_layer = 3, g.n_head = 2, g.n_embd = 16, g.bias = bias;
    CHECK(nn::parameter_count(g) == nn::GPT(g).num_parameters());
  }
  for (auto [tie, kv] : std::vector<std::pair<bool, int64_t>>{{false, 2}, {true, 2}, {false, 4}, {true, 1}}) {
    CAPTURE(tie, kv);
    nn::LlamaConfig c = tiny_llama(tie);
    c.n_kv_head = kv;
    CHECK(nn::parameter_count(c) == nn::Llama(c).num_parameters());
    CHECK(train::config_parameter_count(train::to_json(c)) == nn::parameter_count(c));
  }
  nn::GPTConfig huge;  // a count past int64 saturates instead of wrapping around
  huge.n_embd = int64_t(1) << 40, huge.n_layer = int64_t(1) << 20;
  CHECK(nn::parameter_count(huge) == std::numeric_limits<int64_t>::max());
}

TEST_CASE("Llama forward: shapes, the loss at initialisation, and the errors of a bad config") {
  nn::Llama model(tiny_llama(), 3);
  Generator g(4);
  Tensor<int64_t> idx = random_ids(3, 11, 29, g), targets = random_ids(3, 11, 29, g);
  nn::Llama::Output out = model(idx, targets);
  CHECK(out.logits.shape() == Shape{3, 11, 29});
  CHECK(std::abs(out.loss.item() - std::log(29.0)) < 0.1);  // near-uniform predictions at start
  nn::LlamaConfig bad = tiny_llama();
  bad.n_kv_head = 3;
  CHECK_THROWS_WITH(nn::Llama(bad), LOOM_CONTAINS("n_kv_head (3) must divide n_head (4)"));
  bad = tiny_llama(), bad.n_embd = 12;  // head size 3: RoPE rotates pairs
  CHECK_THROWS_WITH(nn::Llama(bad), LOOM_CONTAINS("must be even for RoPE"));
  CHECK_THROWS_WITH(model(random_ids(1, 25, 29, g)), LOOM_CONTAINS("longer than block_size 24"));
}

TEST_CASE("Llama loss() is forward's loss, tied or not, and with an adapter on lm_head") {
  Generator g(7);
  Tensor<int64_t> idx = random_ids(2, 11, 29, g), targets = random_ids(2, 11, 29, g);
  for (bool tie : {false, true}) {
    nn::Llama model(tiny_llama(tie), 3);
    CHECK(model.loss(idx, targets).item() == model(idx, targets).loss.item());
    model.zero_grad();
    model.loss(idx, targets).backward();
    std::vector<std::vector<float>> fused;
    for (auto& [name, p] : model.named_parameters()) fused.push_back(p.grad().to_vector());
    model.zero_grad();
    model(idx, targets).loss.backward();
    size_t i = 0;
    for (auto& [name, p] : model.named_parameters()) CHECK(p.grad().to_vector() == fused[i++]);
  }
  nn::Llama model(tiny_llama(false), 3);  // an adapter on lm_head: loss() takes forward's path
  Generator ga(8);
  auto A = randn<float>(Shape{2, 32}, ga), B = randn<float>(Shape{29, 2}, ga);
  model.lm_head->set_adapter(std::make_shared<align::LoraAdapter>(A, B, 4.0, 0.0, ga));
  CHECK(model.loss(idx, targets).item() == model(idx, targets).loss.item());
}

TEST_CASE("Llama: KV-cached and left-padded decoding give the logits of full forward passes") {
  nn::Llama model(tiny_llama(), 5);
  model.eval();
  NoGradGuard no_grad;
  Generator g(6);
  const int64_t T = 13;
  Tensor<int64_t> idx = random_ids(2, T, 29, g);
  Tensor<float> full = model(idx).logits;  // (2, T, V)
  // a prompt of 5, then one token at a time: positions continue from the cache (RoPE at 5, 6, ...)
  std::vector<nn::KVCache> caches = model.make_kv_cache(2, T);
  CHECK(caches[0].k.shape() == Shape{2, 2, T, 8});  // (B, NKV, capacity, HS): half the heads
  Tensor<float> first = model.forward(idx.slice(1, 0, 5), Tensor<int64_t>(), &caches).logits;
  CHECK(max_abs_diff(first, full.slice(1, 0, 5)) < 1e-5);
  for (int64_t t = 5; t < T; ++t) {
    Tensor<float> step = model.forward(idx.slice(1, t, t + 1), Tensor<int64_t>(), &caches).logits;
    CHECK(max_abs_diff(step, full.slice(1, t, t + 1)) < 1e-5);
  }
  // Rows of lengths 4 and 9 decoded together, the short one left-padded: each row's last logits
  // equal those of the row run alone (its positions count from its first token).
  const std::vector<int64_t> ids = idx.to_vector();
  std::vector<int64_t> rows(5, 0);                                             // row 0: 5 padding tokens,
  rows.insert(rows.end(), ids.begin(), ids.begin() + 4);                       // then idx[0, 0:4]
  rows.insert(rows.end(), ids.begin() + T, ids.begin() + T + 9);               // row 1: idx[1, 0:9]
  Tensor<int64_t> batch = from_vector<int64_t>(rows, {2, 9});
  std::vector<nn::KVCache> c2 = model.make_kv_cache(2, 9);
  Tensor<float> last = model.decode(batch, c2, {5, 0});  // (2, V)
  CHECK(max_abs_diff(last.select(0, 0), model(idx.slice(0, 0, 1).slice(1, 0, 4)).logits.select(0, 0).select(0, 3)) < 1e-5);
  CHECK(max_abs_diff(last.select(0, 1), full.select(0, 1).select(0, 8)) < 1e-5);
}

TEST_CASE("Llama: packed rows give each example's losses and gradients as if run alone") {
  nn::Llama model(tiny_llama(), 7);
  Generator g(8);
  Tensor<int64_t> a = random_ids(1, 6, 29, g), b = random_ids(1, 9, 29, g);
  Tensor<int64_t> ta = random_ids(1, 6, 29, g), tb = random_ids(1, 9, 29, g);
  Tensor<int64_t> idx = Tensor<int64_t>::empty({1, 15}), tgt = Tensor<int64_t>::empty({1, 15}),
                  seg = Tensor<int64_t>::empty({1, 15});
  for (int64_t t = 0; t < 15; ++t) {
    idx.data()[t] = t < 6 ? a.data()[t] : b.data()[t - 6];
    tgt.data()[t] = t < 6 ? ta.data()[t] : tb.data()[t - 6];
    seg.data()[t] = t < 6 ? 0 : 1;
  }
  Tensor<float> packed = model.token_losses(idx, tgt, seg);  // (1, 15)
  Tensor<float> alone_a = model.token_losses(a, ta), alone_b = model.token_losses(b, tb);
  CHECK(max_abs_diff(packed.slice(1, 0, 6), alone_a) < 1e-5);
  CHECK(max_abs_diff(packed.slice(1, 6, 15), alone_b) < 1e-5);
  // gradients of the summed loss: packed == a alone + b alone
  sum(packed).backward();
  std::vector<Tensor<float>> g_packed;
  for (auto& p : model.parameters()) g_packed.push_back(p.grad().clone());
  model.zero_grad();
  (sum(alone_a) + sum(alone_b)).backward();
  size_t i = 0;
  for (auto& p : model.parameters()) CHECK(max_abs_diff(p.grad(), g_packed[i++]) < 1e-5);
}

TEST_CASE("Llama's residual stream, each add fused into the next norm, gives the layers' own results") {
  // Llama adds each layer's MLP output in the next layer's input_layernorm (or the final norm)
  // through residual_forward; the reference runs every LlamaDecoderLayer whole.
  nn::Llama a(tiny_llama()), b(tiny_llama());
  Generator g(9);
  auto idx = random_ids(3, 12, 29, g), tgt = random_ids(3, 12, 29, g);
  auto reference_logits = [&] {
    Tensor<int64_t> pos = arange<int64_t>(0, 12).reshape({1, 12}).expand({3, 12});
    Tensor<float> x = b.embed_tokens(idx);
    for (const auto& layer : b.layers) x = (*layer)(x, pos);
    return (*b.lm_head)(b.norm(x));  // (3, 12, V)
  };
  {
    NoGradGuard no_grad;  // forward: the fused add rounds as the separate one does, so the same bits
    CHECK(a(idx).logits.to_vector() == reference_logits().to_vector());
  }
  a.loss(idx, tgt).backward();
  cross_entropy(reference_logits(), tgt).backward();
  // backward: the same bits where it was written; 1e-5 leaves room for a fused add that rounds
  // once where the separate ops round twice
  loom_test::check_gradients_close(a, b, 1e-5);
}

TEST_CASE("Llama with recompute_blocks: the same losses and gradients from a fraction of the graph") {
  nn::LlamaConfig c = tiny_llama();
  c.dropout = 0.2;
  nn::Llama plain(c), recomputed(c);
  Generator g(11);
  auto idx = random_ids(3, 12, 29, g), tgt = random_ids(3, 12, 29, g);
  loom_test::check_recompute_matches(plain, recomputed, idx, tgt, Tensor<int64_t>());
}

TEST_CASE("A tiny Llama overfits one batch") {
  nn::LlamaConfig c = tiny_llama();
  nn::Llama model(c, 9);
  Generator g(10);
  Tensor<int64_t> idx = random_ids(4, 16, 29, g), targets = random_ids(4, 16, 29, g);
  AdamWOptions o;
  o.lr = 3e-3, o.weight_decay = 0.0;
  AdamW opt(model.parameters(), o);
  double first = 0, last = 0;
  for (int step = 0; step < 150; ++step) {
    opt.zero_grad();
    Tensor<float> loss = model(idx, targets).loss;
    loss.backward();
    opt.step();
    (step == 0 ? first : last) = loss.item();
  }
  INFO("loss " << first << " -> " << last);
  CHECK(first > 3.0);
  CHECK(last < 0.2);
}

TEST_CASE("Llama checkpoints: config JSON with arch, and model_from_checkpoint") {
  nn::Llama model(tiny_llama(true), 11);
  const io::Json j = train::config_json(model);
  CHECK(j.at("arch").as_string() == "llama");
  CHECK(j.at("n_kv_head").as_int() == 2);
  CHECK(train::canonical_config(j).dump() == j.dump());
  // a GPT-2 config of an older checkpoint (no "arch") is GPT-2
  nn::GPTConfig gc;
  gc.vocab_size = 29, gc.block_size = 24, gc.n_layer = 1, gc.n_head = 2, gc.n_embd = 16;
  io::Json old = train::to_json(gc);
  io::Json no_arch = io::Json::object();
  for (const auto& [k, v] : old.as_object())
    if (k != "arch") no_arch.set(k, v);
  CHECK(train::config_arch(no_arch) == "gpt2");
  CHECK(train::canonical_config(no_arch).dump() == old.dump());
  io::Json unknown = j;
  unknown.set("arch", "mamba");
  CHECK_THROWS_WITH(train::model_from_config(unknown), LOOM_CONTAINS("unknown arch 'mamba'"));

  TempDir dir;
  io::Checkpoint c;
  for (auto& [name, p] : model.named_parameters()) c.add("model." + name, p);
  c.set_meta_json("config", j);
  io::save_checkpoint(dir.file("ckpt.safetensors"), c);
  std::unique_ptr<nn::CausalLM> back = train::model_from_checkpoint(io::load_checkpoint(dir.file("ckpt.safetensors")));
  REQUIRE(back->arch() == "llama");
  Generator g(12);
  Tensor<int64_t> idx = random_ids(2, 7, 29, g);
  CHECK(max_abs_diff(back->forward(idx).logits, model(idx).logits) == 0.0);
  CHECK(train::config_summary(*back).rfind("llama: vocab_size 29, block_size 24, n_layer 2", 0) == 0);

  // a config that asks for more parameters than the tensors hold is refused before the model is
  // built (this one would build: 40 layers of the tiny shape); fewer is left to load_state_dict
  io::Json more = j;
  more.set("n_layer", 40);
  io::Checkpoint edited = io::load_checkpoint(dir.file("ckpt.safetensors"));
  edited.set_meta_json("config", more);
  CHECK_THROWS_AS(train::model_from_checkpoint(edited), io_error);
  CHECK_THROWS_WITH(train::model_from_checkpoint(edited),
                    LOOM_CONTAINS("ckpt.safetensors: its config describes a model of " +
                                  std::to_string(nn::parameter_count(train::llama_config_from_json(more))) +
                                  " parameters, but its model.* tensors hold " +
                                  std::to_string(model.num_parameters()) + " values"));
  io::Json fewer = j;
  fewer.set("n_layer", 1);
  edited.set_meta_json("config", fewer);
  CHECK_THROWS_WITH(train::model_from_checkpoint(edited), LOOM_CONTAINS("model.layers.1"));
}

TEST_CASE("Hugging Face Llama folders: export, import, and what is refused") {
  TempDir dir;
  Generator g(13);
  Tensor<int64_t> idx = random_ids(2, 9, 29, g);
  for (bool tie : {false, true}) {
    CAPTURE(tie);
    nn::Llama model(tiny_llama(tie), 14);
    const std::string out = dir.file(tie ? "tied" : "untied");
    io::save_hf_llama(out, model);
    const io::Json cfg = io::parse_json(io::read_file(out + "/config.json"));
    CHECK(cfg.at("num_key_value_heads").as_int() == 2);
    CHECK(cfg.at("hidden_size").as_int() == 32);
    CHECK(cfg.at("tie_word_embeddings").as_bool() == tie);
    io::SafetensorsFile f = io::load_safetensors(out + "/model.safetensors");
    CHECK(f.tensors.count("lm_head.weight") == (tie ? 0u : 1u));
    CHECK(f.tensors.count("model.layers.1.self_attn.k_proj.weight") == 1u);
    std::unique_ptr<nn::Llama> back = io::load_hf_llama(out);
    CHECK(max_abs_diff(back->forward(idx).logits, model(idx).logits) == 0.0);
  }
  // a config.json that asks for more parameters than model.safetensors holds is refused before
  // the model is built
  {
    io::Json cfg = io::parse_json(io::read_file(dir.file("untied") + "/config.json"));
    cfg.set("num_hidden_layers", 40);
    io::write_file_atomic(dir.file("untied") + "/config.json", cfg.dump(2));
    CHECK_THROWS_WITH(io::load_hf_llama(dir.file("untied")),
                      LOOM_CONTAINS("config.json: describes a model of") &&
                          LOOM_CONTAINS("model.safetensors holds " +
                                        std::to_string(nn::Llama(tiny_llama()).num_parameters())));
  }
  // an untied config without lm_head.weight in the file
  {
    nn::Llama tied(tiny_llama(true), 15);
    nn::Llama untied(tiny_llama(false), 15);
    io::save_hf_llama(dir.file("t"), tied);
    CHECK_THROWS_WITH(io::load_hf_llama_weights(dir.file("t") + "/model.safetensors", untied),
                      LOOM_CONTAINS("no lm_head.weight"));
  }
  // settings loom's Llama lacks are named
  io::Json cfg = io::hf_llama_config(tiny_llama());
  auto refused = [&](const char* key, io::Json value) {
    io::Json c = cfg;
    c.set(key, std::move(value));
    return c;
  };
  io::Json scaling = io::Json::object();
  scaling.set("rope_type", "llama3");
  CHECK_THROWS_WITH(io::llama_config_from_hf(refused("rope_scaling", scaling), "config.json"),
                    LOOM_CONTAINS("config.json: rope_scaling"));
  CHECK_THROWS_WITH(io::llama_config_from_hf(refused("attention_bias", true), "config.json"),
                    LOOM_CONTAINS("attention_bias is true"));
  CHECK_THROWS_WITH(io::llama_config_from_hf(refused("hidden_act", "gelu"), "config.json"),
                    LOOM_CONTAINS("hidden_act 'gelu'"));
  CHECK_THROWS_WITH(io::llama_config_from_hf(refused("model_type", "gpt2"), "config.json"),
                    LOOM_CONTAINS("not a Llama-family model"));
  // num_key_value_heads absent: every head has its own keys (transformers' default)
  io::Json mha = io::Json::object();
  for (const auto& [k, v] : cfg.as_object())
    if (k != "num_key_value_heads") mha.set(k, v);
  CHECK(io::llama_config_from_hf(mha, "config.json").n_kv_head == 4);
}

TEST_CASE("The rotary layout trap: Meta's interleaved q/k rows permuted to Hugging Face's halves") {
  // A Meta checkpoint rotates pairs (2p, 2p + 1); Hugging Face's rotates (p, p + HS/2). With the
  // rows of q_proj permuted head by head, the rotated queries are the same numbers, reordered.
  Generator g(16);
  const int64_t B = 2, T = 5, H = 3, HS = 8, C = 12;
  Tensor<float> x = randn<float>({B, T, C}, g), w_meta = randn<float>({H * HS, C}, g);
  Tensor<float> w_hf = io::meta_to_hf_rotary(w_meta, H);
  Tensor<int64_t> pos = rope_positions(B, T, 3);
  Tensor<float> q_meta = rope(matmul(x, w_meta.t()).reshape({B, T, H, HS}), pos, 10000.0, RopeLayout::interleaved);
  Tensor<float> q_hf = rope(matmul(x, w_hf.t()).reshape({B, T, H, HS}), pos, 10000.0, RopeLayout::half);
  // feature 2p + i of Meta's head is feature i * HS/2 + p of Hugging Face's
  Tensor<float> q_meta_as_hf = q_meta.reshape({B, T, H, HS / 2, 2}).transpose(3, 4).contiguous().reshape({B, T, H, HS});
  CHECK(max_abs_diff(q_meta_as_hf, q_hf) < 1e-5);
  // and without the permutation the numbers differ: the trap is real
  Tensor<float> q_wrong = rope(matmul(x, w_meta.t()).reshape({B, T, H, HS}), pos, 10000.0, RopeLayout::half);
  CHECK(max_abs_diff(q_wrong.reshape({B, T, H, HS / 2, 2}).transpose(3, 4).contiguous().reshape({B, T, H, HS}),
                     q_hf) > 1e-2);
  CHECK_THROWS_WITH(io::meta_to_hf_rotary(w_meta, 5), LOOM_CONTAINS("does not split into 5 heads"));
}
