// loom's GPU benchmarks, the counterpart of benchmarks/gpu/torch_gpu.py (same shapes, same JSON
// lines): LayerNorm forward+backward, causal attention forward+backward, and GPT-2 124M training
// steps (forward, backward, clipping, AdamW) at T 1024 for every (vocabulary, batch) pair given.
//   bench_gpu [--only layernorm,attention,gemm,gpt2_step,profile] [--steps N] [--batches 16,64]
//             [--vocabs 50257,50304] [--recompute-batches 64,128] [--peak-tflops 989]
// --batches, --vocabs  comma lists (defaults 16 and 50257); gpt2_step runs bf16 for every pair and
//                      fp32 for the first pair only; a run that fails (out of memory) prints an
//                      error row and the next one goes on
// --recompute-batches  a comma list (default none): gpt2_step also runs bf16 at these batches and the
//                      first vocabulary with each block recomputed in backward (CausalLM::recompute_blocks),
//                      as rows of bench "gpt2_step_recompute"
// --peak-tflops        the GPU's dense bf16 peak, the denominator of every gpt2_step row's "mfu"
//                      (default 989, an H100/H200 SXM), fp32 rows included
// A malformed or unknown option prints a message naming it and exits with status 2.
// Each figure is the median of repeats timed with the host clock around a synchronized GPU
// region, after warm-up (the allocator cache, cuBLAS's heuristics).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include <loom/io/cli.hpp>
#include <loom/loom.hpp>

using namespace loom;

