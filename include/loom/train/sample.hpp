#pragma once
/// @file sample.hpp
/// Generating text: next-token sampling with temperature, top-k and top-p (nucleus), and a
/// generate() loop that decodes incrementally with a KV cache.

#include <algorithm>
#include <cmath>
#include <functional>
#include <numeric>
#include <vector>

#include "loom/nn/gpt.hpp"

namespace loom::train {

/// How to pick each next token.
struct SamplingOptions {
  double temperature = 1.0;  ///< logits / temperature; 0 means greedy (always the most likely token)
  int64_t top_k = 0;         ///< keep only the k most likely tokens (0: all)
  double top_p = 1.0;        ///< keep the smallest set of tokens whose probability reaches top_p (1: all)
};

/// Draws one token id from a row of V logits under `opt`, with randomness from `gen`.
inline int64_t sample_token(const float* logits, int64_t V, const SamplingOptions& opt, Generator& gen) {
  LOOM_CHECK(V > 0, value_error, "sample_token: empty vocabulary");
  LOOM_CHECK(opt.temperature >= 0, value_error, "sample_token: temperature must be >= 0, got ", opt.temperature);
  LOOM_CHECK(opt.top_k >= 0, value_error, "sample_token: top_k must be >= 0, got ", opt.top_k);
  LOOM_CHECK(opt.top_p > 0 && opt.top_p <= 1, value_error, "sample_token: top_p must lie in (0, 1], got ", opt.top_p);
  if (opt.temperature == 0) return int64_t(std::max_element(logits, logits + V) - logits);
  // Candidates sorted by logit, best first (ties: lower id first, so results are reproducible).
  std::vector<int64_t> order(static_cast<size_t>(V), 0);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return logits[a] > logits[b]; });
  size_t keep = opt.top_k > 0 ? size_t(std::min(opt.top_k, V)) : size_t(V);
  // Softmax of logits / temperature over the kept candidates (max subtracted: no overflow).
  std::vector<double> p(keep, 0.0);
  double top = double(logits[order[0]]), z = 0;
  for (size_t i = 0; i < keep; ++i) z += p[i] = std::exp((double(logits[order[i]]) - top) / opt.temperature);
  for (double& x : p) x /= z;
  if (opt.top_p < 1) {  // the nucleus: the fewest candidates whose probability reaches top_p
    double cum = 0;
    size_t n = 0;
    while (n < keep && cum < opt.top_p) cum += p[n++];
    keep = std::max<size_t>(n, 1);
    z = 0;
    for (size_t i = 0; i < keep; ++i) z += p[i];
    for (size_t i = 0; i < keep; ++i) p[i] /= z;
  }
  double u = rand<double>({1}, gen).item(), cum = 0;
  for (size_t i = 0; i < keep; ++i) {
    cum += p[i];
    if (u < cum) return order[i];
  }
  return order[keep - 1];  // u within rounding of 1
}

/// Continues `prompt` by up to `n` tokens with `model`, calling on_token(id) for each new token and
/// stopping early after a token for which stop(id) is true (a chat model's end of turn).
/// Decoding is incremental (a KV cache per layer). When the context outgrows block_size, the
/// older half is dropped and the cache refilled from the newer half. Runs in eval mode without
/// recording a graph; the model's mode is restored afterwards.
inline std::vector<int64_t> generate(nn::GPT& model, const std::vector<int64_t>& prompt, int64_t n,
                                     const SamplingOptions& opt, Generator& gen,
                                     const std::function<void(int64_t)>& on_token = nullptr,
                                     const std::function<bool(int64_t)>& stop = nullptr) {
  LOOM_CHECK(!prompt.empty(), value_error, "generate: the prompt needs at least one token");
  NoGradGuard no_grad;
  bool was_training = model.is_training();
  model.eval();
  const int64_t block = model.config.block_size, V = model.config.vocab_size;
  std::vector<int64_t> ids = prompt;
  std::vector<nn::KVCache> cache;
  auto prefill = [&](int64_t keep) {  // restart the cache from the last `keep` tokens
    cache = model.make_kv_cache(1, block);
    std::vector<int64_t> ctx(ids.end() - keep, ids.end());
    return model.forward(from_vector<int64_t>(ctx, {1, keep}), {}, &cache).logits;
  };
  Tensor<float> logits = prefill(std::min<int64_t>(int64_t(ids.size()), block));
  for (int64_t i = 0; i < n; ++i) {
    Tensor<float> row = logits.select(1, logits.size(1) - 1).to(Device::cpu()).contiguous();  // (1, V)
    const float* last = row.data();
    int64_t next = sample_token(last, V, opt, gen);
    ids.push_back(next);
    if (on_token) on_token(next);
    if (i + 1 == n || (stop && stop(next))) break;
    if (cache[0].len + 1 > block) {
      logits = prefill(std::max<int64_t>(block / 2, 1));
    } else {
      logits = model.forward(from_vector<int64_t>({next}, {1, 1}), {}, &cache).logits;
    }
  }
  model.train(was_training);
  return std::vector<int64_t>(ids.begin() + std::ptrdiff_t(prompt.size()), ids.end());
}

}  // namespace loom::train
