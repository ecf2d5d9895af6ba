// nn: fused causal attention (against the unfused composition, gradcheck, KV cache), modules
// (names, state_dict, modes), and the GPT model (shapes, initial loss, cached decoding,
// overfitting one batch).
#include <cmath>
#include <set>

#include <loom/loom.hpp>
#include <loom/nn/gpt.hpp>

#include "../attention_helpers.hpp"
#include "catch.hpp"
#include "gradients.hpp"

using namespace loom;

namespace {

// The unfused reference: softmax(q k^T / sqrt(HS) + causal mask) v from matmul/masked_fill/softmax.
template <class T>
Tensor<T> attention_reference(const Tensor<T>& q, const Tensor<T>& k, const Tensor<T>& v) {
  int64_t Tq = q.size(2), Tk = k.size(2), HS = q.size(3);
  auto s = matmul(q, k.transpose(-2, -1)) / std::sqrt(double(HS));
  auto future = gt(arange<int64_t>(0, double(Tk)), arange<int64_t>(double(Tk - Tq), double(Tk)).reshape({Tq, 1}));
  return matmul(softmax(masked_fill(s, future, -INFINITY), -1), v);
}

double max_abs_diff(const Tensor<float>& a, const Tensor<float>& b) {
  return max(abs(a.to<double>() - b.to<double>())).item();
}

}  // namespace

TEST_CASE("causal_attention matches the unfused composition") {
  Generator g(1);
  for (auto [B, NH, T, HS] : std::vector<std::array<int64_t, 4>>{{1, 1, 1, 1}, {2, 3, 5, 4}, {2, 2, 70, 8}, {1, 4, 130, 16}, {3, 2, 64, 32}}) {
    CAPTURE(B, NH, T, HS);
    auto q = randn<float>({B, NH, T, HS}, g), k = randn<float>({B, NH, T, HS}, g), v = randn<float>({B, NH, T, HS}, g);
    auto y = causal_attention(q, k, v);
    REQUIRE(y.shape() == Shape{B, NH, T, HS});
    CHECK(max_abs_diff(y, attention_reference(q, k, v)) < 1e-5);
  }
  // Strided q, k, v: head views into one (B, T, 3C) buffer, as CausalSelfAttention makes them.
  int64_t B = 2, T = 37, NH = 3, HS = 5, C = NH * HS;
  auto qkv = randn<float>({B, T, 3 * C}, g);
  auto view = [&](int64_t i) { return qkv.slice(-1, i * C, (i + 1) * C).reshape({B, T, NH, HS}).transpose(1, 2); };
  CHECK(max_abs_diff(causal_attention(view(0), view(1), view(2)),
                     attention_reference(view(0).contiguous(), view(1).contiguous(), view(2).contiguous())) < 1e-5);
  CHECK_THROWS_AS(causal_attention(randn<float>({1, 1, 4, 2}, g), randn<float>({1, 1, 3, 2}, g), randn<float>({1, 1, 3, 2}, g)),
                  shape_error);
  CHECK_THROWS_WITH(causal_attention(randn<float>({1, 4, 2}, g), randn<float>({1, 4, 2}, g), randn<float>({1, 4, 2}, g)),
                    LOOM_CONTAINS("must be (B, NH, T, HS)"));
}

