#pragma once
/// @file trainer.hpp
/// The training loop in one object: batches, forward, backward (with gradient accumulation),
/// clipping, the learning-rate schedule and AdamW, plus evaluation and checkpoints that resume
/// bit for bit (model, optimizer, step and every random generator are saved).
///
/// Given a communicator of N > 1 ranks (dist/), the same loop is data-parallel: micro-batch k of
/// a step's N x grad_accum goes to rank k / grad_accum (each rank draws all offsets and keeps its
/// own), gradients are summed in rank order while the backward pass runs (dist::GradReducer), and
/// the result has the bits of one process with N x grad_accum micro-batches when grad_accum is 1.
/// With zero = 1 the AdamW state is sharded across the ranks (dist::ZeroAdamW).

#include <algorithm>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "loom/dist/communicator.hpp"
#include "loom/dist/data_parallel.hpp"
#include "loom/io/checkpoint.hpp"
#include "loom/optim/optim.hpp"
#include "loom/train/data.hpp"
#include "loom/train/evaluate.hpp"
#include "loom/train/models.hpp"

namespace loom::train {

/// Optimisation settings (defaults: nanoGPT's character-level Shakespeare recipe).
struct TrainConfig {
  int64_t batch_size = 12;        ///< B: sequences per micro-batch
  int64_t steps = 2000;           ///< optimizer steps
  int64_t grad_accum = 1;         ///< micro-batches per step
  double lr = 1e-3;               ///< peak learning rate
  double min_lr = 1e-4;           ///< floor of the cosine decay
  int64_t warmup_steps = 100;     ///< linear warmup
  int64_t lr_decay_steps = 0;     ///< cosine decay length (0: = steps)
  double weight_decay = 0.1;      ///< AdamW decay, matrices and embeddings only
  double beta1 = 0.9, beta2 = 0.99;
  double grad_clip = 1.0;         ///< max global gradient norm (0: off)
  int64_t eval_interval = 250;    ///< steps between evaluations
  int64_t eval_iters = 20;        ///< batches per evaluation
  uint64_t seed = 1337;           ///< batches and evaluation batches
  bool bf16 = false;              ///< mixed precision on the GPU: bf16 matmuls and attention (AutocastGuard)
  int zero = 0;                   ///< ZeRO stage: 0 (every rank keeps the whole AdamW state) or 1 (sharded)
  int64_t bucket_elems = 1 << 20; ///< data parallel: gradient elements per all-reduce bucket
};

/// One training micro-batch: inputs and targets (B, T), -1 where a position carries no loss, and
/// for packed rows the segment ids (B, T) of the examples (undefined otherwise).
struct Batch {
  Tensor<int64_t> x, y, segments;
};

/// Runs the training loop of a model over a train and a validation split.
class Trainer {
 public:
  /// A trainer for `model` (which must outlive it); AdamW over decay/no-decay groups of the model's
  /// parameters and `extra` ones (a reward model's head). With `comm` of more than one rank (or
  /// cfg.zero = 1) training is data-parallel; every rank must construct its trainer alike.
  Trainer(nn::CausalLM& model, BatchLoader train, BatchLoader val, TrainConfig cfg, const nn::NamedTensors& extra = {},
          dist::Communicator* comm = nullptr)
      : model_(model), train_(std::move(train)), val_(std::move(val)), cfg_(cfg), data_gen_(cfg.seed),
        eval_gen_(cfg.seed + 1), opt_(decay_groups(with_extra(model.named_parameters(), extra), cfg.weight_decay),
                                      adamw_options(cfg)),
        comm_(comm) {
    LOOM_CHECK(cfg.batch_size > 0 && cfg.grad_accum > 0 && cfg.steps >= 0, value_error,
               "Trainer: batch_size, grad_accum must be positive and steps non-negative");
    LOOM_CHECK(cfg.zero == 0 || cfg.zero == 1, value_error, "Trainer: ZeRO stage ", cfg.zero, " is not one of 0, 1");
    if (ranks() > 1 || cfg.zero == 1) {
      static dist::SingleProcess single;
      dist::Communicator& c = comm_ ? *comm_ : single;
      LOOM_CHECK(!c.device_buffers(), backend_error, "Trainer: data-parallel training reduces gradients in host "
                 "buffers; the ", c.backend(), " communicator takes GPU buffers (its reducer waits for a GPU to be "
                 "tested): use MPI");
      dist::check_same_parameters(c, opt_.params());
      reducer_ = std::make_unique<dist::GradReducer>(c, opt_.params(), cfg.bucket_elems, cfg.zero == 1);
      if (cfg.zero == 1) {
        for (const Tensor<float>& p : opt_.params())
          LOOM_CHECK(p.device().is_cpu(), device_error, "Trainer: ZeRO-1 runs on the CPU; this parameter is on ",
                     p.device());
        zero_ = std::make_unique<dist::ZeroAdamW>(opt_, *reducer_);
      }
    }
  }

