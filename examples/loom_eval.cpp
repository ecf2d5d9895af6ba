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
#include <cstdio>
#include <iostream>
#include <string>

#include <loom/align/grpo.hpp>
#include <loom/loom.hpp>

using namespace loom;

int main(int argc, char** argv) {
  try {
    std::string ckpt, data, tokenizer_spec;
    int64_t max_answer = 32, limit = 0, show = 0, batch = 16, threads = 0, samples = 0;
    double temperature = 1.0;
    uint64_t seed = 1337;
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      if (a == "--help" || a == "-h") {
        std::cout << "usage: loom-eval --ckpt FILE --data FILE.jsonl [--max-answer N] [--limit N] [--show N]\n"
                     "                 [--batch-size N] [--threads N] [--tokenizer SPEC]\n"
                     "                 [--samples K] [--temperature X] [--seed N]   pass@1 and pass@K of K sampled answers\n";
        return 0;
      }
      LOOM_CHECK(i + 1 < argc, value_error, "option ", a, " needs a value");
      const std::string v = argv[++i];
      try {
        if (a == "--ckpt") ckpt = v;
        else if (a == "--data") data = v;
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
    if (threads > 0) set_num_threads(int(threads));
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
