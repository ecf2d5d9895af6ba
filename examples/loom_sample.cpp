// loom-sample: continue a prompt with a model trained by loom-train.
//
//   loom-sample --ckpt out/ckpt.safetensors --prompt "ROMEO:" --tokens 300 --temperature 0.8 --top-k 40
//
// The checkpoint carries the model configuration and the tokenizer (the characters of a
// char-level model, or the path of a loom-bpe model).
#include <iostream>
#include <string>

#include <loom/io/checkpoint.hpp>
#include <loom/loom.hpp>
#include <loom/tokenizer.hpp>
#include <loom/train/data.hpp>
#include <loom/train/sample.hpp>
#include <loom/train/trainer.hpp>

using namespace loom;

namespace {
std::string unhex(const std::string& h) {
  LOOM_CHECK(h.size() % 2 == 0, io_error, "checkpoint: bad tokenizer characters");
  auto v = [](char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    throw io_error("checkpoint: bad tokenizer characters");
  };
  std::string s;
  for (size_t i = 0; i < h.size(); i += 2) s.push_back(char(v(h[i]) * 16 + v(h[i + 1])));
  return s;
}
const char* usage =
    "usage: loom-sample --ckpt FILE [--prompt TEXT] [--tokens N] [--temperature X] [--top-k N] [--top-p X] [--seed N]\n";
}  // namespace

int main(int argc, char** argv) {
  try {
    std::string ckpt, prompt = "\n";
    int64_t tokens = 200;
    train::SamplingOptions opt{0.8, 0, 1.0};
    uint64_t seed = 1337;
    for (int i = 1; i < argc; ++i) {
      std::string a = argv[i];
      if (a == "--help" || a == "-h") {
        std::cout << usage;
        return 0;
      }
      LOOM_CHECK(i + 1 < argc, value_error, "option ", a, " needs a value");
      std::string v = argv[++i];
      try {
        if (a == "--ckpt") ckpt = v;
        else if (a == "--prompt") prompt = v;
        else if (a == "--tokens") tokens = std::stoll(v);
        else if (a == "--temperature") opt.temperature = std::stod(v);
        else if (a == "--top-k") opt.top_k = std::stoll(v);
        else if (a == "--top-p") opt.top_p = std::stod(v);
        else if (a == "--seed") seed = std::stoull(v);
        else throw value_error("unknown option '" + a + "' (see --help)");
      } catch (const std::logic_error& e) {
        if (dynamic_cast<const value_error*>(&e)) throw;
        throw value_error("option " + a + ": '" + v + "' is not a number");
      }
    }
    LOOM_CHECK(!ckpt.empty(), value_error, "--ckpt FILE is required (see --help)");
    io::Checkpoint c = io::load_checkpoint(ckpt);
    nn::GPT model(train::gpt_config_from_json(c.meta_json("config")));
    nn::NamedTensors params;
    for (const std::string& n : c.names("model.")) params.emplace_back(n.substr(6), c.get<float>(n));
    model.load_state_dict(params);

    io::Json tok = io::parse_json(c.meta("tokenizer"));
    std::vector<int64_t> ids;
    std::function<std::string(const std::vector<int64_t>&)> decode;
    if (tok.at("kind").as_string() == "char") {
      train::CharTokenizer chars = train::CharTokenizer::from_chars(unhex(tok.at("chars_hex").as_string()));
      ids = chars.encode(prompt);
      decode = [chars](const std::vector<int64_t>& v) { return chars.decode(v); };
    } else {
      auto bpe = std::make_shared<BpeTokenizer>(tokenizer::load(tok.at("path").as_string()));
      for (uint32_t id : bpe->encode(prompt, tokenizer::SpecialPolicy::as_text())) ids.push_back(id);
      decode = [bpe](const std::vector<int64_t>& v) { return bpe->decode_lossy(std::vector<uint32_t>(v.begin(), v.end())); };
    }
    LOOM_CHECK(!ids.empty(), value_error, "--prompt must not be empty");
    Generator gen(seed);
    std::cout << prompt << std::flush;
    train::generate(model, ids, tokens, opt, gen, [&](int64_t id) { std::cout << decode({id}) << std::flush; });
    std::cout << "\n";
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "loom-sample: " << e.what() << "\n";
    return 1;
  }
}
