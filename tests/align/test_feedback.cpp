// Learning from feedback: the sequence log-probability against per-token cross-entropy computed in
// double, the batched sampler against one-row decoding, each loss against hand-computed values and
// gradcheck, preference and prompt files with their errors, and the reward plumbing.
#include <cmath>
#include <string>
#include <vector>

#include "catch.hpp"
#include "temp_dir.hpp"

#include <loom/align/dpo.hpp>
#include <loom/align/grpo.hpp>
#include <loom/align/reward.hpp>
#include <loom/autograd/gradcheck.hpp>

using namespace loom;
using loom_test::TempDir;
using loom_test::write_file;

namespace {

nn::GPTConfig tiny_config(int64_t vocab, int64_t block = 32) {
  nn::GPTConfig c;
  c.vocab_size = vocab, c.block_size = block, c.n_layer = 2, c.n_head = 2, c.n_embd = 32, c.dropout = 0, c.bias = false;
  return c;
}

align::ChatModel tiny_chat_model(uint64_t seed, int64_t block = 32) {
  return align::with_chat_tokens(std::make_unique<nn::GPT>(tiny_config(256, block), seed), BpeTokenizer());
}

// -log softmax(logits)[target] in double, from the model's logits: an independent cross-entropy.
double nll_double(const Tensor<float>& logits, int64_t b, int64_t t, int64_t target) {
  const int64_t V = logits.size(2);
  double m = -1e300;
  for (int64_t v = 0; v < V; ++v) m = std::max(m, double(logits.at({b, t, v})));
  double z = 0;
  for (int64_t v = 0; v < V; ++v) z += std::exp(double(logits.at({b, t, v})) - m);
  return -(double(logits.at({b, t, target})) - m - std::log(z));
}

align::SftExample example(std::vector<uint32_t> prompt, std::vector<uint32_t> answer) {
  align::SftExample e;
  e.ids = prompt;
  e.ids.insert(e.ids.end(), answer.begin(), answer.end());
  e.mask.assign(prompt.size(), 0);
  e.mask.resize(e.ids.size(), 1);
  return e;
}

}  // namespace

TEST_CASE("log_sigmoid against double and its gradient by gradcheck") {
  const std::vector<double> xs = {-800, -30, -2, -1e-3, 0, 1e-3, 0.5, 3, 40, 800};
  Tensor<double> x = from_vector<double>(xs, {int64_t(xs.size())});
  Tensor<double> y = log_sigmoid(x);
  for (size_t i = 0; i < xs.size(); ++i) {
    const double v = xs[i];
    const double want = v < 0 ? v - std::log1p(std::exp(v)) : -std::log1p(std::exp(-v));
    CHECK(y.at({int64_t(i)}) == Approx(want).epsilon(1e-14).margin(1e-300));
    CHECK(std::isfinite(y.at({int64_t(i)})));
  }
  // float: finite far out (a naive log(sigmoid(x)) is -inf at x = -800)
  Tensor<float> yf = log_sigmoid(from_vector<float>({-800.0f, 0.0f, 800.0f}, {3}));
  CHECK(yf.at({0}) == Approx(-800.0f));
  CHECK(yf.at({1}) == Approx(-std::log(2.0)).epsilon(1e-6));
  CHECK(yf.at({2}) == 0.0f);
  Generator gen(3);
  Tensor<double> a = randn<double>({7}, gen, 0, 3).requires_grad_();
  auto r = gradcheck([](const std::vector<Tensor<double>>& in) { return log_sigmoid(in[0]); }, {a});
  INFO(r.report);
  CHECK(r.ok);
  // at exactly 0 the gradient is 1/2 (DPO's first step sits there)
  Tensor<double> z = zeros<double>({1}).requires_grad_();
  log_sigmoid(z).backward();
  CHECK(z.grad().at({0}) == Approx(0.5).epsilon(1e-15));
}