TEST_CASE("causal_attention: gradcheck across tiles, and against the composition's gradients") {
  Generator g(2);
  auto mk = [&](int64_t T) { return randn<double>({1, 2, T, 3}, g).requires_grad_(); };
  for (int64_t T : {1, 6, 70}) {
    CAPTURE(T);
    auto q = mk(T), k = mk(T), v = mk(T);
    auto r = gradcheck([](auto& in) { return causal_attention(in[0], in[1], in[2]); }, {q, k, v});
    INFO(r.report);
    CHECK(r.ok);
  }
  // Fewer queries than keys (the KV-cache case) is differentiable too.
  auto q = mk(5), k = mk(9), v = mk(9);
  auto r = gradcheck([](auto& in) { return causal_attention(in[0], in[1], in[2]); }, {q, k, v});
  INFO(r.report);
  CHECK(r.ok);
  // float32 gradients of fused and unfused agree (B 2, NH 4, T 100, HS 16).
  Generator h(3);
  auto qf = randn<float>({2, 4, 100, 16}, h).requires_grad_(), kf = randn<float>({2, 4, 100, 16}, h).requires_grad_(),
       vf = randn<float>({2, 4, 100, 16}, h).requires_grad_();
  auto w = randn<float>({2, 4, 100, 16}, h);
  sum(causal_attention(qf, kf, vf) * w).backward();
  auto gq = qf.grad(), gk = kf.grad(), gv = vf.grad();
  qf.zero_grad(), kf.zero_grad(), vf.zero_grad();
  sum(attention_reference(qf, kf, vf) * w).backward();
  CHECK(max_abs_diff(gq, qf.grad()) < 1e-5);
  CHECK(max_abs_diff(gk, kf.grad()) < 1e-5);
  CHECK(max_abs_diff(gv, vf.grad()) < 1e-5);
}

TEST_CASE("causal_attention in float with head sizes a multiple of 16 (the tile kernel) against double") {
  // The float tile kernel serves head sizes 16, 32, 48, 64...: one tile and several, odd lengths,
  // fewer queries than keys (a KV cache), grouped key/value heads, and strided head views of one
  // (B, T, 3C) buffer. Reference: the unfused composition in double, key/value heads repeated.
  // Tolerance: 1e-5 of the largest magnitude (float sums over up to 200 keys).
  struct Case { int64_t B, NH, NKV, Tq, Tk, HS; };
  std::vector<Case> cases = {{1, 1, 1, 1, 1, 16},    {2, 2, 2, 7, 7, 16},   {2, 4, 2, 65, 65, 32},
                             {1, 2, 1, 130, 130, 48}, {1, 2, 2, 64, 64, 64}, {1, 2, 2, 3, 70, 32},
                             {1, 4, 4, 200, 200, 16}, {2, 2, 1, 9, 140, 64}};
  Generator g(9);
  auto close = [](const Tensor<float>& got, const Tensor<double>& want) {
    double scale = std::max(1.0, max(abs(want)).item());
    return max(abs(got.to<double>() - want)).item() <= 1e-5 * scale;
  };
  for (const Case& c : cases) {
    CAPTURE(c.B, c.NH, c.NKV, c.Tq, c.Tk, c.HS);
    auto q = randn<float>({c.B, c.NH, c.Tq, c.HS}, g).requires_grad_();
    auto k = randn<float>({c.B, c.NKV, c.Tk, c.HS}, g).requires_grad_();
    auto v = randn<float>({c.B, c.NKV, c.Tk, c.HS}, g).requires_grad_();
    auto w = randn<float>({c.B, c.NH, c.Tq, c.HS}, g);
    auto y = causal_attention(q, k, v);
    sum(y * w).backward();
    auto qd = q.detach().to<double>().requires_grad_(), kd = k.detach().to<double>().requires_grad_(),
         vd = v.detach().to<double>().requires_grad_();
    auto yd = attention_reference(qd, loom_test::repeat_heads(kd, c.NH / c.NKV), loom_test::repeat_heads(vd, c.NH / c.NKV));
    sum(yd * w.to<double>()).backward();
    CHECK(close(y, yd));
    CHECK(close(q.grad(), qd.grad()));
    CHECK(close(k.grad(), kd.grad()));
    CHECK(close(v.grad(), vd.grad()));
  }
  // Strided heads: views into one (B, T, 3C) projection, HS 32.
  const int64_t B = 2, T = 77, NH = 2, HS = 32, C = NH * HS;
  auto qkv = randn<float>({B, T, 3 * C}, g).requires_grad_();
  auto view = [&](const auto& x, int64_t i) { return x.slice(-1, i * C, (i + 1) * C).reshape({B, T, NH, HS}).transpose(1, 2); };
  auto w = randn<float>({B, NH, T, HS}, g);
  auto y = causal_attention(view(qkv, 0), view(qkv, 1), view(qkv, 2));
  sum(y * w).backward();
  auto qkvd = qkv.detach().to<double>().requires_grad_();
  auto yd = attention_reference(view(qkvd, 0).contiguous(), view(qkvd, 1).contiguous(), view(qkvd, 2).contiguous());
  sum(yd * w.to<double>()).backward();
  CHECK(close(y, yd));
  CHECK(close(qkv.grad(), qkvd.grad()));
}

