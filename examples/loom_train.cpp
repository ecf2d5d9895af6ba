// loom-train: raw text in, a trained GPT out.
//
// Reads a text file, tokenises it (characters, or a loom-bpe model), splits it 90/10 into
// training and validation data -- or streams the train and val token shards that loom-data wrote
// into a folder (--data DIR) -- trains a GPT with AdamW, and writes into --out:
//   ckpt.safetensors   the model, optimizer, step and random state (resume with --resume)
//   log.csv            step, train_loss, val_loss, lr, tokens_per_s, elapsed_s
//   loss.svg           the train and validation loss curves
// Its last line on stdout is: final step=N train_loss=X val_loss=Y tokens_per_s=Z
//
//   loom-train --data input.txt --preset char --steps 2000 --out out
//   loom-sample --ckpt out/ckpt.safetensors --prompt "ROMEO:"
//
// One file is the model: the checkpoint carries the tokenizer (the characters, or the whole
// loom-bpe model), so it can be copied anywhere and sampled from. --resume drops the log rows past
// the checkpoint's step before appending. At start, temporary files that an interrupted write left
// next to the three outputs (ckpt.safetensors.tmp.<pid>, ...) are removed when the process <pid>
// that wrote them is gone.
//
// Presets: char (nanoGPT's Shakespeare-char CPU recipe: 4 layers, 4 heads, C 128, T 64, B 12,
// no bias, AdamW 1e-3 -> 1e-4, warmup 100, beta2 0.99, wd 0.1, clip 1.0), small (6 layers,
// 6 heads, C 384, T 256, B 8) and gpt2-124m (12 layers, 12 heads, C 768, T 1024, B 4).
// Every setting has a flag; --help lists them. --arch llama trains a Llama-style model of the
// same shape and parameter count instead (RoPE, RMSNorm, SwiGLU, grouped-query attention, no
// biases; docs/23-architectures.md).
//
// Under mpirun the run is data-parallel (docs/21-distributed-training.md):
//   mpirun -np 2 loom-train --data DIR --preset small --threads 1 --out out
// Every rank builds the same model, trains on its own micro-batches and sums gradients with the
// others; rank 0 prints, logs and writes the checkpoint, which any number of ranks can resume.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <tuple>

#include <sys/stat.h>

#include <loom/data/shards.hpp>
#include <loom/dist/dist.hpp>
#include <loom/io/checkpoint.hpp>
#include <loom/io/cli.hpp>
#include <loom/io/file.hpp>
#include <loom/loom.hpp>
#include <loom/tokenizer.hpp>
#include <loom/train/report.hpp>
#include <loom/train/sample.hpp>
#include <loom/train/text_tokenizer.hpp>
#include <loom/train/trainer.hpp>

using namespace loom;