  /// The learning rate at optimizer step `s` (warmup, then cosine decay to min_lr).
  double lr_at(int64_t s) const {
    int64_t decay = cfg_.lr_decay_steps > 0 ? cfg_.lr_decay_steps : std::max<int64_t>(cfg_.steps, 1);
    return lr_cosine(s, cfg_.lr, cfg_.min_lr, std::min(cfg_.warmup_steps, decay), decay);
  }

  /// Replaces the random windows of the training split by batches from `source` (fine-tuning
  /// draws rendered conversations, with their loss masks in the targets and packed rows' segments).
  void set_batch_source(std::function<Batch()> source) { source_ = std::move(source); }

  /// Replaces the language-model loss by `loss`: each micro-batch calls loss(m) (m = 0 ..
  /// grad_accum - 1) for a scalar with a graph (a reward model's, DPO's or a policy gradient's).
  void set_loss(std::function<Tensor<float>(int64_t)> loss) { loss_ = std::move(loss); }

  /// Calls `hook` after the backward passes of each step, before clipping and the update (to mask
  /// gradients: fine-tuning with LoRA trains only the new rows of a grown embedding).
  void set_grad_hook(std::function<void()> hook) { grad_hook_ = std::move(hook); }

  /// One optimizer step over grad_accum micro-batches (per rank); returns their mean loss (over
  /// every rank's). The micro-batch gradients are summed, then scaled once by 1 / (ranks x grad_accum).
  double step() {
    const int64_t A = cfg_.grad_accum, N = ranks(), r = rank();
    LOOM_CHECK(!(loss_ && N > 1), value_error, "Trainer: a custom loss (set_loss) runs in one process only");
    opt_.set_lr(lr_at(step_));
    opt_.zero_grad();
    std::vector<double> losses(size_t(N * A), 0.0);
    // Micro-batch k draws its dropout masks from its own stretch of the model's generator, so a
    // rank needs no other rank's draws to reproduce one process.
    const uint64_t seed = model_.gen.seed(), base = model_.gen.offset();
    constexpr uint64_t stretch = uint64_t(1) << 32;  // 128-bit blocks per micro-batch
    for (int64_t k = 0; k < r * A; ++k) skip_batch();  // the micro-batches of lower ranks
    for (int64_t m = 0; m < A; ++m) {
      model_.gen.set_state(seed, base + uint64_t(r * A + m) * stretch);
      Tensor<float> loss;
      if (loss_) {
        AutocastGuard autocast(cfg_.bf16);
        loss = loss_(m);
      } else {
        Batch b = next_batch();
        AutocastGuard autocast(cfg_.bf16);  // the forward; the backward keeps what it recorded
        loss = model_.loss(b.x, b.y, b.segments);
      }
      losses[size_t(r * A + m)] = double(loss.item());
      // Each micro-batch's gradient is formed whole, then added to the sum so far: a weight used
      // twice in the model (tied embeddings) then sums the same way here as across ranks.
      std::vector<Tensor<float>> sum_so_far;
      if (m > 0)
        for (Tensor<float>& p : opt_.params()) sum_so_far.push_back(p.grad()), p.zero_grad();
      if (reducer_ && m == A - 1) {  // the last backward sends its gradients (plus the earlier sum)
        reducer_->begin(std::move(sum_so_far));
        loss.backward();
      } else {
        loss.backward();
        if (m > 0) add_to_grads(sum_so_far);
      }
    }
    for (int64_t k = (r + 1) * A; k < N * A; ++k) skip_batch();  // those of higher ranks
    model_.gen.set_state(seed, base + uint64_t(N * A) * stretch);
    const float scale = N * A > 1 ? float(1.0 / double(N * A)) : 1.0f;
    if (reducer_) {
      reducer_->finish(scale);  // first: the communication thread must be idle before this thread calls MPI
      if (N > 1) comm_->all_reduce(losses.data(), N * A, dist::ReduceOp::sum, "all_reduce 'losses'");
    } else if (scale != 1.0f) {
      optim_detail::scale_grads(optim_detail::defined_grads(opt_.params(), "Trainer"), scale);
    }
    if (grad_hook_) {
      LOOM_CHECK(!zero_, value_error, "Trainer: a gradient hook (LoRA's row mask) needs whole gradients; use zero = 0");
      grad_hook_();
    }
    if (zero_) {
      if (cfg_.grad_clip > 0) last_grad_norm_ = zero_->clip_grad_norm(cfg_.grad_clip);
      zero_->step();
    } else {
      if (cfg_.grad_clip > 0) last_grad_norm_ = clip_grad_norm(opt_.params(), cfg_.grad_clip);
      opt_.step();
    }
    ++step_;
    double total = 0;  // in micro-batch order, as one process adds them up
    for (double l : losses) total += l;
    return total / double(N * A);
  }

