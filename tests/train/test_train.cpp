// train: the char tokenizer, the batch loader, evaluation, sampling (temperature, top-k, top-p,
// greedy, reproducibility), the CSV log and the SVG plot.
#include <algorithm>
#include <cstdio>
#include <fstream>
#include <map>

#include <loom/loom.hpp>
#include <loom/train/data.hpp>
#include <loom/train/evaluate.hpp>
#include <loom/train/report.hpp>
#include <loom/train/sample.hpp>

#include "catch.hpp"

using namespace loom;
using namespace loom::train;

TEST_CASE("CharTokenizer and BatchLoader") {
  CharTokenizer tok("hello world");
  CHECK(tok.vocab_size() == 8);  // ' ' d e h l o r w
  CHECK(tok.chars() == " dehlorw");
  auto ids = tok.encode("hold");
  CHECK(ids == std::vector<int64_t>{3, 5, 4, 1});
  CHECK(tok.decode(ids) == "hold");
  CHECK_THROWS_WITH(tok.encode("z"), LOOM_CONTAINS("byte 122 is not in the vocabulary"));
  CHECK_THROWS_AS(tok.decode({8}), value_error);
  CHECK(CharTokenizer::from_chars(tok.chars()).encode("hold") == ids);

  std::vector<int64_t> seq(100);
  for (int64_t i = 0; i < 100; ++i) seq[size_t(i)] = i;
  auto [tr, va] = split(seq, 0.9);
  CHECK(tr.size() == 90);
  CHECK(va.size() == 10);
  Generator g1(1), g2(1);
  auto [x, y] = tr.batch(4, 8, g1);
  CHECK(x.shape() == Shape{4, 8});
  for (int64_t b = 0; b < 4; ++b)
    for (int64_t t = 0; t < 8; ++t) {
      CHECK(y.at({b, t}) == x.at({b, t}) + 1);  // targets are the next tokens
      CHECK(x.at({b, t}) < 89);
    }
  auto [x2, y2] = tr.batch(4, 8, g2);
  CHECK(x2.to_vector() == x.to_vector());  // seeded
  CHECK_THROWS_WITH(va.batch(1, 10, g1), LOOM_CONTAINS("10 tokens are too few for windows of 10"));
}

TEST_CASE("sample_token: greedy, temperature, top-k, top-p") {
  std::vector<float> logits = {1.0f, 3.0f, 2.0f, -1.0f};
  Generator g(3);
  CHECK(sample_token(logits.data(), 4, {0.0, 0, 1.0}, g) == 1);  // greedy
  std::map<int64_t, int> counts;
  for (int i = 0; i < 4000; ++i) counts[sample_token(logits.data(), 4, {1.0, 0, 1.0}, g)]++;
  // softmax([1, 3, 2, -1]) = [0.0889, 0.6572, 0.2418, 0.0120]
  CHECK(std::abs(counts[1] / 4000.0 - 0.6572) < 0.03);
  CHECK(std::abs(counts[2] / 4000.0 - 0.2418) < 0.03);
  counts.clear();
  for (int i = 0; i < 1000; ++i) counts[sample_token(logits.data(), 4, {1.0, 2, 1.0}, g)]++;
  CHECK(counts.size() == 2);  // only the two best ever appear with top_k = 2
  CHECK(counts.count(1) == 1);
  CHECK(counts.count(2) == 1);
  counts.clear();
  for (int i = 0; i < 1000; ++i) counts[sample_token(logits.data(), 4, {1.0, 0, 0.6}, g)]++;
  CHECK(counts.size() == 1);  // the top token alone already holds 0.66 >= 0.6
  counts.clear();
  for (int i = 0; i < 2000; ++i) counts[sample_token(logits.data(), 4, {0.1, 0, 1.0}, g)]++;
  CHECK(counts[1] > 1990);  // a low temperature is nearly greedy
  CHECK_THROWS_AS(sample_token(logits.data(), 4, {-1.0, 0, 1.0}, g), value_error);
  CHECK_THROWS_AS(sample_token(logits.data(), 4, {1.0, 0, 0.0}, g), value_error);
}

