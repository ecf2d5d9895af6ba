// Token shards (data/shards.hpp) and the whole pipeline (data/pipeline.hpp) on a generated corpus:
// planted duplicates, near-duplicates, PII, low-quality pages and bad lines end where they should,
// the shards decode to exactly the kept documents (read back here and by an independent reader of
// llm.c's format in Python), the output does not depend on the thread count, a second run
// skips the stages the first one finished, and loom-data under mpirun writes the same files.
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "catch.hpp"
#include "temp_dir.hpp"

#include <loom/data/pipeline.hpp>
#include <loom/data/shards.hpp>
#include <loom/train/data.hpp>

#include "programs.hpp"

using namespace loom;
using namespace loom::data;
namespace fs = std::filesystem;

namespace {

using loom_test::TempDir;

using loom_test::write_file;

std::string read_bytes(const std::string& path) { return io::read_file(path); }

std::vector<io::Json> read_jsonl(const std::string& path) {
  std::vector<io::Json> out;
  const std::string s = io::read_file(path);
  size_t pos = 0;
  while (pos < s.size()) {
    size_t end = s.find('\n', pos);
    if (end == std::string::npos) end = s.size();
    if (end > pos) out.push_back(io::parse_json(std::string_view(s).substr(pos, end - pos)));
    pos = end + 1;
  }
  return out;
}

// English-like prose that passes the Gopher and C4 rules: sentences of 8-14 words from a
// 2000-word vocabulary mixed with stop words, each line a paragraph ending in a full stop.
struct ProseGenerator {
  std::mt19937_64 rng;
  std::vector<std::string> vocab;
  explicit ProseGenerator(uint64_t seed) : rng(seed) {
    std::uniform_int_distribution<int> len(3, 9), letter(0, 25);
    for (int i = 0; i < 2000; ++i) {
      std::string w;
      for (int k = len(rng); k > 0; --k) w += char('a' + letter(rng));
      vocab.push_back(w);
    }
  }
  std::string word() {
    static const char* stop[] = {"the", "be", "to", "of", "and", "that", "have", "with", "a", "in"};
    if (std::uniform_real_distribution<double>(0, 1)(rng) < 0.3) return stop[rng() % 10];
    return vocab[rng() % vocab.size()];
  }
  std::string sentence() {
    std::string s;
    const int n = 8 + int(rng() % 7);
    for (int i = 0; i < n; ++i) s += (i ? " " : "") + word();
    s[0] = char(std::toupper(s[0]));
    return s + ".";
  }
  std::string document() {
    std::string d;
    const int paragraphs = 3 + int(rng() % 3);
    for (int p = 0; p < paragraphs; ++p) {
      if (p) d += "\n";
      const int sentences = 3 + int(rng() % 4);
      for (int s = 0; s < sentences; ++s) d += (s ? " " : "") + sentence();
    }
    return d;
  }
};

// `text` with `k` of its words (chosen at random) replaced by other words.
std::string edit_words(const std::string& text, int k, std::mt19937_64& rng) {
  std::vector<size_t> starts;
  for (size_t i = 0; i < text.size(); ++i)
    if (std::isalpha((unsigned char)text[i]) && (i == 0 || text[i - 1] == ' ' || text[i - 1] == '\n')) starts.push_back(i);
  std::string out = text;
  for (int e = 0; e < k; ++e) {
    size_t i = starts[rng() % starts.size()];
    out[i] = out[i] == 'q' ? 'z' : 'q';  // a changed first letter: a different word
  }
  return out;
}

// The corpus: a folder of JSONL and plain files, gzip included, with planted cases.
struct Corpus {
  std::string dir;
  std::map<std::string, std::string> clean;  // id -> text of documents that must come out unchanged
  std::string pii_id, eot_id, exact_dup_id, crlf_dup_id, near_dup_id, short_id, original_id;
  size_t documents = 0;
};

std::string jsonl_line(const std::string& id, const std::string& text) {
  io::Json j = io::Json::object();
  j.set("id", id);
  j.set("text", text);
  return j.dump() + "\n";
}

Corpus make_corpus(const std::string& dir, int n_docs = 120) {
  Corpus c;
  c.dir = dir;
  ProseGenerator gen(42);
  std::mt19937_64 rng(7);
  std::string part1, part2;
  std::vector<std::string> texts;
  for (int i = 0; i < n_docs; ++i) {
    const std::string id = "doc" + std::to_string(i), text = gen.document();
    texts.push_back(text);
    c.clean[id] = text;
    (i % 2 ? part2 : part1) += jsonl_line(id, text);
  }
  c.original_id = "doc3";
  c.exact_dup_id = "copy-of-doc3";
  part2 += jsonl_line(c.exact_dup_id, texts[3]);
  c.crlf_dup_id = "crlf-copy-of-doc4";  // equal to doc4 once its line ends are normalised
  std::string crlf;
  for (char ch : texts[4]) crlf += ch == '\n' ? std::string("\r\n") : std::string(1, ch);
  part2 += jsonl_line(c.crlf_dup_id, crlf);
  c.near_dup_id = "near-copy-of-doc5";
  part2 += jsonl_line(c.near_dup_id, edit_words(texts[5], 2, rng));
  c.short_id = "too-short";
  part2 += jsonl_line(c.short_id, "Buy cheap watches now. Click here.");
  c.pii_id = "with-email";
  part2 += jsonl_line(c.pii_id, gen.document() + " Write to jane.doe@example.com for the minutes.");
  c.eot_id = "with-eot-text";
  part2 += jsonl_line(c.eot_id, gen.document() + " The marker <|endoftext|> is ordinary text here.");
  write_file(dir + "/a/part1.jsonl", part1);
  write_file(dir + "/b/part2.jsonl", part2);
  const std::string plain = gen.document();
  write_file(dir + "/b/notes.txt", plain);
  c.clean[dir + "/b/notes.txt"] = plain;
  c.documents = size_t(n_docs) + 7;
  return c;
}

PipelineOptions options_for(const Corpus& c, const std::string& out) {
  PipelineOptions o;
  o.inputs = {c.dir};
  o.out = out;
  o.split = "0.8,0.1,0.1";
  o.shard_tokens = 4096;  // several shards per split, documents crossing shard boundaries
  o.nfc = have_nfc();
  return o;
}

// Every kept document's text, decoded from the shards through index.jsonl.
std::map<std::string, std::string> decode_all(const std::string& out) {
  std::map<std::string, std::string> docs;
  const BpeTokenizer tok = tokenizer::load(out + "/tokenizer.loom");
  const uint32_t eot = *tok.special_id("<|endoftext|>");
  std::map<std::string, std::unique_ptr<TokenShards>> shards;
  std::map<std::string, std::vector<int64_t>> starts;
  for (const char* s : {"train", "val", "test"}) {
    if (list_shards(out, s).empty()) continue;
    shards[s] = std::make_unique<TokenShards>(out, s);
    starts[s] = {0};
    for (size_t f = 0; f < shards[s]->num_files(); ++f) starts[s].push_back(starts[s].back() + shards[s]->file(f).size());
  }
  for (const io::Json& line : read_jsonl(out + "/index.jsonl")) {
    const std::string split = line.at("split").as_string();
    const int64_t at = starts[split][size_t(line.at("shard").as_int())] + line.at("offset").as_int();
    std::vector<uint32_t> ids(static_cast<size_t>(line.at("tokens").as_int()));
    shards[split]->copy(at, int64_t(ids.size()), ids.data());
    uint32_t before = 0;
    shards[split]->copy(at - 1, 1, &before);
    REQUIRE(before == eot);  // each document is preceded by <|endoftext|>
    docs[line.at("id").as_string()] = tok.decode(ids);
  }
  return docs;
}

}  // namespace

