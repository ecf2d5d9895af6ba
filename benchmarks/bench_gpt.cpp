// One GPT training step (forward + backward + clipping + AdamW), timed: the loom side of
// benchmarks/run_gpt.sh, which runs benchmarks/torch_gpt.py on the same configurations.
//   bench_gpt --config A|B|C [--steps N] [--arch gpt2|llama] [--recompute]
// prints: config=A arch=gpt2 ms_per_step=... peak_rss_mb=... params=... threads=... gflop_per_step=... gflops=...
//         recompute=0
// --arch llama times the Llama-style model of the same shape and parameter count
// (train::ModelSpec: n_head / 2 key/value heads, SwiGLU 3 C, tied embeddings); --recompute sets
// the model's recompute_blocks (activations recomputed in backward, block by block).
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include <loom/io/cli.hpp>
#include <loom/loom.hpp>
#include <loom/train/models.hpp>

int main(int argc, char** argv) {
  using namespace loom;
  std::string config = "A", arch = "gpt2";
  int steps = 10;
  bool recompute = false;
  const char* usage = "usage: bench_gpt [--config A|B|C] [--arch gpt2|llama] [--steps N] [--recompute]\n";
  io::OptionTable table;
  table.values["--config"] = [&](const std::string& v) {
    LOOM_CHECK(v == "A" || v == "B" || v == "C", value_error, "option --config: '", v, "' is not A, B or C");
    config = v;
  };
  table.values["--arch"] = [&](const std::string& v) {
    LOOM_CHECK(v == "gpt2" || v == "llama", value_error, "option --arch: '", v, "' is not gpt2 or llama");
    arch = v;
  };
  table.values["--steps"] = [&](const std::string& v) { steps = int(io::to_integer(v, 1, 1000000)); };
  table.switches["--recompute"] = [&] { recompute = true; };
  if (auto code = io::parse_options_or_usage(argc, argv, 1, table, "bench_gpt", usage)) return *code;
  train::ModelSpec spec;
  nn::GPTConfig& c = spec.shape;
  int64_t B = 12;
  c.bias = false, c.dropout = 0.0;
  if (config == "A") c.vocab_size = 65, c.n_layer = 4, c.n_head = 4, c.n_embd = 128, c.block_size = 64, B = 12;
  else if (config == "B") c.vocab_size = 8192, c.n_layer = 6, c.n_head = 6, c.n_embd = 384, c.block_size = 256, B = 8;
  else c.vocab_size = 50257, c.n_layer = 12, c.n_head = 12, c.n_embd = 768, c.block_size = 1024, B = 4;  // C
  const int64_t T = c.block_size;
  spec.arch = arch;
  std::unique_ptr<nn::CausalLM> built = spec.make(1337);
  nn::CausalLM& model = *built;
  model.recompute_blocks = recompute;
  AdamWOptions o;
  o.lr = 1e-4, o.beta1 = 0.9, o.beta2 = 0.95, o.weight_decay = 0.1;
  AdamW opt(decay_groups(model.named_parameters(), 0.1), o);
  Generator g(0);
  auto x = randint<int64_t>({B, T}, 0, c.vocab_size, g), y = randint<int64_t>({B, T}, 0, c.vocab_size, g);
  std::vector<double> ms;
  for (int i = 0; i <= steps; ++i) {  // the first step warms up (allocator cache, threads)
    auto t0 = std::chrono::steady_clock::now();
    auto loss = model(x, y).loss;
    opt.zero_grad();
    loss.backward();
    clip_grad_norm(opt.params(), 1.0);
    opt.step();
    double dt = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    if (i > 0) ms.push_back(dt);
  }
  std::sort(ms.begin(), ms.end());
  double median = ms[ms.size() / 2];
  // Model FLOPs per step, nanoGPT's estimate: (6 N + 12 L NH HS T) per token, N without wpe
  // (the Llama has none).
  double N = double(model.num_parameters() - (arch == "gpt2" ? c.block_size * c.n_embd : 0));
  double flops = (6 * N + 12.0 * double(c.n_layer * c.n_embd * T)) * double(B * T);
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  std::printf("config=%s arch=%s ms_per_step=%.2f peak_rss_mb=%.0f params=%lld threads=%d gflop_per_step=%.3f gflops=%.1f "
              "recompute=%d\n",
              config.c_str(), arch.c_str(), median, double(ru.ru_maxrss) / 1024.0, (long long)model.num_parameters(),
              get_num_threads(), flops / 1e9, flops / median / 1e6, int(recompute));
  return 0;
}