TEST_CASE("generate: reproducible, cached, longer than the block") {
  nn::GPTConfig c;
  c.vocab_size = 7, c.block_size = 8, c.n_layer = 1, c.n_head = 2, c.n_embd = 8;
  nn::GPT model(c);
  Generator g1(5), g2(5);
  auto a = generate(model, {1, 2, 3}, 20, {1.0, 0, 1.0}, g1);
  auto b = generate(model, {1, 2, 3}, 20, {1.0, 0, 1.0}, g2);
  CHECK(a.size() == 20);
  CHECK(a == b);
  for (int64_t t : a) CHECK((t >= 0 && t < 7));
  // Greedy generation with the cache equals greedy generation by full forward passes.
  Generator g3(0);
  auto cached = generate(model, {4}, 6, {0.0, 0, 1.0}, g3);
  std::vector<int64_t> ctx = {4};
  NoGradGuard no_grad;
  for (int i = 0; i < 6; ++i) {
    auto logits = model(from_vector<int64_t>(ctx, {1, int64_t(ctx.size())})).logits;
    auto last = logits.select(1, -1).select(0, 0);
    ctx.push_back(argmax(last).item());
  }
  CHECK(std::vector<int64_t>(ctx.begin() + 1, ctx.end()) == cached);
  CHECK(model.is_training());  // mode restored
  CHECK_THROWS_AS(generate(model, {}, 3, {}, g3), value_error);
}

TEST_CASE("evaluate and perplexity") {
  nn::GPTConfig c;
  c.vocab_size = 5, c.block_size = 8, c.n_layer = 1, c.n_head = 1, c.n_embd = 4;
  nn::GPT model(c);
  std::vector<int64_t> ids(200);
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = int64_t(i % 5);
  BatchLoader data(ids);
  Generator g(1);
  double loss = evaluate(model, data, 3, 2, 8, g);
  CHECK(std::abs(loss - std::log(5.0)) < 0.1);
  CHECK(perplexity(loss) == Approx(std::exp(loss)));
  CHECK(autograd::live_nodes() == 0);
}

TEST_CASE("CsvLog and the SVG loss plot") {
  std::string path = "test_train_log.csv";
  {
    CsvLog log(path);
    log.write({0, 4.2, 4.3, 1e-3, NAN, 0.5});
    log.write({10, 3.1, NAN, 1e-3, 1234.5, 1.5});
  }
  {
    CsvLog log(path, /*append=*/true);
    log.write({20, 2.5, 2.7, 5e-4, 1300, 2.5});
  }
  auto rows = CsvLog::read(path);
  REQUIRE(rows.size() == 3);
  CHECK(rows[1].step == 10);
  CHECK(rows[1].train_loss == Approx(3.1));
  CHECK(std::isnan(rows[1].val_loss));
  CHECK(rows[2].val_loss == Approx(2.7));
  std::ifstream in(path);
  std::string header;
  std::getline(in, header);
  CHECK(header == "step,train_loss,val_loss,lr,tokens_per_s,elapsed_s");
  std::remove(path.c_str());

  std::string svg = loss_plot_svg(rows, "tiny run");
  CHECK(svg.rfind("<svg", 0) == 0);
  CHECK(svg.find("</svg>") != std::string::npos);
  CHECK(svg.find("tiny run") != std::string::npos);
  CHECK(svg.find("train (2.5)") != std::string::npos);  // legend with the last values
  CHECK(svg.find("val (2.7)") != std::string::npos);
  CHECK(svg.find(">step<") != std::string::npos);
  CHECK(svg.find("polyline") != std::string::npos);
  CHECK(loss_plot_svg({}).find("</svg>") != std::string::npos);  // no data: still a valid picture
  CHECK(ProgressBar::format_time(3725) == "1h02m");
  CHECK(ProgressBar::format_time(185) == "3m05s");
  CHECK(ProgressBar::format_time(12) == "12s");
}

namespace {
// Everything written to a temporary FILE* (not a terminal, so the bars print plain lines).
template <class F>
std::string drawn(F&& draw) {
  std::FILE* f = std::tmpfile();
  REQUIRE(f != nullptr);
  draw(f);
  std::fflush(f);
  std::rewind(f);
  std::string out;
  char buf[256];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) out.append(buf, n);
  std::fclose(f);
  return out;
}
}  // namespace

