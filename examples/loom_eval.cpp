// loom-eval: how well a fine-tuned model answers held-out conversations.
//
//   loom-eval --ckpt DIR/ckpt.safetensors --data test.jsonl [--max-answer N] [--limit N] [--show N]
//             [--samples K --temperature X --seed N]
//
// Reports the masked loss (cross-entropy per assistant token, as loom-finetune trains it) and the
// exact match of greedy answers: the model's reply to each conversation without its last turn,
// compared with that turn (white space at either end aside). --show N prints the first N answers.
// --samples K also samples K answers per conversation (temperature 1 unless --temperature) and
// reports pass@1 (the share of right samples) and pass@K (at least one of the K right).
// The last line on stdout: eval loss=X exact_match=Y n=Z [pass_at_1=P pass_at_k=Q k=K]
//
//   loom-eval --ckpt FILE --task mc|pairs|bias --data FILE.jsonl [--limit N] [--batch-size N]
//
// --task scores by likelihood instead (loom/align/scoring.hpp), with the checkpoint's own
// tokenizer: mc reads multiple-choice items (HellaSwag's layout or {"context", "choices",
// "answer"}) and reports acc and acc_norm; pairs reads BLiMP minimal pairs and reports the share
// whose good sentence is more likely (per UID on the lines before); bias reads CrowS-Pairs and
// reports pct_stereotype, the share whose sent_more is more likely (per bias type before). Each
// score comes with its 95% Wilson interval (_lo, _hi). The last line on stdout:
//   eval task=mc acc=X acc_lo=L acc_hi=H acc_norm=Y acc_norm_lo=L acc_norm_hi=H n=N examples_per_s=E
//   eval task=pairs acc=X acc_lo=L acc_hi=H n=N examples_per_s=E
//   eval task=bias pct_stereotype=X pct_stereotype_lo=L pct_stereotype_hi=H n=N examples_per_s=E
#include <cstdio>
#include <iostream>
#include <map>
#include <string>

#include <loom/align/grpo.hpp>
#include <loom/align/scoring.hpp>
#include <loom/loom.hpp>

using namespace loom;