TEST_CASE("shards: uint16 and uint32 round trips in llm.c's header layout") {
  TempDir tmp;
  for (uint64_t vocab : {uint64_t(300), uint64_t(70000)}) {
    const std::string prefix = "v" + std::to_string(vocab);
    ShardWriter w(tmp.path.string(), prefix, vocab, 1000);
    std::vector<uint32_t> ids;
    std::mt19937_64 rng(vocab);
    for (int i = 0; i < 2500; ++i) ids.push_back(uint32_t(rng() % vocab));
    w.append(ids.data(), 1200);
    w.append(ids.data() + 1200, ids.size() - 1200);
    REQUIRE(w.finish() == 3);
    REQUIRE(w.tokens() == 2500);
    const std::vector<std::string> paths = list_shards(tmp.path.string(), prefix);
    REQUIRE(paths.size() == 3);
    const std::string raw = read_bytes(paths[0]);
    const int width = vocab <= 65536 ? 2 : 4;
    REQUIRE(raw.size() == 1024 + 1000 * size_t(width));
    int32_t header[3];
    std::memcpy(header, raw.data(), sizeof header);
    CHECK(header[0] == (width == 2 ? 20240520 : 20240801));
    CHECK(header[1] == (width == 2 ? 1 : 7));
    CHECK(header[2] == 1000);
    TokenShards all(tmp.path.string(), prefix);
    REQUIRE(all.size() == 2500);
    CHECK(all.file(2).size() == 500);
    std::vector<uint32_t> back(2500);
    all.copy(0, 2500, back.data());
    CHECK(back == ids);
    std::vector<int64_t> window(10);
    all.copy(995, 10, window.data());  // across the first shard boundary
    for (int i = 0; i < 10; ++i) CHECK(window[size_t(i)] == int64_t(ids[size_t(995 + i)]));
    CHECK_THROWS_WITH(all.copy(2495, 10, window.data()), Catch::Contains("run past the end"));
  }
  ShardWriter w(tmp.path.string(), "bad", 300, 10);
  const uint32_t too_big = 300;
  CHECK_THROWS_WITH(w.append(&too_big, 1), Catch::Contains("outside the vocabulary"));
}