TEST_CASE("sequence_logprobs is minus the summed per-token cross-entropy of the answers, packed or not") {
  align::ChatModel cm = tiny_chat_model(11);
  nn::CausalLM& model = *cm.model;
  model.eval();
  const std::vector<align::SftExample> ex = {example({1, 2, 3}, {4, 5}), example({7, 8}, {9, 10, 11, 12}),
                                             example({20, 21, 22, 23, 24}, {25})};
  const align::SftBatch rows = align::example_batch(ex, model.block_size());  // unpacked
  const Tensor<float> lp = align::sequence_logprobs(model, rows);
  REQUIRE(lp.shape() == Shape({3}));
  // The reference: every answer token's -log p from the logits of the whole sequence, in double.
  for (size_t e = 0; e < ex.size(); ++e) {
    const int64_t L = int64_t(ex[e].ids.size());
    Tensor<int64_t> idx = Tensor<int64_t>::empty({1, L});
    for (int64_t t = 0; t < L; ++t) idx.data()[t] = ex[e].ids[size_t(t)];
    const Tensor<float> logits = model.forward(idx).logits;  // (1, L, V)
    double want = 0;
    for (int64_t t = 0; t + 1 < L; ++t)
      if (ex[e].mask[size_t(t + 1)]) want -= nll_double(logits, 0, t, ex[e].ids[size_t(t + 1)]);
    // float32 logits and a float32 log-sum-exp: a few ulps of the summed |log p| (~5 per token)
    CHECK(double(lp.at({int64_t(e)})) == Approx(want).epsilon(1e-5));
  }
  CHECK(align::answer_lengths(rows) == std::vector<int64_t>{2, 4, 1});
  // Packed: the three examples in one row give the same sums.
  const align::SftBatch packed = align::make_batch(ex, {{0, 1, 2}}, 16, true);
  const Tensor<float> lq = align::sequence_logprobs(model, packed);
  REQUIRE(lq.shape() == Shape({3}));
  for (int64_t e = 0; e < 3; ++e) CHECK(lq.at({e}) == Approx(lp.at({e})).epsilon(1e-5));
  CHECK(align::answer_lengths(packed) == std::vector<int64_t>{2, 4, 1});
  // The masked loss is the mean of the same quantity per answer token.
  const double nll = align::answer_nll(model, {rows});
  CHECK(nll == Approx(-(lp.at({0}) + lp.at({1}) + lp.at({2})) / 7.0).epsilon(1e-6));
  // Gradients flow: d(sum log p)/d(params) exists.
  model.train();
  sum(align::sequence_logprobs(model, packed)).backward();
  CHECK(model.token_embedding().weight.grad().defined());
}

TEST_CASE("batched generation gives every row what it gets alone") {
  align::ChatModel cm = tiny_chat_model(21, 24);
  nn::CausalLM& model = *cm.model;
  const std::vector<std::vector<int64_t>> prompts = {{5, 6, 7}, {9}, {1, 2, 3, 4, 5, 6, 7, 8}, {40, 41}};
  for (double temperature : {0.0, 1.0}) {
    const train::SamplingOptions opt{temperature, 0, 1.0};
    for (int64_t n : {5, 40}) {  // 40: past the context of 24, so the caches restart
      std::vector<Generator> gens;
      for (size_t b = 0; b < prompts.size(); ++b) gens.emplace_back(100 + b);
      const auto together = train::generate_batch(model, prompts, n, opt, gens);
      REQUIRE(together.size() == prompts.size());
      for (size_t b = 0; b < prompts.size(); ++b) {
        INFO("row " << b << ", temperature " << temperature << ", n " << n);
        Generator g(100 + b);
        const std::vector<int64_t> alone = train::generate(model, prompts[b], n, opt, g);
        CHECK(together[b].size() == size_t(n));
        if (n <= 12) {
          CHECK(together[b] == alone);
        } else {
          // After the restart each row keeps its newest block/2 tokens: the batch and a lone row
          // restart at the same moment only for the longest row; compare the tokens before it.
          const size_t before = size_t(24 - int64_t(prompts[2].size()));
          CHECK(std::vector<int64_t>(together[b].begin(), together[b].begin() + long(std::min(before, alone.size()))) ==
                std::vector<int64_t>(alone.begin(), alone.begin() + long(std::min(before, alone.size()))));
        }
      }
    }
  }
  // Per-row stopping: a row stops after its stop token, the others go on.
  std::vector<Generator> gens(prompts.size(), Generator(7));
  const auto greedy = train::generate_batch(model, prompts, 10, {0.0, 0, 1.0}, gens);
  const int64_t stop_id = greedy[1][2];  // row 1's third token
  std::vector<Generator> gens2(prompts.size(), Generator(7));
  const auto stopped = train::generate_batch(model, prompts, 10, {0.0, 0, 1.0}, gens2,
                                             [&](int64_t id) { return id == stop_id; });
  for (size_t b = 0; b < prompts.size(); ++b) {
    size_t want = 10;
    for (size_t i = 0; i < 10; ++i)
      if (greedy[b][i] == stop_id) {
        want = i + 1;
        break;
      }
    CHECK(stopped[b].size() == want);
    CHECK(std::vector<int64_t>(greedy[b].begin(), greedy[b].begin() + long(want)) == stopped[b]);
  }
  std::vector<Generator> two(2, Generator(1));
  CHECK_THROWS_WITH(train::generate_batch(model, {{1}, {}}, 3, {}, two), Catch::Contains("prompt 1 is empty"));
  CHECK_THROWS_WITH(train::generate_batch(model, {{1}}, 3, {}, two), Catch::Contains("1 prompts but 2 generators"));
}

