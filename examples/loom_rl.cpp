// loom-rl: learning from feedback, after fine-tuning (docs/20-learning-from-feedback.md).
//
//   loom-rl rm   --init CKPT --data pairs.jsonl [--val pairs_val.jsonl] --out DIR [--center 0.01]
//   loom-rl dpo  --init CKPT --data pairs.jsonl [--val pairs_val.jsonl] --out DIR
//                [--beta 0.1 --loss sigmoid|ipo|cdpo --label-smoothing 0.1 --sft-weight 0] [--eval-prompts FILE]
//   loom-rl grpo --init CKPT --prompts prompts.jsonl --reward exact|format|rm:CKPT|cmd:"PROGRAM" --out DIR
//                [--group 8 --prompts-per-step 8 --kl 0 --clip 0.2 --epochs 1 --scale-std 0 --max-answer 8 --temperature 1]
//                [--eval-prompts FILE --samples 8]
//
// rm trains a reward model (the GPT with a scalar head) on preference pairs with the Bradley–Terry
// loss and reports held-out preference accuracy. dpo trains the policy on the pairs directly,
// against the frozen starting model (its log-probabilities computed once). grpo samples a group
// of answers per prompt, scores them with the reward, and makes answers above their group's mean
// more likely. Pairs: {"prompt", "chosen", "rejected"} (strings or message lists); prompts:
// {"prompt": ..., "answer": ...}. Dropout is off throughout (as TRL does), so the policy and its
// reference see the same network.
//
// Writes into --out: ckpt.safetensors (atomically, at the end: a failed run leaves no checkpoint
// half-written) and log.csv (one row per step). A NaN or infinite loss stops the run with an error
// naming the step. The last line on stdout is `final key=value ...`.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include <loom/align/command_reward.hpp>
#include <loom/align/dpo.hpp>
#include <loom/align/grpo.hpp>
#include <loom/align/reward.hpp>
#include <loom/io/cli.hpp>
#include <loom/io/file.hpp>
#include <loom/loom.hpp>
#include <loom/train/report.hpp>

using namespace loom;

