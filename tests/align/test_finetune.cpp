// Fine-tuning end to end: growing the vocabulary for the chat tokens keeps the model's old
// logits, the masked loss weighs batches by their loss tokens, greedy answers stop at <|end|>,
// and the programs (loom-finetune, loom-eval, loom-chat) run on the committed fixture and reject
// bad input with a message naming it; loom-chat's /good, /bad, /retry and /better write
// preference pairs that read back as JSON.
#include <filesystem>
#include <fstream>
#include <string>

#include "catch.hpp"
#include "temp_dir.hpp"

#include <loom/align/finetune.hpp>
#include <loom/align/lora.hpp>

#include "programs.hpp"

using namespace loom;
namespace fs = std::filesystem;

namespace {

nn::GPTConfig tiny_config(int64_t vocab) {
  nn::GPTConfig c;
  c.vocab_size = vocab, c.block_size = 32, c.n_layer = 2, c.n_head = 2, c.n_embd = 32, c.dropout = 0, c.bias = false;
  return c;
}

using loom_test::TempDir;

}  // namespace

TEST_CASE("grow_vocab keeps every old logit and adds mean-embedding rows") {
  nn::GPT model(tiny_config(256), 3);
  align::ChatModel cm = align::with_chat_tokens(std::make_unique<nn::GPT>(tiny_config(256), 3), BpeTokenizer());
  REQUIRE(cm.model->vocab_size() == int64_t(cm.chat.tokenizer().vocab_size()));
  REQUIRE(cm.model->vocab_size() > 256);
  Tensor<int64_t> idx = from_vector<int64_t>({72, 105, 33, 10, 200, 7}, {1, 6});
  Tensor<float> a = model(idx).logits, b = cm.model->forward(idx).logits;  // (1, 6, V) and (1, 6, V')
  for (int64_t t = 0; t < 6; ++t)
    for (int64_t v = 0; v < 256; ++v) CHECK(b.at({0, t, v}) == Approx(a.at({0, t, v})).margin(1e-6));
  // A new row is the mean of the old rows.
  const Tensor<float>& w = cm.model->token_embedding().weight;
  double mean0 = 0;
  for (int64_t v = 0; v < 256; ++v) mean0 += model.wte.weight.at({v, 0});
  CHECK(w.at({256, 0}) == Approx(mean0 / 256).margin(1e-6));
  CHECK_THROWS_WITH(align::grow_vocab(model, 100), Catch::Contains("fewer than the model's"));
}

TEST_CASE("masked_loss is the mean over loss-carrying tokens across batches") {
  align::ChatModel cm = align::with_chat_tokens(std::make_unique<nn::GPT>(tiny_config(256), 5), BpeTokenizer());
  std::vector<align::Conversation> convs = align::read_conversations(LOOM_TEST_DATA_DIR "/sft/tiny.jsonl");
  std::vector<align::SftExample> ex;
  for (const align::Conversation& c : convs) {
    align::Rendered r = cm.chat.render(c);
    if (int64_t(r.ids.size()) <= 33) ex.push_back({r.ids, r.mask});
  }
  REQUIRE(ex.size() >= 3);
  const std::vector<align::SftBatch> one = align::SftLoader(ex, 64, 32, false, 0).all();
  const std::vector<align::SftBatch> many = align::SftLoader(ex, 1, 32, false, 0).all();
  REQUIRE(one.size() == 1);
  // One batch of every example, or one batch per example weighted by its loss tokens: the same mean.
  CHECK(align::masked_loss(*cm.model, many) == Approx(align::masked_loss(*cm.model, one)).epsilon(1e-5));
  // And it is the mean of the per-token losses over the targets that are not -1.
  const align::SftBatch& b = one[0];
  Tensor<float> logits = cm.model->forward(b.idx).logits;  // (B, T, V)
  const int64_t B = logits.size(0), T = logits.size(1), V = logits.size(2);
  Tensor<float> per = cross_entropy(logits.reshape({B * T, V}), b.targets.reshape({B * T}), -1, Reduction::none);
  double sum = 0;
  int64_t n = 0;
  for (int64_t i = 0; i < B * T; ++i)
    if (b.targets.data()[i] != -1) sum += per.data()[i], ++n;
  CHECK(n == b.loss_tokens);
  CHECK(align::masked_loss(*cm.model, one) == Approx(sum / double(n)).epsilon(1e-5));
}