TEST_CASE("progress bars draw on the stream they are given") {
  // The training bar on a file: the first step, every `every` steps and the last, one line each.
  std::string s = drawn([](std::FILE* f) {
    ProgressBar bar(f, 5, 2);
    for (int64_t step = 1; step <= 5; ++step) bar.update(step, 2.5, 1000);
    bar.message("step 5: done");
  });
  CHECK(s.find("step 1/5 | loss 2.5000 | 1000 tok/s | ETA ") == 0);
  CHECK(s.find("step 2/5 |") != std::string::npos);
  CHECK(s.find("step 3/5 |") == std::string::npos);
  CHECK(s.find("step 4/5 |") != std::string::npos);
  CHECK(s.find("step 5/5 |") != std::string::npos);
  REQUIRE(s.size() >= 13);
  CHECK(s.substr(s.size() - 13) == "step 5: done\n");
  CHECK(std::count(s.begin(), s.end(), '\n') == 5);

  // The BPE bar: redrawn in place, the line ends when every merge is done.
  s = drawn([](std::FILE* f) {
    MergeProgressBar bar(f);
    bar(1, 4);
    bar(4, 4);
    bar.finish();  // already ended: nothing more
  });
  const std::string first = "\rtraining BPE [" + std::string(10, '#') + std::string(30, ' ') + "] 1/4 merges";
  const std::string last = "\rtraining BPE [" + std::string(40, '#') + "] 4/4 merges\n";
  CHECK(s == first + last);
  // Training that stops early never reports done == want: finish() ends the line.
  s = drawn([](std::FILE* f) {
    MergeProgressBar bar(f);
    bar(2, 10);
    bar.finish();
  });
  const std::string two = "\rtraining BPE [" + std::string(8, '#') + std::string(32, ' ') + "] 2/10 merges";
  CHECK(s == two + two + "\n");  // finish() draws the last state again and ends the line
  // No update at all (nothing to merge): nothing drawn.
  CHECK(drawn([](std::FILE* f) { MergeProgressBar(f).finish(); }).empty());
}

#include <loom/train/trainer.hpp>

namespace {
struct TinyRun {
  nn::GPT model;
  Trainer trainer;
  explicit TinyRun(const std::vector<int64_t>& ids)
      : model(config(), 3), trainer(model, split(ids).first, split(ids).second, train_config()) {}
  static nn::GPTConfig config() {
    nn::GPTConfig c;
    c.vocab_size = 9, c.block_size = 8, c.n_layer = 2, c.n_head = 2, c.n_embd = 8, c.dropout = 0.1, c.bias = false;
    return c;
  }
  static TrainConfig train_config() {
    TrainConfig t;
    t.batch_size = 3, t.steps = 6, t.warmup_steps = 2, t.eval_iters = 2, t.grad_accum = 2, t.lr = 3e-3;
    return t;
  }
};
std::vector<int64_t> tiny_corpus() {
  std::vector<int64_t> ids;
  for (int i = 0; i < 400; ++i) ids.push_back((i * 7 + i / 5) % 9);
  return ids;
}
}  // namespace

TEST_CASE("Training resumed from a checkpoint gives exactly the same losses") {
  auto ids = tiny_corpus();
  std::vector<double> straight;
  {
    TinyRun run(ids);
    for (int s = 0; s < 6; ++s) straight.push_back(run.trainer.step());
    straight.push_back(run.trainer.val_loss());
  }
  std::vector<double> resumed;
  std::string path = "test_train_resume.safetensors";
  {
    TinyRun run(ids);
    for (int s = 0; s < 3; ++s) resumed.push_back(run.trainer.step());
    io::save_checkpoint(path, run.trainer.checkpoint("{\"kind\":\"test\"}"));
  }
  {
    TinyRun run(ids);  // fresh weights and optimizer: everything must come from the file
    io::Checkpoint c = io::load_checkpoint(path);
    CHECK(c.meta("tokenizer") == "{\"kind\":\"test\"}");
    run.trainer.restore(c);
    CHECK(run.trainer.step_count() == 3);
    for (int s = 0; s < 3; ++s) resumed.push_back(run.trainer.step());
    resumed.push_back(run.trainer.val_loss());
  }
  std::remove(path.c_str());
  REQUIRE(resumed.size() == straight.size());
  for (size_t i = 0; i < straight.size(); ++i) {
    CAPTURE(i);
    CHECK(resumed[i] == straight[i]);  // bit for bit
  }
  CHECK(straight[5] < straight[0]);  // and it learns
}

TEST_CASE("Trainer: schedule and a checkpoint of another model is refused") {
  auto ids = tiny_corpus();
  TinyRun run(ids);
  CHECK(run.trainer.lr_at(0) == Approx(3e-3 * 1 / 3));  // warmup (step + 1) / (warmup + 1)
  CHECK(run.trainer.lr_at(6) == Approx(1e-4));           // the end of the cosine
  nn::GPTConfig other = TinyRun::config();
  other.n_embd = 4;
  nn::GPT small(other);
  Trainer t(small, split(ids).first, split(ids).second, TinyRun::train_config());
  CHECK_THROWS_WITH(run.trainer.restore(t.checkpoint()), LOOM_CONTAINS("differs from this model"));
}