TEST_CASE("shards: a truncated file or a foreign file is an error naming it") {
  TempDir tmp;
  ShardWriter w(tmp.path.string(), "train", 300, 100);
  std::vector<uint32_t> ids(100, 7);
  w.append(ids.data(), ids.size());
  w.finish();
  const std::string path = shard_path(tmp.path.string(), "train", 0), raw = read_bytes(path);
  write_file(path, raw.substr(0, raw.size() - 2));
  CHECK_THROWS_WITH(ShardFile(path), Catch::Contains("train_000000.bin") && Catch::Contains("truncated"));
  std::string foreign = raw;
  foreign[0] = 'X';
  write_file(path, foreign);
  CHECK_THROWS_WITH(ShardFile(path), Catch::Contains("not an llm.c token shard"));
  write_file(path, "short");
  CHECK_THROWS_WITH(ShardFile(path), Catch::Contains("too short"));
  CHECK_THROWS_WITH(TokenShards(tmp.path.string(), "val"), Catch::Contains("no val_*.bin"));
}

TEST_CASE("shards: BatchLoader over shards draws the same windows as over the same ids in memory") {
  TempDir tmp;
  std::vector<uint32_t> ids(5000);
  std::vector<int64_t> ids64(5000);
  std::mt19937_64 rng(3);
  for (size_t i = 0; i < ids.size(); ++i) ids64[i] = ids[i] = uint32_t(rng() % 300);
  ShardWriter w(tmp.path.string(), "train", 300, 777);
  w.append(ids.data(), ids.size());
  w.finish();
  train::BatchLoader mem(ids64), disk(std::make_shared<const TokenShards>(tmp.path.string(), "train"));
  REQUIRE(disk.size() == 5000);
  Generator g1(11), g2(11);
  for (int k = 0; k < 5; ++k) {
    auto [x1, y1] = mem.batch(8, 64, g1);
    auto [x2, y2] = disk.batch(8, 64, g2);
    CHECK(std::equal(x1.data(), x1.data() + 8 * 64, x2.data()));
    CHECK(std::equal(y1.data(), y1.data() + 8 * 64, y2.data()));
  }
  CHECK(disk.token(4999) == ids64[4999]);
}