  /// Mean loss over `batches` (default eval_iters) random batches of the validation split.
  double val_loss(int64_t batches = 0) {
    AutocastGuard autocast(cfg_.bf16);
    return evaluate(model_, val_, batches > 0 ? batches : cfg_.eval_iters, cfg_.batch_size, model_.block_size(),
                    eval_gen_, comm_);
  }
  /// Mean loss over `batches` (default eval_iters) random batches of the training split.
  double train_loss(int64_t batches = 0) {
    AutocastGuard autocast(cfg_.bf16);
    return evaluate(model_, train_, batches > 0 ? batches : cfg_.eval_iters, cfg_.batch_size, model_.block_size(),
                    eval_gen_, comm_);
  }

  /// Optimizer steps taken so far.
  int64_t step_count() const { return step_; }
  /// The global gradient norm before clipping at the last step.
  double last_grad_norm() const { return last_grad_norm_; }
  /// The optimizer.
  AdamW& optimizer() { return opt_; }
  /// The settings.
  const TrainConfig& config() const { return cfg_; }

  /// Everything needed to resume: "model.*" and "optim.*" tensors; config, step, RNG states and
  /// optimizer scalars in the metadata. `tokenizer` (a JSON string) is stored as given. The same
  /// for any number of ranks; with ZeRO every rank must call it, and rank 0's holds the optimizer
  /// state gathered from all (the others' lack it: rank 0 writes the file).
  io::Checkpoint checkpoint(const std::string& tokenizer = "") {
    if (!zero_) return checkpoint_of_state(tokenizer, opt_.state_tensors(), opt_.state_scalars());
    auto [tensors, scalars] = zero_->gather_state(0);  // rank 0 alone holds the whole state, while it is saved
    return checkpoint_of_state(tokenizer, tensors, scalars);
  }

  /// The number of ranks training together (1 without a communicator).
  int ranks() const { return comm_ ? comm_->size() : 1; }
  /// This process's rank (0 without a communicator).
  int rank() const { return comm_ ? comm_->rank() : 0; }
  /// Bytes of optimizer state this rank holds (AdamW's two moments, or this rank's ZeRO pieces).
  int64_t optimizer_state_bytes() const {
    if (zero_) return zero_->state_bytes();
    int64_t n = 0;
    for (auto& [name, t] : opt_.state_tensors()) n += t.numel() * int64_t(sizeof(float));
    return n;
  }

