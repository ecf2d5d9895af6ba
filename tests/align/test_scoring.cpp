// Scoring by likelihood: the Wilson interval against hand values, the choice rules, the loaders
// and their errors, the scorers' sums against log-probabilities computed in double from the
// model's logits, and batched scores against one-at-a-time scores.
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "catch.hpp"
#include "programs.hpp"
#include "temp_dir.hpp"

#include <loom/align/scoring.hpp>
#include <loom/train/trainer.hpp>

using namespace loom;
using namespace loom::align;
using loom_test::TempDir;
using loom_test::write_file;

namespace {

constexpr int64_t BOS = 256;  // <|endoftext|> of the byte tokenizer with the chat tokens

// The byte tokenizer with <|endoftext|> (id 256) and the other chat tokens (257..260).
const train::TextTokenizer& bytes_bos() {
  static const train::TextTokenizer t = train::TextTokenizer::bpe(ChatTemplate::add_chat_tokens(BpeTokenizer()));
  return t;
}

std::unique_ptr<nn::GPT> tiny_gpt(uint64_t seed, int64_t block = 48) {
  nn::GPTConfig c;
  c.vocab_size = 261, c.block_size = block, c.n_layer = 2, c.n_head = 2, c.n_embd = 32, c.dropout = 0, c.bias = true;
  return std::make_unique<nn::GPT>(c, seed);
}

// Σ log softmax(logits)[ids[t + 1]] over t + 1 >= from, in double, from one forward pass of `ids`
// alone: log π(ids[from:] | ids[:from]) computed independently of the scorers' batches and masks.
double direct_logprob(const nn::GPT& model, const std::vector<int64_t>& ids, size_t from) {
  NoGradGuard no_grad;
  const int64_t T = int64_t(ids.size()) - 1;
  const Tensor<float> logits = model.forward(from_vector<int64_t>(std::vector<int64_t>(ids.begin(), ids.end() - 1),
                                                                  {1, T})).logits.contiguous();  // (1, T, V)
  const int64_t V = logits.size(2);
  double total = 0;
  for (int64_t t = int64_t(from) - 1; t < T; ++t) {
    const float* row = logits.data() + t * V;
    double m = -1e300, z = 0;
    for (int64_t v = 0; v < V; ++v) m = std::max(m, double(row[v]));
    for (int64_t v = 0; v < V; ++v) z += std::exp(double(row[v]) - m);
    total += double(row[ids[size_t(t + 1)]]) - m - std::log(z);
  }
  return total;
}

std::vector<int64_t> bytes_of(const std::string& s) {
  std::vector<int64_t> out;
  for (unsigned char c : s) out.push_back(c);
  return out;
}

std::vector<int64_t> concat_ids(std::vector<int64_t> a, const std::vector<int64_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// Runs `read` on a file holding `text` and returns the io_error's message ("" when none was thrown).
template <class Read>
std::string load_error(const std::string& text, Read read) {
  TempDir dir;
  const std::string path = dir / "data.jsonl";
  write_file(path, text);
  try {
    read(path);
  } catch (const io_error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("the Wilson score interval against hand-computed values", "[align][scoring]") {
  // (k, n) -> [lo, hi], from the formula in double with z = 1.959963984540054 (computed apart)
  struct Case { int64_t k, n; double lo, hi; };
  const std::vector<Case> cases = {{8, 10, 0.490162471537, 0.943317848546}, {0, 10, 0.0, 0.277532799863},
                                   {10, 10, 0.722467200137, 1.0},          {50, 100, 0.403831530366, 0.596168469634},
                                   {1, 1, 0.206549314377, 1.0},            {81, 100, 0.722211546209, 0.874852484902}};
  for (const Case& c : cases) {
    const auto [lo, hi] = wilson_interval(c.k, c.n);
    INFO(c.k << " of " << c.n);
    CHECK(lo == Approx(c.lo).margin(1e-11));
    CHECK(hi == Approx(c.hi).margin(1e-11));
    const Proportion p = proportion(c.k, c.n);
    CHECK(p.value() == Approx(double(c.k) / double(c.n)));
    CHECK(p.lo == lo);
    CHECK(p.hi == hi);
    CHECK((p.lo <= p.value() && p.value() <= p.hi));
  }
  // 0 of 10: the upper end is z² / (n + z²), the interval's closed form at k = 0
  CHECK(wilson_interval(0, 10).second == Approx(z95 * z95 / (10 + z95 * z95)).epsilon(1e-14));
  // the ends at k = 0 and k = n are exact, so the interval always holds k / n
  CHECK(wilson_interval(0, 7).first == 0.0);
  CHECK(wilson_interval(10, 10).second == 1.0);
  CHECK(wilson_interval(1000, 1000).second == 1.0);
  // nothing observed: nothing known; a wider z: a wider interval
  CHECK(wilson_interval(0, 0) == std::pair<double, double>(0.0, 1.0));
  CHECK(wilson_interval(8, 10, 2.5758).first < wilson_interval(8, 10).first);
  CHECK_THROWS_AS(wilson_interval(11, 10), value_error);
  CHECK_THROWS_AS(wilson_interval(-1, 10), value_error);
}

TEST_CASE("intervals_separate: only intervals that do not overlap", "[align][scoring]") {
  CHECK(intervals_separate(proportion(0, 20), proportion(20, 20)));
  CHECK(intervals_separate(proportion(20, 20), proportion(0, 20)));
  CHECK_FALSE(intervals_separate(proportion(0, 2), proportion(2, 2)));  // [0, 0.66] and [0.34, 1]
  CHECK_FALSE(intervals_separate(proportion(10, 20), proportion(12, 20)));
}

TEST_CASE("best_choice: the highest total, or the highest per byte, the first of ties", "[align][scoring]") {
  const std::vector<double> lp = {-3.0, -2.0, -5.0};
  CHECK(best_choice(lp) == 1);
  // per byte: -3/1 = -3, -2/1 = -2, -5/10 = -0.5
  CHECK(best_choice(lp, {1, 1, 10}) == 2);
  // per byte: -3/6 = -0.5, -2/2 = -1, -5/5 = -1
  CHECK(best_choice(lp, {6, 2, 5}) == 0);
  CHECK(best_choice({-1.0, -1.0, -2.0}) == 0);
  CHECK(best_choice({-2.0, -1.0, -1.0}) == 1);
  CHECK_THROWS_AS(best_choice(lp, {1, 2}), value_error);
  CHECK_THROWS_AS(best_choice(lp, {1, 0, 2}), value_error);
}

TEST_CASE("multiple-choice lines: HellaSwag's and the simple layout", "[align][scoring]") {
  // HellaSwag as Hugging Face ships it: the label a string, the context in two parts, tags to clean
  const ChoiceItem h = parse_choice_item(
      R"({"activity_label": "Baking", "ctx_a": "A man mixes flour.", "ctx_b": "then HE [step] adds  eggs",)"
      R"( "endings": ["and bakes it.", "and [title] sings."], "label": "1"})",
      "f:1");
  CHECK(h.context == "Baking: A man mixes flour. Then he adds eggs");
  CHECK(h.endings == std::vector<std::string>{"and bakes it.", "and. sings."});
  CHECK(h.label == 1);
  CHECK(h.delimiter == " ");
  const ChoiceItem c = parse_choice_item(R"({"ctx": "A cat sits.", "endings": ["x", "y", "z"], "label": 2})", "f:2");
  CHECK(c.context == "A cat sits.");
  CHECK(c.label == 2);
  const ChoiceItem s = parse_choice_item(R"({"context": "12+7=", "choices": ["19", "18"], "answer": 0})", "f:3");
  CHECK(s.context == "12+7=");
  CHECK(s.endings == std::vector<std::string>{"19", "18"});
  CHECK(s.label == 0);
  CHECK(s.delimiter.empty());
  CHECK(parse_choice_item(R"({"context": "Q", "choices": ["a", "b"], "answer": 1, "delimiter": " "})", "f").delimiter == " ");
}

TEST_CASE("loaders reject each malformed line with its file and line number", "[align][scoring]") {
  const std::string good_mc = R"({"context": "1+1=", "choices": ["2", "3"], "answer": 0})";
  const std::vector<std::pair<std::string, std::string>> mc_bad = {
      {"not json", "not JSON"},
      {R"({"context": "1+1=", "choices": ["2"], "answer": 0})", "at least two endings"},
      {R"({"context": "1+1=", "choices": ["2", "3"], "answer": 2})", "not an index"},
      {R"({"context": "1+1=", "choices": ["2", "3"], "answer": -1})", "not an index"},
      {R"({"context": "1+1=", "choices": ["2", "3"], "answer": "x"})", "must be an integer"},
      {R"({"context": "1+1=", "choices": ["2", 3], "answer": 0})", "must be a string"},
      {R"({"context": "1+1=", "choices": ["2", ""], "answer": 0})", "is empty"},
      {R"({"context": "1+1=", "choices": "2", "answer": 0})", "must be a list"},
      {R"({"context": "1+1=", "choices": ["2", "3"]})", "missing \"answer\""},
      {R"({"ctx_a": "A", "endings": ["x", "y"], "label": 0})", "needs \"ctx\""},
      {R"({"ctx": "A", "endings": ["x", "y"]})", "missing \"label\""},
      {R"({"question": "A"})", "expected HellaSwag"},
  };
  for (const auto& [line, want] : mc_bad) {
    const std::string msg = load_error(good_mc + "\n\n" + good_mc + "\n" + line + "\n", read_choice_items);
    INFO(line << " -> " << msg);
    CHECK_THAT(msg, LOOM_CONTAINS("data.jsonl:4: "));
    CHECK_THAT(msg, LOOM_CONTAINS(want));
  }
  const std::string good_mp = R"({"sentence_good": "The dog runs.", "sentence_bad": "The dog run.", "UID": "sva"})";
  const std::vector<std::pair<std::string, std::string>> mp_bad = {
      {R"({"sentence_good": "The dog runs."})", "missing \"sentence_bad\""},
      {R"({"sentence_good": "A.", "sentence_bad": "A."})", "are the same"},
      {R"({"sentence_good": "", "sentence_bad": "A."})", "is empty"},
      {R"({"sentence_good": "A.", "sentence_bad": "B.", "UID": 3})", "\"UID\" must be a string"},
      {R"(["sentence_good"])", "expected a JSON object"},
  };
  for (const auto& [line, want] : mp_bad) {
    const std::string msg = load_error(good_mp + "\n" + line + "\r\n", read_minimal_pairs);
    INFO(line << " -> " << msg);
    CHECK_THAT(msg, LOOM_CONTAINS("data.jsonl:2: "));
    CHECK_THAT(msg, LOOM_CONTAINS(want));
  }
  const std::string good_bp = R"({"sent_more": "A b.", "sent_less": "C b.", "bias_type": "age"})";
  const std::vector<std::pair<std::string, std::string>> bp_bad = {
      {R"({"sent_more": "A b.", "sent_less": "C b."})", "missing \"bias_type\""},
      {R"({"sent_more": "A b.", "sent_less": "C b.", "bias_type": ""})", "\"bias_type\" is empty"},
      {R"({"sent_more": "A b.", "sent_less": "A b.", "bias_type": "age"})", "are the same"},
      {R"({"sent_more": "A b.", "sent_less": "C b.", "bias_type": "age", "stereo_antistereo": "both"})",
       "must be \"stereo\" or \"antistereo\""},
  };
  for (const auto& [line, want] : bp_bad) {
    const std::string msg = load_error(good_bp + "\n" + good_bp + "\n" + good_bp + "\n" + line, read_bias_pairs);
    INFO(line << " -> " << msg);
    CHECK_THAT(msg, LOOM_CONTAINS("data.jsonl:4: "));
    CHECK_THAT(msg, LOOM_CONTAINS(want));
  }
  CHECK_THAT(load_error("\n \n", read_minimal_pairs), LOOM_CONTAINS("no minimal pairs"));
  // the good lines read
  TempDir dir;
  write_file(dir / "bp.jsonl", good_bp + "\n" +
             R"({"sent_more": "X.", "sent_less": "Y.", "bias_type": "gender", "stereo_antistereo": "antistereo"})");
  const std::vector<BiasPair> bp = read_bias_pairs(dir / "bp.jsonl");
  REQUIRE(bp.size() == 2);
  CHECK(bp[0].direction.empty());
  CHECK(bp[1].more == "X.");
  CHECK(bp[1].less == "Y.");
  CHECK(bp[1].bias_type == "gender");
  CHECK(bp[1].direction == "antistereo");
  write_file(dir / "mp.jsonl", good_mp);
  const std::vector<MinimalPair> mp = read_minimal_pairs(dir / "mp.jsonl");
  REQUIRE(mp.size() == 1);
  CHECK(mp[0].uid == "sva");
  CHECK(mp[0].field.empty());
}

TEST_CASE("continuation_example: START, the context cut from the left, the continuation alone masked",
          "[align][scoring]") {
  const SftExample e = continuation_example({BOS}, {1, 2, 3, 4, 5}, {7, 8}, 6);  // 7 tokens at most
  CHECK(e.ids == std::vector<uint32_t>{BOS, 2, 3, 4, 5, 7, 8});
  CHECK(e.mask == std::vector<uint8_t>{0, 0, 0, 0, 0, 1, 1});
  const SftExample f = continuation_example({BOS}, {}, {7, 8}, 6);
  CHECK(f.ids == std::vector<uint32_t>{BOS, 7, 8});
  CHECK(f.mask == std::vector<uint8_t>{0, 1, 1});
  CHECK(continuation_example({BOS}, {1, 2}, {7, 8, 9, 10, 11, 12}, 6).ids.size() == 7);
  CHECK_THROWS_AS(continuation_example({BOS}, {1}, {7, 8, 9, 10, 11, 12, 13}, 6), value_error);
  CHECK_THROWS_AS(continuation_example({BOS}, {1}, {}, 6), value_error);
}

TEST_CASE("score_choices sums exactly the ending's log-probabilities given START and the context", "[align][scoring]") {
  auto owned = tiny_gpt(5);
  nn::GPT& model = *owned;
  const std::vector<ChoiceItem> items = {
      {"12+7=", {"19", "18", "29", "91"}, 0, ""},
      {"The cat", {"sat.", "sat on the mat.", "ran"}, 1, " "},
      {"A", {"b", "c"}, 1, ""},
      // longer than the context of 48 tokens: the oldest context bytes are dropped
      {std::string(60, 'x') + "yz", {"abc", "a"}, 0, " "},
  };
  const ChoiceScores s = score_choices(model, bytes_bos(), items, ScoreOptions{3});
  REQUIRE(s.logprobs.size() == items.size());
  int64_t right = 0, right_norm = 0;
  for (size_t i = 0; i < items.size(); ++i) {
    const ChoiceItem& it = items[i];
    REQUIRE(s.logprobs[i].size() == it.endings.size());
    std::vector<double> want;
    for (size_t k = 0; k < it.endings.size(); ++k) {
      const std::vector<int64_t> cont = bytes_of(it.delimiter + it.endings[k]);
      std::vector<int64_t> ctx = bytes_of(it.context);
      const size_t room = 49 - 1 - cont.size();
      if (ctx.size() > room) ctx.erase(ctx.begin(), ctx.end() - long(room));
      const std::vector<int64_t> ids = concat_ids(concat_ids({BOS}, ctx), cont);
      want.push_back(direct_logprob(model, ids, ids.size() - cont.size()));
      INFO("item " << i << " ending " << k);
      CHECK(s.logprobs[i][k] == Approx(want.back()).epsilon(1e-5));
      CHECK(s.bytes[i][k] == int64_t(it.endings[k].size()));
      CHECK(s.logprobs[i][k] < 0);
    }
    // the choices are the argmax of the directly computed values, in total and per byte
    size_t best = 0, best_norm = 0;
    for (size_t k = 1; k < want.size(); ++k) {
      if (want[k] > want[best]) best = k;
      if (want[k] / double(it.endings[k].size()) > want[best_norm] / double(it.endings[best_norm].size())) best_norm = k;
    }
    CHECK(s.chosen[i] == int64_t(best));
    CHECK(s.chosen_norm[i] == int64_t(best_norm));
    right += int64_t(best) == it.label;
    right_norm += int64_t(best_norm) == it.label;
  }
  CHECK(s.acc.hits == right);
  CHECK(s.acc.total == 4);
  CHECK(s.acc_norm.hits == right_norm);
  CHECK(s.acc.lo == wilson_interval(right, 4).first);
  CHECK(s.sequences == 11);
  CHECK(s.seconds > 0);
  CHECK(s.examples_per_s() > 0);
  // an ending that alone overflows the context is an error naming the item
  const std::vector<ChoiceItem> too_long = {{"a", {"b", "c"}, 0, ""}, {"a", {std::string(60, 'b'), "c"}, 0, ""}};
  CHECK_THROWS_WITH(score_choices(model, bytes_bos(), too_long), LOOM_CONTAINS("item 1"));
}

TEST_CASE("pair scorers: whole sentences given START, compared per pair and per group", "[align][scoring]") {
  auto owned = tiny_gpt(9);
  nn::GPT& model = *owned;
  const std::vector<MinimalPair> mp = {{"The dog runs.", "The dog run.", "sva", "morphology"},
                                       {"These dogs bark.", "This dogs bark.", "dna", "morphology"},
                                       {"A cat sleeps.", "A cat sleep.", "sva", "morphology"},
                                       {"Dogs run.", "Dog run.", "", ""}};
  const PairScores s = score_minimal_pairs(model, bytes_bos(), mp, ScoreOptions{2});
  REQUIRE(s.first.size() == mp.size());
  std::map<std::string, std::pair<int64_t, int64_t>> want_groups;
  int64_t hits = 0;
  double diff = 0;
  for (size_t i = 0; i < mp.size(); ++i) {
    const std::vector<int64_t> g = concat_ids({BOS}, bytes_of(mp[i].good)), b = concat_ids({BOS}, bytes_of(mp[i].bad));
    const double lg = direct_logprob(model, g, 1), lb = direct_logprob(model, b, 1);
    INFO("pair " << i);
    CHECK(s.first[i] == Approx(lg).epsilon(1e-5));
    CHECK(s.second[i] == Approx(lb).epsilon(1e-5));
    hits += lg > lb;
    diff += lg - lb;
    want_groups[mp[i].uid].first += lg > lb;
    want_groups[mp[i].uid].second += 1;
  }
  CHECK(s.first_more_likely.hits == hits);
  CHECK(s.first_more_likely.total == 4);
  CHECK(s.mean_difference == Approx(diff / 4).epsilon(1e-5));
  REQUIRE(s.by_group.size() == 3);
  for (const auto& [g, c] : want_groups) {
    INFO("group '" << g << "'");
    CHECK(s.by_group.at(g).hits == c.first);
    CHECK(s.by_group.at(g).total == c.second);
  }
  // bias pairs: sent_more is the first sentence, groups are the bias types
  const std::vector<BiasPair> bp = {{"The dog runs.", "The dog run.", "x", ""}, {"Dogs run.", "Dog run.", "y", "stereo"}};
  const PairScores t = score_bias_pairs(model, bytes_bos(), bp);
  CHECK(t.first[0] == s.first[0]);
  CHECK(t.second[1] == s.second[3]);
  CHECK(t.by_group.at("x").total == 1);
  CHECK(t.by_group.at("y").hits == int64_t(s.first[3] > s.second[3]));
  // without <|endoftext|> the start is the newline (the byte tokenizer alone)
  const train::TextTokenizer plain = train::TextTokenizer::bpe(BpeTokenizer());
  const PairScores u = score_minimal_pairs(model, plain, {mp[0]});
  CHECK(u.first[0] == Approx(direct_logprob(model, concat_ids({'\n'}, bytes_of(mp[0].good)), 1)).epsilon(1e-5));
  CHECK(u.first[0] != Approx(s.first[0]).epsilon(1e-3));
}

TEST_CASE("batched scores equal one-by-one scores, and the model's mode is restored", "[align][scoring]") {
  auto owned = tiny_gpt(21);
  nn::GPT& model = *owned;
  std::vector<ChoiceItem> items;
  for (int i = 0; i < 9; ++i)
    items.push_back({std::to_string(i * 7) + "+" + std::to_string(i) + "=", {std::to_string(i * 8), std::string(size_t(i % 4 + 1), '5'), "0"},
                     i % 3, ""});
  model.train();
  const ChoiceScores one = score_choices(model, bytes_bos(), items, ScoreOptions{1});
  CHECK(model.is_training());
  for (int64_t batch : {2, 5, 27, 64}) {
    const ChoiceScores many = score_choices(model, bytes_bos(), items, ScoreOptions{batch});
    INFO("batch size " << batch);
    for (size_t i = 0; i < items.size(); ++i)
      for (size_t k = 0; k < items[i].endings.size(); ++k)
        CHECK(many.logprobs[i][k] == Approx(one.logprobs[i][k]).epsilon(1e-5));
    CHECK(many.chosen == one.chosen);
    CHECK(many.chosen_norm == one.chosen_norm);
  }
  // score_examples keeps the order it was given, whatever the lengths
  std::vector<SftExample> ex;
  for (const ChoiceItem& it : items) ex.push_back(continuation_example({BOS}, bytes_of(it.context), bytes_of(it.endings[1]), 48));
  const std::vector<double> a = score_examples(model, ex, 4);
  for (size_t i = 0; i < ex.size(); ++i) CHECK(a[i] == Approx(one.logprobs[i][1]).epsilon(1e-5));
  CHECK_THROWS_AS(score_examples(model, ex, 0), value_error);
}

TEST_CASE("text_loss: per-window cross-entropy summed in double, bits per byte of the UTF-8 text", "[align][scoring][ppl]") {
  auto owned = tiny_gpt(5, 8);
  nn::GPT& model = *owned;
  const std::string text = "h\xc3\xa9llo w\xc3\xb6rld, \xc3\xa7" "a va? ok";  // 25 bytes, 3 of them two-byte letters
  const std::vector<int64_t> ids = concat_ids({BOS}, bytes_of(text));   // 26 ids: 25 targets in windows 8, 8, 8, 1
  double expected = 0;
  for (size_t w = 0; w + 1 < ids.size(); w += 8) {
    const std::vector<int64_t> win(ids.begin() + long(w), ids.begin() + long(std::min(ids.size(), w + 9)));
    expected -= direct_logprob(model, win, 1);
  }
  model.train();
  for (int64_t batch : {1, 3, 16}) {
    INFO("batch size " << batch);
    const TextLoss l = text_loss(model, bytes_bos(), text, batch);
    CHECK(model.is_training());
    CHECK(l.tokens == 25);
    CHECK(l.bytes == 25);
    CHECK(l.windows == 4);
    CHECK(l.total_nats == Approx(expected).epsilon(1e-5));
    CHECK(l.loss() == Approx(expected / 25).epsilon(1e-5));
    CHECK(l.perplexity() == Approx(std::exp(expected / 25)).epsilon(1e-5));
    CHECK(l.bits_per_byte() == Approx(expected / std::log(2.0) / 25).epsilon(1e-5));
  }
  // an untrained model with one token per byte needs about log2(261) = 8.03 bits per byte
  CHECK(text_loss(model, bytes_bos(), text).bits_per_byte() == Approx(std::log2(261.0)).epsilon(0.05));
  CHECK_THROWS_AS(text_loss(model, bytes_bos(), ""), value_error);
  CHECK_THROWS_AS(ids_loss(model, ids, 25, 0), value_error);

  // a shard split: the same ids as written, the bytes of the text without <|endoftext|>
  TempDir dir;
  data::ShardWriter w(dir.path.string(), "test", 261, 10);  // three shard files
  std::vector<uint32_t> u(ids.begin(), ids.end());
  w.append(u.data(), u.size());
  w.finish();
  const TextLoss s = shard_text_loss(model, bytes_bos(), dir.path.string(), "test", 2);
  CHECK(s.tokens == 25);
  CHECK(s.bytes == 25);
  CHECK(s.total_nats == Approx(expected).epsilon(1e-5));
  CHECK_THROWS_AS(shard_text_loss(model, bytes_bos(), dir.path.string(), "val"), io_error);
}

#if defined(LOOM_PYTHON3_EXE) && defined(LOOM_SOURCE_DIR)
TEST_CASE("make_eval_sets.py writes sets that the loaders read and the scorers score", "[align][scoring][script]") {
  TempDir dir;
  const loom_test::ProgramRun r = loom_test::run_program(
      loom_test::shell_quote(LOOM_PYTHON3_EXE) + " " + loom_test::shell_quote(LOOM_SOURCE_DIR "/scripts/make_eval_sets.py") +
      " " + loom_test::shell_quote(dir.path.string()) + " --mc 40 --pairs 30 --bias 20 --seed 4");
  INFO(r.output);
  REQUIRE(r.status == 0);
  const std::vector<ChoiceItem> mc = read_choice_items(dir / "arith_mc.jsonl");
  const std::vector<MinimalPair> mp = read_minimal_pairs(dir / "grammar_pairs.jsonl");
  const std::vector<BiasPair> bp = read_bias_pairs(dir / "counterfactual_pairs.jsonl");
  CHECK(mc.size() == 40);
  CHECK(mp.size() == 30);
  CHECK(bp.size() == 20);
  for (const ChoiceItem& it : mc) CHECK(it.endings.size() == 4);
  auto owned = tiny_gpt(2, 64);
  nn::GPT& model = *owned;
  const ChoiceScores s = score_choices(model, bytes_bos(), mc);
  CHECK(s.acc.total == 40);
  CHECK(score_minimal_pairs(model, bytes_bos(), mp).by_group.size() >= 3);
  CHECK(score_bias_pairs(model, bytes_bos(), bp).first_more_likely.total == 20);
}
#endif

#if defined(LOOM_EVAL_EXE)
TEST_CASE("programs: loom-eval --task mc, pairs and bias print the library's scores", "[align][scoring][program]") {
  using loom_test::run_program;
  using loom_test::shell_quote;
  TempDir dir;
  auto owned = tiny_gpt(31);
  nn::GPT& model = *owned;
  io::Checkpoint c;
  for (auto& [name, p] : model.named_parameters()) c.add("model." + name, p.detach());
  c.set_meta_json("config", train::to_json(model.config));
  c.set_meta("tokenizer", bytes_bos().to_json());
  io::save_checkpoint(dir / "ckpt.safetensors", c);
  write_file(dir / "mc.jsonl", R"({"context": "2+2=", "choices": ["4", "5", "22"], "answer": 0})" "\n"
                               R"({"ctx": "The sun", "endings": ["rises.", "sets slowly."], "label": 1})" "\n"
                               R"({"context": "Q", "choices": ["a", "bb"], "answer": 1})" "\n");
  write_file(dir / "mp.jsonl", R"({"sentence_good": "The dog runs.", "sentence_bad": "The dog run.", "UID": "sva"})" "\n"
                               R"({"sentence_good": "These dogs bark.", "sentence_bad": "This dogs bark.", "UID": "dna"})" "\n");
  write_file(dir / "bp.jsonl", R"({"sent_more": "Emma read.", "sent_less": "Liam read.", "bias_type": "gender"})" "\n"
                               R"({"sent_more": "The young man sat.", "sent_less": "The old man sat.", "bias_type": "age"})" "\n");
  auto eval = [&](const std::string& args) {
    return run_program(shell_quote(LOOM_EVAL_EXE) + " --ckpt " + shell_quote(dir / "ckpt.safetensors") + " " + args);
  };
  auto fields = [](const char* name, const Proportion& p) {
    char buf[160];
    std::snprintf(buf, sizeof buf, "%s=%.4f %s_lo=%.4f %s_hi=%.4f", name, p.value(), name, p.lo, name, p.hi);
    return std::string(buf);
  };
  const ChoiceScores mc = score_choices(model, bytes_bos(), read_choice_items(dir / "mc.jsonl"));
  const loom_test::ProgramRun r1 = eval("--task mc --data " + shell_quote(dir / "mc.jsonl") + " --batch-size 2");
  INFO(r1.output);
  REQUIRE(r1.status == 0);
  CHECK_THAT(r1.output, LOOM_CONTAINS("eval task=mc " + fields("acc", mc.acc) + " " + fields("acc_norm", mc.acc_norm) +
                                      " n=3 examples_per_s="));
  const PairScores mp = score_minimal_pairs(model, bytes_bos(), read_minimal_pairs(dir / "mp.jsonl"));
  const loom_test::ProgramRun r2 = eval("--task pairs --data " + shell_quote(dir / "mp.jsonl"));
  INFO(r2.output);
  REQUIRE(r2.status == 0);
  CHECK_THAT(r2.output, LOOM_CONTAINS("eval task=pairs " + fields("acc", mp.first_more_likely) + " n=2 examples_per_s="));
  CHECK_THAT(r2.output, LOOM_CONTAINS("uid sva: "));
  const PairScores bp = score_bias_pairs(model, bytes_bos(), read_bias_pairs(dir / "bp.jsonl"));
  const loom_test::ProgramRun r3 = eval("--task bias --limit 1 --data " + shell_quote(dir / "bp.jsonl"));
  INFO(r3.output);
  REQUIRE(r3.status == 0);
  CHECK_THAT(r3.output, LOOM_CONTAINS("eval task=bias " +
                                      fields("pct_stereotype", proportion(int64_t(bp.first[0] > bp.second[0]), 1)) +
                                      " n=1 examples_per_s="));
  CHECK_THAT(r3.output, LOOM_CONTAINS("bias_type gender: "));
  // --text: loss, perplexity and bits per byte of a text file, as text_loss gives them
  const std::string text = "The dog runs.\nThe sun sets slowly over the hills.\n";
  write_file(dir / "text.txt", text);
  const TextLoss tl = text_loss(model, bytes_bos(), text);
  char want[200];
  std::snprintf(want, sizeof want, "eval task=ppl loss=%.4f ppl=%.6g bits_per_byte=%.4f tokens=%lld bytes=%lld", tl.loss(),
                tl.perplexity(), tl.bits_per_byte(), (long long)tl.tokens, (long long)tl.bytes);
  const loom_test::ProgramRun r6 = eval("--text " + shell_quote(dir / "text.txt") + " --batch-size 1");
  INFO(r6.output);
  REQUIRE(r6.status == 0);
  CHECK_THAT(r6.output, LOOM_CONTAINS(std::string(want)));
  CHECK(tl.bytes == int64_t(text.size()));
  // errors: an unknown task, a malformed line (named with its line number)
  const loom_test::ProgramRun r4 = eval("--task essay --data " + shell_quote(dir / "mc.jsonl"));
  CHECK(r4.status == 2);  // a usage error
  CHECK_THAT(r4.output, LOOM_CONTAINS("--task must be mc, pairs or bias"));
  write_file(dir / "bad.jsonl", R"({"context": "2+2=", "choices": ["4", "5"], "answer": 0})" "\n"
                                R"({"context": "2+2=", "choices": ["4", "5"], "answer": 7})" "\n");
  const loom_test::ProgramRun r5 = eval("--task mc --data " + shell_quote(dir / "bad.jsonl"));
  CHECK(r5.status == 1);  // an error in the data
  CHECK_THAT(r5.output, LOOM_CONTAINS("bad.jsonl:2: the right answer 7 is not an index"));
}
// A tiny GPT that predicts `favourite` everywhere: ln_f's output is its bias alone, a multiple of
// the favourite's embedding, so that token's logit stands far above the others.
std::unique_ptr<nn::GPT> favouring_gpt(uint64_t seed, int64_t favourite) {
  auto model = tiny_gpt(seed);
  for (auto& [name, p] : model->named_parameters()) {
    if (name == "transformer.ln_f.weight") std::fill(p.data(), p.data() + p.numel(), 0.0f);
  }
  std::vector<float> row(32);
  for (auto& [name, p] : model->named_parameters())
    if (name == "transformer.wte.weight") std::copy(p.data() + favourite * 32, p.data() + favourite * 32 + 32, row.begin());
  double norm2 = 0;
  for (float x : row) norm2 += double(x) * x;
  for (auto& [name, p] : model->named_parameters())
    if (name == "transformer.ln_f.bias")
      for (int i = 0; i < 32; ++i) p.data()[i] = float(60.0 * row[size_t(i)] / norm2);
  return model;
}

// Saves `model` with the byte tokenizer (and `step`) as a checkpoint at `path`.
void save_tiny(const nn::GPT& model, const std::string& path, int64_t step) {
  io::Checkpoint c;
  for (auto& [name, p] : model.named_parameters()) c.add("model." + name, p.detach());
  c.set_meta_json("config", train::to_json(model.config));
  c.set_meta("tokenizer", bytes_bos().to_json());
  c.set_meta("step", std::to_string(step));
  io::save_checkpoint(path, c);
}

TEST_CASE("programs: loom-eval --card writes a report card and marks separate scores", "[align][scoring][program]") {
  using loom_test::run_program;
  using loom_test::shell_quote;
  TempDir dir;
  auto a = favouring_gpt(41, 'b'), b = favouring_gpt(42, 'a');
  save_tiny(*a, dir / "a.safetensors", 100);
  save_tiny(*b, dir / "b.safetensors", 200);
  std::filesystem::create_directories(dir / "sets");
  std::string mc, mp, bp;
  for (int i = 0; i < 20; ++i)
    mc += R"({"context": "Q)" + std::to_string(i) + R"(:", "choices": ["a", "b"], "answer": 0})" "\n";
  mp = R"({"sentence_good": "The dog runs.", "sentence_bad": "The dog run.", "UID": "sva"})" "\n"
       R"({"sentence_good": "These dogs bark.", "sentence_bad": "This dogs bark.", "UID": "dna"})" "\n";
  bp = R"({"sent_more": "Emma read.", "sent_less": "Liam read.", "bias_type": "gender"})" "\n"
       R"({"sent_more": "The young man sat.", "sent_less": "The old man sat.", "bias_type": "age"})" "\n";
  write_file(dir / "sets/arith_mc.jsonl", mc);
  write_file(dir / "sets/grammar_pairs.jsonl", mp);
  write_file(dir / "sets/counterfactual_pairs.jsonl", bp);
  write_file(dir / "text.txt", "a b a b abba\n");
  // the library's scores: A never picks "a", B always does
  const ChoiceScores sa = score_choices(*a, bytes_bos(), read_choice_items(dir / "sets/arith_mc.jsonl"));
  const ChoiceScores sb = score_choices(*b, bytes_bos(), read_choice_items(dir / "sets/arith_mc.jsonl"));
  REQUIRE(sa.acc.hits == 0);
  REQUIRE(sb.acc.hits == 20);
  const loom_test::ProgramRun r = run_program(shell_quote(LOOM_EVAL_EXE) + " --ckpt " + shell_quote(dir / "a.safetensors") +
                                              " --ckpt " + shell_quote(dir / "b.safetensors") + " --card " +
                                              shell_quote(dir / "card") + " --sets " + shell_quote(dir / "sets") +
                                              " --text " + shell_quote(dir / "text.txt"));
  INFO(r.output);
  REQUIRE(r.status == 0);
  const io::Json j = io::parse_json(io::read_file(dir / "card/report.json"));
  REQUIRE(j.at("checkpoints").size() == 2);
  const io::Json& ca = j.at("checkpoints").at(0);
  CHECK(ca.at("parameters").as_int() == a->num_parameters());
  CHECK(ca.at("step").as_string() == "100");
  CHECK(ca.at("config").at("n_embd").as_int() == 32);
  CHECK(ca.at("text").at("bits_per_byte").as_double() ==
        Approx(text_loss(*a, bytes_bos(), "a b a b abba\n").bits_per_byte()).epsilon(1e-6));
  CHECK(ca.at("scores").at("mc acc").at("value").as_double() == 0.0);
  CHECK(ca.at("scores").at("mc acc").at("hi").as_double() == Approx(sa.acc.hi));
  CHECK(ca.at("bias_by_type").at("gender").at("n").as_int() == 1);
  CHECK(ca.at("samples").size() == 3);
  CHECK(j.at("checkpoints").at(1).at("scores").at("mc acc").at("value").as_double() == 1.0);
  // the comparison: mc separates (0/20 against 20/20), two pairs cannot
  std::map<std::string, bool> separate;
  for (size_t i = 0; i < j.at("comparison").size(); ++i)
    separate[j.at("comparison").at(i).at("score").as_string()] = j.at("comparison").at(i).at("separate").as_bool();
  CHECK(separate.at("mc acc"));
  CHECK(separate.at("mc acc_norm"));
  CHECK_FALSE(separate.at("pairs acc"));
  CHECK_FALSE(separate.at("bias pct_stereotype"));
  CHECK(separate.count("bias gender") == 1);
  const std::string md = io::read_file(dir / "card/report.md");
  CHECK_THAT(md, LOOM_CONTAINS("| mc acc | 0.0000 [0.0000, " ));
  CHECK_THAT(md, LOOM_CONTAINS("| 1.0000 [" ));
  CHECK_THAT(md, LOOM_CONTAINS("## Side by side"));
  CHECK_THAT(md, LOOM_CONTAINS("- step: 200"));
  size_t marks = 0;
  for (size_t at = 0; (at = md.find("**differs**", at)) != std::string::npos; ++at) ++marks;
  CHECK(marks == 3);  // the legend, mc acc and mc acc_norm
  // three checkpoints (stages): each column is compared with the one before; A -> B -> A
  const loom_test::ProgramRun r3 = run_program(shell_quote(LOOM_EVAL_EXE) + " --ckpt " + shell_quote(dir / "a.safetensors") +
                                               " --ckpt " + shell_quote(dir / "b.safetensors") + " --ckpt " +
                                               shell_quote(dir / "a.safetensors") + " --card " + shell_quote(dir / "three") +
                                               " --sets " + shell_quote(dir / "sets") + " --prompt ab");
  INFO(r3.output);
  REQUIRE(r3.status == 0);
  const io::Json j3 = io::parse_json(io::read_file(dir / "three/report.json"));
  CHECK(j3.at("comparison").size() == 2 * j.at("comparison").size());
  size_t mc_marks = 0;
  for (size_t i = 0; i < j3.at("comparison").size(); ++i)
    mc_marks += j3.at("comparison").at(i).at("score").as_string() == "mc acc" &&
                j3.at("comparison").at(i).at("separate").as_bool();
  CHECK(mc_marks == 2);  // 0 -> 20 and 20 -> 0
  CHECK(j3.at("checkpoints").at(0).at("samples").size() == 1);
  CHECK_THAT(io::read_file(dir / "three/report.md"), LOOM_CONTAINS("| score | A | B | C |"));
  // one checkpoint: no comparison; a missing --sets is an error
  const loom_test::ProgramRun r1 = run_program(shell_quote(LOOM_EVAL_EXE) + " --ckpt " + shell_quote(dir / "a.safetensors") +
                                               " --card " + shell_quote(dir / "one") + " --sets " + shell_quote(dir / "sets"));
  REQUIRE(r1.status == 0);
  CHECK_FALSE(io::parse_json(io::read_file(dir / "one/report.json")).contains("comparison"));
  const loom_test::ProgramRun r2 = run_program(shell_quote(LOOM_EVAL_EXE) + " --ckpt " + shell_quote(dir / "a.safetensors") +
                                               " --card " + shell_quote(dir / "two"));
  CHECK(r2.status == 2);
  CHECK_THAT(r2.output, LOOM_CONTAINS("--card needs --sets DIR"));
}
#endif