TEST_CASE("answer stops at the end-of-turn token and exact_match compares trimmed text") {
  nn::GPTConfig c = tiny_config(256);
  c.bias = true;
  align::ChatModel cm = align::with_chat_tokens(std::make_unique<nn::GPT>(c, 9), BpeTokenizer());
  const align::Conversation prompt{{{"user", "What is 2 + 3?"}}};
  const train::SamplingOptions greedy{0.0, 0, 1.0};
  Generator gen(1);
  // An untrained model never says <|end|> first: it talks until max_tokens.
  std::vector<uint32_t> got = align::answer(*cm.model, cm.chat, prompt, 5, greedy, gen);
  CHECK(got.size() == 5);
  // Make the final hidden state all ones (ln_f: weight 0, bias 1) and the <|end|> row of the tied
  // embeddings large: every greedy step now picks <|end|>, so the answer stops at once.
  {
    NoGradGuard g;
    nn::GPT& gpt = dynamic_cast<nn::GPT&>(*cm.model);
    gpt.ln_f.weight.fill_(0.0f);
    gpt.ln_f.bias.fill_(1.0f);
    Tensor<float> w = cm.model->token_embedding().weight;  // (V, C), shares storage with the parameter
    for (int64_t j = 0; j < w.size(1); ++j) w.data()[int64_t(cm.chat.end_id()) * w.size(1) + j] = 10.0f;
  }
  got = align::answer(*cm.model, cm.chat, prompt, 5, greedy, gen);
  CHECK(got.empty());
  // exact_match: the reference "" (trimmed) equals the empty answer.
  std::vector<align::Conversation> convs = {{{{"user", "x"}, {"assistant", "  "}}}, {{{"user", "y"}, {"assistant", "5"}}}};
  const align::ExactMatch m = align::exact_match(*cm.model, cm.chat, convs, 5);
  CHECK(m.total == 2);
  CHECK(m.correct == 1);
  CHECK(align::trim("  85\n") == "85");
}

#if defined(LOOM_FINETUNE_EXE) && defined(LOOM_EVAL_EXE) && defined(LOOM_CHAT_EXE)
namespace {

/// A loom-chat session on checkpoint `ckpt` with --feedback: a command before any answer, /bad,
/// /retry, /good (one pair), /better (a second pair), an unknown command; then the same commands
/// without --feedback, which record nothing and say so once.
void check_feedback_session(const TempDir& tmp, const std::string& ckpt) {
  using loom_test::run_program;
  using loom_test::shell_quote;
  const std::string pairs_path = tmp / "pairs.jsonl";
  auto chat = run_program("printf '/good\\nWhat is 2 + 3?\\n/bad\\n/retry\\n/good\\n/better 5\\n/xyz\\n\\n' | " +
                          shell_quote(LOOM_CHAT_EXE) + " --ckpt " + shell_quote(ckpt) +
                          " --max-tokens 5 --temperature 1 --system 'Be brief.' --feedback " + shell_quote(pairs_path));
  INFO(chat.output);
  REQUIRE(chat.status == 0);
  CHECK(chat.output.find("final turns=1 ") != std::string::npos);
  CHECK(chat.output.find(" pairs=2\n") != std::string::npos);
  CHECK(chat.output.find("/good: there is no answer yet") != std::string::npos);
  CHECK(chat.output.find("unknown command '/xyz'") != std::string::npos);
  const std::string text = io::read_file(pairs_path);
  INFO(text);
  std::vector<io::Json> lines;
  for (size_t pos = 0, nl; (nl = text.find('\n', pos)) != std::string::npos; pos = nl + 1)
    lines.push_back(io::parse_json(std::string_view(text).substr(pos, nl - pos)));
  REQUIRE(lines.size() == 2);  // /good after /bad, then /better
  CHECK(text.back() == '\n');
  for (const io::Json& j : lines) {
    const io::Json& prompt = j.at("prompt");
    REQUIRE(prompt.size() == 2);
    CHECK(prompt.at(size_t(0)).at("role").as_string() == "system");
    CHECK(prompt.at(size_t(0)).at("content").as_string() == "Be brief.");
    CHECK(prompt.at(size_t(1)).at("role").as_string() == "user");
    CHECK(prompt.at(size_t(1)).at("content").as_string() == "What is 2 + 3?");
    REQUIRE(j.at("chosen").size() == 1);
    REQUIRE(j.at("rejected").size() == 1);
    CHECK(j.at("chosen").at(size_t(0)).at("role").as_string() == "assistant");
    CHECK(j.at("rejected").at(size_t(0)).at("role").as_string() == "assistant");
    CHECK(j.at("chosen").at(size_t(0)).at("content") != j.at("rejected").at(size_t(0)).at("content"));
    CHECK(j.at("source").as_string() == "loom-chat");
  }
  // The /better pair: the user's text over the answer rated good before (the retried one).
  CHECK(lines[1].at("chosen").at(size_t(0)).at("content").as_string() == "5");
  CHECK(lines[1].at("rejected") == lines[0].at("chosen"));

  // Without --feedback: the chat goes on, nothing is recorded, and it says so once.
  auto plain = run_program("printf 'Hi\\n/bad\\n/retry\\n/good\\n/better fine\\n\\n' | " + shell_quote(LOOM_CHAT_EXE) +
                           " --ckpt " + shell_quote(ckpt) + " --max-tokens 3");
  INFO(plain.output);
  REQUIRE(plain.status == 0);
  CHECK(plain.output.find(" pairs=0\n") != std::string::npos);
  const size_t said = plain.output.find("nothing is recorded without --feedback FILE");
  CHECK(said != std::string::npos);
  CHECK(plain.output.find("nothing is recorded", said + 1) == std::string::npos);
}

}  // namespace

