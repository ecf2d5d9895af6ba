// loom-eval: how well a fine-tuned model answers held-out conversations.
//
//   loom-eval --ckpt DIR/ckpt.safetensors --data test.jsonl [--max-answer N] [--limit N] [--show N]
//
// Reports the masked loss (cross-entropy per assistant token, as loom-finetune trains it) and the
// exact match of greedy answers: the model's reply to each conversation without its last turn,
// compared with that turn (white space at either end aside). --show N prints the first N answers.
// The last line on stdout: eval loss=X exact_match=Y n=Z
#include <cstdio>
#include <iostream>
#include <string>

#include <loom/align/finetune.hpp>
#include <loom/loom.hpp>

using namespace loom;

int main(int argc, char** argv) {
  try {
    std::string ckpt, data, tokenizer_spec;
    int64_t max_answer = 32, limit = 0, show = 0, batch = 16, threads = 0;
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      if (a == "--help" || a == "-h") {
        std::cout << "usage: loom-eval --ckpt FILE --data FILE.jsonl [--max-answer N] [--limit N] [--show N]\n"
                     "                 [--batch-size N] [--threads N] [--tokenizer SPEC]\n";
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
        else throw value_error("unknown option '" + a + "' (see --help)");
      } catch (const std::logic_error& e) {
        if (dynamic_cast<const value_error*>(&e)) throw;
        throw value_error("option " + a + ": '" + v + "' is not a number");
      }
    }
    LOOM_CHECK(!ckpt.empty() && !data.empty(), value_error, "--ckpt FILE and --data FILE are required (see --help)");
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
    std::printf("eval loss=%.4f exact_match=%.4f n=%lld\n", loss, em.rate(), (long long)em.total);
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "loom-eval: " << e.what() << "\n";
    return 1;
  }
}