TEST_CASE("the Bradley-Terry loss against hand-computed values") {
  // r_c = (1, 0), r_r = (0, 2): -log sigma(1) = 0.31326168751822286, -log sigma(-2) = 2.1269280110429727
  Tensor<float> rc = from_vector<float>({1, 0}, {2}), rr = from_vector<float>({0, 2}, {2});
  auto l = align::bradley_terry_loss(rc, rr);
  CHECK(l.loss.item() == Approx((0.31326168751822286 + 2.1269280110429727) / 2).epsilon(1e-6));
  CHECK(l.accuracy == 0.5);
  CHECK(l.margin == Approx(-0.5));
  // centring adds 0.01 * mean((1 + 0)^2, (0 + 2)^2) = 0.025
  auto c = align::bradley_terry_loss(rc, rr, 0.01);
  CHECK(c.loss.item() == Approx((0.31326168751822286 + 2.1269280110429727) / 2 + 0.025).epsilon(1e-6));
  Generator gen(5);
  Tensor<double> a = randn<double>({4}, gen).requires_grad_(), b = randn<double>({4}, gen).requires_grad_();
  auto r = gradcheck([](const std::vector<Tensor<double>>& in) { return align::bradley_terry_loss(in[0], in[1], 0.05).loss; },
                     {a, b});
  INFO(r.report);
  CHECK(r.ok);
  CHECK_THROWS_AS(align::bradley_terry_loss(rc, from_vector<float>({1}, {1})), shape_error);
}

TEST_CASE("the DPO losses against hand-computed values and gradcheck") {
  // Two pairs. Policy log-probs: chosen (-1, -2), rejected (-3, -1); reference: chosen (-1.5, -2),
  // rejected (-2.5, -1.5). Log-ratios: chosen (0.5, 0), rejected (-0.5, 0.5); h = (1, -0.5).
  Tensor<float> pc = from_vector<float>({-1, -2}, {2}), pr = from_vector<float>({-3, -1}, {2});
  Tensor<float> rc = from_vector<float>({-1.5, -2}, {2}), rr = from_vector<float>({-2.5, -1.5}, {2});
  auto ls = [](double x) { return x < 0 ? x - std::log1p(std::exp(x)) : -std::log1p(std::exp(-x)); };
  align::DpoConfig cfg;  // beta 0.1, sigmoid
  auto t = align::dpo_loss(pc, pr, rc, rr, cfg);
  CHECK(t.loss.item() == Approx(-(ls(0.1) + ls(-0.05)) / 2).epsilon(1e-6));
  CHECK(t.chosen_reward == Approx(0.1 * (0.5 + 0) / 2));
  CHECK(t.rejected_reward == Approx(0.1 * (-0.5 + 0.5) / 2));
  CHECK(t.margin == Approx(0.025));
  CHECK(t.accuracy == 0.5);
  cfg.loss = align::DpoLossKind::cdpo;  // eps 0.1
  t = align::dpo_loss(pc, pr, rc, rr, cfg);
  CHECK(t.loss.item() == Approx(-(0.9 * ls(0.1) + 0.1 * ls(-0.1) + 0.9 * ls(-0.05) + 0.1 * ls(0.05)) / 2).epsilon(1e-6));
  cfg.loss = align::DpoLossKind::ipo;  // (h - 1/(2 beta))^2 = (1 - 5)^2, (-0.5 - 5)^2
  t = align::dpo_loss(pc, pr, rc, rr, cfg);
  CHECK(t.loss.item() == Approx((16 + 30.25) / 2).epsilon(1e-6));
  cfg.loss = align::DpoLossKind::sigmoid, cfg.sft_weight = 0.5;  // + 0.5 mean(-pc / len) = 0.5 (1/2 + 2/4) / 2
  t = align::dpo_loss(pc, pr, rc, rr, cfg, from_vector<float>({2, 4}, {2}));
  CHECK(t.loss.item() == Approx(-(ls(0.1) + ls(-0.05)) / 2 + 0.5 * (0.5 + 0.5) / 2).epsilon(1e-6));
  // At the start (policy == reference) h = 0 and the sigmoid loss is log 2.
  cfg.sft_weight = 0;
  CHECK(align::dpo_loss(pc, pr, pc, pr, cfg).loss.item() == Approx(std::log(2.0)).epsilon(1e-6));
  for (auto kind : {align::DpoLossKind::sigmoid, align::DpoLossKind::cdpo, align::DpoLossKind::ipo}) {
    Generator gen(9);
    Tensor<double> a = randn<double>({3}, gen).requires_grad_(), b = randn<double>({3}, gen).requires_grad_();
    Tensor<double> ra = randn<double>({3}, gen), rb = randn<double>({3}, gen), len = full<double>({3}, 3.0);
    align::DpoConfig c2;
    c2.loss = kind, c2.beta = 0.7, c2.sft_weight = 0.3;
    auto r = gradcheck(
        [&](const std::vector<Tensor<double>>& in) { return align::dpo_loss(in[0], in[1], ra, rb, c2, len).loss; }, {a, b});
    INFO(r.report);
    CHECK(r.ok);
  }
  CHECK_THROWS_WITH(align::parse_dpo_loss("kto"), Catch::Contains("unknown DPO loss 'kto'"));
  cfg.beta = 0;
  CHECK_THROWS_WITH(align::dpo_loss(pc, pr, rc, rr, cfg), Catch::Contains("beta must be > 0"));
}