TEST_CASE("pipeline: planted cases end where they should and the shards decode to the kept documents") {
  TempDir tmp;
  const Corpus c = make_corpus(tmp / "corpus");
  const io::Json report = run_pipeline(options_for(c, tmp / "out"));
  CHECK(report.at("input").at("documents_in").as_int() == int64_t(c.documents));

  std::map<std::string, io::Json> rejects;
  for (const io::Json& r : read_jsonl(tmp / "out/rejects.jsonl")) rejects[r.at("id").as_string()] = r;
  REQUIRE(rejects.count(c.exact_dup_id));
  CHECK(rejects[c.exact_dup_id].at("reason").as_string() == "exact_dup");
  CHECK(rejects[c.exact_dup_id].at("duplicate_of").as_string() == c.original_id);
  REQUIRE(rejects.count(c.crlf_dup_id));
  CHECK(rejects[c.crlf_dup_id].at("reason").as_string() == "exact_dup");
  CHECK(rejects[c.crlf_dup_id].at("duplicate_of").as_string() == "doc4");
  REQUIRE(rejects.count(c.near_dup_id));
  CHECK(rejects[c.near_dup_id].at("reason").as_string() == "near_dup");
  CHECK(rejects[c.near_dup_id].at("duplicate_of").as_string() == "doc5");
  REQUIRE(rejects.count(c.short_id));
  CHECK(rejects[c.short_id].at("reason").as_string().rfind("quality:", 0) == 0);
  CHECK(report.at("pii").at("email").as_int() == 1);

  const std::map<std::string, std::string> docs = decode_all(tmp / "out");
  // Every document is either kept or rejected, never both, never neither.
  CHECK(docs.size() + rejects.size() == c.documents);
  for (const auto& [id, text] : docs) CHECK(rejects.count(id) == 0);
  int64_t clean_kept = 0;
  for (const auto& [id, text] : c.clean) {
    auto it = docs.find(id);
    if (it == docs.end()) {
      // A clean document leaves only as a decontaminated train document (it cannot be a duplicate).
      REQUIRE(rejects.count(id));
      CHECK(rejects[id].at("reason").as_string() == "decontaminated");
      continue;
    }
    CHECK(it->second == text);
    ++clean_kept;
  }
  CHECK(clean_kept >= int64_t(c.clean.size()) - 2);
  REQUIRE(docs.count(c.pii_id));
  CHECK(docs.at(c.pii_id).find("Write to <EMAIL> for the minutes.") != std::string::npos);
  CHECK(docs.at(c.pii_id).find("jane.doe") == std::string::npos);
  REQUIRE(docs.count(c.eot_id));
  CHECK(docs.at(c.eot_id).find("The marker <|endoftext|> is ordinary text here.") != std::string::npos);

  // The report adds up.
  int64_t kept = 0, tokens = 0;
  for (const char* s : {"train", "val", "test"}) {
    kept += report.at("kept").at(s).at("documents").as_int();
    tokens += report.at("kept").at(s).at("tokens").as_int();
  }
  CHECK(kept == int64_t(docs.size()));
  CHECK(tokens == report.at("tokens").as_int());
  int64_t dropped = 0;
  for (const auto& [reason, n] : report.at("dropped").as_object()) dropped += n.as_int();
  CHECK(dropped == int64_t(rejects.size()));
  CHECK(report.at("kept").at("val").at("documents").as_int() > 0);
  CHECK(report.at("kept").at("test").at("documents").as_int() > 0);
  CHECK(fs::exists(tmp / "out/report.json"));
}

#ifdef LOOM_PYTHON3_EXE
TEST_CASE("pipeline: an independent Python reader of llm.c shards decodes the kept documents") {
  TempDir tmp;
  const Corpus c = make_corpus(tmp / "corpus");
  run_pipeline(options_for(c, tmp / "out"));
  std::string expected;
  for (const auto& [id, text] : c.clean) expected += jsonl_line(id, text);
  write_file(tmp / "expected.jsonl", expected);
  const loom_test::ProgramRun run = loom_test::run_program(
      loom_test::shell_quote(LOOM_PYTHON3_EXE) + " " + loom_test::shell_quote(LOOM_TEST_SOURCE_DIR "/pipeline/read_llmc_shards.py") +
      " " + loom_test::shell_quote(tmp / "out") + " " + loom_test::shell_quote(tmp / "expected.jsonl"));
  INFO(run.output);
  CHECK(run.status == 0);
  CHECK(run.output.find("ok: ") != std::string::npos);
}
#endif

TEST_CASE("pipeline: the output is identical for one and two threads") {
  TempDir tmp;
  const Corpus c = make_corpus(tmp / "corpus");
  PipelineOptions o1 = options_for(c, tmp / "t1"), o2 = options_for(c, tmp / "t2");
  o1.threads = 1, o2.threads = 2;
  run_pipeline(o1);
  run_pipeline(o2);
  for (const char* f : {"index.jsonl", "rejects.jsonl", "tokenizer.loom"})
    CHECK(read_bytes(tmp / (std::string("t1/") + f)) == read_bytes(tmp / (std::string("t2/") + f)));
  for (const char* s : {"train", "val", "test"}) {
    const std::vector<std::string> a = list_shards(tmp / "t1", s), b = list_shards(tmp / "t2", s);
    REQUIRE(a.size() == b.size());
    for (size_t i = 0; i < a.size(); ++i) CHECK(read_bytes(a[i]) == read_bytes(b[i]));
  }
}

