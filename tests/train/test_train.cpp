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