TEST_CASE("GRPO advantages and the clipped policy loss against hand-computed values") {
  // Two groups of 4: (1, 0, 0, 1) -> mean 0.5; (1, 1, 1, 1) -> all equal, no signal.
  auto g = align::group_advantages({1, 0, 0, 1, 1, 1, 1, 1}, 4);
  CHECK(g.advantages == std::vector<double>{0.5, -0.5, -0.5, 0.5, 0, 0, 0, 0});
  CHECK(g.zero_std_share == 0.5);
  auto s = align::group_advantages({1, 0, 0, 1}, 4, true);  // std (sample) = sqrt(1/3)
  CHECK(s.advantages[0] == Approx(0.5 / (std::sqrt(1.0 / 3.0) + 1e-4)));
  CHECK_THROWS_WITH(align::group_advantages({1, 2, 3}, 2), Catch::Contains("do not split into groups of 2"));

  // Two answers of 2 and 1 tokens (mask), advantages (1, -2). (The mask is written out row by
  // row: GCC 12.2 with -march=native on AVX-512 machines folds the literal {1, 1, 1, 0} into four
  // ones, a compiler bug that a std::vector<double> of those four values shows on its own.)
  Tensor<double> mask = zeros<double>({2, 2});
  for (int64_t i : {0, 1, 2}) mask.data()[i] = 1.0;
  Tensor<double> lp = from_vector<double>({-1.0, -2.0, -0.5, -9.0}, {2, 2});
  // ratio 1 (old == new): L = -(1 + 1 - 2) / 3 = 0
  auto same = align::policy_loss(lp, lp, Tensor<double>(), mask, {1.0, -2.0});
  CHECK(same.loss.item() == Approx(0.0).margin(1e-12));
  CHECK(same.clip_fraction == 0);
  // ratios e^0.5, e^-0.1 | e^0.3: clipped at 1.2 for A > 0 (first token), at 0.8 never (e^0.3 > 1.2 but A < 0: min picks ratio*A)
  Tensor<double> old = from_vector<double>({-1.5, -1.9, -0.8, -9.0}, {2, 2});
  auto c = align::policy_loss(lp, old, Tensor<double>(), mask, {1.0, -2.0}, 0.2);
  const double want = -(std::min(std::exp(0.5), 1.2) * 1 + std::min(std::exp(-0.1), std::max(std::exp(-0.1), 0.8)) * 1 +
                        std::min(std::exp(0.3) * -2, 1.2 * -2)) / 3;
  CHECK(c.loss.item() == Approx(want).epsilon(1e-12));
  CHECK(c.clip_fraction == Approx(2.0 / 3.0));  // e^0.5 and e^0.3 lie outside [0.8, 1.2]
  // k3 KL: ref - logp = d gives e^d - d - 1 per token.
  Tensor<double> ref = from_vector<double>({-1.2, -2.0, -0.1, 0.0}, {2, 2});
  auto k = align::policy_loss(lp, lp, ref, mask, {0.0, 0.0}, 0.2, 0.1);
  const double kl = ((std::exp(-0.2) + 0.2 - 1) + 0 + (std::exp(0.4) - 0.4 - 1)) / 3;
  CHECK(k.kl == Approx(kl).epsilon(1e-12));
  CHECK(k.loss.item() == Approx(0.1 * kl).epsilon(1e-12));
  Generator gen(4);
  Tensor<double> x = randn<double>({2, 2}, gen, -1, 0.3).requires_grad_();
  Tensor<double> old2 = randn<double>({2, 2}, gen, -1, 0.3);
  auto r = gradcheck([&](const std::vector<Tensor<double>>& in) {
    return align::policy_loss(in[0], old2, ref, mask, {0.7, -1.3}, 0.2, 0.05).loss;
  }, {x});
  INFO(r.report);
  CHECK(r.ok);
  // pass@k (Chen et al.): n 5, c 2 -> pass@1 0.4, pass@2 1 - C(3,2)/C(5,2) = 0.7
  CHECK(align::pass_at_k(5, 2, 1) == Approx(0.4));
  CHECK(align::pass_at_k(5, 2, 2) == Approx(0.7));
  CHECK(align::pass_at_k(5, 4, 2) == 1.0);
  CHECK(align::pass_at_k(5, 0, 5) == 0.0);
}

