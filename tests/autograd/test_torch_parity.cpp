// PyTorch parity: the fixtures in tests/fixtures/ (written by make_fixtures.py with PyTorch 1.13)
// hold inputs, outputs and every gradient of (a) a 2-layer MLP with GELU and cross-entropy,
// (b) one pre-norm transformer block and (c) a whole two-layer Llama-style model. loom rebuilds
// (a) and (b) from its own ops in float32, runs (c) as nn::Llama, and must match each tensor to a relative error <= 1e-5, measured normwise: max|loom - torch| / max|torch|
// (elementwise relative error is meaningless for entries that cancel to ~0).
#include <cmath>
#include <fstream>
#include <map>
#include <sstream>
#include <string>

#include <loom/loom.hpp>

#include "catch.hpp"
#include "fixtures.hpp"

using namespace loom;
using TF = Tensor<float>;

namespace {

using loom_test::Fixture;
using loom_test::load_fixture;
using loom_test::rel_error;

void expect_close(const char* what, const TF& got, const TF& want) {
  double e = rel_error(got, want);
  INFO(what << ": relative error " << e);
  CHECK(e <= 1e-5);
}

}  // namespace

TEST_CASE("PyTorch parity: 2-layer MLP with GELU and cross-entropy") {
  Fixture fx = load_fixture("mlp.txt");
  auto p = [&](const char* n) { return fx.f.at(n).clone().requires_grad_(); };
  TF x = p("x"), w1 = p("w1"), b1 = p("b1"), w2 = p("w2"), b2 = p("b2");
  TF logits = matmul(gelu(matmul(x, w1) + b1), w2) + b2;
  TF loss = cross_entropy(logits, fx.i.at("targets"));
  loss.backward();
  expect_close("logits", logits, fx.f.at("logits"));
  expect_close("loss", loss, fx.f.at("loss"));
  expect_close("grad x", x.grad(), fx.f.at("grad_x"));
  expect_close("grad w1", w1.grad(), fx.f.at("grad_w1"));
  expect_close("grad b1", b1.grad(), fx.f.at("grad_b1"));
  expect_close("grad w2", w2.grad(), fx.f.at("grad_w2"));
  expect_close("grad b2", b2.grad(), fx.f.at("grad_b2"));
}

TEST_CASE("PyTorch parity: one pre-norm transformer block") {
  Fixture fx = load_fixture("block.txt");
  const int64_t B = 2, T = 6, C = 16, NH = 4, HS = C / NH;
  std::map<std::string, TF> p;
  for (const char* n : {"x", "ln1_w", "ln1_b", "attn_w", "attn_b", "proj_w", "proj_b", "ln2_w", "ln2_b", "fc_w",
                        "fc_b", "fc2_w", "fc2_b"})
    p[n] = fx.f.at(n).clone().requires_grad_();

  TF x = p["x"];
  TF h = layer_norm(x, p["ln1_w"], p["ln1_b"]);                                 // (B, T, C)
  TF qkv = matmul(h, p["attn_w"]) + p["attn_b"];                               // (B, T, 3C)
  auto heads = [&](int64_t i) {                                                // (B, NH, T, HS)
    return qkv.slice(-1, i * C, (i + 1) * C).reshape({B, T, NH, HS}).transpose(1, 2);
  };
  TF q = heads(0), k = heads(1), v = heads(2);
  TF att = matmul(q, k.transpose(-2, -1)) / std::sqrt(float(HS));              // (B, NH, T, T)
  auto future = lt(arange<int64_t>(0, T).reshape({T, 1}), arange<int64_t>(0, T));
  att = softmax(masked_fill(att, future, -INFINITY), -1);
  TF y = matmul(att, v).transpose(1, 2).reshape({B, T, C});                    // (B, T, C)
  TF x1 = x + matmul(y, p["proj_w"]) + p["proj_b"];
  TF m = gelu(matmul(layer_norm(x1, p["ln2_w"], p["ln2_b"]), p["fc_w"]) + p["fc_b"], GeluApprox::tanh);
  TF out = x1 + matmul(m, p["fc2_w"]) + p["fc2_b"];
  TF loss = sum(out * fx.f.at("r"));
  loss.backward();

  expect_close("out", out, fx.f.at("out"));
  expect_close("loss", loss, fx.f.at("loss"));
  for (auto& [name, t] : p) {
    CAPTURE(name);
    expect_close(("grad " + name).c_str(), t.grad(), fx.f.at("grad_" + name));
  }
}

TEST_CASE("PyTorch parity: a whole Llama-style model (RoPE, GQA, RMSNorm, SwiGLU, untied head)") {
  // The fixture is LlamaForCausalLM's computation written out in PyTorch by make_fixtures.py, its
  // parameters under Hugging Face's names: they load into nn::Llama as they are.
  Fixture fx = load_fixture("llama.txt");
  nn::LlamaConfig c;
  c.vocab_size = 19, c.block_size = 16, c.n_layer = 2, c.n_head = 4, c.n_kv_head = 2, c.n_embd = 16;
  c.intermediate_size = 24, c.rope_theta = 100.0, c.norm_eps = 1e-6, c.tie_embeddings = false;
  nn::Llama model(c);
  nn::NamedTensors state;
  for (auto& [name, p] : model.named_parameters()) state.emplace_back(name, fx.f.at(name));
  model.load_state_dict(state);

  nn::Llama::Output out = model.forward(fx.i.at("idx"), fx.i.at("targets"));
  out.loss.backward();
  expect_close("logits", out.logits, fx.f.at("logits"));
  expect_close("loss", out.loss, fx.f.at("loss"));
  int64_t checked = 0;
  for (auto& [name, p] : model.named_parameters()) {
    CAPTURE(name);
    expect_close(("grad " + name).c_str(), p.grad(), fx.f.at("grad_" + name));
    ++checked;
  }
  CHECK(checked == 2 + 2 * 9 + 1);  // embed, norm, lm_head and nine tensors per layer
}
