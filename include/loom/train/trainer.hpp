#pragma once
/// @file trainer.hpp
/// The training loop in one object: batches, forward, backward (with gradient accumulation),
/// clipping, the learning-rate schedule and AdamW, plus evaluation and checkpoints that resume
/// bit for bit (model, optimizer, step and every random generator are saved).

#include <algorithm>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "loom/io/checkpoint.hpp"
#include "loom/nn/gpt.hpp"
#include "loom/optim/optim.hpp"
#include "loom/train/data.hpp"
#include "loom/train/evaluate.hpp"

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
};

/// A GPTConfig as JSON.
inline io::Json to_json(const nn::GPTConfig& c) {
  io::Json j = io::Json::object();
  j.set("vocab_size", c.vocab_size), j.set("block_size", c.block_size), j.set("n_layer", c.n_layer);
  j.set("n_head", c.n_head), j.set("n_embd", c.n_embd), j.set("dropout", c.dropout), j.set("bias", c.bias);
  return j;
}
/// A GPTConfig from JSON written by to_json().
inline nn::GPTConfig gpt_config_from_json(const io::Json& j) {
  nn::GPTConfig c;
  c.vocab_size = j.at("vocab_size").as_int(), c.block_size = j.at("block_size").as_int();
  c.n_layer = j.at("n_layer").as_int(), c.n_head = j.at("n_head").as_int(), c.n_embd = j.at("n_embd").as_int();
  c.dropout = j.at("dropout").as_double(), c.bias = j.at("bias").as_bool();
  return c;
}

/// One training micro-batch: inputs and targets (B, T), -1 where a position carries no loss, and
/// for packed rows the segment ids (B, T) of the examples (undefined otherwise).
struct Batch {
  Tensor<int64_t> x, y, segments;
};

/// Runs the training loop of a model over a train and a validation split.
class Trainer {
 public:
  /// A trainer for `model` (which must outlive it); AdamW over decay/no-decay groups of the model's
  /// parameters and `extra` ones (a reward model's head).
  Trainer(nn::GPT& model, BatchLoader train, BatchLoader val, TrainConfig cfg, const nn::NamedTensors& extra = {})
      : model_(model), train_(std::move(train)), val_(std::move(val)), cfg_(cfg), data_gen_(cfg.seed),
        eval_gen_(cfg.seed + 1), opt_(decay_groups(with_extra(model.named_parameters(), extra), cfg.weight_decay),
                                      adamw_options(cfg)) {
    LOOM_CHECK(cfg.batch_size > 0 && cfg.grad_accum > 0 && cfg.steps >= 0, value_error,
               "Trainer: batch_size, grad_accum must be positive and steps non-negative");
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

  /// One optimizer step over grad_accum micro-batches; returns their mean loss.
  double step() {
    const int64_t T = model_.config.block_size;
    opt_.set_lr(lr_at(step_));
    opt_.zero_grad();
    double total = 0;
    for (int64_t m = 0; m < cfg_.grad_accum; ++m) {
      Tensor<float> loss;
      if (loss_) {
        AutocastGuard autocast(cfg_.bf16);
        loss = loss_(m);
      } else {
        Batch b;
        if (source_) b = source_();
        else std::tie(b.x, b.y) = train_.batch(cfg_.batch_size, T, data_gen_);
        AutocastGuard autocast(cfg_.bf16);  // the forward; the backward keeps what it recorded
        loss = model_.forward(b.x, b.y, nullptr, b.segments).loss;
      }
      total += double(loss.item());
      if (cfg_.grad_accum > 1) loss = loss * float(1.0 / double(cfg_.grad_accum));
      loss.backward();
    }
    if (grad_hook_) grad_hook_();
    if (cfg_.grad_clip > 0) last_grad_norm_ = clip_grad_norm(opt_.params(), cfg_.grad_clip);
    opt_.step();
    ++step_;
    return total / double(cfg_.grad_accum);
  }

  /// Mean loss over `batches` (default eval_iters) random batches of the validation split.
  double val_loss(int64_t batches = 0) {
    AutocastGuard autocast(cfg_.bf16);
    return evaluate(model_, val_, batches > 0 ? batches : cfg_.eval_iters, cfg_.batch_size, model_.config.block_size,
                    eval_gen_);
  }
  /// Mean loss over `batches` (default eval_iters) random batches of the training split.
  double train_loss(int64_t batches = 0) {
    AutocastGuard autocast(cfg_.bf16);
    return evaluate(model_, train_, batches > 0 ? batches : cfg_.eval_iters, cfg_.batch_size, model_.config.block_size,
                    eval_gen_);
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
  /// optimizer scalars in the metadata. `tokenizer` (a JSON string) is stored as given.
  io::Checkpoint checkpoint(const std::string& tokenizer = "") const {
    io::Checkpoint c;
    for (auto& [name, p] : model_.named_parameters()) c.add("model." + name, p.detach().to(Device::cpu()));
    for (auto& [name, t] : opt_.state_tensors()) c.add("optim." + name, t.to(Device::cpu()));
    for (auto& [k, v] : opt_.state_scalars()) c.set_meta("optim." + k, v);
    c.set_meta_json("config", to_json(model_.config));
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

  /// Restores a checkpoint made by checkpoint() for a model of the same configuration.
  void restore(const io::Checkpoint& c) {
    nn::GPTConfig saved = gpt_config_from_json(c.meta_json("config"));
    LOOM_CHECK(to_json(saved).dump() == to_json(model_.config).dump(), value_error, c.source(),
               ": the checkpoint's model ", to_json(saved).dump(), " differs from this model ", to_json(model_.config).dump());
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
  }

 private:
  static nn::NamedTensors with_extra(nn::NamedTensors params, const nn::NamedTensors& extra) {
    params.insert(params.end(), extra.begin(), extra.end());
    return params;
  }
  static AdamWOptions adamw_options(const TrainConfig& c) {
    AdamWOptions o;
    o.lr = c.lr, o.beta1 = c.beta1, o.beta2 = c.beta2, o.weight_decay = c.weight_decay;
    return o;
  }

  nn::GPT& model_;
  BatchLoader train_, val_;
  TrainConfig cfg_;
  Generator data_gen_, eval_gen_;
  AdamW opt_;
  int64_t step_ = 0;
  double last_grad_norm_ = 0;
  std::function<Batch()> source_;
  std::function<Tensor<float>(int64_t)> loss_;
  std::function<void()> grad_hook_;
};

}  // namespace loom::train