#include <loom/io/hf_gpt2.hpp>

TEST_CASE("Hugging Face GPT-2 safetensors: export, import, Conv1D layout, hub naming") {
  nn::GPTConfig c;
  c.vocab_size = 11, c.block_size = 8, c.n_layer = 2, c.n_head = 2, c.n_embd = 8, c.bias = true;
  nn::GPT a(c, 1), b(c, 2);
  std::string path = "test_hf_gpt2.safetensors";
  io::save_hf_gpt2(path, a);
  io::SafetensorsFile f = io::load_safetensors(path);
  CHECK(f.contains("transformer.h.0.attn.c_attn.weight"));
  CHECK(f.at("transformer.h.0.attn.c_attn.weight").shape() == Shape{8, 24});  // Conv1D: (in, out)
  CHECK(f.at("transformer.h.1.mlp.c_proj.weight").shape() == Shape{32, 8});
  CHECK(f.at("transformer.wte.weight").shape() == Shape{11, 8});             // embeddings untouched
  io::load_hf_gpt2(path, b);
  auto idx = from_vector<int64_t>({1, 2, 3, 4}, {1, 4});
  CHECK(max(abs(a(idx).logits - b(idx).logits)).item() == 0.0f);

  // The hub's GPT2Model layout: no "transformer." prefix, mask buffers, a tied lm_head, fp16.
  io::NamedTensors hub;
  for (auto& [name, t] : io::hf_gpt2_state(a)) hub.emplace_back(name.substr(12), t.get<float>(name).to<half>());
  hub.emplace_back("h.0.attn.bias", ones<float>({1, 1, 8, 8}));
  hub.emplace_back("lm_head.weight", a.wte.weight.detach().to<half>());
  io::save_safetensors(path, hub);
  nn::GPT d(c, 3);
  io::load_hf_gpt2(path, d);
  CHECK(max(abs(a(idx).logits - d(idx).logits)).item() < 0.05f);  // fp16 rounding of the weights

  nn::GPTConfig other = c;
  other.n_embd = 4;
  nn::GPT e(other);
  CHECK_THROWS_AS(io::load_hf_gpt2(path, e), io_error);
  std::remove(path.c_str());
}

// --- the tokenizer a checkpoint carries -------------------------------------------------------

#include <unistd.h>

#include <filesystem>

#include <loom/tokenizer.hpp>
#include <loom/train/text_tokenizer.hpp>