TEST_CASE("rewards: exact and format checkers") {
  CHECK(align::exact_reward(" 579\n", "579") == 1.0);
  CHECK(align::exact_reward("578", "579") == 0.0);
  CHECK(align::format_reward("579", "579") == 1.0);
  CHECK(align::format_reward("578", "579") == 0.1);
  CHECK(align::format_reward("57", "579") == 0.0);
  CHECK(align::format_reward("5a9", "579") == 0.0);
  CHECK(align::format_reward("", "579") == 0.0);
  CHECK(align::sample_seed(1, 2, 3, 4) == align::sample_seed(1, 2, 3, 4));
  CHECK(align::sample_seed(1, 2, 3, 4) != align::sample_seed(1, 2, 4, 3));
}

TEST_CASE("preference files: three layouts and clear errors") {
  TempDir dir;
  const std::string good = dir.file("pairs.jsonl");
  write_file(good,
             "{\"prompt\": \"What is 2 + 3?\", \"chosen\": \"5\", \"rejected\": \"6\", \"kind\": \"x\"}\n"
             "\n"
             "{\"prompt\": [{\"role\": \"system\", \"content\": \"Be brief.\"}, {\"role\": \"user\", \"content\": \"Hi\"}], "
             "\"chosen\": [{\"role\": \"assistant\", \"content\": \"Hello\"}], \"rejected\": \"Go away\"}\n"
             "{\"chosen\": [{\"role\": \"user\", \"content\": \"Q\"}, {\"role\": \"assistant\", \"content\": \"A\"}], "
             "\"rejected\": [{\"role\": \"user\", \"content\": \"Q\"}, {\"role\": \"assistant\", \"content\": \"B\"}]}\n");
  const auto pairs = align::read_preferences(good);
  REQUIRE(pairs.size() == 3);
  CHECK(pairs[0].prompt.messages.size() == 1);
  CHECK(pairs[0].chosen == "5");
  CHECK(pairs[1].prompt.messages[0].role == "system");
  CHECK(pairs[1].rejected == "Go away");
  CHECK(pairs[2].prompt.messages.back().content == "Q");
  CHECK(pairs[2].chosen == "A");
  auto bad = [&](const std::string& line) {
    const std::string f = dir.file("bad.jsonl");
    write_file(f, "{\"prompt\": \"p\", \"chosen\": \"a\", \"rejected\": \"b\"}\n" + line + "\n");
    align::read_preferences(f);
  };
  CHECK_THROWS_WITH(bad("{\"prompt\": \"p\", \"chosen\": \"a\", \"rejected\": \"a\"}"),
                    Catch::Contains("bad.jsonl:2") && Catch::Contains("the same answer"));
  CHECK_THROWS_WITH(bad("{\"prompt\": \"p\", \"chosen\": \"a\"}"), Catch::Contains(":2: expected \"chosen\" and \"rejected\""));
  CHECK_THROWS_WITH(bad("not json"), Catch::Contains(":2: not JSON"));
  CHECK_THROWS_WITH(bad("{\"prompt\": \"\", \"chosen\": \"a\", \"rejected\": \"b\"}"), Catch::Contains("prompt is empty"));
  CHECK_THROWS_WITH(bad("{\"prompt\": \"p\", \"chosen\": 5, \"rejected\": \"b\"}"), Catch::Contains("\"chosen\" must be"));
  CHECK_THROWS_WITH(bad("{\"prompt\": [{\"role\": \"assistant\", \"content\": \"x\"}], \"chosen\": \"a\", \"rejected\": \"b\"}"),
                    Catch::Contains("does not lead to an answer"));
  write_file(dir.file("empty.jsonl"), "\n\n");
  CHECK_THROWS_WITH(align::read_preferences(dir.file("empty.jsonl")), Catch::Contains("no preference pairs"));
  // prompts for on-policy training
  write_file(dir.file("prompts.jsonl"),
             "{\"prompt\": \"What is 2 + 3?\", \"answer\": \"5\"}\n"
             "{\"messages\": [{\"role\": \"user\", \"content\": \"Q\"}, {\"role\": \"assistant\", \"content\": \"A\"}]}\n"
             "{\"prompt\": \"open question\"}\n");
  const auto prompts = align::read_prompts(dir.file("prompts.jsonl"));
  REQUIRE(prompts.size() == 3);
  CHECK(prompts[0].answer == "5");
  CHECK(prompts[1].answer == "A");
  CHECK(prompts[1].prompt.messages.size() == 1);
  CHECK(prompts[2].answer.empty());
  write_file(dir.file("p0.jsonl"), "");
  CHECK_THROWS_WITH(align::read_prompts(dir.file("p0.jsonl")), Catch::Contains("no prompts"));
  write_file(dir.file("p1.jsonl"), "{\"prompt\": \"x\", \"answer\": 5}\n");
  CHECK_THROWS_WITH(align::read_prompts(dir.file("p1.jsonl")), Catch::Contains("p1.jsonl:1: \"answer\" must be a string"));
}