TEST_CASE("causal_attention over a cache equals the last rows of full attention") {
  Generator g(4);
  auto q = randn<float>({2, 2, 20, 8}, g), k = randn<float>({2, 2, 20, 8}, g), v = randn<float>({2, 2, 20, 8}, g);
  auto full_out = causal_attention(q, k, v);
  auto last = causal_attention(q.slice(2, 13, 20), k, v);
  CHECK(max_abs_diff(last, full_out.slice(2, 13, 20)) < 1e-6);
}

namespace {
nn::GPTConfig tiny_config() {
  nn::GPTConfig c;
  c.vocab_size = 11, c.block_size = 16, c.n_layer = 2, c.n_head = 2, c.n_embd = 8, c.dropout = 0.0, c.bias = true;
  return c;
}
}  // namespace

TEST_CASE("GPT parameters follow the Hugging Face GPT-2 names") {
  nn::GPT model(tiny_config());
  std::set<std::string> names;
  for (auto& [n, p] : model.named_parameters()) names.insert(n);
  for (const char* n : {"transformer.wte.weight", "transformer.wpe.weight", "transformer.h.0.ln_1.weight",
                        "transformer.h.0.ln_1.bias", "transformer.h.0.attn.c_attn.weight", "transformer.h.0.attn.c_attn.bias",
                        "transformer.h.0.attn.c_proj.weight", "transformer.h.1.mlp.c_fc.weight",
                        "transformer.h.1.mlp.c_proj.bias", "transformer.ln_f.weight", "transformer.ln_f.bias"})
    CHECK(names.count(n) == 1);
  CHECK(names.size() == 2 + 12 * 2 + 2);
  // V C + block C + L (12 C^2 + 13 C) + 2 C, GPT-2's count with tied embeddings.
  int64_t C = 8, L = 2;
  CHECK(model.num_parameters() == 11 * C + 16 * C + L * (12 * C * C + 13 * C) + 2 * C);
  auto sd = model.named_parameters();
  CHECK(sd[4].second.shape() == Shape{3 * C, C});  // c_attn.weight is (out, in)
  CHECK(nn::GPT::hf_conv1d_weight("transformer.h.3.mlp.c_fc.weight"));
  CHECK_FALSE(nn::GPT::hf_conv1d_weight("transformer.wte.weight"));
  // GPT-2 initialisation: weights ~ N(0, 0.02), residual projections smaller, LayerNorm 1/0.
  auto std_of = [&](const std::string& n) {
    for (auto& [name, p] : sd)
      if (name == n) return std::sqrt(var(p).item());
    return -1.0f;
  };
  CHECK(std_of("transformer.h.0.attn.c_proj.weight") < std_of("transformer.h.0.attn.c_attn.weight"));
  for (auto& [name, p] : sd) {
    if (name == "transformer.ln_f.weight") CHECK(min(p).item() == 1.0f);
    if (name == "transformer.h.0.mlp.c_fc.bias") CHECK(max(abs(p)).item() == 0.0f);
  }
}