namespace {
namespace fs = std::filesystem;

// A fresh folder for one test case, removed when the case ends.
struct ScratchDir {
  fs::path path;
  explicit ScratchDir(const std::string& name) {
    path = fs::temp_directory_path() / ("loom_test_train_" + std::to_string(long(::getpid())) + "_" + name);
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~ScratchDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string file(const std::string& name) const { return (path / name).string(); }
};

[[maybe_unused]] void write_text(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
}

std::string corpus_text() {
  std::string text;
  for (int i = 0; i < 40; ++i) text += "the hacker's jargon: a kludge, a hack, a wizard, a foo bar.\n";
  return text;
}

BpeTokenizer small_bpe(bool with_eot = true) {
  tokenizer::TrainOptions opt;
  opt.vocab_size = 300;
  if (with_eot) opt.special_tokens = {"<|endoftext|>"};
  return tokenizer::train_bpe(corpus_text(), opt);
}
}  // namespace

TEST_CASE("TextTokenizer: characters and BPE round-trip through checkpoint metadata") {
  const std::string text = corpus_text();
  TextTokenizer chars = TextTokenizer::chars(text);
  CHECK_FALSE(chars.is_bpe());
  TextTokenizer chars_back = TextTokenizer::from_json(chars.to_json(), "ck");
  CHECK(chars_back.vocab_size() == chars.vocab_size());
  CHECK(chars_back.encode("a hack") == chars.encode("a hack"));
  CHECK(chars_back.decode(chars.encode(text)) == text);
  CHECK(io::parse_json(chars.to_json()).at("kind").as_string() == "char");

  TextTokenizer bpe = TextTokenizer::bpe(small_bpe(), "jargon.bpe");
  CHECK(bpe.is_bpe());
  CHECK(bpe.vocab_size() == int64_t(small_bpe().vocab_size()));
  io::Json j = io::parse_json(bpe.to_json());
  CHECK(j.at("kind").as_string() == "bpe");
  CHECK(j.at("path").as_string() == "jargon.bpe");
  CHECK(j.at("loom").as_string().rfind("loom-bpe 1", 0) == 0);  // the whole model, in loom's format
  TextTokenizer back = TextTokenizer::from_json(bpe.to_json(), "ck");  // no file is read
  CHECK(back.vocab_size() == bpe.vocab_size());
  CHECK(back.encode(text) == bpe.encode(text));
  CHECK(back.decode(back.encode(text)) == text);
  CHECK(back.encode("<|endoftext|>").size() > 1);  // special-token text in training data is plain text

  CHECK_THROWS_WITH(TextTokenizer::from_json("{\"kind\":\"words\"}", "ck.safetensors"),
                    LOOM_CONTAINS("ck.safetensors: unknown tokenizer kind 'words'"));
  CHECK_THROWS_WITH(TextTokenizer::from_json("{\"kind\":\"char\",\"chars_hex\":\"0g\"}", "ck"),
                    LOOM_CONTAINS("not a hex digit"));
  CHECK_THROWS_WITH(TextTokenizer::from_json("{\"kind\":", "ck"), LOOM_CONTAINS("ck: the tokenizer metadata is not valid JSON"));
  CHECK_THROWS_AS(TextTokenizer::from_json("{\"kind\":\"bpe\",\"loom\":\"garbage\"}", "ck"), io_error);
}

TEST_CASE("TextTokenizer: where an unconditional sample starts") {
  CHECK(TextTokenizer::chars("\x01" "ab\n").start_ids() == std::vector<int64_t>{1});  // the newline
  CHECK(TextTokenizer::chars("b a").start_ids() == std::vector<int64_t>{0});       // no newline: id 0
  TextTokenizer with_eot = TextTokenizer::bpe(small_bpe(true));
  REQUIRE(with_eot.bpe_model().special_id("<|endoftext|>").has_value());
  CHECK(with_eot.start_ids() == std::vector<int64_t>{int64_t(*with_eot.bpe_model().special_id("<|endoftext|>"))});
  TextTokenizer without = TextTokenizer::bpe(small_bpe(false));
  CHECK(without.decode(without.start_ids()) == "\n");
}

TEST_CASE("A BPE checkpoint carries its tokenizer: sampling needs no tokenizer file") {
  ScratchDir dir("bpe_ckpt");
  const std::string tok_path = dir.file("jargon.bpe"), ckpt = dir.file("ckpt.safetensors");
  tokenizer::save(small_bpe(), tok_path);
  const std::string text = corpus_text();
  {
    TextTokenizer tok = TextTokenizer::bpe(tokenizer::load(tok_path), tok_path);
    std::vector<int64_t> ids = tok.encode(text);
    nn::GPTConfig c;
    c.vocab_size = tok.vocab_size(), c.block_size = 8, c.n_layer = 1, c.n_head = 2, c.n_embd = 8;
    nn::GPT model(c, 1);
    TrainConfig t;
    t.batch_size = 2, t.steps = 3, t.eval_iters = 1;
    Trainer trainer(model, split(ids).first, split(ids).second, t);
    for (int s = 0; s < 3; ++s) trainer.step();
    io::save_checkpoint(ckpt, trainer.checkpoint(tok.to_json()));
  }
  fs::remove(tok_path);  // the tokenizer file is gone; the checkpoint is moved elsewhere
  const std::string moved = dir.file("elsewhere/model.safetensors");
  fs::create_directories(dir.path / "elsewhere");
  fs::rename(ckpt, moved);

  io::Checkpoint c = io::load_checkpoint(moved);
  TextTokenizer tok = TextTokenizer::from_checkpoint(c);
  nn::GPT model(gpt_config_from_json(c.meta_json("config")));
  nn::NamedTensors params;
  for (const std::string& n : c.names("model.")) params.emplace_back(n.substr(6), c.get<float>(n));
  model.load_state_dict(params);
  CHECK(tok.vocab_size() == model.config.vocab_size);
  CHECK(tok.decode(tok.encode("a kludge, a hack")) == "a kludge, a hack");
  Generator gen(7);
  std::vector<int64_t> out = generate(model, tok.start_ids(), 20, {1.0, 0, 1.0}, gen);
  CHECK(out.size() == 20);
  CHECK_NOTHROW(tok.decode(out));
}

TEST_CASE("An old checkpoint that names its BPE tokenizer by path loads while the file is there") {
  ScratchDir dir("bpe_path");
  const std::string tok_path = dir.file("jargon.bpe");
  tokenizer::save(small_bpe(), tok_path);
  const std::string old_json = "{\"kind\":\"bpe\",\"path\":\"" + tok_path + "\"}";
  TextTokenizer tok = TextTokenizer::from_json(old_json, "old.safetensors");
  CHECK(tok.vocab_size() == int64_t(small_bpe().vocab_size()));
  CHECK(tok.decode(tok.encode("a wizard")) == "a wizard");
  fs::remove(tok_path);
  CHECK_THROWS_AS(TextTokenizer::from_json(old_json, "old.safetensors"), io_error);
  CHECK_THROWS_WITH(TextTokenizer::from_json(old_json, "old.safetensors"),
                    LOOM_CONTAINS("old.safetensors: this checkpoint does not contain its tokenizer, only the path '" +
                                  tok_path + "'"));
  CHECK_THROWS_WITH(TextTokenizer::from_json(old_json, "old.safetensors"), LOOM_CONTAINS("cannot open for reading"));
}

TEST_CASE("CsvLog::drop_rows_after keeps the rows up to a step, and the header") {
  ScratchDir dir("csv");
  const std::string path = dir.file("log.csv");
  {
    CsvLog log(path);
    for (int64_t s = 1; s <= 7; ++s) log.write({s, 3.0 - 0.1 * double(s), s % 3 == 0 ? 2.5 : NAN, 1e-3, 100, 0.1});
  }
  std::ofstream(path, std::ios::app) << "8,2.2";  // a row cut off mid-write by the interruption
  CHECK(CsvLog::drop_rows_after(path, 3) == 5);  // rows 4..7 and the cut-off line
  auto rows = CsvLog::read(path);
  REQUIRE(rows.size() == 3);
  CHECK(rows.back().step == 3);
  CHECK(rows.back().val_loss == Approx(2.5));
  CHECK(CsvLog::drop_rows_after(path, 3) == 0);  // nothing more to drop: the file is untouched
  {
    CsvLog log(path, /*append=*/true);  // the resumed run logs steps 4.. again, once
    log.write({4, 2.0, NAN, 1e-3, 100, 0.1});
  }
  rows = CsvLog::read(path);
  REQUIRE(rows.size() == 4);
  for (size_t i = 0; i < rows.size(); ++i) CHECK(rows[i].step == int64_t(i) + 1);
  CHECK(io::read_file(path).rfind("step,train_loss,val_loss,lr,tokens_per_s,elapsed_s\n", 0) == 0);
  CHECK(CsvLog::drop_rows_after(dir.file("missing.csv"), 3) == 0);
  CHECK_FALSE(fs::exists(dir.file("missing.csv")));
}

// --- the loom-train and loom-sample programs (built with the examples) --------------------------

#if defined(LOOM_TRAIN_EXE) && defined(LOOM_SAMPLE_EXE)
#include <sys/wait.h>

#include "programs.hpp"

namespace {
using loom_test::run_program;
using loom_test::shell_quote;

// loom-train on a model small enough to train in a moment; `extra` adds or overrides flags.
std::string loom_train(const std::string& extra) {
  return shell_quote(LOOM_TRAIN_EXE) +
         " --preset char --n-layer 1 --n-head 1 --n-embd 8 --block-size 8 --batch-size 2 --eval-iters 1"
         " --final-eval-iters 1 --sample-tokens 0 --threads 1 " + extra;
}
std::string loom_sample(const std::string& extra) {
  return shell_quote(LOOM_SAMPLE_EXE) + " --tokens 5 " + extra;
}
std::vector<int64_t> logged_steps(const std::string& path) {
  std::vector<int64_t> steps;
  for (const LogRow& r : CsvLog::read(path)) steps.push_back(r.step);
  return steps;
}
// A process id that is surely not running: a child that has exited and been reaped.
long dead_pid() {
  pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) ::_exit(0);
  int status = 0;
  REQUIRE(::waitpid(child, &status, 0) == child);
  return long(child);
}
}  // namespace