TEST_CASE("a reward model scores the last token and learns a preference") {
  align::ChatModel cm = tiny_chat_model(31);
  Generator gen(2);
  align::RewardModel rm(std::move(cm), gen);
  // The reward is the head at the last token: changing an earlier token changes it only through
  // attention, changing the padding after the end changes nothing.
  align::SftExample a = example({1, 2, 3}, {4}), b = example({1, 2, 3, 4, 5, 6}, {7});
  align::ScoreBatch s = align::score_batch({a, b}, 32);
  CHECK(s.idx.shape() == Shape({2, 7}));
  CHECK(s.last.at({0, 3}) == 1.0f);
  CHECK(s.last.at({1, 6}) == 1.0f);
  rm.base.model->eval();
  const Tensor<float> r = rm(s);
  const Tensor<float> alone = rm(align::score_batch({a}, 32));
  CHECK(r.at({0}) == Approx(alone.at({0})).epsilon(1e-5));
  // Train on one preference: "5" over "6" after the same prompt; the loss falls and the order flips right.
  align::PreferencePair p{{{{"user", "What is 2 + 3?"}}}, "5", "6"};
  const auto ex = align::render_pairs(rm.base.chat, {p}, 32);
  const align::ScoreBatch chosen = align::score_batch({ex[0]}, 32), rejected = align::score_batch({ex[1]}, 32);
  nn::NamedTensors params = rm.base.model->named_parameters();
  for (auto& np : rm.head_parameters()) params.push_back(np);
  AdamW opt(decay_groups(params, 0.0), AdamWOptions{1e-2});
  double first = 0, last = 0;
  for (int step = 0; step < 30; ++step) {
    opt.zero_grad();
    auto l = align::bradley_terry_loss(rm(chosen), rm(rejected));
    if (step == 0) first = l.loss.item();
    last = l.loss.item();
    l.loss.backward();
    opt.step();
  }
  CHECK(last < 0.1 * first);
  const auto scores = rm.score({align::with_answer(p.prompt, "5"), align::with_answer(p.prompt, "6")});
  CHECK(scores[0] > scores[1]);
  // Saved and loaded, it scores the same; a language model's checkpoint is refused.
  TempDir dir;
  io::save_checkpoint(dir.file("rm.safetensors"), rm.checkpoint());
  auto back = align::load_reward_model(dir.file("rm.safetensors"));
  const auto again = back->score({align::with_answer(p.prompt, "5"), align::with_answer(p.prompt, "6")});
  CHECK(again[0] == Approx(scores[0]).epsilon(1e-6));
  CHECK(again[1] == Approx(scores[1]).epsilon(1e-6));
  io::Checkpoint lm;
  for (auto& [name, t] : rm.base.model->named_parameters()) lm.add("model." + name, t.detach());
  lm.set_meta_json("config", train::config_json(*rm.base.model));
  lm.set_meta("tokenizer", align::tokenizer_json(rm.base));
  io::save_checkpoint(dir.file("lm.safetensors"), lm);
  CHECK_THROWS_WITH(align::load_reward_model(dir.file("lm.safetensors")), Catch::Contains("not a reward model"));
  // A head that does not fit the model's width.
  io::Checkpoint wrong = rm.checkpoint();
  io::Checkpoint w2;
  for (const std::string& n : wrong.names("model.")) w2.add(n, wrong.get<float>(n));
  w2.add("reward_head.weight", zeros<float>({1, 16}));
  w2.add("reward_head.bias", zeros<float>({1}));
  for (auto& [k, v] : wrong.metadata()) w2.set_meta(k, v);
  io::save_checkpoint(dir.file("wrong.safetensors"), w2);
  CHECK_THROWS_WITH(align::load_reward_model(dir.file("wrong.safetensors")), Catch::Contains("does not match its head"));
}