TEST_CASE("programs: loom-finetune then loom-eval and loom-chat on the fixture", "[program]") {
  using loom_test::run_program;
  using loom_test::shell_quote;
  TempDir tmp;
  const std::string data = LOOM_TEST_DATA_DIR "/sft/tiny.jsonl";
  auto ft = run_program(shell_quote(LOOM_FINETUNE_EXE) + " --preset tiny --block-size 64 --data " + shell_quote(data) +
                        " --val " + shell_quote(data) + " --steps 6 --batch-size 2 --eval-interval 3 --log-interval 2" +
                        " --eval-examples 3 --max-answer 4 --out " + shell_quote(tmp / "ft"));
  INFO(ft.output);
  REQUIRE(ft.status == 0);
  CHECK(ft.output.find("final step=6 ") != std::string::npos);
  CHECK(ft.output.find("of target positions carry loss") != std::string::npos);
  CHECK(fs::exists(tmp / "ft/ckpt.safetensors"));
  auto ev = run_program(shell_quote(LOOM_EVAL_EXE) + " --ckpt " + shell_quote(tmp / "ft/ckpt.safetensors") + " --data " +
                        shell_quote(data) + " --max-answer 4 --show 2");
  INFO(ev.output);
  REQUIRE(ev.status == 0);
  CHECK(ev.output.find("eval loss=") != std::string::npos);
  CHECK(ev.output.find(" n=10") != std::string::npos);
  auto chat = run_program("printf 'What is 2 + 3?\\n\\n' | " + shell_quote(LOOM_CHAT_EXE) + " --ckpt " +
                          shell_quote(tmp / "ft/ckpt.safetensors") + " --max-tokens 5 --system 'Be brief.'");
  INFO(chat.output);
  REQUIRE(chat.status == 0);
  CHECK(chat.output.find("final turns=1 ") != std::string::npos);
  check_feedback_session(tmp, tmp / "ft/ckpt.safetensors");
  // LoRA on top of the fine-tuned model: the adapter file appears, and the merged model loads.
  auto lora = run_program(shell_quote(LOOM_FINETUNE_EXE) + " --init " + shell_quote(tmp / "ft/ckpt.safetensors") +
                          " --data " + shell_quote(data) + " --lora 2 --steps 2 --batch-size 2 --out " + shell_quote(tmp / "lora"));
  INFO(lora.output);
  REQUIRE(lora.status == 0);
  CHECK(fs::exists(tmp / "lora/adapter_model.safetensors"));
  CHECK(lora.output.find("base frozen") != std::string::npos);
  auto ev2 = run_program(shell_quote(LOOM_EVAL_EXE) + " --ckpt " + shell_quote(tmp / "lora/ckpt.safetensors") +
                         " --data " + shell_quote(data) + " --limit 2 --max-answer 2");
  INFO(ev2.output);
  CHECK(ev2.status == 0);
  CHECK(ev2.output.find(" n=2") != std::string::npos);
}

TEST_CASE("programs: loom-finetune names a malformed line and a missing starting point", "[program]") {
  using loom_test::run_program;
  using loom_test::shell_quote;
  TempDir tmp;
  {
    std::ofstream f(tmp / "bad.jsonl");
    f << R"({"prompt": "2+2=", "completion": "4"})" << "\n" << R"({"messages": [{"role": "wizard", "content": "x"}]})" << "\n";
  }
  auto bad = run_program(shell_quote(LOOM_FINETUNE_EXE) + " --preset tiny --data " + shell_quote(tmp / "bad.jsonl") +
                         " --steps 1 --out " + shell_quote(tmp / "o"));
  CHECK(bad.status == 1);
  CHECK(bad.output.find("bad.jsonl:2") != std::string::npos);
  auto none = run_program(shell_quote(LOOM_FINETUNE_EXE) + " --data " + shell_quote(tmp / "bad.jsonl"));
  CHECK(none.status == 2);  // a usage error
  CHECK(none.output.find("exactly one of --init") != std::string::npos);
  CHECK_FALSE(fs::exists(tmp / "o/ckpt.safetensors"));
}