TEST_CASE("loom-train names an empty data file and a folder given as data", "[program]") {
  ScratchDir dir("prog_errors");
  write_text(dir.file("empty.txt"), "");
  fs::create_directory(dir.path / "texts");
  auto run = run_program(loom_train("--data empty.txt --out run"), dir.path.string());
  CHECK(run.status == 1);
  CHECK_THAT(run.output, LOOM_CONTAINS("loom-train: empty.txt: the data file is empty"));
  CHECK_THAT(run.output, !LOOM_CONTAINS("GPTConfig"));
  run = run_program(loom_train("--data texts --out run"), dir.path.string());
  CHECK(run.status == 1);
  CHECK_THAT(run.output, LOOM_CONTAINS("loom-train: texts is a folder but not one that loom-data wrote"));
}

TEST_CASE("loom-train and loom-sample refuse a malformed option before doing anything, with status 2", "[program]") {
  ScratchDir dir("prog_options");
  write_text(dir.file("text.txt"), "hello world\n");
  struct Bad { std::string args, says; };
  std::vector<Bad> bad = {{"--steps 10x", "option --steps: '10x' is not a number"},
                          {"--lr 1e-3abc", "option --lr: '1e-3abc' is not a number"},
                          {"--seed -1", "option --seed: '-1' is not a number"},
                          {"--stpes 10", "unknown option '--stpes' (see --help)"},
                          {"--steps", "option --steps needs a value"}};
  for (const Bad& b : bad) {
    CAPTURE(b.args);
    auto run = run_program(loom_train("--data text.txt --out run " + b.args), dir.path.string());
    CHECK(run.status == 2);
    CHECK_THAT(run.output, LOOM_CONTAINS("loom-train: " + b.says));
    CHECK_FALSE(fs::exists(dir.path / "run"));
  }
  auto run = run_program(loom_sample("--ckpt none.safetensors --top-k 5x"), dir.path.string());
  CHECK(run.status == 2);
  CHECK_THAT(run.output, LOOM_CONTAINS("loom-sample: option --top-k: '5x' is not a number"));
  run = run_program(loom_sample("--ckpt none.safetensors"), dir.path.string());  // a file that is not there
  CHECK(run.status == 1);
  CHECK_THAT(run.output, LOOM_CONTAINS("none.safetensors"));
}

