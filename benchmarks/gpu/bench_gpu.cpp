// loom's GPU benchmarks, the counterpart of benchmarks/gpu/torch_gpu.py (same shapes, same JSON
// lines): LayerNorm forward+backward, causal attention forward+backward, and one GPT-2 124M
// training step (forward, backward, clipping, AdamW) at B 16, T 1024.
//   bench_gpu [--only layernorm,attention,gpt2_step] [--steps N]
// Each figure is the median of repeats timed with the host clock around a synchronized GPU
// region, after warm-up (the allocator cache, cuBLAS's heuristics).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

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

void gpt2_step(int steps, bool half) {
  nn::GPTConfig c;  // GPT-2 124M
  c.vocab_size = 50257, c.block_size = 1024, c.n_layer = 12, c.n_head = 12, c.n_embd = 768, c.bias = true, c.dropout = 0;
  const int64_t B = 16, T = 1024;
  nn::GPT model(c);
  model.to(dev);
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
      loss = model(x, y).loss;
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
  std::printf("{\"bench\": \"gpt2_step\", \"impl\": \"loom-%s\", \"dtype\": \"%s\", \"shape\": \"B%ldxT%ld\", \"ms\": %.2f, \"tokens_per_s\": %.0f, \"loss\": %.4f, \"peak_mem_gb\": %.2f, \"params\": %lld}\n",
              half ? "bf16" : "fp32", half ? "bfloat16" : "float32", long(B), long(T), ms, double(B * T) / ms * 1e3,
              loss_value, double(mem.peak) / 1e9, (long long)model.num_parameters());
}

}  // namespace

int main(int argc, char** argv) {
  std::string only = "layernorm,attention,gpt2_step";
  int steps = 10;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--only")) only = argv[i + 1];
    if (!std::strcmp(argv[i], "--steps")) steps = std::atoi(argv[i + 1]);
  }
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
      std::printf("{\"bench\": \"%s\", \"impl\": \"loom\", \"error\": \"%s\"}\n", name, e.what());
    }
    std::fflush(stdout);
  };
  if (want("layernorm")) guarded("layernorm", layernorm);
  if (want("attention")) guarded("attention", attention);
  if (want("gpt2_step")) {
    guarded("gpt2_step", [&] { gpt2_step(steps, true); });
    guarded("gpt2_step", [&] { gpt2_step(std::max(2, steps / 2), false); });
  }
  return 0;
}