  /// Restores a checkpoint made by checkpoint() for a model of the same configuration.
  void restore(const io::Checkpoint& c) {
    const std::string saved = canonical_config(c.meta_json("config")).dump(), mine = config_json(model_).dump();
    LOOM_CHECK(saved == mine, value_error, c.source(), ": the checkpoint's model ", saved, " differs from this model ",
               mine);
    nn::NamedTensors params;
    for (const std::string& n : c.names("model.")) params.emplace_back(n.substr(6), c.get<float>(n));
    model_.load_state_dict(params);
    std::vector<std::pair<std::string, Tensor<float>>> state;
    for (const std::string& n : c.names("optim.")) state.emplace_back(n.substr(6), c.get<float>(n));
    std::map<std::string, std::string> scalars;
    for (auto& [k, v] : c.metadata())
      if (k.rfind("optim.", 0) == 0) scalars[k.substr(6)] = v;
    opt_.load_state(state, scalars);
    step_ = c.meta_int("step");
    io::Json rng = c.meta_json("rng");
    for (auto [key, g] : {std::pair{"data", &data_gen_}, std::pair{"eval", &eval_gen_}, std::pair{"model", &model_.gen}}) {
      const io::Json& s = rng.at(key);
      g->set_state(std::stoull(s.at("seed").as_string()), std::stoull(s.at("offset").as_string()));
    }
    if (zero_) zero_->scatter_from_optimizer();
  }

 private:
  io::Checkpoint checkpoint_of_state(const std::string& tokenizer,
                                     const std::vector<std::pair<std::string, Tensor<float>>>& optim_tensors,
                                     const std::map<std::string, std::string>& optim_scalars) const {
    io::Checkpoint c;
    for (auto& [name, p] : model_.named_parameters()) c.add("model." + name, p.detach().to(Device::cpu()));
    for (auto& [name, t] : optim_tensors) c.add("optim." + name, t.to(Device::cpu()));
    for (auto& [k, v] : optim_scalars) c.set_meta("optim." + k, v);
    c.set_meta_json("config", config_json(model_));
    c.set_meta("step", std::to_string(step_));
    io::Json rng = io::Json::object();
    using Entry = std::pair<const char*, const Generator*>;
    for (auto [key, g] : {Entry{"data", &data_gen_}, Entry{"eval", &eval_gen_}, Entry{"model", &model_.gen}}) {
      io::Json s = io::Json::object();
      s.set("seed", std::to_string(g->seed()));  // as strings: a uint64 may not fit JSON's int64
      s.set("offset", std::to_string(g->offset()));
      rng.set(key, s);
    }
    c.set_meta_json("rng", rng);
    if (!tokenizer.empty()) c.set_meta("tokenizer", tokenizer);
    return c;
  }

  // grad = earlier + grad for every parameter (the earlier sum first, as ranks are added).
  void add_to_grads(const std::vector<Tensor<float>>& earlier) {
    std::vector<Tensor<float>> params = opt_.params();
    for (size_t i = 0; i < params.size(); ++i) {
      const Tensor<float>& e = earlier[i];
      Tensor<float> g = params[i].grad();
      if (!e.defined()) continue;
      params[i].set_grad(g.defined() ? autograd::detail::add_grads(e, g) : e);
    }
  }
  // The next training micro-batch, and the same draw thrown away (another rank's).
  Batch next_batch() {
    Batch b;
    if (source_) b = source_();
    else std::tie(b.x, b.y) = train_.batch(cfg_.batch_size, model_.block_size(), data_gen_);
    return b;
  }
  void skip_batch() {
    if (source_) (void)source_();
    else train_.skip(cfg_.batch_size, model_.block_size(), data_gen_);
  }
  static nn::NamedTensors with_extra(nn::NamedTensors params, const nn::NamedTensors& extra) {
    params.insert(params.end(), extra.begin(), extra.end());
    return params;
  }
  static AdamWOptions adamw_options(const TrainConfig& c) {
    AdamWOptions o;
    o.lr = c.lr, o.beta1 = c.beta1, o.beta2 = c.beta2, o.weight_decay = c.weight_decay;
    return o;
  }

  nn::CausalLM& model_;
  BatchLoader train_, val_;
  TrainConfig cfg_;
  Generator data_gen_, eval_gen_;
  AdamW opt_;
  int64_t step_ = 0;
  double last_grad_norm_ = 0;
  std::function<Batch()> source_;
  std::function<Tensor<float>(int64_t)> loss_;
  std::function<void()> grad_hook_;
  dist::Communicator* comm_ = nullptr;
  std::unique_ptr<dist::GradReducer> reducer_;  ///< data parallel (more than one rank, or ZeRO)
  std::unique_ptr<dist::ZeroAdamW> zero_;       ///< ZeRO-1
};

}  // namespace loom::train
