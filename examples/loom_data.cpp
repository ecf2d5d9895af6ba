// loom-data: raw text in, clean, deduplicated, split, tokenised shards out.
//
//   loom-data run --input PATH... --out DIR [options]
//   loom-data show DIR [--split train|val|test] [--n N]
//
// `run` reads plain text files (one document each), JSON Lines (a "text" field) and gzip of
// either, whole folders recursively; normalises, filters (Gopher, C4), scrubs PII, removes exact
// and near duplicates (MinHash), splits train/val/test, removes train documents that overlap val
// or test, and writes llm.c token shards that `loom-train --data DIR` streams:
//   DIR/train_000000.bin ... DIR/val_*.bin DIR/test_*.bin   tokens (llm.c's shard format)
//   DIR/index.jsonl     one line per kept document: id, split, shard, offset, tokens
//   DIR/rejects.jsonl   one line per dropped document: id, reason (and what it duplicates)
//   DIR/report.json     counts, reasons, PII, tokens per split, throughput
//   DIR/tokenizer.loom  the tokenizer the shards were written with
// An interrupted run started again with the same options skips the stages it finished.
// `show` prints the first documents of a split, decoded from the shards.
// The last line on stdout is key=value pairs that scripts can read.
//
// Under MPI, `mpirun -np N loom-data run ...` splits the work over N processes (each reads the
// input and cleans, hashes, signs and tokenises every N-th document; duplicates are found across
// the ranks) and writes the same files as one process; rank 0 writes them and prints.

#include <loom/data/pipeline.hpp>
#include <loom/dist/dist.hpp>
#include <loom/dist/pipeline.hpp>
#include <loom/io/cli.hpp>
#include <loom/tokenizer.hpp>

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <vector>

using namespace loom;