TEST_CASE("Module state_dict round trip, errors, modes") {
  nn::GPT a(tiny_config(), 1), b(tiny_config(), 2);
  auto idx = from_vector<int64_t>({1, 2, 3, 4, 5, 6}, {1, 6});
  CHECK(max_abs_diff(a(idx).logits, b(idx).logits) > 1e-3);
  b.load_state_dict(a.state_dict());
  CHECK(max_abs_diff(a(idx).logits, b(idx).logits) == 0.0);
  auto sd = a.state_dict();
  sd.pop_back();
  CHECK_THROWS_WITH(b.load_state_dict(sd), LOOM_CONTAINS("'transformer.ln_f.bias' (shape [8]) is missing"));
  sd = a.state_dict();
  sd[0].second = zeros<float>({3, 3});
  CHECK_THROWS_WITH(b.load_state_dict(sd), LOOM_CONTAINS("'transformer.wte.weight' has shape [3, 3] in the state but [11, 8]"));
  sd = a.state_dict();
  sd.emplace_back("extra.weight", zeros<float>({1}));
  CHECK_THROWS_WITH(b.load_state_dict(sd), LOOM_CONTAINS("the model lacks, e.g. 'extra.weight'"));
  b.load_state_dict(sd, /*strict=*/false);
  CHECK(a.is_training());
  a.eval();
  CHECK_FALSE(a.h[0]->mlp.dropout.is_training());
  a.train();
  CHECK(a.h[1]->attn.resid_dropout.is_training());
#if !LOOM_WITH_CUDA
  CHECK_THROWS_AS(a.to(Device::cuda()), backend_error);
#endif
  nn::GPTConfig bad = tiny_config();
  bad.n_head = 3;
  CHECK_THROWS_WITH(nn::GPT(bad), LOOM_CONTAINS("must be a multiple of n_head"));
  CHECK_THROWS_WITH(a(zeros<int64_t>({1, 17})), LOOM_CONTAINS("longer than block_size 16"));
  CHECK_THROWS_AS(a(from_vector<int64_t>({11}, {1, 1})), index_error);
}

TEST_CASE("GPT forward: shapes and the loss at initialisation") {
  nn::GPT model(tiny_config());
  Generator g(5);
  auto idx = randint<int64_t>({3, 16}, 0, 11, g), tgt = randint<int64_t>({3, 16}, 0, 11, g);
  auto out = model(idx, tgt);
  CHECK(out.logits.shape() == Shape{3, 16, 11});
  CHECK(out.loss.dim() == 0);
  CHECK(std::fabs(out.loss.item() - std::log(11.0f)) < 0.1f);  // small weights: near-uniform predictions
  CHECK_FALSE(model(idx).loss.defined());
  tgt.at({0, 0}) = -1;  // ignored positions
  CHECK(std::isfinite(model(idx, tgt).loss.item()));
}

TEST_CASE("GPT loss() is forward's loss, value and gradients, with packed segments too") {
  nn::GPT a(tiny_config()), b(tiny_config());
  Generator g(6);
  auto idx = randint<int64_t>({3, 16}, 0, 11, g), tgt = randint<int64_t>({3, 16}, 0, 11, g);
  tgt.at({1, 2}) = -1;  // an ignored position
  auto seg = from_vector<int64_t>(std::vector<int64_t>(48, 0), {3, 16});
  for (int64_t t = 9; t < 16; ++t) seg.at({0, t}) = 1;  // row 0 packs two examples
  for (const auto& segments : {Tensor<int64_t>(), seg}) {
    Tensor<float> la = a.forward(idx, tgt, nullptr, segments).loss, lb = b.loss(idx, tgt, segments);
    CHECK(la.item() == lb.item());
    a.zero_grad(), b.zero_grad();
    la.backward(), lb.backward();
    auto pa = a.named_parameters(), pb = b.named_parameters();
    for (size_t i = 0; i < pa.size(); ++i) CHECK(pa[i].second.grad().to_vector() == pb[i].second.grad().to_vector());
  }
  CHECK_THROWS_WITH(a.loss(idx, Tensor<int64_t>()), LOOM_CONTAINS("loss() needs targets"));
  auto flat = idx.reshape({48});
  CHECK_THROWS_WITH(a.loss(flat, flat), LOOM_CONTAINS("idx must be (B, T), got [48]"));
  CHECK_THROWS_WITH(a.loss(idx, flat), LOOM_CONTAINS("targets [48] must have the shape of idx [3, 16]"));
}