namespace {

struct Options {
  std::string data, preset = "char", out = "out", device = "cpu", tokenizer, dist = "auto";
  double dist_timeout = 300, bucket_mb = 4;
  bool resume = false, recompute = false;
  int64_t log_interval = 10, sample_tokens = 200, threads = 0, final_eval_iters = 200;
  uint64_t model_seed = 1337;
  train::ModelSpec model;  // the architecture and its shape
  train::TrainConfig train;
};

void apply_preset(Options& o) {
  nn::GPTConfig& m = o.model.shape;
  train::TrainConfig& t = o.train;
  if (o.preset == "char") {
    m.block_size = 64, m.n_layer = 4, m.n_head = 4, m.n_embd = 128, m.dropout = 0.0, m.bias = false;
    t.batch_size = 12, t.steps = 2000, t.lr = 1e-3, t.min_lr = 1e-4, t.warmup_steps = 100, t.beta2 = 0.99;
    t.weight_decay = 0.1, t.grad_clip = 1.0, t.eval_interval = 250, t.eval_iters = 20;
  } else if (o.preset == "small") {
    m.block_size = 256, m.n_layer = 6, m.n_head = 6, m.n_embd = 384, m.dropout = 0.0, m.bias = false;
    t.batch_size = 8, t.steps = 5000, t.lr = 1e-3, t.min_lr = 1e-4, t.warmup_steps = 100, t.beta2 = 0.99;
    t.weight_decay = 0.1, t.grad_clip = 1.0, t.eval_interval = 250, t.eval_iters = 20;
  } else if (o.preset == "gpt2-124m") {
    m.block_size = 1024, m.n_layer = 12, m.n_head = 12, m.n_embd = 768, m.dropout = 0.0, m.bias = true;
    t.batch_size = 4, t.steps = 5000, t.lr = 6e-4, t.min_lr = 6e-5, t.warmup_steps = 200, t.beta2 = 0.95;
    t.weight_decay = 0.1, t.grad_clip = 1.0, t.eval_interval = 250, t.eval_iters = 10;
  } else {
    throw usage_error("unknown preset '" + o.preset + "' (choose char, small or gpt2-124m)");
  }
}

const char* usage =
    "usage: loom-train --data FILE [options]\n"
    "  --data FILE|DIR      training text (UTF-8 or any bytes), or a folder of loom-data token shards\n"
    "  --preset NAME        char | small | gpt2-124m (default char)\n"
    "  --arch gpt2|llama    the architecture at the preset's shape (default gpt2); llama: RoPE, RMSNorm,\n"
    "                       SwiGLU, n_head/2 key/value heads, tied embeddings, GPT-2's parameters per layer\n"
    "  --n-kv-head N --intermediate-size N --rope-theta X --tie 0|1   llama's own settings\n"
    "  --tokenizer SPEC     a loom-bpe model FILE, bytes, gpt2:DIR (encoder.json + vocab.bpe),\n"
    "                       tiktoken:FILE:gpt2|cl100k or hf:FILE (default: one token per distinct byte)\n"
    "  --out DIR            where to write ckpt.safetensors, log.csv, loss.svg (default out)\n"
    "  --resume             continue from DIR/ckpt.safetensors\n"
    "  --device cpu|cuda    (default cpu; gpt2-124m on cuda defaults to batch 16)\n"
    "  --dtype fp32|bf16    bf16: matmuls and attention in bf16 on the GPU, fp32 weights (default fp32)\n"
    "  --steps N --seed N --batch-size N --grad-accum N --block-size N --n-layer N --n-head N\n"
    "  --n-embd N --dropout X --bias 0|1 --lr X --min-lr X --warmup N --lr-decay-steps N\n"
    "  --weight-decay X --beta1 X --beta2 X --grad-clip X --eval-interval N --eval-iters N\n"
    "  --log-interval N --sample-tokens N --threads N\n"
    "  --final-eval-iters N batches for the final train/val loss (default 200; 0: eval-iters)\n"
    "  --recompute          keep one block's activations at a time, recomputing them in backward:\n"
    "                       less memory for longer sequences or larger batches, ~1.2x the time\n"
    "data parallel (under mpirun -np N):\n"
    "  --dist auto|single|mpi  the communicator (default auto: mpi under mpirun)\n"
    "  --zero 0|1           1: shard AdamW's state across the ranks (ZeRO stage 1; CPU)\n"
    "  --bucket-mb X        gradients per all-reduce bucket, in MiB (default 4)\n"
    "  --dist-timeout S     seconds a rank waits for the others before failing (default 300)\n";

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i)  // the preset first, so that other flags override it
    if (std::string(argv[i]) == "--preset" && i + 1 < argc) o.preset = argv[i + 1];
  apply_preset(o);
  io::OptionTable table;
  auto& flags = table.values;  // --name VALUE
  using io::store;
  flags["--data"] = store(o.data);
  flags["--preset"] = [&](const std::string&) {};
  flags["--tokenizer"] = store(o.tokenizer);
  flags["--out"] = store(o.out);
  flags["--device"] = store(o.device);
  flags["--dtype"] = [&](const std::string& v) {
    LOOM_CHECK(v == "fp32" || v == "bf16", value_error, "--dtype must be fp32 or bf16, got '", v, "'");
    o.train.bf16 = v == "bf16";
  };
  flags["--seed"] = [&](const std::string& v) { o.train.seed = o.model_seed = io::to_unsigned(v); };
  flags["--steps"] = store(o.train.steps);
  flags["--batch-size"] = store(o.train.batch_size);
  flags["--grad-accum"] = store(o.train.grad_accum);
  flags["--block-size"] = store(o.model.shape.block_size);
  flags["--n-layer"] = store(o.model.shape.n_layer);
  flags["--n-head"] = store(o.model.shape.n_head);
  flags["--n-embd"] = store(o.model.shape.n_embd);
  flags["--dropout"] = store(o.model.shape.dropout);
  flags["--bias"] = [&](const std::string& v) {
    LOOM_CHECK(v == "0" || v == "1" || v == "false" || v == "true", value_error, "--bias must be 0 or 1, got '", v, "'");
    o.model.shape.bias = v == "1" || v == "true";
  };
  flags["--arch"] = [&](const std::string& v) {
    LOOM_CHECK(v == "gpt2" || v == "llama", value_error, "--arch must be gpt2 or llama, got '", v, "'");
    o.model.arch = v;
  };
  flags["--n-kv-head"] = store(o.model.n_kv_head);
  flags["--intermediate-size"] = store(o.model.intermediate_size);
  flags["--rope-theta"] = store(o.model.rope_theta);
  flags["--tie"] = [&](const std::string& v) {
    LOOM_CHECK(v == "0" || v == "1", value_error, "--tie must be 0 or 1, got '", v, "'");
    o.model.tie_embeddings = v == "1";
  };
  flags["--lr"] = store(o.train.lr);
  flags["--min-lr"] = store(o.train.min_lr);
  flags["--warmup"] = store(o.train.warmup_steps);
  flags["--lr-decay-steps"] = store(o.train.lr_decay_steps);
  flags["--weight-decay"] = store(o.train.weight_decay);
  flags["--beta1"] = store(o.train.beta1);
  flags["--beta2"] = store(o.train.beta2);
  flags["--grad-clip"] = store(o.train.grad_clip);
  flags["--eval-interval"] = store(o.train.eval_interval);
  flags["--eval-iters"] = store(o.train.eval_iters);
  flags["--log-interval"] = store(o.log_interval);
  flags["--sample-tokens"] = store(o.sample_tokens);
  flags["--threads"] = store(o.threads);
  flags["--final-eval-iters"] = store(o.final_eval_iters);
  flags["--dist"] = store(o.dist);
  flags["--zero"] = [&](const std::string& v) {
    LOOM_CHECK(v == "0" || v == "1", value_error, "--zero must be 0 or 1, got '", v, "'");
    o.train.zero = std::stoi(v);
  };
  flags["--bucket-mb"] = store(o.bucket_mb);
  flags["--dist-timeout"] = store(o.dist_timeout);
  table.switches["--resume"] = [&] { o.resume = true; };
  table.switches["--recompute"] = [&] { o.recompute = true; };
  if (!io::parse_options(argc, argv, 1, table)) {
    std::cout << usage;
    std::exit(0);
  }
  LOOM_CHECK(!o.data.empty(), usage_error, "--data FILE|DIR is required (see --help)");
  LOOM_CHECK(o.device == "cpu" || o.device == "cuda", usage_error, "--device must be cpu or cuda, got '", o.device,
             "'");
  LOOM_CHECK(!o.train.bf16 || o.device == "cuda", usage_error, "--dtype bf16 needs --device cuda");
  bool batch_given = false;
  for (int i = 1; i < argc; ++i) batch_given = batch_given || std::string(argv[i]) == "--batch-size";
  if (o.device == "cuda" && o.preset == "gpt2-124m" && !batch_given) o.train.batch_size = 16;
  LOOM_CHECK(o.bucket_mb > 0, usage_error, "--bucket-mb must be positive, got ", o.bucket_mb);
  o.train.bucket_elems = std::max<int64_t>(1, int64_t(o.bucket_mb * 1024 * 1024 / sizeof(float)));
  return o;
}

}  // namespace

