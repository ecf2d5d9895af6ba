// loom-chat: talk to a fine-tuned model.
//
//   loom-chat --ckpt DIR/ckpt.safetensors [--system TEXT] [--temperature X] [--top-k N] [--top-p X]
//             [--max-tokens N] [--seed N]
//
// Reads one user message per line from stdin and answers it, streaming the tokens as they are
// sampled (KV cache). The whole conversation stays in the chat template, so the model sees the
// earlier turns; when it outgrows the context, the oldest turns are dropped from the prompt.
// An empty line or end of input ends the chat. The last line on stdout: final turns=N tokens=M
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <iostream>
#include <string>

#include <loom/align/finetune.hpp>
#include <loom/loom.hpp>

using namespace loom;

namespace {

/// Prints bytes as they come, holding back an incomplete UTF-8 sequence until its last byte.
struct Utf8Stream {
  std::string pending;
  void put(const std::string& bytes) {
    pending += bytes;
    size_t cut = pending.size();  // the end of the last complete character
    for (size_t k = 1; k <= 4 && k <= pending.size(); ++k) {
      const unsigned char c = (unsigned char)pending[pending.size() - k];
      if ((c & 0xC0) == 0x80) continue;  // a continuation byte: look further back
      const size_t need = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 1;
      if (need > k) cut = pending.size() - k;
      break;
    }
    std::cout << pending.substr(0, cut) << std::flush;
    pending.erase(0, cut);
  }
  void flush() {
    std::cout << pending << std::flush;
    pending.clear();
  }
};

}  // namespace

int main(int argc, char** argv) {
  try {
    std::string ckpt, system;
    train::SamplingOptions opt{0.7, 0, 1.0};
    int64_t max_tokens = 0;  // 0: 200, or half the model's context when that is shorter
    uint64_t seed = 1337;
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      if (a == "--help" || a == "-h") {
        std::cout << "usage: loom-chat --ckpt FILE [--system TEXT] [--temperature X] [--top-k N] [--top-p X]\n"
                     "                 [--max-tokens N] [--seed N]\n"
                     "  --max-tokens N   longest answer (default 200, or half the model's context if shorter)\n";
        return 0;
      }
      LOOM_CHECK(i + 1 < argc, value_error, "option ", a, " needs a value");
      const std::string v = argv[++i];
      try {
        if (a == "--ckpt") ckpt = v;
        else if (a == "--system") system = v;
        else if (a == "--temperature") opt.temperature = std::stod(v);
        else if (a == "--top-k") opt.top_k = std::stoll(v);
        else if (a == "--top-p") opt.top_p = std::stod(v);
        else if (a == "--max-tokens") max_tokens = std::stoll(v);
        else if (a == "--seed") seed = std::stoull(v);
        else throw value_error("unknown option '" + a + "' (see --help)");
      } catch (const std::logic_error& e) {
        if (dynamic_cast<const value_error*>(&e)) throw;
        throw value_error("option " + a + ": '" + v + "' is not a number");
      }
    }
    LOOM_CHECK(!ckpt.empty(), value_error, "--ckpt FILE is required (see --help)");
    LOOM_CHECK(max_tokens >= 0, value_error, "--max-tokens must be positive");
    align::ChatModel cm = align::load_chat_model(ckpt);
    nn::GPT& model = *cm.model;
    if (max_tokens == 0) max_tokens = std::min<int64_t>(200, model.config.block_size / 2);
    LOOM_CHECK(max_tokens < model.config.block_size, value_error, "--max-tokens ", max_tokens,
               " must be below the model's context of ", model.config.block_size, " tokens");
    const bool tty = isatty(0) != 0;
    align::Conversation conv;
    if (!system.empty()) conv.messages.push_back({"system", system});
    Generator gen(seed);
    int64_t turns = 0, tokens = 0;
    std::string line;
    while (true) {
      if (tty) std::cerr << "> " << std::flush;
      if (!std::getline(std::cin, line) || line.empty()) break;
      conv.messages.push_back({"user", line});
      Utf8Stream out;
      const std::vector<uint32_t> reply = align::answer(model, cm.chat, conv, max_tokens, opt, gen, [&](int64_t id) {
        out.put(std::string(cm.chat.tokenizer().token_bytes(uint32_t(id))));
      });
      out.flush();
      std::cout << "\n";
      conv.messages.push_back({"assistant", cm.chat.tokenizer().decode(reply)});
      ++turns, tokens += int64_t(reply.size());
    }
    std::printf("final turns=%lld tokens=%lld\n", (long long)turns, (long long)tokens);
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "loom-chat: " << e.what() << "\n";
    return 1;
  }
}