TEST_CASE("sampled answers are seeded per prompt and sample and become training examples") {
  align::ChatModel cm = tiny_chat_model(41, 48);
  const std::vector<align::PromptItem> prompts = {{{{{"user", "What is 1 + 1?"}}}, "2"}, {{{{"user", "Hi"}}}, ""}};
  const train::SamplingOptions opt{1.0, 0, 1.0};
  auto a = align::sample_answers(*cm.model, cm.chat, prompts, {0, 1}, 3, 6, opt, 5, 0, 64);
  auto b = align::sample_answers(*cm.model, cm.chat, prompts, {0, 1}, 3, 6, opt, 5, 0, 2);  // other batching
  auto c = align::sample_answers(*cm.model, cm.chat, {prompts[1]}, {1}, 3, 6, opt, 5, 0, 64);  // prompt 1 alone
  REQUIRE(a.ids.size() == 6);
  CHECK(a.ids == b.ids);
  CHECK(std::vector<std::vector<uint32_t>>(a.ids.begin() + 3, a.ids.end()) == c.ids);
  auto d = align::sample_answers(*cm.model, cm.chat, prompts, {0, 1}, 3, 6, opt, 5, 1, 64);  // next step
  CHECK(a.ids != d.ids);
  const auto ex = align::answer_examples(a, 3);
  REQUIRE(ex.size() == 6);
  CHECK(ex[4].ids.size() == a.prompt_ids[1].size() + a.ids[4].size());
  CHECK(ex[4].mask[a.prompt_ids[1].size() - 1] == 0);
  CHECK(ex[4].mask.back() == 1);
}

#if defined(LOOM_RL_EXE)
#include <filesystem>

#include "programs.hpp"

