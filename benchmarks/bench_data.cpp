// Throughput of each stage of the data pipeline on one core, over a corpus held in memory.
//
//   bench_data PATH... [--gpt2 DIR] [--repeat N]
//
// Reads the documents once (files and folders, as loom-data does), then times each stage over
// all of them, N times (default 3), and prints the median MB/s of input text per stage:
// read (from disk, gzip included), normalise, the quality rules, PII, exact dedup, MinHash
// signatures, byte-level and (with --gpt2) GPT-2 tokenisation. Every stage runs on every
// document, so the figures do not depend on how much an earlier stage drops.
// The last line is key=value pairs.
#include <loom/data/dedup.hpp>
#include <loom/data/normalize.hpp>
#include <loom/data/pii.hpp>
#include <loom/data/pipeline.hpp>
#include <loom/data/quality.hpp>
#include <loom/data/read.hpp>
#include <loom/io/cli.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

using namespace loom;
using namespace loom::data;

namespace {

double seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// The median of `repeat` timings of f, in seconds.
double median_time(int repeat, const std::function<void()>& f) {
  std::vector<double> t;
  for (int i = 0; i < repeat; ++i) {
    double t0 = seconds();
    f();
    t.push_back(seconds() - t0);
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  try {
    std::vector<std::string> inputs;
    std::string gpt2;
    int repeat = 3;
    const char* usage = "usage: bench_data PATH... [--gpt2 DIR] [--repeat N]\n";
    int first = 1;  // the paths come first, then the options
    for (; first < argc && std::string(argv[first]).rfind("-", 0) != 0; ++first) inputs.push_back(argv[first]);
    io::OptionTable table;
    table.values["--gpt2"] = io::store(gpt2);
    table.values["--repeat"] = [&](const std::string& v) { repeat = int(io::to_integer(v, 1, 1000)); };
    auto check = [&] { LOOM_CHECK(!inputs.empty(), value_error, "no PATH given (the paths come before the options)"); };
    if (auto code = io::parse_options_or_usage(argc, argv, first, table, "bench_data", usage, check)) return *code;
    std::vector<Document> docs;
    uint64_t bytes = 0;
    const double t_read = median_time(repeat, [&] {
      docs.clear(), bytes = 0;
      CorpusReader reader(inputs, ReadOptions{"text", "id", true});
      Document d;
      while (reader.next(d)) bytes += d.text.size(), docs.push_back(std::move(d));
    });
    const double mb = double(bytes) / 1e6;
    std::printf("corpus: %zu documents, %.1f MB of text\n", docs.size(), mb);
    std::printf("%-34s %10s\n", "stage (one core)", "MB/s");
    auto row = [&](const char* name, double s) {
      std::printf("%-34s %10.1f\n", name, mb / s);
      return mb / s;
    };
    const double read = row("read", t_read);

    std::vector<std::string> norm(docs.size());
    const double normalise = row("normalise (UTF-8, NFC)", median_time(repeat, [&] {
      for (size_t i = 0; i < docs.size(); ++i) norm[i] = normalize(docs[i].text);
    }));
    const QualityOptions q = QualityOptions::parse("gopher,c4");
    uint64_t kept = 0;
    const double quality = row("quality (Gopher + C4)", median_time(repeat, [&] {
      kept = 0;
      for (const std::string& t : norm) kept += check_quality(t, q).keep;
    }));
    uint64_t found = 0;
    const double pii = row("PII scan", median_time(repeat, [&] {
      found = 0;
      for (const std::string& t : norm) found += find_pii(t).size();
    }));
    const double exact = row("exact dedup", median_time(repeat, [&] {
      ExactDedup e;
      for (size_t i = 0; i < norm.size(); ++i) e.insert(norm[i], int64_t(i));
    }));
    MinHasher hasher;
    std::vector<uint32_t> sig(size_t(hasher.options().bands * hasher.options().rows));
    const double minhash = row("MinHash signatures (14x8, 5-grams)", median_time(repeat, [&] {
      for (const std::string& t : norm) hasher.signature(t, sig.data());
    }));
    const double chain = mb / (mb / read + mb / normalise + mb / quality + mb / pii + mb / exact);
    std::printf("%-34s %10.1f\n", "read+normalise+filters+PII+exact", chain);
    const BpeTokenizer bytes_tok = load_pipeline_tokenizer("bytes");
    const double tok_bytes = row("tokenise, bytes", median_time(repeat, [&] {
      for (const std::string& t : norm) bytes_tok.encode_ordinary(t);
    }));
    double tok_gpt2 = 0;
    if (!gpt2.empty()) {
      const BpeTokenizer g = load_pipeline_tokenizer("gpt2:" + gpt2);
      tok_gpt2 = row("tokenise, GPT-2", median_time(repeat, [&] {
        for (const std::string& t : norm) g.encode_ordinary(t);
      }));
    }
    std::printf("(quality kept %llu of %zu documents; %llu PII matches)\n", (unsigned long long)kept, docs.size(),
                (unsigned long long)found);
    std::printf("final read=%.1f normalise=%.1f quality=%.1f pii=%.1f exact=%.1f minhash=%.1f chain=%.1f tokenise_bytes=%.1f"
                " tokenise_gpt2=%.1f\n",
                read, normalise, quality, pii, exact, minhash, chain, tok_bytes, tok_gpt2);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_data: %s\n", e.what());
    return 1;
  }
}
