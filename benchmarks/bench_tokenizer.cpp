// Tokenizer benchmarks (Google Benchmark):
//  - encode throughput (bytes/s) on tinyshakespeare.txt with GPT-2 (r50k) and cl100k ranks, on one
//    thread and on all threads (OpenMP), each checked against the one-thread result first;
//  - training time for vocab sizes 1k/4k/16k on 1 MB and 10 MB of text. The 1 MB corpus is the first
//    1,000,000 bytes of tinyshakespeare. Two 10 MB corpora: "shakespeare_x9" (tinyshakespeare
//    repeated: few distinct words) and "zipf_words" (words drawn from GPT-2's vocabulary with a
//    Zipf law, seeded: many distinct words, closer to web text). All with the cl100k pattern, plus
//    the "basic" trainer (no pre-tokenizer) on 1 MB and on the 10 MB zipf_words text.
//
// Data: LOOM_SHARED_DATA_DIR (set by CMake) or the LOOM_DATA_DIR environment variable must hold
// tinyshakespeare.txt and gpt2/{encoder.json,vocab.bpe,cl100k_base.tiktoken}.
//   ./bench_tokenizer --benchmark_filter=encode --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
#include <loom/io/file.hpp>
#include <loom/tokenizer.hpp>

#include <benchmark/benchmark.h>

#include <cmath>
#include <cstdlib>
#include <random>
#include <stdexcept>
#include <string>

#ifndef LOOM_SHARED_DATA_DIR
#define LOOM_SHARED_DATA_DIR "../shared/data"
#endif

namespace {

namespace tk = loom::tokenizer;

std::string data_dir() {
  const char* env = std::getenv("LOOM_DATA_DIR");
  return env ? env : LOOM_SHARED_DATA_DIR;
}

const std::string& shakespeare() {
  static const std::string s = loom::io::read_file(data_dir() + "/tinyshakespeare.txt");
  return s;
}
const loom::BpeTokenizer& gpt2() {
  static const loom::BpeTokenizer t = tk::load_gpt2(data_dir() + "/gpt2");
  return t;
}
const loom::BpeTokenizer& cl100k() {
  static const loom::BpeTokenizer t = tk::load_tiktoken(data_dir() + "/gpt2/cl100k_base.tiktoken", tk::Pattern::cl100k);
  return t;
}

/// 10 MB of tinyshakespeare repeated.
const std::string& shakespeare_10mb() {
  static const std::string s = [] {
    std::string out;
    while (out.size() < 10'000'000) out += shakespeare();
    out.resize(10'000'000);
    return out;
  }();
  return s;
}

/// 10 MB of words drawn from GPT-2's vocabulary with probability ~ 1/rank, lines of ~12 words.
const std::string& zipf_10mb() {
  static const std::string s = [] {
    std::vector<std::string> words;
    for (const std::string& t : gpt2().vocab()) {
      bool ok = t.size() >= 2;
      for (unsigned char c : t) ok = ok && c >= 0x20 && c < 0x7F;
      if (ok) words.push_back(t);
    }
    std::vector<double> w(words.size());
    for (std::size_t i = 0; i < w.size(); ++i) w[i] = 1.0 / static_cast<double>(i + 1);
    std::discrete_distribution<std::size_t> pick(w.begin(), w.end());
    std::mt19937_64 rng(42);
    std::string out;
    out.reserve(10'100'000);
    int n = 0;
    while (out.size() < 10'000'000) {
      const std::string& word = words[pick(rng)];
      if (word[0] != ' ' && !out.empty() && out.back() != '\n') out += ' ';
      out += word;
      if (++n % 12 == 0) out += (n % 96 == 0) ? ".\n\n" : "\n";
    }
    out.resize(10'000'000);
    return out;
  }();
  return s;
}

void encode_bench(benchmark::State& state, const loom::BpeTokenizer& tok) {
  const std::string& text = shakespeare();
  const int threads = static_cast<int>(state.range(0));
  const auto reference = tok.encode_ordinary(text);
  if (tok.encode_parallel(text, tk::SpecialPolicy::as_text(), threads) != reference)
    throw std::runtime_error("parallel encoding differs from the one-thread result");
  std::size_t n = 0;
  for (auto _ : state) {
    auto ids = threads == 1 ? tok.encode_ordinary(text) : tok.encode_parallel(text, tk::SpecialPolicy::as_text(), threads);
    n = ids.size();
    benchmark::DoNotOptimize(ids.data());
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * text.size()));
  state.counters["tokens"] = static_cast<double>(n);
  state.counters["MB/s"] = benchmark::Counter(static_cast<double>(text.size()) / 1e6,
                                              benchmark::Counter::kIsIterationInvariantRate);
}

void BM_encode_gpt2(benchmark::State& state) { encode_bench(state, gpt2()); }
void BM_encode_cl100k(benchmark::State& state) { encode_bench(state, cl100k()); }
BENCHMARK(BM_encode_gpt2)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_encode_cl100k)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();

void train_bench(benchmark::State& state, const std::string& text, tk::Pattern pattern = tk::Pattern::cl100k) {
  tk::TrainOptions opt;
  opt.vocab_size = static_cast<std::size_t>(state.range(0));
  opt.pattern = pattern;
  std::size_t merges = 0;
  for (auto _ : state) {
    auto tok = tk::train_bpe(text, opt);
    merges = tok.merges().size();
  }
  state.counters["merges"] = static_cast<double>(merges);
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * text.size()));
}

void BM_train_1mb(benchmark::State& state) { train_bench(state, shakespeare().substr(0, 1'000'000)); }
void BM_train_10mb_shakespeare_x9(benchmark::State& state) { train_bench(state, shakespeare_10mb()); }
void BM_train_10mb_zipf_words(benchmark::State& state) { train_bench(state, zipf_10mb()); }
// minbpe's "basic" tokenizer: no pre-tokenizer, the whole text is one sequence.
void BM_train_1mb_basic(benchmark::State& state) { train_bench(state, shakespeare().substr(0, 1'000'000), tk::Pattern::none); }
void BM_train_10mb_basic_zipf_words(benchmark::State& state) { train_bench(state, zipf_10mb(), tk::Pattern::none); }
BENCHMARK(BM_train_1mb_basic)->Arg(1024)->Arg(4096)->Arg(16384)->Unit(benchmark::kMillisecond)->Iterations(1)->UseRealTime();
BENCHMARK(BM_train_10mb_basic_zipf_words)->Arg(16384)->Unit(benchmark::kMillisecond)->Iterations(1)->UseRealTime();
BENCHMARK(BM_train_1mb)->Arg(1024)->Arg(4096)->Arg(16384)->Unit(benchmark::kMillisecond)->Iterations(1)->UseRealTime();
BENCHMARK(BM_train_10mb_shakespeare_x9)->Arg(1024)->Arg(4096)->Arg(16384)->Unit(benchmark::kMillisecond)->Iterations(1)->UseRealTime();
BENCHMARK(BM_train_10mb_zipf_words)->Arg(1024)->Arg(4096)->Arg(16384)->Unit(benchmark::kMillisecond)->Iterations(1)->UseRealTime();

}  // namespace
// main() comes from benchmark::benchmark_main.