namespace {

const char* usage =
    "usage: loom-data run --input PATH... --out DIR [options]\n"
    "       loom-data show DIR [--split train|val|test] [--n N]\n"
    "\n"
    "run: turn raw text into clean, deduplicated, split, tokenised shards\n"
    "  --input PATH...        files and folders: .txt (one document per file), .jsonl/.json/.ndjson\n"
    "                         (one document per line), either gzip-compressed\n"
    "  --out DIR              output folder\n"
    "  --text-field NAME      JSONL field with the text (default text)\n"
    "  --tokenizer SPEC       bytes (default) | gpt2:DIR | tiktoken:FILE:gpt2|cl100k | loom:FILE\n"
    "  --split A,B,C          train,val,test fractions (default 0.98,0.01,0.01)\n"
    "  --quality LIST         gopher,c4 (default) | gopher | c4 | gopher_quality | gopher_repetition | none\n"
    "  --pii MODE             redact (default) | drop | keep\n"
    "  --dedup LIST           exact,minhash (default) | exact | minhash | none\n"
    "  --minhash-bands N      LSH bands (default 14)\n"
    "  --minhash-rows N       hashes per band (default 8)\n"
    "  --ngram N              words per MinHash shingle (default 5)\n"
    "  --minhash-threshold X  join candidates whose signatures agree on at least X (default 0.7; 0: all)\n"
    "  --decontaminate N      drop train documents sharing an N-word sequence with val/test (default 13; 0: off)\n"
    "  --shard-tokens N       tokens per shard (default 100000000)\n"
    "  --threads N            (default: all cores; under mpirun, a share of them per rank)\n"
    "  --seed N               seed of the split hash (default 1337)\n"
    "  --on-error skip|fail   a bad file or line: skip it (counted in the report) or stop (default fail)\n"
    "  --no-nfc               skip Unicode NFC normalisation\n"
    "  --fresh                redo every stage, ignoring an earlier run's finished stages\n"
    "  --quiet                no progress bar\n";

/// A bar for the current stage, redrawn in place on a terminal (stderr), silent in a pipe.
struct StageBar {
  bool tty = isatty(2) != 0, quiet = false;
  std::string stage;
  double last = -1;
  void operator()(const std::string& s, uint64_t done, uint64_t total) {
    if (quiet || !tty) return;
    const double frac = total ? std::min(1.0, double(done) / double(total)) : 1.0;
    if (s == stage && frac - last < 0.01 && frac < 1.0) return;
    if (s != stage && !stage.empty()) std::fputc('\n', stderr);
    stage = s, last = frac;
    const int width = 30, fill = int(frac * width);
    std::fprintf(stderr, "\r%-8s [%s%s] %5.1f%%", s.c_str(), std::string(size_t(fill), '#').c_str(),
                 std::string(size_t(width - fill), '.').c_str(), 100 * frac);
    std::fflush(stderr);
  }
  void end() {
    if (!stage.empty() && tty && !quiet) std::fputc('\n', stderr);
  }
};

int64_t count_of(const io::Json& obj, const char* key) {
  const io::Json* v = obj.find(key);
  return v ? v->as_int() : 0;
}

int run(int argc, char** argv, dist::Communicator& comm) {
  const bool root = comm.rank() == 0;  // under mpirun only rank 0 prints
  data::PipelineOptions o;
  StageBar bar;
  bar.quiet = !root;
  io::OptionTable table;
  auto& flags = table.values;  // --name VALUE
  using io::store;
  flags["--out"] = store(o.out);
  flags["--text-field"] = store(o.read.text_field);
  flags["--tokenizer"] = store(o.tokenizer);
  flags["--split"] = store(o.split);
  flags["--quality"] = store(o.quality);
  flags["--pii"] = [&](const std::string& v) { o.pii = data::parse_pii_mode(v); };
  flags["--dedup"] = store(o.dedup);
  flags["--minhash-bands"] = store(o.minhash.bands);
  flags["--minhash-rows"] = store(o.minhash.rows);
  flags["--ngram"] = store(o.minhash.ngram);
  flags["--minhash-threshold"] = store(o.minhash.threshold);
  flags["--decontaminate"] = store(o.decontamination_ngram);
  flags["--shard-tokens"] = store(o.shard_tokens);
  flags["--threads"] = store(o.threads);
  flags["--seed"] = store(o.seed);
  flags["--on-error"] = [&](const std::string& v) {
    LOOM_CHECK(v == "skip" || v == "fail", value_error, "--on-error must be skip or fail, got '", v, "'");
    o.read.skip_errors = v == "skip";
  };
  table.switches["--no-nfc"] = [&] { o.nfc = false; };
  table.switches["--fresh"] = [&] { o.fresh = true; };
  table.switches["--quiet"] = [&] { bar.quiet = true; };
  table.lists["--input"] = [&](const std::string& v) { o.inputs.push_back(v); };  // one or more paths
  if (!io::parse_options(argc, argv, 2, table, "loom-data run")) {
    if (root) std::cout << usage;
    return 0;
  }
  LOOM_CHECK(!o.inputs.empty(), usage_error, "--input PATH... is required (see --help)");
  LOOM_CHECK(!o.out.empty(), usage_error, "--out DIR is required (see --help)");
  o.threads = dist::threads_per_rank(o.threads, comm.size());  // --threads, or a share of the cores

  io::Json r = dist::run_pipeline(o, comm, std::ref(bar));
  bar.end();
  if (!root) return 0;

  // --- the human summary ---------------------------------------------------------------------
  const io::Json& in = r.at("input");
  const io::Json& kept = r.at("kept");
  const io::Json& t = r.at("timing");
  std::printf("input: %lld documents, %.2f MB in %lld files%s\n", (long long)in.at("documents_in").as_int(),
              double(in.at("bytes_in").as_int()) / 1e6, (long long)in.at("files").as_int(),
              in.at("read_errors").as_int() ? (", " + std::to_string(in.at("read_errors").as_int()) + " unreadable (skipped)").c_str() : "");
  std::printf("dropped:");
  int64_t dropped = 0;
  for (const auto& [reason, n] : r.at("dropped").as_object()) std::printf(" %s %lld,", reason.c_str(), (long long)n.as_int()), dropped += n.as_int();
  std::printf(" %lld in all\n", (long long)dropped);
  std::printf("pii (%s):", r.at("pii_mode").as_string().c_str());
  for (const auto& [type, n] : r.at("pii").as_object()) std::printf(" %s %lld", type.c_str(), (long long)n.as_int());
  std::printf("\n");
  for (const char* s : {"train", "val", "test"}) {
    const io::Json& k = kept.at(s);
    std::printf("%-5s: %lld documents, %.2f MB, %lld tokens in %lld shard(s)\n", s, (long long)k.at("documents").as_int(),
                double(k.at("bytes").as_int()) / 1e6, (long long)k.at("tokens").as_int(), (long long)k.at("shards").as_int());
  }
  const std::string ranks = t.contains("ranks") ? std::to_string(t.at("ranks").as_int()) + " ranks x " : "";
  std::printf("time: scan %.2f s (%.1f MB/s), near-dup %.2f s, split %.2f s, shards %.2f s on %s%lld thread(s); peak memory %.0f MB\n",
              t.at("scan_s").as_double(), in.at("mb_per_s").as_double(), t.at("neardup_s").as_double(),
              t.at("split_s").as_double(), t.at("shards_s").as_double(), ranks.c_str(), (long long)t.at("threads").as_int(),
              double(r.at("peak_rss_bytes").as_int()) / 1e6);
  std::printf("wrote %s/{train,val,test}_*.bin, index.jsonl, rejects.jsonl, report.json, tokenizer.loom\n", o.out.c_str());
  std::printf("final documents_in=%lld kept=%lld dropped=%lld train_tokens=%lld val_tokens=%lld test_tokens=%lld mb_per_s=%.2f\n",
              (long long)in.at("documents_in").as_int(),
              (long long)(count_of(kept.at("train"), "documents") + count_of(kept.at("val"), "documents") +
                          count_of(kept.at("test"), "documents")),
              (long long)dropped, (long long)kept.at("train").at("tokens").as_int(),
              (long long)kept.at("val").at("tokens").as_int(), (long long)kept.at("test").at("tokens").as_int(),
              t.at("mb_per_s").as_double());
  return 0;
}

int show(int argc, char** argv) {
  LOOM_CHECK(argc >= 3, usage_error, "usage: loom-data show DIR [--split train|val|test] [--n N]");
  const std::string dir = argv[2];
  std::string split = "train";
  int64_t n = 3;
  io::OptionTable table;
  table.values["--split"] = io::store(split);
  table.values["--n"] = io::store(n);
  if (!io::parse_options(argc, argv, 3, table, "loom-data show")) {
    std::cout << "usage: loom-data show DIR [--split train|val|test] [--n N]\n";
    return 0;
  }
  const BpeTokenizer tok = tokenizer::load(dir + "/tokenizer.loom");
  const data::TokenShards shards(dir, split);
  std::vector<std::string> lines;
  {
    const std::string index = io::read_file(dir + "/index.jsonl");
    size_t pos = 0, line_no = 0;
    int64_t shown = 0;
    std::vector<int64_t> starts = {0};
    for (size_t f = 0; f < shards.num_files(); ++f) starts.push_back(starts.back() + shards.file(f).size());
    while (pos < index.size() && shown < n) {
      size_t end = index.find('\n', pos);
      if (end == std::string::npos) end = index.size();
      ++line_no;
      io::Json j = io::parse_json(std::string_view(index).substr(pos, end - pos), {}, dir + "/index.jsonl:" + std::to_string(line_no));
      pos = end + 1;
      if (j.at("split").as_string() != split) continue;
      const int64_t shard = j.at("shard").as_int(), offset = j.at("offset").as_int(), count = j.at("tokens").as_int();
      LOOM_CHECK(shard >= 0 && size_t(shard) < shards.num_files(), io_error, dir, "/index.jsonl:", line_no, ": shard ", shard,
                 " does not exist");
      std::vector<uint32_t> ids(static_cast<size_t>(count));
      shards.copy(starts[size_t(shard)] + offset, count, ids.data());
      std::printf("--- %s (%lld tokens)\n%s\n", j.at("id").as_string().c_str(), (long long)count, tok.decode(ids).c_str());
      ++shown;
    }
  }
  std::printf("final split=%s tokens=%lld shards=%zu\n", split.c_str(), (long long)shards.size(), shards.num_files());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::unique_ptr<dist::Communicator> comm;  // `run` only: MPI under mpirun, else one process
  try {
    const std::string cmd = argc > 1 ? argv[1] : "";
    if (cmd == "run") {
      comm = dist::make_communicator("auto");
      return run(argc, argv, *comm);
    }
    if (cmd == "show") return show(argc, argv);
    if (cmd == "--help" || cmd == "-h") {
      std::cout << usage;
      return 0;
    }
    std::cerr << usage;
    return 2;
  } catch (const std::exception& e) {
    if (comm && comm->size() > 1) {  // the other ranks would wait for this one: stop them all
      std::cerr << "\nloom-data: rank " << comm->rank() << ": error: " << e.what() << std::endl;
      comm->abort(io::exit_status(e));
    }
    std::cerr << "\nloom-data: error: " << e.what() << "\n";
    return io::exit_status(e);  // 2 for a usage error
  }
}