TEST_CASE("GPT's residual stream, each add fused into the next norm, gives the blocks' own results") {
  // GPT adds each block's MLP output in the next block's ln_1 (or ln_f) through
  // Block::residual_forward; the reference runs every Block whole, each making its own adds.
  nn::GPT a(tiny_config()), b(tiny_config());
  Generator g(8);
  auto idx = randint<int64_t>({3, 16}, 0, 11, g), tgt = randint<int64_t>({3, 16}, 0, 11, g);
  auto reference_logits = [&] {
    Tensor<float> x = b.wte(idx) + b.wpe(arange<int64_t>(0, 16));
    for (const auto& block : b.h) x = (*block)(x);
    return matmul(b.ln_f(x), b.wte.weight.t());  // (3, 16, V)
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

TEST_CASE("GPT with recompute_blocks: the same losses and gradients from a fraction of the graph") {
  nn::GPTConfig c = tiny_config();
  c.dropout = 0.2;  // the recomputation must draw the forward's masks again
  nn::GPT plain(c), recomputed(c);
  Generator g(10);
  auto idx = randint<int64_t>({3, 16}, 0, 11, g), tgt = randint<int64_t>({3, 16}, 0, 11, g);
  loom_test::check_recompute_matches(plain, recomputed, idx, tgt, Tensor<int64_t>());
  // packed rows: each block's recomputation reads the attention bounds it captured
  auto seg = from_vector<int64_t>(std::vector<int64_t>(48, 0), {3, 16});
  for (int64_t t = 5; t < 16; ++t) seg.data()[16 + t] = 1;  // row 1: two examples, of 5 and 11 tokens
  for (int64_t t = 7; t < 16; ++t) seg.data()[t] = 1;       // row 0: 7 and 9
  loom_test::check_recompute_matches(plain, recomputed, idx, tgt, seg);
}

TEST_CASE("KV-cached decoding gives the same logits as full forward passes") {
  nn::GPT model(tiny_config());
  model.eval();
  NoGradGuard no_grad;
  auto idx = from_vector<int64_t>({3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8}, {2, 6});
  auto full_logits = model(idx).logits;  // (2, 6, V)
  auto cache = model.make_kv_cache(2, 16);
  auto first = model.forward(idx.slice(1, 0, 4), {}, &cache).logits;  // a prompt of 4 positions
  CHECK(max_abs_diff(first, full_logits.slice(1, 0, 4)) < 1e-5);
  for (int64_t t = 4; t < 6; ++t) {  // then one position at a time
    auto step = model.forward(idx.slice(1, t, t + 1), {}, &cache).logits;
    CHECK(max_abs_diff(step, full_logits.slice(1, t, t + 1)) < 1e-5);
  }
  CHECK(cache[0].len == 6);
  auto small = model.make_kv_cache(2, 5);
  CHECK_THROWS_WITH(model.forward(idx, {}, &small), LOOM_CONTAINS("the KV cache holds 5 positions; 6 needed"));
}

TEST_CASE("A tiny GPT overfits one batch") {
  nn::GPTConfig c = tiny_config();
  c.n_embd = 16, c.n_layer = 2, c.n_head = 2;
  nn::GPT model(c, 7);
  Generator g(8);
  auto idx = randint<int64_t>({4, 12}, 0, 11, g), tgt = randint<int64_t>({4, 12}, 0, 11, g);
  float first = 0, last = 0;
  // Plain gradient descent with momentum, written out: the optimizers are tested on their own.
  auto params = model.parameters();
  std::vector<Tensor<float>> vel;
  for (auto& p : params) vel.push_back(zeros<float>(p.shape()));
  for (int step = 0; step < 200; ++step) {
    auto loss = model(idx, tgt).loss;
    if (step == 0) first = loss.item();
    last = loss.item();
    model.zero_grad();
    loss.backward();
    NoGradGuard no_grad;
    for (size_t i = 0; i < params.size(); ++i) {
      vel[i].copy_(vel[i] * 0.9f + params[i].grad());
      params[i].copy_(params[i] - vel[i] * 0.05f);
    }
  }
  INFO("loss " << first << " -> " << last);
  CHECK(first > 2.0f);
  CHECK(last < 0.1f);
}
