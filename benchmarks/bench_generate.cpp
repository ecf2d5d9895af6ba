// Generated tokens/s of loom's batched sampler (train::generate_batch), at several batch sizes:
// the loom side of benchmarks/torch_generate.py, with the same model and the same flags.
//
//   bench_generate [--batch 1,64] [--prompt 16] [--new 96] [--repeats 5] [--threads 2] [--seed 1337]
//                  [--vocab 261] [--n-layer 4] [--n-head 4] [--n-embd 128] [--block-size 128]
//
// The model is the "char" preset as the chat demo uses it (vocab 261, 4 layers, 4 heads, C 128,
// block 128, no biases, no dropout, random init with a fixed seed). Per batch size B: B random
// prompts of --prompt ids (seeded), then one generate_batch call per run that samples --new tokens
// per row at temperature 1 (top_k 0, top_p 1, no stop token), each row drawing from its own
// Generator. Time = the whole call (cache allocation and prefill included); tokens/s =
// B * new / time, the median of --repeats timed runs after one warm-up run. Every run's output is
// checked (B rows of --new ids in [0, vocab)) before its time counts.
//
// Prints `bench_generate batch=B tokens_per_s=X ms_per_token_step=Y min=... max=...` per batch
// size (min/max: the slowest and fastest run's tokens/s), then
// `final batch1_tokens_per_s=... batch64_tokens_per_s=... ratio=...` (ratio = the largest batch's
// tokens/s over the smallest's).
#include <loom/config.hpp>
#include <loom/io/cli.hpp>
#include <loom/nn/gpt.hpp>
#include <loom/train/sample.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

using namespace loom;

namespace {

double seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

std::vector<int64_t> batch_list(const std::string& s) {
  std::vector<int64_t> out;
  size_t start = 0;
  while (start <= s.size()) {
    size_t end = s.find(',', start);
    if (end == std::string::npos) end = s.size();
    const std::string part = s.substr(start, end - start);
    if (!part.empty()) out.push_back(io::to_integer(part));
    start = end + 1;
  }
  LOOM_CHECK(!out.empty() && *std::min_element(out.begin(), out.end()) >= 1, value_error,
             "option --batch: batch sizes must be >= 1, got '", s, "'");
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    std::vector<int64_t> batches = {1, 64};
    int64_t prompt = 16, new_tokens = 96, repeats = 5, threads = 2, seed = 1337;
    nn::GPTConfig cfg;
    cfg.vocab_size = 261, cfg.block_size = 128, cfg.n_layer = 4, cfg.n_head = 4, cfg.n_embd = 128;
    cfg.bias = false, cfg.dropout = 0.0;
    const char* usage =
        "usage: bench_generate [--batch 1,64] [--prompt 16] [--new 96] [--repeats 5] [--threads 2] [--seed 1337]\n"
        "                      [--vocab 261] [--n-layer 4] [--n-head 4] [--n-embd 128] [--block-size 128]\n";
    io::OptionTable table;
    table.values["--batch"] = [&](const std::string& v) { batches = batch_list(v); };
    for (auto [name, dst] : {std::pair{"--prompt", &prompt}, {"--new", &new_tokens}, {"--repeats", &repeats},
                             {"--threads", &threads}, {"--seed", &seed}, {"--vocab", &cfg.vocab_size},
                             {"--n-layer", &cfg.n_layer}, {"--n-head", &cfg.n_head}, {"--n-embd", &cfg.n_embd},
                             {"--block-size", &cfg.block_size}})
      table.values[name] = io::store(*dst);
    if (auto code = io::parse_options_or_usage(argc, argv, 1, table, "bench_generate", usage)) return *code;
    LOOM_CHECK(prompt >= 1 && new_tokens >= 1 && repeats >= 1 && threads >= 1, value_error,
               "--prompt, --new, --repeats and --threads must be >= 1");
    LOOM_CHECK(prompt + new_tokens <= cfg.block_size, value_error, "--prompt ", prompt, " + --new ",
               new_tokens, " exceed --block-size ", cfg.block_size);
    LOOM_CHECK(cfg.n_head > 0 && cfg.n_embd % cfg.n_head == 0, value_error, "--n-embd ", cfg.n_embd,
               " is not a multiple of --n-head ", cfg.n_head);
    set_num_threads(int(threads));

    nn::GPT model(cfg, uint64_t(seed));
    model.eval();
    train::SamplingOptions opt;  // temperature 1, top_k 0, top_p 1
    Generator prompt_gen(uint64_t(seed) + 2);
    std::map<int64_t, double> rates;
    for (int64_t B : batches) {
      const Tensor<int64_t> ids = randint<int64_t>({B, prompt}, 0, cfg.vocab_size, prompt_gen);
      std::vector<std::vector<int64_t>> prompts(static_cast<size_t>(B));
      for (int64_t b = 0; b < B; ++b) prompts[size_t(b)].assign(ids.data() + b * prompt, ids.data() + (b + 1) * prompt);
      std::vector<Generator> gens;  // row b: its own stream, continued across runs
      for (int64_t b = 0; b < B; ++b) gens.emplace_back(uint64_t(seed) * 1000003u + uint64_t(b));
      std::vector<double> times;
      for (int64_t r = 0; r <= repeats; ++r) {  // run 0 warms up
        const double t0 = seconds();
        const std::vector<std::vector<int64_t>> out = train::generate_batch(model, prompts, new_tokens, opt, gens);
        const double t = seconds() - t0;
        LOOM_CHECK(int64_t(out.size()) == B, value_error, out.size(), " rows back, expected ", B);
        for (const auto& row : out) {
          LOOM_CHECK(int64_t(row.size()) == new_tokens, value_error, "a row has ", row.size(),
                     " new tokens, expected ", new_tokens);
          for (int64_t id : row)
            LOOM_CHECK(id >= 0 && id < cfg.vocab_size, value_error, "sampled id ", id, " out of range");
        }
        if (r > 0) times.push_back(t);
      }
      std::sort(times.begin(), times.end());
      const double med = times.size() % 2 ? times[times.size() / 2]
                                          : 0.5 * (times[times.size() / 2 - 1] + times[times.size() / 2]);
      const double tok = double(B * new_tokens);
      rates[B] = tok / med;
      std::printf("bench_generate batch=%lld tokens_per_s=%.1f ms_per_token_step=%.3f min=%.1f max=%.1f\n",
                  (long long)B, rates[B], med / double(new_tokens) * 1e3, tok / times.back(), tok / times.front());
      std::fflush(stdout);
    }
    std::printf("final");
    for (int64_t B : batches) std::printf(" batch%lld_tokens_per_s=%.1f", (long long)B, rates[B]);
    if (batches.size() > 1) std::printf(" ratio=%.2f", rates[batches.back()] / rates[batches.front()]);
    std::printf(" prompt=%lld new=%lld threads=%d params=%lld\n", (long long)prompt, (long long)new_tokens,
                get_num_threads(), (long long)model.num_parameters());
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_generate: %s\n", e.what());
    return 1;
  }
}
