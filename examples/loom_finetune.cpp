// loom-finetune: supervised fine-tuning of a GPT on conversations.
//
//   loom-finetune --data train.jsonl [--val val.jsonl] --out DIR
//                 [--init CKPT | --init-hf-gpt2 MODEL.safetensors --tokenizer gpt2:DIR | --init-hf-llama DIR |
//                  --preset NAME --tokenizer SPEC [--arch gpt2|llama]]
//                 [--lora R --lora-alpha A --lora-targets c_attn,c_proj,c_fc] [--pack 0|1] [--steps N --lr X ...]
//
// Each line of the JSONL files is a conversation, {"messages": [{"role": ..., "content": ...}]} or
// {"prompt": ..., "completion": ...}. Conversations are rendered with the chat template
// (align/chat.hpp), which adds five special tokens to the tokenizer (the model's vocabulary grows
// to match), and only the assistant's tokens carry loss. --pack 1 (the default) puts several
// conversations in one row with block-diagonal attention, so short examples waste no compute.
// --lora R trains rank-R adapters on a frozen base instead of every weight.
//
// Writes into --out:
//   ckpt.safetensors            the fine-tuned model (LoRA merged in), with its tokenizer: what
//                               loom-chat, loom-eval and loom-sample load
//   adapter_model.safetensors   with --lora: the adapters alone, named as PEFT names them
//   log.csv, loss.svg           the training log and its plot
// Each logged step shows the share of target positions that carry loss; a batch where it is 0
// (no assistant tokens) or 1 (the prompt is trained on too) stops the run with an error.
// The last line on stdout: final step=N train_loss=X val_loss=Y tokens_per_s=Z exact_match=E
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <string>

#include <loom/align/finetune.hpp>
#include <loom/align/lora.hpp>
#include <loom/io/cli.hpp>
#include <loom/io/file.hpp>
#include <loom/dist/dist.hpp>
#include <loom/loom.hpp>
#include <loom/train/report.hpp>

using namespace loom;

