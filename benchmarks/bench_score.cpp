// bench_score: multiple-choice items scored per second by loom's likelihood scorer
// (align::score_choices), the loom side of benchmarks/torch_score.py. Both read the same loom
// checkpoint and the same JSONL set, and score START + context + ending with the ending summed.
//
//   bench_score --ckpt FILE --data arith_mc.jsonl [--batch-size 32] [--repeats 5] [--threads N]
//               [--dump FILE]
//
// Prints `bench_score items=N sequences=S examples_per_s=X acc=A` (the median of --repeats timed
// runs after one warm-up); --dump writes one JSON line per item, {"logprobs": [...], "chosen": i},
// for torch_score.py --compare.
#include <algorithm>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include <loom/align/scoring.hpp>
#include <loom/io/cli.hpp>
#include <loom/train/trainer.hpp>
#include <loom/loom.hpp>

using namespace loom;

int main(int argc, char** argv) {
  try {
    std::string ckpt, data, dump;
    int64_t batch = 32, repeats = 5, threads = 0;
    const char* usage =
        "usage: bench_score --ckpt FILE --data FILE.jsonl [--batch-size N] [--repeats N] [--threads N] [--dump FILE]\n";
    io::OptionTable table;
    table.values["--ckpt"] = io::store(ckpt);
    table.values["--data"] = io::store(data);
    table.values["--dump"] = io::store(dump);
    table.values["--batch-size"] = [&](const std::string& v) { batch = io::to_integer(v, 1, 1 << 20); };
    table.values["--repeats"] = [&](const std::string& v) { repeats = io::to_integer(v, 1, 1000000); };
    table.values["--threads"] = [&](const std::string& v) { threads = io::to_integer(v, 0, 4096); };
    auto check = [&] { LOOM_CHECK(!ckpt.empty() && !data.empty(), value_error, "--ckpt and --data are needed"); };
    if (auto code = io::parse_options_or_usage(argc, argv, 1, table, "bench_score", usage, check)) return *code;
    if (threads > 0) set_num_threads(int(threads));
    io::Checkpoint c = io::load_checkpoint(ckpt);
    std::unique_ptr<nn::CausalLM> loaded = train::model_from_checkpoint(c);
    nn::CausalLM& model = *loaded;
    const train::TextTokenizer tok = train::TextTokenizer::from_checkpoint(c);
    const std::vector<align::ChoiceItem> items = align::read_choice_items(data);
    const align::ScoreOptions opt{batch};
    align::ChoiceScores s = align::score_choices(model, tok, items, opt);  // warm-up
    std::vector<double> rates;
    for (int64_t r = 0; r < repeats; ++r) rates.push_back(align::score_choices(model, tok, items, opt).examples_per_s());
    std::sort(rates.begin(), rates.end());
    if (!dump.empty()) {
      std::ofstream out(dump);
      for (size_t i = 0; i < items.size(); ++i) {
        out << "{\"logprobs\": [";
        for (size_t k = 0; k < s.logprobs[i].size(); ++k) {
          char buf[40];
          std::snprintf(buf, sizeof buf, "%s%.17g", k ? ", " : "", s.logprobs[i][k]);
          out << buf;
        }
        out << "], \"chosen\": " << s.chosen[i] << "}\n";
      }
      LOOM_CHECK(out.good(), io_error, dump, ": cannot write");
    }
    std::printf("bench_score items=%zu sequences=%lld examples_per_s=%.1f acc=%.4f\n", items.size(),
                (long long)s.sequences, rates[rates.size() / 2], s.acc.value());
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "bench_score: " << e.what() << "\n";
    return 1;
  }
}