TEST_CASE("loom-train with a BPE tokenizer: the checkpoint alone samples, from any folder", "[program]") {
  ScratchDir dir("prog_bpe");
  write_text(dir.file("data.txt"), corpus_text());
  tokenizer::save(small_bpe(), dir.file("jargon.bpe"));
  auto run = run_program(loom_train("--data data.txt --tokenizer jargon.bpe --steps 3 --eval-interval 3 --out run"),
                         dir.path.string());
  REQUIRE(run.status == 0);
  fs::remove(dir.file("jargon.bpe"));
  fs::create_directories(dir.path / "elsewhere");
  const std::string elsewhere = dir.file("elsewhere");
  run = run_program(loom_sample("--ckpt ../run/ckpt.safetensors --prompt 'a hack'"), elsewhere);
  CHECK(run.status == 0);
  CHECK(run.output.rfind("a hack", 0) == 0);
  run = run_program(loom_sample("--ckpt ../run/ckpt.safetensors --prompt ''"), elsewhere);  // unconditional
  CHECK(run.status == 0);
  CHECK_THAT(run.output, !LOOM_CONTAINS("loom-sample:"));

  // A checkpoint from before the model was embedded names a file that is gone: a clear error,
  // and --tokenizer supplies the file.
  io::Checkpoint c = io::load_checkpoint(dir.file("run/ckpt.safetensors"));
  c.set_meta("tokenizer", "{\"kind\":\"bpe\",\"path\":\"gone.bpe\"}");
  io::save_checkpoint(dir.file("old.safetensors"), c);
  run = run_program(loom_sample("--ckpt ../old.safetensors"), elsewhere);
  CHECK(run.status == 1);
  CHECK_THAT(run.output, LOOM_CONTAINS("../old.safetensors: this checkpoint does not contain its tokenizer, only "
                                       "the path 'gone.bpe'"));
  tokenizer::save(small_bpe(), dir.file("elsewhere/found.bpe"));
  run = run_program(loom_sample("--ckpt ../old.safetensors --tokenizer found.bpe"), elsewhere);
  CHECK(run.status == 0);
}

TEST_CASE("loom-sample --prompt '' samples unconditionally from a character model", "[program]") {
  ScratchDir dir("prog_char");
  write_text(dir.file("data.txt"), corpus_text());
  REQUIRE(run_program(loom_train("--data data.txt --steps 2 --eval-interval 2 --out run"), dir.path.string()).status == 0);
  auto run = run_program(loom_sample("--ckpt run/ckpt.safetensors --prompt ''"), dir.path.string());
  CHECK(run.status == 0);
  CHECK_THAT(run.output, !LOOM_CONTAINS("loom-sample:"));
}