namespace {

struct Options {
  std::string data, val, out = "out", init, init_hf, init_hf_llama, preset, tokenizer, device = "cpu";
  int64_t lora_rank = 0, pack = 1, log_interval = 10, threads = 0, eval_examples = 200, max_answer = 32;
  double lora_alpha = 16;
  bool recompute = false;
  std::string lora_targets;  // empty: every Linear of the architecture's layers
  uint64_t seed = 1337;
  train::TrainConfig train;
  train::ModelSpec model;  // --preset only (and --arch)
};

const char* usage =
    "usage: loom-finetune --data train.jsonl --out DIR (--init CKPT | --init-hf-gpt2 FILE --tokenizer gpt2:DIR |\n"
    "                     --init-hf-llama DIR |\n"
    "                     --preset NAME [--tokenizer SPEC]) [options]\n"
    "  --data FILE          training conversations (JSONL: messages, or prompt/completion)\n"
    "  --val FILE           held-out conversations: masked loss and exact match of greedy answers\n"
    "  --out DIR            where to write ckpt.safetensors, log.csv, loss.svg (default out)\n"
    "  --init CKPT          start from a loom checkpoint (loom-train or loom-finetune)\n"
    "  --init-hf-gpt2 FILE  start from Hugging Face GPT-2 124M weights (model.safetensors)\n"
    "  --init-hf-llama DIR  start from a Hugging Face Llama-family folder (config.json, model.safetensors;\n"
    "                       the tokenizer is DIR/tokenizer.json unless --tokenizer)\n"
    "  --preset NAME        start from scratch: char (4 layers, C 128), small (6 layers, C 384) or\n"
    "                       tiny (2 layers, C 64); block size 128 unless --block-size\n"
    "  --arch gpt2|llama    the architecture of a --preset model (default gpt2; see loom-train --help)\n"
    "  --tokenizer SPEC     bytes (default for --preset), gpt2:DIR, tiktoken:FILE:NAME, hf:FILE, loom:FILE\n"
    "  --lora R             train rank-R LoRA adapters on a frozen base (default 0: every weight)\n"
    "  --lora-alpha A       LoRA scale alpha / R (default 16)\n"
    "  --lora-targets LIST  default: every Linear (gpt2: c_attn,c_proj,c_fc; llama: q_proj,k_proj,v_proj,\n"
    "                       o_proj,gate_proj,up_proj,down_proj), or fewer\n"
    "  --pack 0|1           several conversations per row with block-diagonal attention (default 1)\n"
    "  --steps N --batch-size N --grad-accum N --lr X --min-lr X --warmup N --weight-decay X\n"
    "  --grad-clip X --eval-interval N --block-size N --dropout X --seed N --threads N --log-interval N\n"
    "  --eval-examples N    val conversations answered for exact match at each evaluation (default 200; 0: all)\n"
    "  --max-answer N       tokens generated per answer (default 32)\n"
    "  --recompute          recompute each block's activations in backward: less memory, ~1.2x the time\n"
    "  --device cpu|cuda    (default cpu)\n";

Options parse(int argc, char** argv) {
  Options o;
  train::TrainConfig& t = o.train;
  t.steps = 1000, t.batch_size = 16, t.lr = 1e-3, t.min_lr = 1e-4, t.warmup_steps = 50, t.beta2 = 0.99;
  t.weight_decay = 0.0, t.grad_clip = 1.0, t.eval_interval = 250;
  int64_t block_size = 0;
  double dropout = 0;
  io::OptionTable table;
  auto& flags = table.values;  // --name VALUE
  using io::store;
  flags["--data"] = store(o.data), flags["--val"] = store(o.val), flags["--out"] = store(o.out);
  flags["--init"] = store(o.init), flags["--init-hf-gpt2"] = store(o.init_hf), flags["--preset"] = store(o.preset);
  flags["--init-hf-llama"] = store(o.init_hf_llama);
  flags["--arch"] = [&](const std::string& v) {
    LOOM_CHECK(v == "gpt2" || v == "llama", value_error, "--arch must be gpt2 or llama, got '", v, "'");
    o.model.arch = v;
  };
  flags["--tokenizer"] = store(o.tokenizer), flags["--device"] = store(o.device);
  flags["--lora"] = store(o.lora_rank), flags["--lora-alpha"] = store(o.lora_alpha), flags["--lora-targets"] = store(o.lora_targets);
  flags["--pack"] = store(o.pack), flags["--log-interval"] = store(o.log_interval), flags["--threads"] = store(o.threads);
  flags["--eval-examples"] = store(o.eval_examples), flags["--max-answer"] = store(o.max_answer);
  flags["--seed"] = [&](const std::string& v) { o.seed = t.seed = io::to_unsigned(v); };
  flags["--steps"] = store(t.steps), flags["--batch-size"] = store(t.batch_size), flags["--grad-accum"] = store(t.grad_accum);
  flags["--lr"] = store(t.lr), flags["--min-lr"] = store(t.min_lr), flags["--warmup"] = store(t.warmup_steps);
  flags["--weight-decay"] = store(t.weight_decay), flags["--grad-clip"] = store(t.grad_clip);
  flags["--eval-interval"] = store(t.eval_interval), flags["--block-size"] = store(block_size), flags["--dropout"] = store(dropout);
  table.switches["--recompute"] = [&] { o.recompute = true; };
  if (!io::parse_options(argc, argv, 1, table)) {
    std::cout << usage;
    std::exit(0);
  }
  LOOM_CHECK(!o.data.empty(), usage_error, "--data FILE is required (see --help)");
  const int starts = !o.init.empty() + !o.init_hf.empty() + !o.init_hf_llama.empty() + !o.preset.empty();
  LOOM_CHECK(starts == 1, usage_error,
             "give exactly one of --init CKPT, --init-hf-gpt2 FILE, --init-hf-llama DIR or --preset NAME");
  LOOM_CHECK(o.init_hf.empty() || !o.tokenizer.empty(), usage_error, "--init-hf-gpt2 needs --tokenizer gpt2:DIR");
  LOOM_CHECK(o.pack == 0 || o.pack == 1, usage_error, "--pack must be 0 or 1");
  LOOM_CHECK(o.lora_rank >= 0, usage_error, "--lora must be 0 (off) or a positive rank");
  LOOM_CHECK(o.device == "cpu" || o.device == "cuda", usage_error, "--device must be cpu or cuda");
  if (!o.preset.empty()) {
    nn::GPTConfig& m = o.model.shape;
    m.block_size = block_size > 0 ? block_size : 128, m.bias = false, m.dropout = dropout;
    if (o.preset == "tiny") m.n_layer = 2, m.n_head = 2, m.n_embd = 64;
    else if (o.preset == "char") m.n_layer = 4, m.n_head = 4, m.n_embd = 128;
    else if (o.preset == "small") m.n_layer = 6, m.n_head = 6, m.n_embd = 384;
    else throw usage_error("unknown preset '" + o.preset + "' (tiny, char or small)");
    if (o.tokenizer.empty()) o.tokenizer = "bytes";
  } else {
    LOOM_CHECK(block_size == 0, usage_error, "--block-size applies to --preset only (a loaded model keeps its own)");
    LOOM_CHECK(o.model.arch == "gpt2", usage_error, "--arch applies to --preset only (a loaded model keeps its own)");
  }
  return o;
}

}  // namespace

