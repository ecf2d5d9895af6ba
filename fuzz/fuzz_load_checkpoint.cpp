// Fuzzes what loom-sample, loom-chat and loom-eval do with a checkpoint file: parse it
// (io::parse_checkpoint), build the model its config describes (train::model_from_checkpoint),
// read its tokenizer, and run the model on one token. Malformed input must give a loom::Error
// that says what is wrong: never a crash, another exception, or an allocation beyond the input's
// size (libFuzzer's -rss_limit_mb and -malloc_limit_mb catch those).
#include <loom/io/checkpoint.hpp>
#include <loom/train/models.hpp>
#include <loom/train/text_tokenizer.hpp>

#include "fuzz_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const unsigned char* data, size_t size) {
  using namespace loom;
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  try {
    const io::Checkpoint c = io::parse_checkpoint(bytes, "fuzz.safetensors");
    std::unique_ptr<nn::CausalLM> model = train::model_from_checkpoint(c);
    LOOM_FUZZ_ASSERT(model->num_parameters() <= int64_t(size));  // at most one per 4 bytes, in fact
    const train::TextTokenizer tok = train::TextTokenizer::from_checkpoint(c);
    NoGradGuard no_grad;
    const Tensor<float> logits = model->forward(zeros<int64_t>({1, 1})).logits;
    LOOM_FUZZ_ASSERT(logits.shape() == Shape({1, 1, model->vocab_size()}));
    (void)tok.decode({0});
  } catch (const loom::Error& e) {
    LOOM_FUZZ_ASSERT(std::string(e.what()).size() > 10);  // a message, not an empty string
  }
  return 0;
}