TEST_CASE("programs: loom-chat names a --feedback file it cannot append to", "[program]") {
  using loom_test::run_program;
  using loom_test::shell_quote;
  TempDir tmp;
  fs::create_directories(tmp / "pairs");
  // The file is opened before the model is loaded, so no checkpoint is needed to see it fail.
  auto run = run_program("printf 'Hi\\n' | " + shell_quote(LOOM_CHAT_EXE) + " --ckpt " + shell_quote(tmp / "none.safetensors") +
                         " --feedback " + shell_quote(tmp / "pairs"));
  INFO(run.output);
  CHECK(run.status == 1);
  CHECK(run.output.find("cannot open the --feedback file '" + tmp / "pairs" + "' for appending") != std::string::npos);
  CHECK(run.output.find("final turns") == std::string::npos);
}
#endif

#if defined(LOOM_FINETUNE_EXE) && defined(LOOM_EVAL_EXE) && defined(LOOM_CHAT_EXE)
TEST_CASE("programs: a Llama from a Hugging Face folder, and a fresh one, through loom-finetune, loom-eval and loom-chat",
          "[program]") {
  using loom_test::run_program;
  using loom_test::shell_quote;
  TempDir tmp;
  const std::string data = LOOM_TEST_DATA_DIR "/sft/tiny.jsonl";
  // A folder as transformers writes it (the bytes tokenizer stands in for its tokenizer.json).
  nn::LlamaConfig c;
  c.vocab_size = 256, c.block_size = 64, c.n_layer = 2, c.n_head = 4, c.n_kv_head = 2, c.n_embd = 32;
  c.intermediate_size = 48, c.tie_embeddings = false;
  io::save_hf_llama(tmp / "hf", nn::Llama(c, 3));
  {
    align::ChatModel cm = align::load_hf_llama_chat_model(tmp / "hf", "bytes");
    CHECK(cm.model->arch() == "llama");
    CHECK(cm.model->vocab_size() > 256);  // the chat tokens, in embed_tokens and in the untied lm_head
  }
  // LoRA defaults to every Linear of a Llama layer; the new chat tokens' rows of both the
  // embedding and the untied head train
  auto ft = run_program(shell_quote(LOOM_FINETUNE_EXE) + " --init-hf-llama " + shell_quote(tmp / "hf") +
                        " --tokenizer bytes --data " + shell_quote(data) + " --lora 2 --steps 4 --batch-size 2" +
                        " --out " + shell_quote(tmp / "ft"));
  INFO(ft.output);
  REQUIRE(ft.status == 0);
  CHECK(ft.output.find("q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj") != std::string::npos);
  CHECK(ft.output.find("(Hugging Face Llama)") != std::string::npos);
  auto ev = run_program(shell_quote(LOOM_EVAL_EXE) + " --ckpt " + shell_quote(tmp / "ft/ckpt.safetensors") + " --data " +
                        shell_quote(data) + " --limit 2 --max-answer 2");
  INFO(ev.output);
  CHECK(ev.status == 0);
  CHECK(ev.output.find(" n=2") != std::string::npos);
  // a fresh Llama of the tiny preset, then a chat turn with it
  auto fresh = run_program(shell_quote(LOOM_FINETUNE_EXE) + " --preset tiny --arch llama --block-size 64 --data " +
                           shell_quote(data) + " --steps 3 --batch-size 2 --out " + shell_quote(tmp / "fresh"));
  INFO(fresh.output);
  REQUIRE(fresh.status == 0);
  CHECK(fresh.output.find("final step=3 ") != std::string::npos);
  auto chat = run_program("printf 'What is 2 + 3?\\n\\n' | " + shell_quote(LOOM_CHAT_EXE) + " --ckpt " +
                          shell_quote(tmp / "fresh/ckpt.safetensors") + " --max-tokens 4");
  INFO(chat.output);
  CHECK(chat.status == 0);
  CHECK(chat.output.find("final turns=1 ") != std::string::npos);
  // --arch belongs to --preset; a wrong name is named
  auto misplaced = run_program(shell_quote(LOOM_FINETUNE_EXE) + " --init-hf-llama " + shell_quote(tmp / "hf") +
                               " --arch llama --data " + shell_quote(data));
  CHECK(misplaced.status == 2);
  CHECK(misplaced.output.find("--arch applies to --preset only") != std::string::npos);
  auto wrong = run_program(shell_quote(LOOM_FINETUNE_EXE) + " --preset tiny --arch mamba --data " + shell_quote(data));
  CHECK(wrong.status == 2);
  CHECK(wrong.output.find("--arch must be gpt2 or llama, got 'mamba'") != std::string::npos);
}
#endif