namespace {

// "NAME=X NAME_lo=L NAME_hi=H" of a proportion.
std::string score_fields(const char* name, const align::Proportion& p) {
  char buf[160];
  std::snprintf(buf, sizeof buf, "%s=%.4f %s_lo=%.4f %s_hi=%.4f", name, p.value(), name, p.lo, name, p.hi);
  return buf;
}

// Likelihood scoring of `data` as `task` (see the file comment); returns the exit status.
int run_task(const std::string& task, const std::string& ckpt, const std::string& data, const std::string& tokenizer_spec,
             int64_t limit, int64_t batch) {
  LOOM_CHECK(task == "mc" || task == "pairs" || task == "bias", value_error, "--task must be mc, pairs or bias, got '",
             task, "'");
  io::Checkpoint c = io::load_checkpoint(ckpt);
  nn::GPT model(train::gpt_config_from_json(c.meta_json("config")));
  nn::NamedTensors params;
  for (const std::string& n : c.names("model.")) params.emplace_back(n.substr(6), c.get<float>(n));
  model.load_state_dict(params);
  const train::TextTokenizer tok = tokenizer_spec.empty()
                                       ? train::TextTokenizer::from_checkpoint(c)
                                       : train::TextTokenizer::bpe(tokenizer::load_spec(tokenizer_spec), tokenizer_spec);
  LOOM_CHECK(tok.vocab_size() <= model.config.vocab_size, value_error, ckpt, ": the tokenizer has ", tok.vocab_size(),
             " ids but the model only ", model.config.vocab_size, ": they do not belong together");
  const align::ScoreOptions opt{batch};
  auto head = [&](auto v) {
    if (limit > 0 && size_t(limit) < v.size()) v.resize(size_t(limit));
    return v;
  };
  auto groups = [](const char* what, const std::map<std::string, align::Proportion>& by) {
    for (const auto& [g, p] : by)
      std::printf("%s %s: %.4f [%.4f, %.4f] n=%lld\n", what, g.empty() ? "(none)" : g.c_str(), p.value(), p.lo, p.hi,
                  (long long)p.total);
  };
  if (task == "mc") {
    const align::ChoiceScores s = align::score_choices(model, tok, head(align::read_choice_items(data)), opt);
    std::printf("eval task=mc %s %s n=%lld examples_per_s=%.1f\n", score_fields("acc", s.acc).c_str(),
                score_fields("acc_norm", s.acc_norm).c_str(), (long long)s.acc.total, s.examples_per_s());
  } else if (task == "pairs") {
    const align::PairScores s = align::score_minimal_pairs(model, tok, head(align::read_minimal_pairs(data)), opt);
    groups("uid", s.by_group);
    std::printf("eval task=pairs %s n=%lld examples_per_s=%.1f\n", score_fields("acc", s.first_more_likely).c_str(),
                (long long)s.first_more_likely.total, s.examples_per_s());
  } else {
    const align::PairScores s = align::score_bias_pairs(model, tok, head(align::read_bias_pairs(data)), opt);
    groups("bias_type", s.by_group);
    std::printf("eval task=bias %s n=%lld examples_per_s=%.1f\n",
                score_fields("pct_stereotype", s.first_more_likely).c_str(), (long long)s.first_more_likely.total,
                s.examples_per_s());
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    std::string ckpt, data, tokenizer_spec, task;
    int64_t max_answer = 32, limit = 0, show = 0, batch = 16, threads = 0, samples = 0;
    double temperature = 1.0;
    uint64_t seed = 1337;
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      if (a == "--help" || a == "-h") {
        std::cout << "usage: loom-eval --ckpt FILE --data FILE.jsonl [--max-answer N] [--limit N] [--show N]\n"
                     "                 [--batch-size N] [--threads N] [--tokenizer SPEC]\n"
                     "                 [--samples K] [--temperature X] [--seed N]   pass@1 and pass@K of K sampled answers\n"
                     "       loom-eval --ckpt FILE --task mc|pairs|bias --data FILE.jsonl [--limit N] [--batch-size N]\n"
                     "                 likelihood scores: multiple choice, minimal pairs, bias pairs\n";
        return 0;
      }
      LOOM_CHECK(i + 1 < argc, value_error, "option ", a, " needs a value");
      const std::string v = argv[++i];
      try {
        if (a == "--ckpt") ckpt = v;
        else if (a == "--data") data = v;
        else if (a == "--task") task = v;
        else if (a == "--tokenizer") tokenizer_spec = v;
        else if (a == "--max-answer") max_answer = std::stoll(v);
        else if (a == "--limit") limit = std::stoll(v);
        else if (a == "--show") show = std::stoll(v);
        else if (a == "--batch-size") batch = std::stoll(v);
        else if (a == "--threads") threads = std::stoll(v);
        else if (a == "--samples") samples = std::stoll(v);
        else if (a == "--temperature") temperature = std::stod(v);
        else if (a == "--seed") seed = std::stoull(v);
        else throw value_error("unknown option '" + a + "' (see --help)");
      } catch (const std::logic_error& e) {
        if (dynamic_cast<const value_error*>(&e)) throw;
        throw value_error("option " + a + ": '" + v + "' is not a number");
      }
    }
    LOOM_CHECK(!ckpt.empty() && !data.empty(), value_error, "--ckpt FILE and --data FILE are required (see --help)");
    LOOM_CHECK(samples >= 0 && temperature > 0, value_error, "--samples must be >= 0 and --temperature > 0");
    LOOM_CHECK(batch > 0, value_error, "--batch-size must be positive");
    if (threads > 0) set_num_threads(int(threads));
    if (!task.empty()) return run_task(task, ckpt, data, tokenizer_spec, limit, batch);
    align::ChatModel cm = align::load_chat_model(ckpt, tokenizer_spec);
    nn::GPT& model = *cm.model;
    std::vector<align::Conversation> convs = align::read_conversations(data);
    if (limit > 0 && size_t(limit) < convs.size()) convs.resize(size_t(limit));
    const int64_t T = model.config.block_size;
    const std::vector<align::SftExample> ex = align::render_examples(cm.chat, convs, T + 1);
    const double loss = align::masked_loss(model, align::SftLoader(ex, batch, T, true, 0).all());
    const align::ExactMatch em =
        align::exact_match(model, cm.chat, convs, max_answer, 0, [&](size_t i, const std::string& got, bool ok) {
          if (int64_t(i) < show) {
            const auto [prompt, reference] = align::split_last_answer(convs[i]);
            std::cout << (ok ? "right" : "wrong") << ": " << prompt.messages.back().content << " -> " << got
                      << " (reference " << reference << ")\n";
          }
        });
    std::printf("eval loss=%.4f exact_match=%.4f n=%lld", loss, em.rate(), (long long)em.total);
    if (samples > 0) {
      std::vector<align::PromptItem> prompts;
      for (const align::Conversation& c : convs) {
        auto [prompt, reference] = align::split_last_answer(c);
        prompts.push_back({prompt, reference});
      }
      const align::PassRates p = align::pass_rates(model, cm.chat, prompts, samples, max_answer, {temperature, 0, 1.0}, seed);
      std::printf(" pass_at_1=%.4f pass_at_k=%.4f k=%lld", p.pass_at_1, p.pass_at_k, (long long)samples);
    }
    std::printf("\n");
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "loom-eval: " << e.what() << "\n";
    return 1;
  }
}