namespace {

struct Options {
  std::string command, init, data, val, out = "out", prompts, reward, eval_prompts, device = "cpu", loss = "sigmoid";
  int64_t threads = 0, log_interval = 10, group = 8, prompts_per_step = 8, epochs = 1, max_answer = 8, samples = 8;
  int64_t eval_limit = 0, scale_std = 0;
  double center = 0, beta = 0.1, label_smoothing = 0.1, sft_weight = 0, kl = 0, clip = 0.2, temperature = 1.0;
  double reward_timeout = 60;
  uint64_t seed = 1337;
  train::TrainConfig train;
};

const char* usage =
    "usage: loom-rl rm   --init CKPT --data pairs.jsonl [--val pairs.jsonl] --out DIR [--center X]\n"
    "       loom-rl dpo  --init CKPT --data pairs.jsonl [--val pairs.jsonl] --out DIR [--beta X] [--loss sigmoid|ipo|cdpo]\n"
    "                    [--label-smoothing X] [--sft-weight X] [--eval-prompts FILE]\n"
    "       loom-rl grpo --init CKPT --prompts FILE --reward exact|format|rm:CKPT|cmd:PROGRAM --out DIR [--group G]\n"
    "                    [--prompts-per-step P] [--kl X] [--clip X] [--epochs N] [--scale-std 0|1] [--max-answer N]\n"
    "                    [--temperature X]\n"
    "                    [--eval-prompts FILE] [--samples K] [--reward-timeout S]\n"
    "  common: --steps N --batch-size N --lr X --min-lr X --warmup N --weight-decay X --grad-clip X\n"
    "          --eval-interval N --log-interval N --seed N --threads N --device cpu|cuda --eval-limit N\n"
    "  rm:   --center X        reward centring weight (default 0; 0.01 keeps rewards near 0)\n"
    "  dpo:  --beta X          strength of the pull towards the starting model (default 0.1)\n"
    "        --sft-weight X    add X * the chosen answers' NLL per token (default 0)\n"
    "  grpo: --group G         answers sampled per prompt (default 8)\n"
    "        --kl X            k3 KL penalty to the starting model (default 0)\n"
    "        --scale-std 0|1   divide advantages by their group's std, as DeepSeekMath (default 0, as Dr. GRPO)\n"
    "        --epochs N        optimizer passes over each sampled batch (ratios clipped at 1 +- --clip)\n"
    "        --samples K       answers per held-out prompt for pass@1 and pass@K (default 8)\n";

Options parse(int argc, char** argv) {
  Options o;
  LOOM_CHECK(argc >= 2, usage_error, "give a command: rm, dpo or grpo (see --help)");
  o.command = argv[1];
  if (o.command == "--help" || o.command == "-h") {
    std::cout << usage;
    std::exit(0);
  }
  LOOM_CHECK(o.command == "rm" || o.command == "dpo" || o.command == "grpo", usage_error, "unknown command '",
             o.command, "' (rm, dpo or grpo)");
  train::TrainConfig& t = o.train;
  t.batch_size = 16, t.weight_decay = 0.0, t.grad_clip = 1.0, t.warmup_steps = 10, t.beta2 = 0.99, t.eval_interval = 100;
  if (o.command == "rm") t.steps = 300, t.lr = 1e-4, t.min_lr = 1e-5;
  if (o.command == "dpo") t.steps = 200, t.lr = 1e-5, t.min_lr = 1e-6;
  if (o.command == "grpo") t.steps = 200, t.lr = 1e-5, t.min_lr = 1e-5, t.warmup_steps = 0;
  io::OptionTable table;
  auto& flags = table.values;  // --name VALUE
  using io::store;
  flags["--init"] = store(o.init), flags["--out"] = store(o.out), flags["--device"] = store(o.device);
  flags["--threads"] = store(o.threads), flags["--log-interval"] = store(o.log_interval), flags["--eval-limit"] = store(o.eval_limit);
  flags["--seed"] = [&](const std::string& v) { o.seed = t.seed = io::to_unsigned(v); };
  flags["--steps"] = store(t.steps), flags["--batch-size"] = store(t.batch_size), flags["--lr"] = store(t.lr);
  flags["--min-lr"] = store(t.min_lr), flags["--warmup"] = store(t.warmup_steps), flags["--weight-decay"] = store(t.weight_decay);
  flags["--grad-clip"] = store(t.grad_clip), flags["--eval-interval"] = store(t.eval_interval);
  if (o.command == "rm" || o.command == "dpo") flags["--data"] = store(o.data), flags["--val"] = store(o.val);
  if (o.command == "rm") flags["--center"] = store(o.center);
  if (o.command == "dpo") {
    flags["--beta"] = store(o.beta), flags["--label-smoothing"] = store(o.label_smoothing);
    flags["--loss"] = [&](const std::string& v) { align::parse_dpo_loss(v), o.loss = v; };  // named at once
    flags["--sft-weight"] = store(o.sft_weight);
  }
  if (o.command == "dpo" || o.command == "grpo") flags["--eval-prompts"] = store(o.eval_prompts), flags["--max-answer"] = store(o.max_answer);
  if (o.command == "grpo") {
    flags["--prompts"] = store(o.prompts), flags["--reward"] = store(o.reward), flags["--group"] = store(o.group);
    flags["--prompts-per-step"] = store(o.prompts_per_step), flags["--kl"] = store(o.kl), flags["--clip"] = store(o.clip);
    flags["--epochs"] = store(o.epochs), flags["--temperature"] = store(o.temperature), flags["--samples"] = store(o.samples);
    flags["--reward-timeout"] = store(o.reward_timeout), flags["--scale-std"] = store(o.scale_std);
  }
  if (!io::parse_options(argc, argv, 2, table, "loom-rl " + o.command)) {
    std::cout << usage;
    std::exit(0);
  }
  LOOM_CHECK(!o.init.empty(), usage_error, "--init CKPT is required: the fine-tuned model to start from");
  LOOM_CHECK(o.command == "grpo" || !o.data.empty(), usage_error, "--data pairs.jsonl is required");
  LOOM_CHECK(o.command != "grpo" || (!o.prompts.empty() && !o.reward.empty()), usage_error,
             "--prompts FILE and --reward exact|format|rm:CKPT|cmd:PROGRAM are required");
  LOOM_CHECK(t.steps >= 1 && t.batch_size >= 1, usage_error, "--steps and --batch-size must be positive");
  LOOM_CHECK(o.group >= 2, usage_error, "--group must be at least 2 (the advantage compares answers within a group)");
  LOOM_CHECK(o.prompts_per_step >= 1 && o.epochs >= 1 && o.samples >= 1 && o.max_answer >= 1, usage_error,
             "--prompts-per-step, --epochs, --samples and --max-answer must be positive");
  LOOM_CHECK(o.scale_std == 0 || o.scale_std == 1, usage_error, "--scale-std must be 0 or 1");
  LOOM_CHECK(o.beta > 0, usage_error, "--beta must be > 0");
  LOOM_CHECK(o.temperature > 0, usage_error, "--temperature must be > 0 for sampling, got ", o.temperature);
  LOOM_CHECK(o.device == "cpu" || o.device == "cuda", usage_error, "--device must be cpu or cuda");
  LOOM_CHECK(o.log_interval >= 1 && t.eval_interval >= 1, usage_error,
             "--log-interval and --eval-interval must be positive");
  return o;
}

/// Visits 0..n-1 in epochs, each a fresh permutation (Fisher–Yates on mt19937_64, unbiased draws).
class EpochOrder {
 public:
  EpochOrder(size_t n, uint64_t seed) : order_(n), rng_(seed) { LOOM_CHECK(n > 0, value_error, "nothing to train on"); }
  std::vector<size_t> next(size_t k) {
    std::vector<size_t> out;
    while (out.size() < k) {
      if (pos_ == order_.size() || !started_) shuffle();
      out.push_back(order_[pos_++]);
    }
    return out;
  }