namespace {

const Device dev = Device::cuda(0);

// Median milliseconds of `reps` runs of f after `warm` unmeasured ones.
double time_ms(const std::function<void()>& f, int warm, int reps) {
  for (int i = 0; i < warm; ++i) f();
  cuda_synchronize();
  std::vector<double> ms;
  for (int i = 0; i < reps; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    f();
    cuda_synchronize();
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

Tensor<float> rnd(const Shape& s, uint64_t seed) {
  Generator g(seed);
  return randn<float>(s, g).to(dev);
}

// `s` as the inside of a JSON string: quotes, backslashes and control characters escaped.
std::string json_escape(const std::string& s) {
  std::string out;
  for (char ch : s) {
    if (ch == '"' || ch == '\\') {
      out += '\\', out += ch;
    } else if (static_cast<unsigned char>(ch) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", unsigned(static_cast<unsigned char>(ch)));
      out += buf;
    } else {
      out += ch;
    }
  }
  return out;
}

// A comma list of positive integers ("16,64"), e.g. --batches; a bad item throws as io::to_integer does.
std::vector<int64_t> positive_list(const std::string& s) {
  std::vector<int64_t> out;
  for (std::size_t start = 0;;) {
    const std::size_t end = s.find(',', start);
    out.push_back(io::to_integer(s.substr(start, end == std::string::npos ? std::string::npos : end - start), 1,
                                 int64_t(1) << 24));
    if (end == std::string::npos) return out;
    start = end + 1;
  }
}

void layernorm() {
  const int64_t N = 16384, C = 768;
  auto x = rnd({N, C}, 1).requires_grad_(), w = rnd({C}, 2).requires_grad_(), b = rnd({C}, 3).requires_grad_();
  auto dy = rnd({N, C}, 4);
  double bytes = 5.0 * double(N * C) * 4;
  double ms = time_ms([&] {
    auto y = layer_norm(x, w, b);
    y.backward(dy);
    x.zero_grad(), w.zero_grad(), b.zero_grad();
  }, 5, 50);
  std::printf("{\"bench\": \"layernorm\", \"impl\": \"loom\", \"dtype\": \"float32\", \"shape\": \"N%ldxC%ld\", \"ms\": %.4f, \"gbps\": %.1f}\n",
              long(N), long(C), ms, bytes / ms / 1e6);
  NoGradGuard ng;
  double fwd = time_ms([&] { layer_norm(x, w, b); }, 5, 50);
  std::printf("{\"bench\": \"layernorm_fwd\", \"impl\": \"loom\", \"dtype\": \"float32\", \"shape\": \"N%ldxC%ld\", \"ms\": %.4f, \"gbps\": %.1f}\n",
              long(N), long(C), fwd, 2.0 * double(N * C) * 4 / fwd / 1e6);
}

void attention() {
  const int64_t B = 16, NH = 12, T = 1024, HS = 64;
  const double fwd_flops = 4.0 * B * NH * double(T) * T * HS / 2;  // causal: half the matrix
  auto q = rnd({B, NH, T, HS}, 5).requires_grad_(), k = rnd({B, NH, T, HS}, 6).requires_grad_(),
       v = rnd({B, NH, T, HS}, 7).requires_grad_();
  auto dy = rnd({B, NH, T, HS}, 8);
  for (bool half : {true, false}) {
    AutocastGuard guard(half);
    const char* dt = half ? "bfloat16" : "float32";
    double ms = time_ms([&] {
      auto y = causal_attention(q, k, v);
      y.backward(dy);
      q.zero_grad(), k.zero_grad(), v.zero_grad();
    }, 3, half ? 20 : 5);
    std::printf("{\"bench\": \"attention\", \"impl\": \"loom\", \"dtype\": \"%s\", \"shape\": \"B%ldxNH%ldxT%ldxHS%ld\", \"ms\": %.4f, \"tflops\": %.1f}\n",
                dt, long(B), long(NH), long(T), long(HS), ms, 3.5 * fwd_flops / ms / 1e9);
    NoGradGuard ng;
    double fwd = time_ms([&] { causal_attention(q, k, v); }, 3, half ? 20 : 5);
    std::printf("{\"bench\": \"attention_fwd\", \"impl\": \"loom\", \"dtype\": \"%s\", \"shape\": \"B%ldxNH%ldxT%ldxHS%ld\", \"ms\": %.4f, \"tflops\": %.1f}\n",
                dt, long(B), long(NH), long(T), long(HS), fwd, fwd_flops / fwd / 1e9);
  }
  // The bf16 kernels alone, on bf16 inputs (what PyTorch's bf16 figures time): no conversions.
  auto q16 = q.detach().to<bf16>(), k16 = k.detach().to<bf16>(), v16 = v.detach().to<bf16>(), dy16 = dy.to<bf16>();
  auto out = empty<float>({B, NH, T, HS}, dev), lse = empty<float>({B, NH, T}, dev);
  auto dq = empty<float>({B, NH, T, HS}, dev), dk = empty<float>({B, NH, T, HS}, dev), dv = empty<float>({B, NH, T, HS}, dev);
  double kf = time_ms([&] { cuda::attention_forward_bf16(out.data(), lse.data(), q16.data(), k16.data(), v16.data(), B, NH, T, HS, 0); }, 3, 20);
  double kb = time_ms([&] {
    cuda::attention_backward_bf16(dq.data(), dk.data(), dv.data(), dy16.data(), q16.data(), k16.data(), v16.data(),
                                  out.data(), lse.data(), B, NH, T, HS, 0);
  }, 3, 20);
  std::printf("{\"bench\": \"attention\", \"impl\": \"loom-kernels\", \"dtype\": \"bfloat16\", \"shape\": \"B%ldxNH%ldxT%ldxHS%ld\", \"ms\": %.4f, \"tflops\": %.1f, \"fwd_ms\": %.4f, \"bwd_ms\": %.4f}\n",
              long(B), long(NH), long(T), long(HS), kf + kb, 3.5 * fwd_flops / (kf + kb) / 1e9, kf, kb);
  std::printf("{\"bench\": \"attention_fwd\", \"impl\": \"loom-kernels\", \"dtype\": \"bfloat16\", \"shape\": \"B%ldxNH%ldxT%ldxHS%ld\", \"ms\": %.4f, \"tflops\": %.1f}\n",
              long(B), long(NH), long(T), long(HS), kf, fwd_flops / kf / 1e9);
}

// Model FLOPs per token of one training step, nanoGPT's (PaLM's) estimate: 6 N for the products with the weights,
// forward and backward, plus 12 L H Q T for attention's (the causal mask not subtracted); N = all parameters.
double flops_per_token(int64_t n_params, const nn::GPTConfig& c, int64_t T) {
  return 6.0 * double(n_params) + 12.0 * double(c.n_layer * c.n_head * (c.n_embd / c.n_head) * T);
}

// The bench name of a gpt2_step row: with each block recomputed in backward or not.
const char* gpt2_bench(bool recompute) { return recompute ? "gpt2_step_recompute" : "gpt2_step"; }

// One GPT-2 124M training step at batch B, T 1024 and vocabulary V, bf16 autocast or fp32, with each block
// recomputed in backward or not: one JSON row with the median ms, tokens/s and MFU (model FLOP/s over
// `peak_tflops`; the recomputed forward is not counted).
void gpt2_step(int steps, bool half, int64_t B, int64_t V, double peak_tflops, bool recompute) {
  nn::GPTConfig c;  // GPT-2 124M
  c.vocab_size = V, c.block_size = 1024, c.n_layer = 12, c.n_head = 12, c.n_embd = 768, c.bias = true, c.dropout = 0;
  const int64_t T = 1024;
  nn::GPT model(c);
  model.to(dev);
  model.recompute_blocks = recompute;
  AdamWOptions o;
  o.lr = 6e-4, o.beta1 = 0.9, o.beta2 = 0.95, o.weight_decay = 0.1;
  AdamW opt(decay_groups(model.named_parameters(), 0.1), o);
  Generator g(0);
  auto x = randint<int64_t>({B, T}, 0, c.vocab_size, g).to(dev), y = randint<int64_t>({B, T}, 0, c.vocab_size, g).to(dev);
  float loss_value = 0;
  auto step = [&] {
    Tensor<float> loss;
    {
      AutocastGuard guard(half);
      loss = model.loss(x, y);  // what the trainer calls
    }
    opt.zero_grad();
    loss.backward();
    clip_grad_norm(opt.params(), 1.0);
    opt.step();
    loss_value = loss.item();
  };
  cuda::reset_peak_memory(0);
  double ms = time_ms(step, 2, steps);
  auto mem = cuda_memory_stats(0);
  const double tokens_per_s = double(B * T) / ms * 1e3;
  const double mfu = flops_per_token(model.num_parameters(), c, T) * tokens_per_s / (peak_tflops * 1e12);
  std::printf(
      "{\"bench\": \"%s\", \"impl\": \"loom-%s\", \"dtype\": \"%s\", \"shape\": \"B%ldxT%ldxV%ld\", "
      "\"vocab\": %ld, \"batch\": %ld, \"ms\": %.2f, \"tokens_per_s\": %.0f, \"mfu\": %.4f, "
      "\"peak_tflops\": %.1f, \"loss\": %.4f, \"peak_mem_gb\": %.2f, \"params\": %lld}\n",
      gpt2_bench(recompute), half ? "bf16" : "fp32", half ? "bfloat16" : "float32", long(B), long(T), long(V), long(V),
      long(B), ms, tokens_per_s, mfu, peak_tflops, loss_value, double(mem.peak) / 1e9,
      (long long)model.num_parameters());
}

// The gpt2_step runs: bf16 for every (vocabulary, batch) pair, fp32 (slow) for the first pair only, then bf16
// with recomputation at each of `recompute_batches` and the first vocabulary. A run that throws (out of memory at
// a large batch) prints an error row and the next run goes on; after every run the allocator's cached blocks go
// back to the driver, so that one run's cache does not crowd the next.
void gpt2_steps(int steps, const std::vector<int64_t>& batches, const std::vector<int64_t>& vocabs,
                const std::vector<int64_t>& recompute_batches, double peak_tflops) {
  auto run = [&](bool half, int64_t B, int64_t V, bool recompute) {
    try {
      gpt2_step(half ? steps : std::max(2, steps / 2), half, B, V, peak_tflops, recompute);
    } catch (const std::exception& e) {
      std::printf(
          "{\"bench\": \"%s\", \"impl\": \"loom-%s\", \"dtype\": \"%s\", \"shape\": "
          "\"B%ldxT1024xV%ld\", \"vocab\": %ld, \"batch\": %ld, \"error\": \"%s\"}\n",
          gpt2_bench(recompute), half ? "bf16" : "fp32", half ? "bfloat16" : "float32", long(B), long(V), long(V),
          long(B), json_escape(e.what()).c_str());
    }
    std::fflush(stdout);
    cuda::empty_cache(0);  // the run's model, optimizer and activations are out of scope by now
  };
  for (size_t v = 0; v < vocabs.size(); ++v) {
    for (size_t b = 0; b < batches.size(); ++b) {
      run(true, batches[b], vocabs[v], false);
      if (v == 0 && b == 0) run(false, batches[b], vocabs[v], false);
    }
  }
  for (int64_t B : recompute_batches) run(true, B, vocabs[0], true);
}

// cuBLAS through loom at the GPT-2 step's shapes: bf16 operands (already converted), fp32
// output; TFLOP/s of the GEMM alone.
void gemm_shapes() {
  struct S { int64_t M, K, N; const char* what; };
  for (S s : {S{16384, 768, 2304, "c_attn"}, S{16384, 768, 3072, "c_fc"}, S{16384, 3072, 768, "mlp.c_proj"},
              S{16384, 768, 50257, "lm_head"}, S{16384, 768, 50264, "lm_head padded"}}) {
    auto a = rnd({s.M, s.K}, 9).to<bf16>(), w = rnd({s.N, s.K}, 10).to<bf16>();
    auto wt = w.transpose(0, 1);
    double ms = time_ms([&] { detail::product(a, wt); }, 3, 10);
    std::printf("{\"bench\": \"gemm\", \"impl\": \"loom\", \"dtype\": \"bfloat16\", \"shape\": \"%ldx%ldx%ld %s\", \"ms\": %.4f, \"tflops\": %.1f}\n",
                long(s.M), long(s.K), long(s.N), s.what, ms, 2.0 * s.M * s.K * s.N / ms / 1e9);
  }
}

// Where one GPT-2 step's time goes: the forward run module by module and the backward op by op
// (autograd's profiler), each timed between two device synchronizations, then clipping and
// AdamW. Synchronizing after every op removes the overlap of host and GPU, so the parts add up
// to more than a normal step; they show the shares. Printed as text to stderr.
void profile_step(bool half) {
  nn::GPTConfig c;
  c.vocab_size = 50257, c.block_size = 1024, c.n_layer = 12, c.n_head = 12, c.n_embd = 768, c.bias = true, c.dropout = 0;
  const int64_t B = 16, T = 1024, C = c.n_embd;
  nn::GPT model(c);
  model.to(dev);
  AdamWOptions o;
  AdamW opt(decay_groups(model.named_parameters(), 0.1), o);
  Generator g(0);
  auto x = randint<int64_t>({B, T}, 0, c.vocab_size, g).to(dev), y = randint<int64_t>({B, T}, 0, c.vocab_size, g).to(dev);
  std::vector<std::pair<std::string, double>> parts;
  auto timed = [&](const std::string& name, auto f) {
    cuda_synchronize();
    auto t0 = std::chrono::steady_clock::now();
    auto r = f();
    cuda_synchronize();
    double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    for (auto& [n, v] : parts)
      if (n == name) return v += ms, r;
    parts.emplace_back(name, ms);
    return r;
  };
  for (int rep = 0; rep < 3; ++rep) {  // the last repeat is reported
    parts.clear();
    autograd::set_profiling(rep == 2);
    autograd::backward_profile().sync = [] { cuda_synchronize(); };
    opt.zero_grad();
    Tensor<float> loss;
    {
      AutocastGuard guard(half);
      auto pos = arange<int64_t>(0, double(T)).to(dev);
      auto h = timed("fwd embeddings", [&] { return model.wte(x) + model.wpe(pos); });
      for (auto& blk : model.h) {
        auto a = timed("fwd ln_1", [&] { return blk->ln_1(h); });
        auto qkv = timed("fwd attn.c_attn (matmul+bias)", [&] { return blk->attn.c_attn(a); });
        auto att = timed("fwd attention", [&] { return causal_attention_packed(qkv, c.n_head); });
        auto p = timed("fwd attn.c_proj", [&] { return blk->attn.c_proj(att); });
        // the residual add and ln_2 in one op, as Block runs them
        auto [h2, b] = timed("fwd residual add + ln_2", [&] {
          return add_layer_norm(h, p, blk->ln_2.weight, blk->ln_2.bias, blk->ln_2.eps);
        });
        h = h2;
        auto f = timed("fwd mlp.c_fc", [&] { return blk->mlp.c_fc(b); });
        auto ge = timed("fwd gelu", [&] { return gelu(f, GeluApprox::tanh); });
        auto m = timed("fwd mlp.c_proj", [&] { return blk->mlp.c_proj(ge); });
        h = timed("fwd residual adds", [&] { return h + m; });
      }
      auto hf = timed("fwd ln_f", [&] { return model.ln_f(h); });
      // the logits and the loss in one op, as GPT::loss computes them
      loss = timed("fwd lm_head + cross_entropy", [&] {
        return linear_cross_entropy(hf.reshape({B * T, C}), model.wte.weight, y.reshape({B * T}), -1);
      });
    }
    timed("backward (all)", [&] { loss.backward(); return 0; });
    timed("clip_grad_norm", [&] { return clip_grad_norm(opt.params(), 1.0); });
    timed("adamw", [&] { opt.step(); return 0; });
  }
  autograd::set_profiling(false);
  std::fprintf(stderr, "\n--- profile of one GPT-2 step, %s, synchronized after every part ---\n", half ? "bf16" : "fp32");
  double total = 0;
  for (auto& [n, v] : parts) total += v;
  for (auto& [n, v] : parts) std::fprintf(stderr, "%-34s %9.3f ms\n", n.c_str(), v);
  std::fprintf(stderr, "%-34s %9.3f ms\n%s", "total", total, autograd::profile_report().c_str());
}

}  // namespace

int main(int argc, char** argv) {
  std::string only = "layernorm,attention,gpt2_step";
  int steps = 10;
  std::vector<int64_t> batches = {16}, vocabs = {50257}, recompute_batches;
  double peak_tflops = 989.0;  // dense bf16, H100/H200 SXM
  const char* usage =
      "usage: bench_gpu [--only layernorm,attention,gemm,gpt2_step,profile] [--steps N] [--batches 16,64]\n"
      "                 [--vocabs 50257,50304] [--recompute-batches 64,128] [--peak-tflops 989]\n";
  io::OptionTable table;
  table.values["--only"] = io::store(only);
  table.values["--steps"] = [&](const std::string& v) { steps = int(io::to_integer(v, 1, 1000000)); };
  table.values["--batches"] = [&](const std::string& v) { batches = positive_list(v); };
  table.values["--vocabs"] = [&](const std::string& v) { vocabs = positive_list(v); };
  table.values["--recompute-batches"] = [&](const std::string& v) { recompute_batches = positive_list(v); };
  table.values["--peak-tflops"] = [&](const std::string& v) {
    peak_tflops = io::to_number(v);
    LOOM_CHECK(peak_tflops > 0, value_error, "option --peak-tflops: '", v, "' is not a positive number");
  };
  if (auto code = io::parse_options_or_usage(argc, argv, 1, table, "bench_gpu", usage)) return *code;
  if (!cuda_is_available()) {
    std::fprintf(stderr, "bench_gpu: no CUDA device\n");
    return 77;
  }
  std::fprintf(stderr, "bench_gpu on %s\n", cuda::device_name(0).c_str());
  auto want = [&](const char* b) { return ("," + only + ",").find(std::string(",") + b + ",") != std::string::npos; };
  auto guarded = [](const char* name, const std::function<void()>& f) {
    try {
      f();
    } catch (const std::exception& e) {
      std::printf("{\"bench\": \"%s\", \"impl\": \"loom\", \"error\": \"%s\"}\n", name, json_escape(e.what()).c_str());
    }
    std::fflush(stdout);
  };
  if (want("layernorm")) guarded("layernorm", layernorm);
  if (want("attention")) guarded("attention", attention);
  if (want("gemm")) guarded("gemm", gemm_shapes);
  if (want("profile")) {
    guarded("profile", [] { profile_step(true); });
  }
  if (want("gpt2_step"))
    guarded("gpt2_step", [&] { gpt2_steps(steps, batches, vocabs, recompute_batches, peak_tflops); });
  return 0;
}