int main(int argc, char** argv) {
  std::unique_ptr<dist::Communicator> comm;
  try {
    Options o = parse(argc, argv);
    // Under mpirun the ranks train data-parallel (docs/21-distributed-training.md); rank 0 writes.
    comm = dist::make_communicator("auto");
    const bool lead = comm->rank() == 0;
    if (!lead) std::cout.rdbuf(nullptr);
    set_num_threads(dist::threads_per_rank(o.threads, comm->size()));  // --threads, or a share of the cores
    const Device device = o.device == "cuda" ? Device::cuda(0) : Device::cpu();
    io::make_directories(o.out);
    const std::string ckpt_path = o.out + "/ckpt.safetensors", adapter_path = o.out + "/adapter_model.safetensors",
                      log_path = o.out + "/log.csv", svg_path = o.out + "/loss.svg";

    // --- the starting point and the chat template -----------------------------------------------
    const std::string start = !o.init.empty()      ? o.init
                              : !o.init_hf.empty() ? o.init_hf + " (Hugging Face GPT-2)"
                              : !o.init_hf_llama.empty() ? o.init_hf_llama + " (Hugging Face Llama)"
                                                   : "a fresh " + o.preset + " model";
    align::ChatModel cm = [&] {
      if (!o.init.empty()) return align::load_chat_model(o.init, o.tokenizer);
      if (!o.init_hf.empty()) return align::load_hf_gpt2_chat_model(o.init_hf, o.tokenizer);
      if (!o.init_hf_llama.empty()) return align::load_hf_llama_chat_model(o.init_hf_llama, o.tokenizer);
      const BpeTokenizer tok = tokenizer::load_spec(o.tokenizer);
      o.model.shape.vocab_size = int64_t(tok.vocab_size());
      return align::with_chat_tokens(o.model.make(o.seed), tok);
    }();
    nn::CausalLM& model = *cm.model;
    const int64_t T = model.block_size();
    const std::vector<std::string> per_token = model.vocab_parameters();
    auto is_per_token = [&](const std::string& name) {
      return std::find(per_token.begin(), per_token.end(), name) != per_token.end();
    };

    // --- data ---------------------------------------------------------------------------------
    align::RenderStats train_stats, val_stats;
    const std::vector<align::Conversation> train_convs = align::read_conversations(o.data);
    const std::vector<align::SftExample> train_ex = align::render_examples(cm.chat, train_convs, T + 1, &train_stats);
    std::vector<align::Conversation> val_convs;
    std::vector<align::SftExample> val_ex;
    if (!o.val.empty()) {
      val_convs = align::read_conversations(o.val);
      val_ex = align::render_examples(cm.chat, val_convs, T + 1, &val_stats);
    }
    align::SftLoader loader(train_ex, o.train.batch_size, T, o.pack == 1, o.train.seed);
    std::vector<align::SftBatch> val_batches;
    if (!val_ex.empty()) val_batches = align::SftLoader(val_ex, o.train.batch_size, T, o.pack == 1, 0).all();
    // The final train loss is measured on the batches of the first 20 * B examples (enough for 20
    // batches even unpacked), not on batches of the whole training set.
    const size_t n_eval = std::min(train_ex.size(), size_t(20 * o.train.batch_size));
    const std::vector<align::SftBatch> train_eval =
        align::SftLoader({train_ex.begin(), train_ex.begin() + std::ptrdiff_t(n_eval)}, o.train.batch_size, T,
                         o.pack == 1, 0)
            .all();
    std::cout << "data: " << train_convs.size() << " conversations in " << o.data << " (" << loader.rows().size()
              << (o.pack ? " packed rows" : " rows") << " of " << T << " tokens)";
    if (!o.val.empty()) std::cout << ", " << val_convs.size() << " in " << o.val;
    std::cout << "\n";
    if (train_stats.truncated_examples > 0 || val_stats.truncated_examples > 0)
      std::cout << "truncated the prompt side of " << train_stats.truncated_examples << " train and "
                << val_stats.truncated_examples << " val conversations to fit " << T + 1 << " tokens ("
                << train_stats.truncated_tokens + val_stats.truncated_tokens << " tokens dropped; answers kept whole)\n";

    // --- LoRA or every weight -----------------------------------------------------------------------
    align::LoraConfig lora;
    if (o.lora_rank > 0) {
      lora.rank = o.lora_rank, lora.alpha = o.lora_alpha, lora.targets = align::LoraConfig::parse_targets(
          o.lora_targets.empty() ? align::LoraConfig::all_linear(model.arch()) : o.lora_targets);
      Generator lora_gen(o.seed + 7);
      const std::vector<std::string> adapted = align::apply_lora(model, lora, lora_gen);
      std::cout << "LoRA: rank " << lora.rank << ", alpha " << lora.alpha << " on " << adapted.size() << " layers ("
                << lora.targets_string() << "), base frozen\n";
      if (cm.base_vocab < model.vocab_size()) {
        // The chat tokens are new to this model: frozen, their rows would stay equal (the mean
        // embedding) and the model could not tell <|user|> from <|end|>. Train those rows only, as
        // PEFT's trainable_token_indices does; the other rows' gradients are zeroed every step.
        // (The embedding, and an untied output head: every parameter with a row per token.)
        for (auto& [name, p] : model.named_parameters())
          if (is_per_token(name)) p.requires_grad_(true);
        std::cout << "training the embeddings of the " << model.vocab_size() - cm.base_vocab
                  << " new chat tokens too (the rows are saved in ckpt.safetensors)\n";
      }
    }
    model.to(device);
    model.recompute_blocks = o.recompute;
    int64_t trainable = 0;
    for (auto& [name, p] : model.named_parameters()) trainable += p.requires_grad() ? p.numel() : 0;
    std::cout << "model: " << start << ", " << model.num_parameters() << " parameters (" << trainable
              << " trained), vocab " << model.vocab_size() << " with the chat tokens\n";

    // --- training ---------------------------------------------------------------------------------
    train::Trainer trainer(model, train::BatchLoader(), train::BatchLoader(), o.train, {}, comm.get());
    if (o.lora_rank > 0 && cm.base_vocab < model.vocab_size())
      trainer.set_grad_hook([&] {
        for (auto& [name, p] : model.named_parameters()) {
          Tensor<float> g = is_per_token(name) ? p.grad() : Tensor<float>();
          if (g.defined()) g.slice(0, 0, cm.base_vocab).fill_(0.0f);  // only the new rows learn
        }
      });
    double share = 0, tokens_in_step = 0;
    trainer.set_batch_source([&] {
      align::SftBatch b = loader.next();
      align::check_loss_share(b);  // a mask of all zeros or all ones stops the run here
      share = b.loss_share();
      tokens_in_step += double(b.tokens);
      return train::Batch{b.idx, b.targets, b.segments};
    });
    std::unique_ptr<train::CsvLog> log = lead ? std::make_unique<train::CsvLog>(log_path, false) : nullptr;
    std::unique_ptr<std::FILE, int (*)(std::FILE*)> quiet(lead ? nullptr : std::fopen("/dev/null", "w"), std::fclose);
    train::ProgressBar bar(lead ? stderr : quiet.get(), o.train.steps, o.log_interval);
    double time_in_steps = 0, tokens_done = 0, val_loss = NAN, tok_s = 0;
    align::ExactMatch em;
    auto evaluate = [&](int64_t s) {
      if (val_batches.empty()) return;
      val_loss = align::masked_loss(model, val_batches);
      em = align::exact_match(model, cm.chat, val_convs, o.max_answer, o.eval_examples);
      char msg[200];
      std::snprintf(msg, sizeof msg, "step %lld: val loss %.4f, exact match %.1f%% (%lld/%lld)", (long long)s, val_loss,
                    100 * em.rate(), (long long)em.correct, (long long)em.total);
      bar.message(msg);
    };
    while (trainer.step_count() < o.train.steps) {
      tokens_in_step = 0;
      const double t0 = bar.seconds();
      const double loss = trainer.step();
      const double dt = bar.seconds() - t0;
      time_in_steps += dt, tokens_done += tokens_in_step;
      tok_s = tokens_done / time_in_steps;
      const int64_t s = trainer.step_count();
      bar.update(s, loss, tok_s);
      if (s % o.log_interval == 0) {
        char msg[160];
        std::snprintf(msg, sizeof msg, "step %lld: loss %.4f, %.0f%% of target positions carry loss", (long long)s, loss,
                      100 * share);
        bar.message(msg);
      }
      train::LogRow row{s, loss, NAN, trainer.lr_at(s - 1), tokens_in_step / dt, bar.seconds()};
      if (s % o.train.eval_interval == 0 || s == o.train.steps) {
        evaluate(s);
        row.val_loss = val_loss;
      }
      if (log) log->write(row);
    }
    const double train_loss = align::masked_loss(model, train_eval);

    // --- outputs: the merged model (and the adapters alone) ----------------------------------------
    if (o.lora_rank > 0) {
      if (lead) align::save_lora_adapter(model, adapter_path, lora);
      align::merge_lora(model);
    }
    io::Checkpoint c = trainer.checkpoint(align::tokenizer_json(cm));
    if (lead) {
      io::save_checkpoint(ckpt_path, c);
      io::write_file_atomic(svg_path, train::loss_plot_svg(train::CsvLog::read(log_path), "loom-finetune on " + o.data));
    }
    std::cout << "wrote " << ckpt_path << (o.lora_rank > 0 ? ", " + adapter_path : std::string()) << ", " << log_path
              << ", " << svg_path << "\n";
    if (lead)
      std::printf("final step=%lld train_loss=%.4f val_loss=%.4f tokens_per_s=%.0f exact_match=%.4f ranks=%d\n",
                  (long long)trainer.step_count(), train_loss, val_loss, tok_s, em.rate(), comm->size());
    return 0;
  } catch (const std::exception& e) {
    const bool many = comm && comm->size() > 1;
    std::cerr << "loom-finetune" << (many ? " (rank " + std::to_string(comm->rank()) + ")" : "") << ": " << e.what()
              << "\n";
    if (many) comm->abort(io::exit_status(e));  // the other ranks would wait for this one
    return io::exit_status(e);                  // 2 for a usage error
  }
}