TEST_CASE("loom-train --resume logs every step once and clears stale temporary files", "[program]") {
  ScratchDir dir("prog_resume");
  write_text(dir.file("data.txt"), corpus_text());
  REQUIRE(run_program(loom_train("--data data.txt --steps 3 --eval-interval 3 --out run"), dir.path.string()).status == 0);
  CHECK(logged_steps(dir.file("run/log.csv")) == std::vector<int64_t>{1, 2, 3});
  // The run went on to step 5 and was killed there: rows 4 and 5 are logged but not checkpointed,
  // and two atomic writes were cut short.
  std::ofstream(dir.file("run/log.csv"), std::ios::app) << "4,4.1,,0.001,100,0.5\n5,4.0,,0.001,100,0.6\n";
  const std::string pid = std::to_string(dead_pid());
  for (const std::string& name : {"ckpt.safetensors.tmp." + pid, "loss.svg.tmp." + pid, "notes.txt.tmp." + pid})
    write_text(dir.file("run/" + name), "partial");

  auto run = run_program(loom_train("--data data.txt --steps 6 --eval-interval 3 --out run --resume"),
                         dir.path.string());
  REQUIRE(run.status == 0);
  CHECK_THAT(run.output, LOOM_CONTAINS("resumed from run/ckpt.safetensors at step 3"));
  CHECK_THAT(run.output, LOOM_CONTAINS("removed run/ckpt.safetensors.tmp." + pid));
  CHECK(logged_steps(dir.file("run/log.csv")) == std::vector<int64_t>{1, 2, 3, 4, 5, 6});
  CHECK_FALSE(fs::exists(dir.file("run/ckpt.safetensors.tmp." + pid)));
  CHECK_FALSE(fs::exists(dir.file("run/loss.svg.tmp." + pid)));
  CHECK(fs::exists(dir.file("run/notes.txt.tmp." + pid)));  // not one of loom-train's files: left alone
  CHECK(io::load_checkpoint(dir.file("run/ckpt.safetensors")).meta_int("step") == 6);
}

TEST_CASE("loom-train --arch llama trains, resumes bit for bit, and samples from its checkpoint", "[program]") {
  ScratchDir dir("prog_llama");
  write_text(dir.file("data.txt"), corpus_text());
  // one schedule for both runs (by default the cosine decays over --steps)
  const std::string model = " --arch llama --n-layer 2 --n-head 4 --n-embd 32 --block-size 32 --batch-size 4 "
                            "--lr-decay-steps 4";
  auto straight = run_program(loom_train("--data data.txt --steps 4 --eval-interval 2 --out a" + model), dir.path.string());
  INFO(straight.output);
  REQUIRE(straight.status == 0);
  CHECK_THAT(straight.output, LOOM_CONTAINS("arch=llama"));
  CHECK_THAT(straight.output, LOOM_CONTAINS("model: char llama"));
  REQUIRE(run_program(loom_train("--data data.txt --steps 2 --eval-interval 2 --out b" + model), dir.path.string()).status == 0);
  auto resumed = run_program(loom_train("--data data.txt --steps 4 --eval-interval 2 --out b --resume" + model),
                             dir.path.string());
  INFO(resumed.output);
  REQUIRE(resumed.status == 0);
  // the resumed run ends with the straight run's weights
  io::Checkpoint a = io::load_checkpoint(dir.file("a/ckpt.safetensors")), b = io::load_checkpoint(dir.file("b/ckpt.safetensors"));
  CHECK(a.meta_json("config").at("arch").as_string() == "llama");
  for (const std::string& n : a.names("model.")) {
    CAPTURE(n);
    CHECK(a.get<float>(n).to_vector() == b.get<float>(n).to_vector());
  }
  // a GPT-2 run cannot resume the Llama's checkpoint
  auto other = run_program(loom_train("--data data.txt --steps 6 --out a --resume --n-layer 2 --n-head 4 --n-embd 32 "
                                      "--block-size 32 --batch-size 4"), dir.path.string());
  CHECK(other.status == 1);
  CHECK_THAT(other.output, LOOM_CONTAINS("differs from this model"));
  auto sample = run_program(loom_sample("--ckpt a/ckpt.safetensors"), dir.path.string());
  CHECK(sample.status == 0);
  CHECK_THAT(sample.output, !LOOM_CONTAINS("loom-sample:"));
  auto bad = run_program(loom_train("--data data.txt --arch llama --n-kv-head 3 --steps 1 --out c"), dir.path.string());
  CHECK(bad.status == 1);
  CHECK_THAT(bad.output, LOOM_CONTAINS("LlamaConfig: n_kv_head (3) must divide n_head"));
}
#endif
