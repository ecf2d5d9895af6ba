#pragma once
/// @file finetune.hpp
/// What loom-finetune, loom-eval and loom-chat share: where a fine-tuning run starts (a loom
/// checkpoint, Hugging Face GPT-2 weights, or a fresh model), the chat tokens added to its
/// vocabulary, the masked validation loss, and greedy answers scored by exact match.
///
/// **Growing the vocabulary.** The chat template needs five special tokens (chat.hpp). A model
/// whose tokenizer lacks them gets new embedding rows, set to the mean of the existing rows: a new
/// token then starts as "an average token" rather than as noise that dominates the first logits
/// (Hewitt 2021, "Initializing New Word Embeddings for Pretrained Language Models"). Tied
/// embeddings make the same rows the output weights of the new tokens.

#include <algorithm>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "loom/align/chat.hpp"
#include "loom/align/logprob.hpp"
#include "loom/align/sft.hpp"
#include "loom/io/checkpoint.hpp"
#include "loom/io/hf_gpt2.hpp"
#include "loom/io/hf_llama.hpp"
#include "loom/nn/causal_lm.hpp"
#include "loom/tokenizer/io.hpp"
#include "loom/train/sample.hpp"
#include "loom/train/text_tokenizer.hpp"
#include "loom/train/trainer.hpp"