TEST_CASE("pipeline: a second run skips the finished stages and a changed setting reruns from its stage") {
  TempDir tmp;
  const Corpus c = make_corpus(tmp / "corpus");
  PipelineOptions o = options_for(c, tmp / "out");
  std::set<std::string> stages;
  auto record = [&](const std::string& stage, uint64_t, uint64_t) { stages.insert(stage); };
  run_pipeline(o, record);
  CHECK(stages.count("scan") == 1);
  const std::string index = read_bytes(tmp / "out/index.jsonl");
  stages.clear();
  run_pipeline(o, record);
  CHECK(stages.count("scan") == 0);
  CHECK(stages.count("neardup") == 0);
  CHECK(read_bytes(tmp / "out/index.jsonl") == index);
  stages.clear();
  o.split = "0.6,0.2,0.2";  // the split stage reruns; scan and near-dup do not
  run_pipeline(o, record);
  CHECK(stages.count("scan") == 0);
  CHECK(read_bytes(tmp / "out/index.jsonl") != index);
  stages.clear();
  o.fresh = true;
  run_pipeline(o, record);
  CHECK(stages.count("scan") == 1);
  // No shard of an earlier run with more shards is left behind under a final name.
  for (const char* s : {"train", "val", "test"})
    for (const std::string& p : list_shards(tmp / "out", s)) CHECK_NOTHROW(ShardFile(p));
}

TEST_CASE("pipeline: bad input is a clear error or a counted reject") {
  TempDir tmp;
  const Corpus c = make_corpus(tmp / "corpus", 40);
  write_file(tmp / "corpus/c/bad.jsonl", jsonl_line("fine", "Some text.") + "[1, 2]\n");
  PipelineOptions o = options_for(c, tmp / "out");
  CHECK_THROWS_WITH(run_pipeline(o), Catch::Contains("bad.jsonl:2"));
  CHECK_FALSE(fs::exists(tmp / "out/index.jsonl"));  // nothing under a final name
  o.read.skip_errors = true;
  const io::Json r = run_pipeline(o);
  CHECK(r.at("input").at("read_errors").as_int() == 1);
  bool listed = false;
  for (const io::Json& j : read_jsonl(tmp / "out/rejects.jsonl"))
    listed = listed || (j.at("reason").as_string() == "read_error" && j.at("id").as_string().find("bad.jsonl:2") != std::string::npos);
  CHECK(listed);

  fs::create_directories(tmp / "empty");
  PipelineOptions e = options_for(c, tmp / "out2");
  e.inputs = {tmp / "empty"};
  CHECK_THROWS_WITH(run_pipeline(e), Catch::Contains("empty"));
  e.inputs = {tmp / "missing"};
  CHECK_THROWS_WITH(run_pipeline(e), Catch::Contains("missing"));

  PipelineOptions t = options_for(c, tmp / "out3");
  write_file(tmp / "broken.loom", "not a tokenizer\n");
  t.tokenizer = "loom:" + (tmp / "broken.loom");
  CHECK_THROWS_WITH(run_pipeline(t), Catch::Contains("broken.loom"));
  CHECK_FALSE(fs::exists(tmp / "out3"));  // a bad tokenizer fails before anything is written
  t.tokenizer = "sentencepiece:x";
  CHECK_THROWS_WITH(run_pipeline(t), Catch::Contains("unknown kind"));
  PipelineOptions s = options_for(c, tmp / "out4");
  s.split = "0.5,0.5";
  CHECK_THROWS(run_pipeline(s));
  s.split = "0.98,0.01,0.01";
  s.dedup = "fuzzy";
  CHECK_THROWS_WITH(run_pipeline(s), Catch::Contains("--dedup"));
}

