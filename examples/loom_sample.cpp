// loom-sample: continue a prompt with a model trained by loom-train.
//
//   loom-sample --ckpt out/ckpt.safetensors --prompt "ROMEO:" --tokens 300 --temperature 0.8 --top-k 40
//
// The checkpoint carries the model configuration and the tokenizer (the characters of a
// char-level model, or the whole loom-bpe model), so it samples from any folder. Checkpoints from
// before the BPE model was embedded name it by path only; --tokenizer FILE supplies it. An empty
// prompt (the default) samples unconditionally: from <|endoftext|> when the BPE model has it,
// else from a newline.
#include <functional>
#include <iostream>
#include <string>

#include <loom/io/checkpoint.hpp>
#include <loom/io/cli.hpp>
#include <loom/loom.hpp>
#include <loom/tokenizer.hpp>
#include <loom/train/sample.hpp>
#include <loom/train/text_tokenizer.hpp>
#include <loom/train/trainer.hpp>

using namespace loom;

namespace {
const char* usage =
    "usage: loom-sample --ckpt FILE [--prompt TEXT] [--tokens N] [--temperature X] [--top-k N] [--top-p X] [--seed N]\n"
    "                   [--tokenizer FILE]\n"
    "  --prompt TEXT     text to continue (default \"\": an unconditional sample)\n"
    "  --tokenizer FILE  a loom-bpe model to use instead of the one the checkpoint carries or names\n";
}  // namespace

int main(int argc, char** argv) {
  try {
    std::string ckpt, prompt, tokenizer_file;
    int64_t tokens = 200;
    train::SamplingOptions opt{0.8, 0, 1.0};
    uint64_t seed = 1337;
    io::OptionTable table;
    using io::store;
    table.values = {{"--ckpt", store(ckpt)},
                    {"--prompt", store(prompt)},
                    {"--tokenizer", store(tokenizer_file)},
                    {"--tokens", store(tokens)},
                    {"--temperature", store(opt.temperature)},
                    {"--top-k", store(opt.top_k)},
                    {"--top-p", store(opt.top_p)},
                    {"--seed", store(seed)}};
    if (!io::parse_options(argc, argv, 1, table)) {
      std::cout << usage;
      return 0;
    }
    LOOM_CHECK(!ckpt.empty(), usage_error, "--ckpt FILE is required (see --help)");
    io::Checkpoint c = io::load_checkpoint(ckpt);
    std::unique_ptr<nn::CausalLM> loaded = train::model_from_checkpoint(c);
    nn::CausalLM& model = *loaded;

    const train::TextTokenizer tok = tokenizer_file.empty()
                                         ? train::TextTokenizer::from_checkpoint(c)
                                         : train::TextTokenizer::bpe(tokenizer::load(tokenizer_file), tokenizer_file);
    LOOM_CHECK(tok.vocab_size() == model.vocab_size(), value_error, ckpt, ": the model has ",
               model.vocab_size(), " token ids but its tokenizer has ", tok.vocab_size());
    std::vector<int64_t> ids = prompt.empty() ? tok.start_ids() : tok.encode(prompt);
    Generator gen(seed);
    std::cout << prompt << std::flush;
    train::generate(model, ids, tokens, opt, gen, [&](int64_t id) { std::cout << tok.decode({id}) << std::flush; });
    std::cout << "\n";
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "loom-sample: " << e.what() << "\n";
    return io::exit_status(e);  // 2 for a usage error
  }
}