// The program on a tiny model: each command runs and ends with its key=value line; bad input of
// every kind named in the docs stops it with status 1, a message naming the problem, and no
// checkpoint written.
TEST_CASE("programs: loom-rl rm dpo and grpo run and reject bad input", "[program]") {
  using loom_test::run_program;
  using loom_test::shell_quote;
  TempDir dir;
  align::ChatModel cm = tiny_chat_model(51, 48);
  io::Checkpoint c;
  for (auto& [name, t] : cm.model->named_parameters()) c.add("model." + name, t.detach());
  c.set_meta_json("config", train::config_json(*cm.model));
  c.set_meta("tokenizer", align::tokenizer_json(cm));
  const std::string init = dir.file("init.safetensors");
  io::save_checkpoint(init, c);
  std::string pairs, prompts;
  for (int a = 10; a < 40; ++a) {
    const std::string q = "What is " + std::to_string(a) + " + 11?", right = std::to_string(a + 11);
    pairs += "{\"prompt\": \"" + q + "\", \"chosen\": \"" + right + "\", \"rejected\": \"" + std::to_string(a + 21) + "\"}\n";
    prompts += "{\"prompt\": \"" + q + "\", \"answer\": \"" + right + "\"}\n";
  }
  write_file(dir.file("pairs.jsonl"), pairs);
  write_file(dir.file("prompts.jsonl"), prompts);
  const std::string rl = shell_quote(LOOM_RL_EXE) + " ";
  const std::string common = " --init " + shell_quote(init) + " --steps 3 --batch-size 4 --threads 1";

  auto rm = run_program(rl + "rm" + common + " --data pairs.jsonl --val pairs.jsonl --out rm", dir.path.string());
  INFO(rm.output);
  REQUIRE(rm.status == 0);
  CHECK(rm.output.find("final step=3 ") != std::string::npos);
  CHECK(rm.output.find(" val_accuracy=") != std::string::npos);
  CHECK(std::filesystem::exists(dir.file("rm/ckpt.safetensors")));
  auto dpo = run_program(rl + "dpo" + common + " --data pairs.jsonl --val pairs.jsonl --eval-prompts prompts.jsonl "
                         "--max-answer 4 --loss ipo --out dpo", dir.path.string());
  INFO(dpo.output);
  REQUIRE(dpo.status == 0);
  CHECK(dpo.output.find(" exact_match_start=") != std::string::npos);
  // GRPO with each kind of reward: built-in, a reward model, an external command.
  for (const std::string reward : {"exact", "format", "rm:rm/ckpt.safetensors", "cmd:'awk \"{print 0.5}\"'"}) {
    auto g = run_program(rl + "grpo" + common + " --prompts prompts.jsonl --reward " + reward +
                         " --group 2 --prompts-per-step 2 --max-answer 4 --eval-prompts prompts.jsonl --samples 2 --out g",
                         dir.path.string());
    INFO(reward << "\n" << g.output);
    REQUIRE(g.status == 0);
    CHECK(g.output.find(" pass_at_1=") != std::string::npos);
  }
  auto g = run_program(rl + "grpo" + common + " --prompts prompts.jsonl --reward \"cmd:awk '{print 0.5}'\" --group 2 "
                       "--prompts-per-step 2 --max-answer 4 --out g2", dir.path.string());
  INFO(g.output);
  CHECK(g.output.find("reward_mean=0.5000") != std::string::npos);

  // Bad input: status 1 (2 for a bad command line), the problem named, no checkpoint.
  auto fails = [&](const std::string& args, const std::string& expect, int status = 1) {
    std::filesystem::remove_all(dir.path / "bad");
    auto r = run_program(rl + args + " --out bad", dir.path.string());
    INFO(args << "\n" << r.output);
    CHECK(r.status == status);
    CHECK(r.output.find(expect) != std::string::npos);
    CHECK_FALSE(std::filesystem::exists(dir.path / "bad/ckpt.safetensors"));
  };
  write_file(dir.file("broken.jsonl"), pairs + "{\"prompt\": \"x\", \"chosen\": \"1\"\n");
  fails("rm" + common + " --data broken.jsonl", "broken.jsonl:31: not JSON");
  write_file(dir.file("same.jsonl"), "{\"prompt\": \"x\", \"chosen\": \"1\", \"rejected\": \"1\"}\n");
  fails("dpo" + common + " --data same.jsonl", "same.jsonl:1: chosen and rejected are the same answer");
  write_file(dir.file("none.jsonl"), "\n");
  fails("grpo" + common + " --prompts none.jsonl --reward exact", "no prompts");
  const std::string grpo = "grpo" + common + " --prompts prompts.jsonl --group 2 --prompts-per-step 2 --max-answer 4 ";
  fails(grpo + "--reward \"cmd:kill -SEGV \\$\\$\"", "crashed (signal 11");
  fails(grpo + "--reward \"cmd:sleep 30\" --reward-timeout 0.5", "did not finish within 0.5 s");
  fails(grpo + "--reward \"cmd:awk '{print \\\"abc\\\"}'\"", "not a number");
  fails(grpo + "--reward rm:" + shell_quote(init), "not a reward model");
  fails(grpo + "--reward judge", "unknown --reward 'judge'", 2);
  fails("dpo" + common + " --data pairs.jsonl --beta 0", "beta must be > 0", 2);
  fails("dpo" + common + " --data pairs.jsonl --loss hinge", "unknown DPO loss 'hinge'", 2);
  fails("grpo" + common + " --prompts prompts.jsonl --reward exact --group 1", "--group must be at least 2", 2);
  fails("ppo" + common, "unknown command 'ppo'", 2);
  // A diverging run stops at the step whose loss is not a number.
  fails("dpo --init " + shell_quote(init) + " --steps 20 --batch-size 4 --data pairs.jsonl --lr 1e30 --grad-clip 0",
        ": the loss is ");
}
#endif