TEST_CASE("pipeline: a GPT-2 tokenizer writes uint16 shards that decode to the same documents") {
  const std::string gpt2 = LOOM_SHARED_DATA_DIR "/gpt2";
  if (!fs::exists(gpt2 + "/encoder.json")) {
    WARN("skipped: " << gpt2 << " is not on this machine");
    return;
  }
  TempDir tmp;
  const Corpus c = make_corpus(tmp / "corpus", 30);
  PipelineOptions o = options_for(c, tmp / "out");
  o.tokenizer = "gpt2:" + gpt2;
  const io::Json r = run_pipeline(o);
  CHECK(r.at("vocab_size").as_int() == 50257);
  CHECK(ShardFile(list_shards(tmp / "out", "train").front()).token_bytes() == 2);
  const std::map<std::string, std::string> docs = decode_all(tmp / "out");
  for (const auto& [id, text] : docs)
    if (c.clean.count(id)) CHECK(text == c.clean.at(id));
  REQUIRE(docs.count(c.eot_id));
  CHECK(docs.at(c.eot_id).find("<|endoftext|>") != std::string::npos);
}

#if defined(LOOM_DATA_EXE) && defined(LOOM_TRAIN_EXE)
TEST_CASE("programs: loom-data writes shards and loom-train trains on them") {
  TempDir tmp;
  const Corpus c = make_corpus(tmp / "corpus", 80);
  const loom_test::ProgramRun data = loom_test::run_program(
      loom_test::shell_quote(LOOM_DATA_EXE) + " run --input " + loom_test::shell_quote(c.dir) + " --out " +
      loom_test::shell_quote(tmp / "shards") + " --split 0.8,0.1,0.1 --quiet");
  INFO(data.output);
  REQUIRE(data.status == 0);
  CHECK(data.output.find("final documents_in=87 ") != std::string::npos);
  const loom_test::ProgramRun train = loom_test::run_program(
      loom_test::shell_quote(LOOM_TRAIN_EXE) + " --data " + loom_test::shell_quote(tmp / "shards") +
      " --preset char --steps 3 --batch-size 2 --block-size 32 --n-layer 1 --n-embd 32 --n-head 2 --eval-interval 3"
      " --eval-iters 1 --final-eval-iters 1 --sample-tokens 8 --log-interval 1 --out " + loom_test::shell_quote(tmp / "run"));
  INFO(train.output);
  REQUIRE(train.status == 0);
  CHECK(train.output.find("(token shards)") != std::string::npos);
  CHECK(train.output.find("final step=3 ") != std::string::npos);
  const loom_test::ProgramRun bad = loom_test::run_program(
      loom_test::shell_quote(LOOM_DATA_EXE) + " run --input " + loom_test::shell_quote(tmp / "nowhere") + " --out " +
      loom_test::shell_quote(tmp / "x"));
  CHECK(bad.status == 1);
  CHECK(bad.output.find("nowhere") != std::string::npos);
}
#endif