namespace loom::align {

/// A model to fine-tune or to talk to, with the chat template of its tokenizer.
struct ChatModel {
  std::unique_ptr<nn::CausalLM> model;  ///< its vocabulary covers the chat tokens
  ChatTemplate chat;               ///< the tokenizer with the chat tokens
  int64_t base_vocab = 0;          ///< the vocabulary before the chat tokens were added (rows past it are new)
};

/// A copy of `model` whose vocabulary has `vocab_size` ids: the existing rows of the per-token
/// parameters (the embedding, and an untied output head) are kept and each new row is the mean
/// of the old ones (see the file comment).
inline std::unique_ptr<nn::CausalLM> grow_vocab(const nn::CausalLM& model, int64_t vocab_size) {
  const int64_t V = model.vocab_size(), C = model.n_embd();
  LOOM_CHECK(vocab_size >= V, value_error, "grow_vocab: ", vocab_size, " ids is fewer than the model's ", V);
  std::unique_ptr<nn::CausalLM> grown = model.with_vocab_size(vocab_size);
  const std::vector<std::string> per_token = model.vocab_parameters();
  nn::NamedTensors params;
  for (auto& [name, p] : model.named_parameters()) {
    if (std::find(per_token.begin(), per_token.end(), name) == per_token.end()) {
      params.emplace_back(name, p.detach().to(Device::cpu()));
      continue;
    }
    Tensor<float> old = p.detach().to(Device::cpu()).contiguous();  // (V, C)
    Tensor<float> w = zeros<float>({vocab_size, C});                // (V', C)
    std::copy(old.data(), old.data() + V * C, w.data());
    std::vector<double> mean(size_t(C), 0.0);
    for (int64_t v = 0; v < V; ++v)
      for (int64_t j = 0; j < C; ++j) mean[size_t(j)] += old.data()[v * C + j];
    for (int64_t v = V; v < vocab_size; ++v)
      for (int64_t j = 0; j < C; ++j) w.data()[v * C + j] = float(mean[size_t(j)] / double(V));
    params.emplace_back(name, w);
  }
  grown->load_state_dict(params);
  return grown;
}

/// The model and chat template for `tok`: the vocabulary grown to the chat tokens when needed.
inline ChatModel with_chat_tokens(std::unique_ptr<nn::CausalLM> model, const BpeTokenizer& tok) {
  ChatTemplate chat(tok);
  const int64_t V = int64_t(chat.tokenizer().vocab_size());
  LOOM_CHECK(V >= model->vocab_size(), value_error, "the tokenizer has ", V, " ids but the model ",
             model->vocab_size(), ": they do not belong together");
  const int64_t base = model->vocab_size();
  if (V > base) model = grow_vocab(*model, V);
  return ChatModel{std::move(model), std::move(chat), base};
}

/// A GPT from a checkpoint written by loom-train or loom-finetune, with the tokenizer it carries
/// (or `tokenizer_spec`, tokenizer::load_spec, when given), ready for the chat template.
inline ChatModel load_chat_model(const std::string& ckpt, const std::string& tokenizer_spec = "") {
  io::Checkpoint c = io::load_checkpoint(ckpt);
  std::unique_ptr<nn::CausalLM> model = train::model_from_checkpoint(c);
  if (!tokenizer_spec.empty()) return with_chat_tokens(std::move(model), tokenizer::load_spec(tokenizer_spec));
  const train::TextTokenizer tok = train::TextTokenizer::from_checkpoint(c);
  LOOM_CHECK(tok.is_bpe(), value_error, ckpt,
             ": the model was trained with one token per character; chat needs a byte-level BPE tokenizer "
             "(train it with loom-train --tokenizer bytes, or any BPE model)");
  return with_chat_tokens(std::move(model), tok.bpe_model());
}

/// GPT-2 124M from a Hugging Face model.safetensors, with `tokenizer_spec` (GPT-2's: gpt2:DIR).
inline ChatModel load_hf_gpt2_chat_model(const std::string& path, const std::string& tokenizer_spec) {
  nn::GPTConfig c;  // GPT-2 124M: the defaults
  c.dropout = 0.0;
  auto model = std::make_unique<nn::GPT>(c);
  io::load_hf_gpt2(path, *model);
  return with_chat_tokens(std::move(model), tokenizer::load_spec(tokenizer_spec));
}

/// A Llama-family model from a Hugging Face folder (config.json, model.safetensors), with
/// `tokenizer_spec`, or the folder's own tokenizer.json when it is empty.
inline ChatModel load_hf_llama_chat_model(const std::string& dir, const std::string& tokenizer_spec = "") {
  std::unique_ptr<nn::CausalLM> model = io::load_hf_llama(dir);
  return with_chat_tokens(std::move(model),
                          tokenizer::load_spec(tokenizer_spec.empty() ? "hf:" + dir + "/tokenizer.json" : tokenizer_spec));
}

/// The checkpoint tokenizer metadata of a chat model (the BPE model with its chat tokens).
inline std::string tokenizer_json(const ChatModel& m) {
  return train::TextTokenizer::bpe(m.chat.tokenizer(), "chat").to_json();
}

/// Mean cross-entropy per loss-carrying token over `batches` (the masked loss): answer_nll, the
/// summed log-probabilities of the answers (logprob.hpp), in eval mode and without a graph.
inline double masked_loss(nn::CausalLM& model, const std::vector<SftBatch>& batches) {
  return answer_nll(model, batches);
}

/// The conversation without its last (assistant) turn, and that turn's text.
inline std::pair<Conversation, std::string> split_last_answer(const Conversation& c) {
  LOOM_CHECK(!c.messages.empty() && c.messages.back().role == "assistant", value_error,
             "the conversation does not end with an assistant turn");
  Conversation prompt = c;
  std::string answer = prompt.messages.back().content;
  prompt.messages.pop_back();
  return {std::move(prompt), std::move(answer)};
}

/// The model's answer to `prompt` (a conversation ending with a user turn): tokens sampled after
/// <|assistant|> up to <|end|> (not included) or `max_tokens`; on_token sees each id as it comes.
inline std::vector<uint32_t> answer(nn::CausalLM& model, const ChatTemplate& chat, const Conversation& prompt,
                                    int64_t max_tokens, const train::SamplingOptions& opt, Generator& gen,
                                    const std::function<void(int64_t)>& on_token = nullptr) {
  const int64_t room = model.block_size() - max_tokens;
  LOOM_CHECK(room > 1, value_error, "--max-tokens ", max_tokens, " leaves no room for the prompt in a context of ",
             model.block_size());
  const std::vector<uint32_t> p = chat.render_prompt(prompt, room);
  std::vector<int64_t> ids(p.begin(), p.end());
  std::vector<uint32_t> out;
  train::generate(
      model, ids, max_tokens, opt, gen,
      [&](int64_t id) {
        if (chat.is_end(uint32_t(id))) return;
        out.push_back(uint32_t(id));
        if (on_token) on_token(id);
      },
      [&](int64_t id) { return chat.is_end(uint32_t(id)); });
  return out;
}

/// Exact-match accuracy of greedy answers.
struct ExactMatch {
  int64_t correct = 0;  ///< answers equal to the reference (surrounding white space aside)
  int64_t total = 0;    ///< conversations scored
  /// correct / total.
  double rate() const { return total ? double(correct) / double(total) : 0.0; }
};

/// `s` without leading and trailing white space.
inline std::string trim(const std::string& s) {
  const size_t a = s.find_first_not_of(" \t\n\r"), b = s.find_last_not_of(" \t\n\r");
  return a == std::string::npos ? std::string() : s.substr(a, b - a + 1);
}

/// Greedy answers to the first `limit` conversations (0: all), each compared with its last
/// assistant turn, `batch` conversations decoded at once (generate_batch); on_result(i, answer,
/// correct) is called for each, in order.
inline ExactMatch exact_match(nn::CausalLM& model, const ChatTemplate& chat, const std::vector<Conversation>& convs,
                              int64_t max_tokens = 32, int64_t limit = 0,
                              const std::function<void(size_t, const std::string&, bool)>& on_result = nullptr,
                              int64_t batch = 64) {
  const int64_t room = model.block_size() - max_tokens;
  LOOM_CHECK(room > 1, value_error, "--max-tokens ", max_tokens, " leaves no room for the prompt in a context of ",
             model.block_size());
  ExactMatch m;
  const train::SamplingOptions greedy{0.0, 0, 1.0};
  const size_t n = limit > 0 ? std::min(convs.size(), size_t(limit)) : convs.size();
  auto stop = [&](int64_t id) { return chat.is_end(uint32_t(id)); };
  for (size_t first = 0; first < n; first += size_t(batch)) {
    const size_t last = std::min(n, first + size_t(batch));
    std::vector<std::vector<int64_t>> prompts;
    std::vector<std::string> references;
    for (size_t i = first; i < last; ++i) {
      auto [prompt, reference] = split_last_answer(convs[i]);
      const std::vector<uint32_t> p = chat.render_prompt(prompt, room);
      prompts.emplace_back(p.begin(), p.end());
      references.push_back(std::move(reference));
    }
    std::vector<Generator> gens(prompts.size(), Generator(0));  // greedy: never drawn from
    const std::vector<std::vector<int64_t>> out = train::generate_batch(model, prompts, max_tokens, greedy, gens, stop);
    for (size_t k = 0; k < out.size(); ++k) {
      std::vector<uint32_t> ids;
      for (int64_t id : out[k])
        if (!chat.is_end(uint32_t(id))) ids.push_back(uint32_t(id));
      const std::string got = chat.tokenizer().decode(ids);
      const bool ok = trim(got) == trim(references[k]);
      m.correct += ok;
      ++m.total;
      if (on_result) on_result(first + k, got, ok);
    }
  }
  return m;
}

}  // namespace loom::align