 private:
  void shuffle() {
    std::iota(order_.begin(), order_.end(), size_t(0));
    for (size_t i = order_.size(); i > 1; --i) {
      const uint64_t limit = ~uint64_t(0) - (~uint64_t(0) % i + 1) % i;
      uint64_t v;
      do v = rng_();
      while (v > limit);
      std::swap(order_[i - 1], order_[size_t(v % i)]);
    }
    pos_ = 0, started_ = true;
  }
  std::vector<size_t> order_;
  std::mt19937_64 rng_;
  size_t pos_ = 0;
  bool started_ = false;
};

/// A CSV log with a fixed header, written row by row.
class Csv {
 public:
  Csv(const std::string& path, const std::vector<std::string>& columns) : out_(path), n_(columns.size()) {
    LOOM_CHECK(out_.good(), io_error, "cannot write ", path);
    for (size_t i = 0; i < columns.size(); ++i) out_ << (i ? "," : "") << columns[i];
    out_ << "\n";
  }
  void row(const std::vector<double>& v) {
    for (size_t i = 0; i < v.size(); ++i) out_ << (i ? "," : "") << v[i];
    out_ << "\n" << std::flush;
  }

 private:
  std::ofstream out_;
  size_t n_;
};

/// Throws naming the step when the loss is not a number (the checkpoint is then not written).
void check_finite(double loss, int64_t step) {
  LOOM_CHECK(std::isfinite(loss), value_error, "step ", step, ": the loss is ", loss,
             " (training diverged; lower --lr or --beta, or raise --grad-clip's strength); no checkpoint was written");
}

std::vector<align::Conversation> as_conversations(const std::vector<align::PromptItem>& prompts) {
  std::vector<align::Conversation> out;
  for (const auto& p : prompts) {
    LOOM_CHECK(!p.answer.empty(), value_error, "an evaluation prompt has no \"answer\" to compare with");
    out.push_back(align::with_answer(p.prompt, p.answer));
  }
  return out;
}

std::vector<align::PromptItem> limited(std::vector<align::PromptItem> v, int64_t limit) {
  if (limit > 0 && size_t(limit) < v.size()) v.resize(size_t(limit));
  return v;
}

// --- rm ------------------------------------------------------------------------------------------

int run_rm(Options& o, const Device device) {
  Generator head_gen(o.seed + 11);
  align::RewardModel rm(align::load_chat_model(o.init), head_gen);
  nn::CausalLM& model = *rm.base.model;
  const int64_t T = model.block_size();
  const std::vector<align::PreferencePair> pairs = align::read_preferences(o.data);
  const std::vector<align::SftExample> ex = align::render_pairs(rm.base.chat, pairs, T);
  std::vector<align::SftExample> val_ex;
  if (!o.val.empty()) val_ex = align::render_pairs(rm.base.chat, align::read_preferences(o.val), T);
  std::cout << "data: " << pairs.size() << " pairs in " << o.data;
  if (!o.val.empty()) std::cout << ", " << val_ex.size() / 2 << " in " << o.val;
  std::cout << "\nreward model: " << o.init << " with a scalar head, " << model.num_parameters() + model.n_embd() + 1
            << " parameters\n";
  model.to(device), rm.head.to(device);
  model.eval();  // dropout off
  // Rewards of pairs `idx` of `e`: chosen rows first, then rejected, in one forward.
  double step_tokens = 0;  // tokens read by the last batch (the progress bar's speed)
  auto rewards = [&](const std::vector<align::SftExample>& e, const std::vector<size_t>& idx) {
    std::vector<align::SftExample> rows;
    for (size_t i : idx) rows.push_back(e[2 * i]);
    for (size_t i : idx) rows.push_back(e[2 * i + 1]);
    step_tokens = 0;
    for (const align::SftExample& x : rows) step_tokens += double(x.ids.size());
    const Tensor<float> r = rm(align::score_batch(rows, T));  // (2B)
    const int64_t B = int64_t(idx.size());
    return std::make_pair(r.slice(0, 0, B), r.slice(0, B, 2 * B));
  };
  auto evaluate = [&](const std::vector<align::SftExample>& e, size_t limit) {
    NoGradGuard no_grad;
    const size_t n = std::min(e.size() / 2, limit);
    double loss = 0, acc = 0;
    for (size_t i = 0; i < n; i += size_t(o.train.batch_size)) {
      std::vector<size_t> idx;
      for (size_t k = i; k < std::min(n, i + size_t(o.train.batch_size)); ++k) idx.push_back(k);
      auto [c, r] = rewards(e, idx);
      const auto l = align::bradley_terry_loss(c, r);
      loss += double(l.loss.item()) * double(idx.size()), acc += l.accuracy * double(idx.size());
    }
    return std::make_pair(loss / double(n), acc / double(n));
  };
  EpochOrder order(pairs.size(), o.seed);
  double accuracy = 0, margin = 0;
  train::Trainer trainer(model, train::BatchLoader(), train::BatchLoader(), o.train, rm.head_parameters());
  trainer.set_loss([&](int64_t) {
    auto [c, r] = rewards(ex, order.next(size_t(o.train.batch_size)));
    auto l = align::bradley_terry_loss(c, r, o.center);
    accuracy = l.accuracy, margin = l.margin;
    return l.loss;
  });
  Csv log(o.out + "/log.csv", {"step", "loss", "accuracy", "margin", "val_loss", "val_accuracy", "lr"});
  train::ProgressBar bar(stderr, o.train.steps, o.log_interval);
  double val_loss = NAN, val_acc = NAN;
  while (trainer.step_count() < o.train.steps) {
    const double t0 = bar.seconds();
    const double loss = trainer.step();
    const int64_t s = trainer.step_count();
    check_finite(loss, s);
    bar.update(s, loss, step_tokens / (bar.seconds() - t0));
    if (!val_ex.empty() && (s % o.train.eval_interval == 0 || s == o.train.steps)) {
      std::tie(val_loss, val_acc) = evaluate(val_ex, val_ex.size());
      char msg[160];
      std::snprintf(msg, sizeof msg, "step %lld: val loss %.4f, val accuracy %.1f%%", (long long)s, val_loss, 100 * val_acc);
      bar.message(msg);
    }
    log.row({double(s), loss, accuracy, margin, val_loss, val_acc, trainer.lr_at(s - 1)});
  }
  const auto [train_loss, train_acc] = evaluate(ex, 512);
  const std::string path = o.out + "/ckpt.safetensors";
  io::save_checkpoint(path, rm.checkpoint());
  std::cout << "wrote " << path << ", " << o.out << "/log.csv\n";
  std::printf("final step=%lld train_loss=%.4f train_accuracy=%.4f val_loss=%.4f val_accuracy=%.4f\n",
              (long long)trainer.step_count(), train_loss, train_acc, val_loss, val_acc);
  return 0;
}

// --- dpo -----------------------------------------------------------------------------------------

int run_dpo(Options& o, const Device device) {
  align::ChatModel cm = align::load_chat_model(o.init);
  nn::CausalLM& model = *cm.model;
  const int64_t T = model.block_size();
  align::DpoConfig cfg;
  cfg.beta = o.beta, cfg.loss = align::parse_dpo_loss(o.loss), cfg.label_smoothing = o.label_smoothing;
  cfg.sft_weight = o.sft_weight;
  const std::vector<align::PreferencePair> pairs = align::read_preferences(o.data);
  const std::vector<align::SftExample> ex = align::render_pairs(cm.chat, pairs, T + 1);
  std::vector<align::SftExample> val_ex;
  if (!o.val.empty()) val_ex = align::render_pairs(cm.chat, align::read_preferences(o.val), T + 1);
  std::vector<align::PromptItem> eval_prompts;
  if (!o.eval_prompts.empty()) eval_prompts = limited(align::read_prompts(o.eval_prompts), o.eval_limit);
  const std::vector<align::Conversation> eval_convs = as_conversations(eval_prompts);
  model.to(device);
  model.eval();  // dropout off: the policy and its reference are the same network at the start
  double step_tokens = 0;  // tokens read by the last batch (the progress bar's speed)
  // Log-probabilities of pairs `idx`: chosen rows first, then rejected, in one forward; and the
  // chosen answers' lengths.
  auto logprobs = [&](const std::vector<align::SftExample>& e, const std::vector<size_t>& idx) {
    std::vector<align::SftExample> rows;
    for (size_t i : idx) rows.push_back(e[2 * i]);
    for (size_t i : idx) rows.push_back(e[2 * i + 1]);
    const align::SftBatch b = align::example_batch(rows, T);
    step_tokens = double(b.tokens);
    const Tensor<float> lp = align::sequence_logprobs(model, b);  // (2B)
    const std::vector<int64_t> len = align::answer_lengths(b);
    Tensor<float> chosen_len = Tensor<float>::empty({int64_t(idx.size())});
    for (size_t k = 0; k < idx.size(); ++k) chosen_len.data()[k] = float(len[k]);
    const int64_t B = int64_t(idx.size());
    return std::make_tuple(lp.slice(0, 0, B), lp.slice(0, B, 2 * B), chosen_len);
  };
  // The reference: the starting model's log-probabilities of every pair, computed once.
  auto reference = [&](const std::vector<align::SftExample>& e) {
    NoGradGuard no_grad;
    std::vector<float> c(e.size() / 2), r(e.size() / 2);
    for (size_t i = 0; i < c.size(); i += 64) {
      std::vector<size_t> idx;
      for (size_t k = i; k < std::min(c.size(), i + 64); ++k) idx.push_back(k);
      auto [lc, lr, len] = logprobs(e, idx);
      const Tensor<float> a = lc.to(Device::cpu()).contiguous(), b = lr.to(Device::cpu()).contiguous();
      for (size_t k = 0; k < idx.size(); ++k) c[idx[k]] = a.data()[k], r[idx[k]] = b.data()[k];
    }
    return std::make_pair(c, r);
  };
  auto pick = [](const std::vector<float>& v, const std::vector<size_t>& idx) {
    Tensor<float> t = Tensor<float>::empty({int64_t(idx.size())});
    for (size_t k = 0; k < idx.size(); ++k) t.data()[k] = v[idx[k]];
    return t;
  };
  const auto [ref_c, ref_r] = reference(ex);
  std::vector<float> val_ref_c, val_ref_r;
  if (!val_ex.empty()) std::tie(val_ref_c, val_ref_r) = reference(val_ex);
  auto evaluate_pairs = [&]() {
    NoGradGuard no_grad;
    const size_t n = val_ex.size() / 2;
    align::DpoTerms<float> sum_terms;
    double loss = 0;
    for (size_t i = 0; i < n; i += size_t(o.train.batch_size)) {
      std::vector<size_t> idx;
      for (size_t k = i; k < std::min(n, i + size_t(o.train.batch_size)); ++k) idx.push_back(k);
      auto [c, r, len] = logprobs(val_ex, idx);
      align::DpoConfig plain = cfg;
      plain.sft_weight = 0;
      const auto t = align::dpo_loss(c, r, pick(val_ref_c, idx), pick(val_ref_r, idx), plain);
      const double w = double(idx.size());
      loss += double(t.loss.item()) * w, sum_terms.margin += t.margin * w, sum_terms.accuracy += t.accuracy * w;
    }
    sum_terms.margin /= double(n), sum_terms.accuracy /= double(n);
    return std::make_pair(loss / double(n), sum_terms);
  };
  auto exact = [&]() { return eval_convs.empty() ? NAN : align::exact_match(model, cm.chat, eval_convs, o.max_answer).rate(); };
  std::cout << "data: " << pairs.size() << " pairs in " << o.data;
  if (!val_ex.empty()) std::cout << ", " << val_ex.size() / 2 << " in " << o.val;
  std::cout << "\npolicy and reference: " << o.init << " (" << model.num_parameters() << " parameters), beta " << cfg.beta
            << ", loss " << o.loss << "\n";
  const double em_start = exact();
  if (!eval_convs.empty())
    std::printf("start: exact match %.1f%% on %zu held-out prompts\n", 100 * em_start, eval_convs.size());
  double val_margin_start = NAN;
  if (!val_ex.empty()) val_margin_start = evaluate_pairs().second.margin;  // 0: the policy is the reference

  EpochOrder order(pairs.size(), o.seed);
  align::DpoTerms<float> last;
  train::Trainer trainer(model, train::BatchLoader(), train::BatchLoader(), o.train);
  trainer.set_loss([&](int64_t) {
    const std::vector<size_t> idx = order.next(size_t(o.train.batch_size));
    auto [c, r, len] = logprobs(ex, idx);
    last = align::dpo_loss(c, r, pick(ref_c, idx), pick(ref_r, idx), cfg, len);
    return last.loss;
  });
  Csv log(o.out + "/log.csv", {"step", "loss", "chosen_reward", "rejected_reward", "margin", "accuracy", "val_loss",
                               "val_margin", "val_accuracy", "exact_match", "lr"});
  train::ProgressBar bar(stderr, o.train.steps, o.log_interval);
  double val_loss = NAN, val_margin = NAN, val_acc = NAN, em = em_start;
  double w_loss = 0, w_margin = 0, w_acc = 0;
  int64_t w_n = 0;
  while (trainer.step_count() < o.train.steps) {
    const double t0 = bar.seconds();
    const double loss = trainer.step();
    const int64_t s = trainer.step_count();
    check_finite(loss, s);
    bar.update(s, loss, step_tokens / (bar.seconds() - t0));
    if (s > o.train.steps - std::max<int64_t>(o.train.steps / 10, 1)) w_loss += loss, w_margin += last.margin, w_acc += last.accuracy, ++w_n;
    if (s % o.log_interval == 0) {
      char msg[200];
      std::snprintf(msg, sizeof msg, "step %lld: loss %.4f, rewards chosen %+.3f rejected %+.3f, margin %.3f, accuracy %.0f%%",
                    (long long)s, loss, last.chosen_reward, last.rejected_reward, last.margin, 100 * last.accuracy);
      bar.message(msg);
    }
    if (s % o.train.eval_interval == 0 || s == o.train.steps) {
      if (!val_ex.empty()) {
        const auto [l, t] = evaluate_pairs();
        val_loss = l, val_margin = t.margin, val_acc = t.accuracy;
      }
      em = exact();
      char msg[200];
      std::snprintf(msg, sizeof msg, "step %lld: val margin %.3f, val accuracy %.1f%%, exact match %.1f%%", (long long)s,
                    val_margin, 100 * val_acc, 100 * em);
      bar.message(msg);
    }
    log.row({double(s), loss, last.chosen_reward, last.rejected_reward, last.margin, last.accuracy, val_loss, val_margin,
             val_acc, em, trainer.lr_at(s - 1)});
  }
  const std::string path = o.out + "/ckpt.safetensors";
  io::save_checkpoint(path, trainer.checkpoint(align::tokenizer_json(cm)));
  std::cout << "wrote " << path << ", " << o.out << "/log.csv\n";
  std::printf("final step=%lld loss=%.4f margin=%.4f accuracy=%.4f val_margin_start=%.4f val_margin=%.4f "
              "val_accuracy=%.4f exact_match_start=%.4f exact_match=%.4f\n",
              (long long)trainer.step_count(), w_loss / double(w_n), w_margin / double(w_n), w_acc / double(w_n),
              val_margin_start, val_margin, val_acc, em_start, em);
  return 0;
}

// --- grpo ----------------------------------------------------------------------------------------

/// The reward of --reward: built-in checkers, a reward model or an external command.
class Reward {
 public:
  Reward(const std::string& spec, double timeout) : spec_(spec), timeout_(timeout) {
    if (spec == "exact" || spec == "format") return;
    if (spec.rfind("rm:", 0) == 0) {
      rm_ = align::load_reward_model(spec.substr(3));
      rm_->base.model->eval();
      return;
    }
    if (spec.rfind("cmd:", 0) == 0) {
      LOOM_CHECK(spec.size() > 4, usage_error, "--reward cmd: needs a program, e.g. cmd:\"python3 judge.py\"");
      return;
    }
    throw usage_error("unknown --reward '" + spec + "' (exact, format, rm:CKPT or cmd:PROGRAM)");
  }
  /// Whether the reward compares with reference answers.
  bool needs_answers() const { return spec_ == "exact" || spec_ == "format"; }
  /// One reward per answer; answers of prompt i are at i * G + j.
  std::vector<double> operator()(const std::vector<align::PromptItem>& prompts, const std::vector<std::string>& answers,
                                 int64_t G) {
    std::vector<double> r;
    if (spec_ == "exact" || spec_ == "format") {
      for (size_t k = 0; k < answers.size(); ++k) {
        const std::string& ref = prompts[k / size_t(G)].answer;
        r.push_back(spec_ == "exact" ? align::exact_reward(answers[k], ref) : align::format_reward(answers[k], ref));
      }
    } else if (rm_) {
      std::vector<align::Conversation> convs;
      for (size_t k = 0; k < answers.size(); ++k)
        convs.push_back(align::with_answer(prompts[k / size_t(G)].prompt, answers[k].empty() ? " " : answers[k]));
      r = rm_->score(convs);
    } else {
      std::vector<align::JudgeSample> samples;
      for (size_t k = 0; k < answers.size(); ++k)
        samples.push_back({prompts[k / size_t(G)].prompt, answers[k], prompts[k / size_t(G)].answer});
      r = align::command_scores(spec_.substr(4), samples, timeout_);
    }
    return r;
  }