#if defined(LOOM_DATA_EXE) && defined(LOOM_MPIEXEC)
namespace {

// A corpus whose planted duplicates sit on other ranks than their originals under 2 and 3 ranks
// (rank g % N owns the g-th document in input order): 31 documents, then a file of copies whose
// position differs from their original's by a number divisible by neither 2 nor 3.
struct RankCorpus {
  std::string dir;
  std::vector<std::pair<std::string, std::string>> exact, near;  // (copy id, original id)
  std::vector<std::pair<int64_t, int64_t>> positions;            // (copy, original) input positions
};

RankCorpus make_rank_corpus(const std::string& dir) {
  RankCorpus c;
  c.dir = dir;
  ProseGenerator gen(9);
  std::mt19937_64 rng(3);
  std::vector<std::string> texts;
  std::string a, b;
  for (int i = 0; i < 31; ++i) {
    texts.push_back(gen.document());
    a += jsonl_line("p" + std::to_string(i), texts.back());
  }
  int64_t g = 31;  // the position of b.jsonl's next line
  auto plant = [&](const std::string& id, const std::string& text, int original, bool exact) {
    b += jsonl_line(id, text);
    (exact ? c.exact : c.near).push_back({id, "p" + std::to_string(original)});
    c.positions.push_back({g++, original});
  };
  for (int i = 0; i < 6; ++i) plant("exact-of-p" + std::to_string(i), texts[size_t(i)], i, true);  // g - i = 31
  for (int i = 0; i < 6; ++i)  // g - (i + 12) = 25
    plant("near-of-p" + std::to_string(i + 12), edit_words(texts[size_t(i + 12)], 1, rng), i + 12, false);
  std::string crlf;
  for (char ch : texts[24]) crlf += ch == '\n' ? std::string("\r\n") : std::string(1, ch);
  plant("crlf-of-p24", crlf, 24, true);  // 43 - 24 = 19
  write_file(dir + "/a.jsonl", a);
  write_file(dir + "/b.jsonl", b);
  return c;
}

// report.json without what is measured rather than computed: times, throughput, memory.
io::Json computed_part(const io::Json& j) {
  if (!j.is_object()) return j;
  io::Json out = io::Json::object();
  for (const auto& [key, value] : j.as_object())
    if (key != "timing" && key != "seconds" && key != "mb_per_s" && key != "peak_rss_bytes" && key != "index_bytes")
      out.set(key, computed_part(value));
  return out;
}

// The final key=value line without mb_per_s.
std::string final_line(const std::string& output) {
  const size_t at = output.rfind("final ");
  if (at == std::string::npos) return "";
  const std::string line = output.substr(at, output.find('\n', at) - at);
  return line.substr(0, line.find(" mb_per_s="));
}

// The regular files under `dir` (recursively, DIR/.work left out), as relative paths, sorted.
std::vector<std::string> output_files(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    if (e.is_regular_file() && fs::relative(e.path(), dir).string().rfind(".work", 0) != 0)
      out.push_back(fs::relative(e.path(), dir).string());
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

TEST_CASE("programs: loom-data under mpirun with 2 and 3 ranks writes the same files as one process") {
  TempDir tmp;
  const RankCorpus c = make_rank_corpus(tmp / "corpus");
  for (const auto& [copy, original] : c.positions) {  // every copy and its original on different ranks
    CHECK((copy - original) % 2 != 0);
    CHECK((copy - original) % 3 != 0);
  }
  auto run = [&](const std::string& launcher, const std::string& out) {
    return loom_test::run_program(launcher + loom_test::shell_quote(LOOM_DATA_EXE) + " run --input " +
                                  loom_test::shell_quote(c.dir) + " --out " + loom_test::shell_quote(tmp / out) +
                                  " --split 0.8,0.1,0.1 --shard-tokens 4096 --quiet");
  };
  const loom_test::ProgramRun one = run("", "np1");
  INFO(one.output);
  REQUIRE(one.status == 0);

  // The planted duplicates are gone, each pointing at its original (the first in input order).
  std::map<std::string, io::Json> rejects;
  for (const io::Json& r : read_jsonl(tmp / "np1/rejects.jsonl")) rejects[r.at("id").as_string()] = r;
  for (const auto& [cases, reason] : {std::make_pair(&c.exact, "exact_dup"), std::make_pair(&c.near, "near_dup")})
    for (const auto& [copy, original] : *cases) {
      INFO(copy);
      REQUIRE(rejects.count(copy));
      CHECK(rejects[copy].at("reason").as_string() == reason);
      CHECK(rejects[copy].at("duplicate_of").as_string() == original);
    }
  const std::vector<std::string> files = output_files(tmp / "np1");
  CHECK(std::count(files.begin(), files.end(), "index.jsonl") == 1);
  CHECK(files.size() >= 7);  // index, rejects, report, tokenizer and shards of three splits

  for (int np : {2, 3}) {
    INFO("ranks: " << np);
    const std::string out = "np" + std::to_string(np);
    const loom_test::ProgramRun many =
        run("OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 " + loom_test::shell_quote(LOOM_MPIEXEC) + " -np " +
                std::to_string(np) + " --oversubscribe ",
            out);
    INFO(many.output);
    REQUIRE(many.status == 0);
    const io::Json report = io::parse_json(read_bytes(tmp / (out + "/report.json")));
    CHECK(report.at("timing").at("ranks").as_int() == np);  // one run of np ranks, not np single runs
    CHECK(final_line(many.output) == final_line(one.output));
    CHECK(many.output.find("final ") == many.output.rfind("final "));  // only rank 0 prints
    REQUIRE(output_files(tmp / out) == files);
    for (const std::string& f : files) {
      INFO(f);
      if (f == "report.json")
        CHECK(computed_part(report).dump() == computed_part(io::parse_json(read_bytes(tmp / "np1/report.json"))).dump());
      else
        CHECK(read_bytes(tmp / (out + "/" + f)) == read_bytes(tmp / ("np1/" + f)));
    }
  }
}
#endif