int main(int argc, char** argv) {
  std::unique_ptr<dist::Communicator> comm;
  try {
    Options o = parse(argc, argv);
    // --- ranks: one process, or every process that mpirun started --------------------------
    comm = dist::make_communicator(o.dist);
    comm->set_timeout(o.dist_timeout);
    const int ranks = comm->size();
    const bool lead = comm->rank() == 0;  // rank 0 prints, logs and writes files
    if (!lead) std::cout.rdbuf(nullptr);
    set_num_threads(dist::threads_per_rank(o.threads, ranks));  // --threads, or a share of this machine's cores
    const Device device = o.device == "cuda" ? Device::cuda(0) : Device::cpu();
    if (device.is_cuda()) zeros<float>({1}, device);  // throws "loom was built without CUDA ..." in a CPU build
    io::make_directories(o.out);
    const std::string ckpt_path = o.out + "/ckpt.safetensors", log_path = o.out + "/log.csv",
                      svg_path = o.out + "/loss.svg";
    for (const std::string& p : {ckpt_path, log_path, svg_path})
      for (const std::string& stale : lead ? io::remove_stale_temp_files(p) : std::vector<std::string>{})
        std::cout << "removed " << stale << " (left by an interrupted write)\n";

    // --- data and tokenizer -------------------------------------------------------------
    // A folder is loom-data's output: token shards streamed from disk, and the tokenizer they
    // were written with. A file is raw text, tokenised here and cut 90/10.
    struct stat st {};
    const bool shard_dir = ::stat(o.data.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
    train::TextTokenizer tok;
    train::BatchLoader train_data, val_data;
    if (shard_dir) {
      LOOM_CHECK(o.tokenizer.empty(), usage_error, "--tokenizer does not apply to a shard folder: ", o.data,
                 "/tokenizer.loom is the tokenizer its shards were written with");
      const std::string tok_path = o.data + "/tokenizer.loom";
      LOOM_CHECK(::stat(tok_path.c_str(), &st) == 0, io_error, o.data,
                 " is a folder but not one that loom-data wrote (no tokenizer.loom in it); give a text file, or the "
                 "--out folder of loom-data run");
      tok = train::TextTokenizer::bpe(tokenizer::load(tok_path), tok_path);
      train_data = train::BatchLoader(std::make_shared<const data::TokenShards>(o.data, "train"));
      val_data = train::BatchLoader(std::make_shared<const data::TokenShards>(o.data, "val"));
      o.model.shape.vocab_size = tok.vocab_size();
      std::cout << "data: " << o.data << " (token shards), train " << train_data.size() << " tokens, val "
                << val_data.size() << " tokens (vocab " << o.model.shape.vocab_size << ")\n";
    } else {
      std::string text = io::read_file(o.data);
      LOOM_CHECK(!text.empty(), io_error, o.data, ": the data file is empty");
      tok = o.tokenizer.empty() ? train::TextTokenizer::chars(text)
                                : train::TextTokenizer::bpe(tokenizer::load_spec(o.tokenizer), o.tokenizer);
      std::vector<int64_t> ids = tok.encode(text);
      o.model.shape.vocab_size = tok.vocab_size();
      std::tie(train_data, val_data) = train::split(ids, 0.9);
      std::cout << "data: " << text.size() << " bytes, " << ids.size() << " tokens (vocab " << o.model.shape.vocab_size
                << "), train " << train_data.size() << ", val " << val_data.size() << "\n";
    }

    // --- model, trainer, optional resume ----------------------------------------------------
    std::unique_ptr<nn::CausalLM> built = o.model.make(o.model_seed);
    nn::CausalLM& model = *built;
    model.to(device);  // before the trainer's optimizer takes the parameters
    model.recompute_blocks = o.recompute;
    train::Trainer trainer(model, train_data, val_data, o.train, {}, comm.get());
    if (o.resume) {
      io::Checkpoint c = io::load_checkpoint(ckpt_path);
      trainer.restore(c);
      std::cout << "resumed from " << ckpt_path << " at step " << trainer.step_count() << "\n";
      // Steps past the checkpoint ran before the interruption and run again now: log them once.
      if (size_t dropped = lead ? train::CsvLog::drop_rows_after(log_path, trainer.step_count()) : 0)
        std::cout << "dropped " << dropped << " rows past step " << trainer.step_count() << " from " << log_path << "\n";
    }
    std::cout << "model: " << o.preset << " " << model.arch() << ", " << model.num_parameters() << " parameters, "
              << (device.is_cuda() ? cuda_device_name(0) + (o.train.bf16 ? ", bf16 autocast" : ", fp32")
                                   : std::to_string(get_num_threads()) + " threads")
              << (ranks > 1 ? " per rank, " + std::to_string(ranks) + " ranks (" + comm->backend() +
                                  (o.train.zero ? ", ZeRO-1" : "") + ")"
                            : std::string())
              << "\n";

    // --- training loop ------------------------------------------------------------------------
    std::unique_ptr<train::CsvLog> log = lead ? std::make_unique<train::CsvLog>(log_path, o.resume) : nullptr;
    std::unique_ptr<std::FILE, int (*)(std::FILE*)> quiet(lead ? nullptr : std::fopen("/dev/null", "w"), std::fclose);
    train::ProgressBar bar(lead ? stderr : quiet.get(), o.train.steps, o.log_interval);
    const double tokens_per_step = double(o.train.batch_size * o.train.grad_accum * o.model.shape.block_size * ranks);
    double train_loss = NAN, val_loss = NAN, tok_s = 0;
    int64_t steps_timed = 0;
    double time_in_steps = 0;
    const std::string tok_json = tok.to_json();  // the whole tokenizer goes into every checkpoint
    auto save = [&] {  // every rank takes part (ZeRO gathers its shards); rank 0 writes
      io::Checkpoint c = trainer.checkpoint(tok_json);
      if (lead) io::save_checkpoint(ckpt_path, c);
    };
    while (trainer.step_count() < o.train.steps) {
      double t0 = bar.seconds();
      double loss = trainer.step();
      double dt = bar.seconds() - t0;
      time_in_steps += dt, ++steps_timed;
      tok_s = tokens_per_step * double(steps_timed) / time_in_steps;
      int64_t s = trainer.step_count();
      bar.update(s, loss, tok_s);
      train::LogRow row{s, loss, NAN, trainer.lr_at(s - 1), tokens_per_step / dt, bar.seconds()};
      const bool eval_now = s % o.train.eval_interval == 0 || s == o.train.steps;
      if (eval_now) {
        train_loss = trainer.train_loss();
        val_loss = trainer.val_loss();
        row.val_loss = val_loss;
        char msg[160];
        std::snprintf(msg, sizeof msg, "step %lld: train loss %.4f, val loss %.4f (perplexity %.2f)", (long long)s,
                      train_loss, val_loss, train::perplexity(val_loss));
        bar.message(msg);
      }
      if (log) log->write(row);  // before the checkpoint: a resume from step s finds row s in the log
      if (eval_now) save();
    }
    // The final figures use more batches than the periodic evaluations: less sampling noise.
    train_loss = trainer.train_loss(o.final_eval_iters);
    val_loss = trainer.val_loss(o.final_eval_iters);
    std::cout << "final evaluation over " << (o.final_eval_iters > 0 ? o.final_eval_iters : o.train.eval_iters)
              << " batches: train loss " << train_loss << ", val loss " << val_loss << "\n";

    // --- plot and a sample -------------------------------------------------------------------
    if (lead)
      io::write_file_atomic(svg_path, train::loss_plot_svg(train::CsvLog::read(log_path),
                                                           "loom-train " + o.preset + " " + model.arch() + " on " + o.data));
    std::cout << "wrote " << ckpt_path << ", " << log_path << ", " << svg_path << "\n";
    if (lead && o.sample_tokens > 0) {
      Generator gen(o.train.seed);
      std::vector<int64_t> prompt = shard_dir ? tok.start_ids() : std::vector<int64_t>{train_data.token(0)};
      auto out = train::generate(model, prompt, o.sample_tokens, {0.8, 0, 1.0}, gen);
      std::cout << "--- sample ---\n" << tok.decode(prompt) << tok.decode(out) << "\n--- end of sample ---\n";
    }
    // Memory per rank (the largest goes into the final line): ZeRO-1 divides the optimizer's share.
    const std::vector<double> peak = comm->gather_values(train::peak_rss_mb(), "all_gather 'memory'");
    const std::vector<double> optim =
        comm->gather_values(double(trainer.optimizer_state_bytes()) / 1048576.0, "all_gather 'memory'");
    if (ranks > 1) {
      std::cout << "per rank: peak memory";
      for (double m : peak) std::cout << " " << std::lround(m);
      std::cout << " MB, optimizer state";
      for (double m : optim) std::cout << " " << std::lround(m);
      std::cout << " MB\n";
    }
    if (lead)
      std::printf("final step=%lld train_loss=%.4f val_loss=%.4f tokens_per_s=%.0f ranks=%d optimizer_mb=%.1f "
                  "peak_rss_mb=%.1f arch=%s parameters=%lld\n",
                  (long long)trainer.step_count(), train_loss, val_loss, tok_s, ranks,
                  *std::max_element(optim.begin(), optim.end()), *std::max_element(peak.begin(), peak.end()),
                  model.arch().c_str(), (long long)model.num_parameters());
    return 0;
  } catch (const std::exception& e) {
    const bool many = comm && comm->size() > 1;
    std::cerr << "loom-train" << (many ? " (rank " + std::to_string(comm->rank()) + ")" : "") << ": " << e.what()
              << "\n";
    if (many) comm->abort(io::exit_status(e));  // the other ranks would wait for this one
    return io::exit_status(e);                  // 2 for a usage error
  }
}