 private:
  std::string spec_;
  double timeout_;
  std::unique_ptr<align::RewardModel> rm_;
};

int run_grpo(Options& o, const Device device) {
  align::ChatModel cm = align::load_chat_model(o.init);
  align::ChatModel ref = align::load_chat_model(o.init);  // the frozen reference of the KL term
  nn::CausalLM& model = *cm.model;
  const int64_t T = model.block_size(), G = o.group;
  Reward reward(o.reward, o.reward_timeout);
  const std::vector<align::PromptItem> prompts = align::read_prompts(o.prompts);
  if (reward.needs_answers())
    for (size_t i = 0; i < prompts.size(); ++i)
      LOOM_CHECK(!prompts[i].answer.empty(), value_error, o.prompts, ": prompt ", i + 1, " has no \"answer\", which --reward ",
                 o.reward, " compares with");
  std::vector<align::PromptItem> eval_prompts;
  if (!o.eval_prompts.empty()) eval_prompts = limited(align::read_prompts(o.eval_prompts), o.eval_limit);
  const std::vector<align::Conversation> eval_convs = as_conversations(eval_prompts);
  model.to(device), ref.model->to(device);
  model.eval(), ref.model->eval();  // dropout off
  const train::SamplingOptions sampling{o.temperature, 0, 1.0};
  struct Eval {
    double pass1 = NAN, passk = NAN, exact = NAN;
  };
  auto evaluate = [&]() {
    Eval e;
    if (eval_prompts.empty()) return e;
    const align::PassRates p = align::pass_rates(model, cm.chat, eval_prompts, o.samples, o.max_answer, sampling, o.seed);
    e.pass1 = p.pass_at_1, e.passk = p.pass_at_k;
    e.exact = align::exact_match(model, cm.chat, eval_convs, o.max_answer).rate();
    return e;
  };
  std::cout << "prompts: " << prompts.size() << " in " << o.prompts << "; " << o.prompts_per_step << " per step, " << G
            << " answers each; reward " << o.reward << "\npolicy: " << o.init << " (" << model.num_parameters()
            << " parameters)\n";
  const Eval start = evaluate();
  if (!eval_prompts.empty())
    std::printf("start: pass@1 %.1f%%, pass@%lld %.1f%%, greedy exact match %.1f%% on %zu held-out prompts\n",
                100 * start.pass1, (long long)o.samples, 100 * start.passk, 100 * start.exact, eval_prompts.size());

  train::TrainConfig tc = o.train;
  tc.steps = o.train.steps * o.epochs;  // optimizer steps: --epochs passes over each sampled batch
  train::Trainer trainer(model, train::BatchLoader(), train::BatchLoader(), tc);
  EpochOrder order(prompts.size(), o.seed);
  align::SftBatch batch;
  Tensor<float> mask, old_logp, ref_logp;
  std::vector<double> advantages;
  align::PolicyLossTerms<float> terms;
  double entropy = 0;
  trainer.set_loss([&](int64_t) {
    const Tensor<float> logp = align::token_logprobs(model, batch);  // (B, T)
    if (!old_logp.defined()) {
      // The first pass over a batch runs before any update: its log-probabilities are the
      // sampling policy's (the ratios' denominator for the later passes) and give the entropy.
      old_logp = logp.detach();
      entropy = -double((sum(old_logp * mask.to(old_logp.device())) / float(batch.loss_tokens)).item());
    }
    terms = align::policy_loss(logp, old_logp, ref_logp, mask, advantages, o.clip, o.kl);
    return terms.loss;
  });
  Csv log(o.out + "/log.csv", {"step", "loss", "reward_mean", "reward_std", "zero_std_share", "mean_length", "kl",
                               "entropy", "clip_fraction", "gen_seconds", "train_seconds", "pass_at_1", "pass_at_k",
                               "exact_match"});
  train::ProgressBar bar(stderr, o.train.steps, o.log_interval);
  Eval now = start;
  double gen_s = 0, train_s = 0, reward_mean = 0, w_reward = 0;
  int64_t w_n = 0;
  for (int64_t step = 0; step < o.train.steps; ++step) {
    // 1. sample G answers to each of this step's prompts, and score them
    const double t0 = bar.seconds();
    std::vector<align::PromptItem> chosen;
    std::vector<int64_t> index;
    for (size_t i : order.next(size_t(o.prompts_per_step))) chosen.push_back(prompts[i]), index.push_back(int64_t(i));
    const align::SampledAnswers s =
        align::sample_answers(model, cm.chat, chosen, index, G, o.max_answer, sampling, o.seed, step);
    const std::vector<double> r = reward(chosen, s.text, G);
    const double t1 = bar.seconds();
    const align::GroupAdvantages adv = align::group_advantages(r, G, o.scale_std == 1);
    advantages = adv.advantages;
    // 2. the batch, its mask, and the reference's log-probabilities
    batch = align::example_batch(align::answer_examples(s, G), T);
    const Tensor<int64_t> y = batch.targets;
    mask = Tensor<float>::empty(y.shape());
    for (int64_t k = 0; k < y.numel(); ++k) mask.data()[k] = y.data()[k] >= 0 ? 1.0f : 0.0f;
    {
      NoGradGuard no_grad;
      ref_logp = align::token_logprobs(*ref.model, batch);
    }
    old_logp = Tensor<float>();  // set by the first pass (see set_loss above)
    // 3. --epochs optimizer steps on this batch
    double loss = 0;
    for (int64_t e = 0; e < o.epochs; ++e) {
      loss = trainer.step();
      check_finite(loss, step + 1);
    }
    const double t2 = bar.seconds();
    gen_s += t1 - t0, train_s += t2 - t1;
    double mean = 0, var = 0;
    for (double v : r) mean += v;
    mean /= double(r.size());
    for (double v : r) var += (v - mean) * (v - mean);
    reward_mean = mean;
    if (step >= o.train.steps - std::max<int64_t>(o.train.steps / 10, 1)) w_reward += mean, ++w_n;
    const int64_t done = step + 1;
    bar.update(done, loss, double(batch.tokens) / (t2 - t0));  // prompt and answer tokens, sampling included
    if (done % o.log_interval == 0) {
      char msg[240];
      std::snprintf(msg, sizeof msg,
                    "step %lld: reward %.3f (std %.3f), flat groups %.0f%%, length %.1f, kl %.4f, entropy %.3f, "
                    "clipped %.1f%%, sampling %.0f%% of the time",
                    (long long)done, mean, std::sqrt(var / double(r.size())), 100 * adv.zero_std_share,
                    double(s.tokens) / double(r.size()), terms.kl, entropy, 100 * terms.clip_fraction,
                    100 * gen_s / (gen_s + train_s));
      bar.message(msg);
    }
    if (done % o.train.eval_interval == 0 || done == o.train.steps) {
      now = evaluate();
      if (!eval_prompts.empty()) {
        char msg[200];
        std::snprintf(msg, sizeof msg, "step %lld: pass@1 %.1f%%, pass@%lld %.1f%%, greedy exact match %.1f%%", (long long)done,
                      100 * now.pass1, (long long)o.samples, 100 * now.passk, 100 * now.exact);
        bar.message(msg);
      }
    }
    log.row({double(done), loss, mean, std::sqrt(var / double(r.size())), adv.zero_std_share,
             double(s.tokens) / double(r.size()), terms.kl, entropy, terms.clip_fraction, t1 - t0, t2 - t1, now.pass1,
             now.passk, now.exact});
  }
  const std::string path = o.out + "/ckpt.safetensors";
  io::save_checkpoint(path, trainer.checkpoint(align::tokenizer_json(cm)));
  std::cout << "wrote " << path << ", " << o.out << "/log.csv\n";
  std::printf("final step=%lld reward_mean=%.4f pass_at_1_start=%.4f pass_at_1=%.4f pass_at_k_start=%.4f pass_at_k=%.4f "
              "exact_match_start=%.4f exact_match=%.4f gen_share=%.3f\n",
              (long long)o.train.steps, w_n ? w_reward / double(w_n) : reward_mean, start.pass1, now.pass1, start.passk,
              now.passk, start.exact, now.exact, gen_s / (gen_s + train_s));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    Options o = parse(argc, argv);
    if (o.threads > 0) set_num_threads(int(o.threads));
    const Device device = o.device == "cuda" ? Device::cuda(0) : Device::cpu();
    io::make_directories(o.out);
    if (o.command == "rm") return run_rm(o, device);
    if (o.command == "dpo") return run_dpo(o, device);
    return run_grpo(o, device);
  } catch (const std::exception& e) {
    std::cerr << "loom-rl: " << e.what() << "\n";
    return io::exit_status(e);  // 2 for a usage error
  }
}
