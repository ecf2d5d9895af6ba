#pragma once
/// @file sample.hpp
/// Generating text: next-token sampling with temperature, top-k and top-p (nucleus), and a
/// batched sampler that decodes many sequences at once with a KV cache (generate_batch), which
/// generate() runs with one row: loom-sample, loom-chat, evaluation and on-policy RL share it.

#include <algorithm>
#include <cmath>
#include <functional>
#include <numeric>
#include <vector>

#include "loom/nn/causal_lm.hpp"

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
  if (opt.top_k == 0 && opt.top_p == 1) {
    // Every token kept: one uniform against the cumulative softmax in id order, no sort. Each token
    // keeps its probability (the same distribution as below); only which token a given uniform
    // lands on differs from the sorted order.
    const double top = double(*std::max_element(logits, logits + V));
    std::vector<double> p(static_cast<size_t>(V), 0.0);
    double z = 0;
    for (int64_t i = 0; i < V; ++i) z += p[size_t(i)] = std::exp((double(logits[i]) - top) / opt.temperature);
    const double target = rand<double>({1}, gen).item() * z;
    double cum = 0;
    int64_t last = 0;  // the last token with a nonzero probability
    for (int64_t i = 0; i < V; ++i) {
      if (p[size_t(i)] == 0) continue;
      cum += p[size_t(i)];
      last = i;
      if (target < cum) return i;
    }
    return last;  // target within rounding of z
  }
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

/// Continues each prompt by up to `n` tokens, all rows decoded together (one forward per token
/// for the whole batch, with a KV cache per layer), and returns each row's new tokens. Row b
/// draws from its own generator gens[b], so a row's tokens do not depend on the other rows
/// (seed each row by what it is, e.g. (step, prompt, sample), and runs reproduce). A row stops
/// after a token for which stop(id) is true (that token is included); the others go on.
/// on_token(b, id) sees each new token as it comes.
///
/// Prompts of different lengths are left-padded: row b's tokens begin at cache position
/// first[b], its positions count from there and its queries never see the padding
/// (GPT::decode), so each row gets the logits it would get alone. When a row outgrows the
/// model's context, every row restarts its cache from its newest block_size / 2 tokens. Runs in
/// eval mode without recording a graph; the model's mode is restored afterwards.
inline std::vector<std::vector<int64_t>> generate_batch(
    nn::CausalLM& model, const std::vector<std::vector<int64_t>>& prompts, int64_t n, const SamplingOptions& opt,
    std::vector<Generator>& gens, const std::function<bool(int64_t)>& stop = nullptr,
    const std::function<void(size_t, int64_t)>& on_token = nullptr) {
  const size_t B = prompts.size();
  LOOM_CHECK(B > 0, value_error, "generate_batch: no prompts");
  LOOM_CHECK(gens.size() == B, value_error, "generate_batch: ", B, " prompts but ", gens.size(), " generators");
  LOOM_CHECK(n >= 0, value_error, "generate_batch: n must be >= 0, got ", n);
  for (size_t b = 0; b < B; ++b)
    LOOM_CHECK(!prompts[b].empty(), value_error, "generate_batch: prompt ", b, " is empty (it needs at least one token)");
  NoGradGuard no_grad;
  const bool was_training = model.is_training();
  model.eval();
  const int64_t block = model.block_size(), V = model.vocab_size();
  std::vector<std::vector<int64_t>> seqs = prompts, out(B);
  std::vector<char> done(B, 0);
  std::vector<nn::KVCache> cache;
  std::vector<int64_t> first(B);
  int64_t capacity = 0;
  // (Re)starts the caches from each row's newest `keep` tokens (at most), left-padded with 0.
  auto prefill = [&](int64_t keep) {
    int64_t P = 0;
    for (const auto& s : seqs) P = std::max<int64_t>(P, std::min<int64_t>(int64_t(s.size()), keep));
    Tensor<int64_t> idx = full<int64_t>({int64_t(B), P}, 0);  // (B, P)
    for (size_t b = 0; b < B; ++b) {
      const int64_t L = std::min<int64_t>(int64_t(seqs[b].size()), keep);
      first[b] = P - L;
      std::copy(seqs[b].end() - L, seqs[b].end(), idx.data() + int64_t(b) * P + first[b]);
    }
    capacity = P + std::min<int64_t>(n, block);  // room for the new tokens until the next restart
    cache = model.make_kv_cache(int64_t(B), capacity);
    return model.decode(idx, cache, first);  // (B, V)
  };
  Tensor<float> logits = prefill(block);
  Tensor<int64_t> next = Tensor<int64_t>::empty({int64_t(B), 1});  // (B, 1)
  for (int64_t i = 0; i < n; ++i) {
    const Tensor<float> rows = logits.to(Device::cpu()).contiguous();  // (B, V)
    bool any_left = false;
    for (size_t b = 0; b < B; ++b) {
      if (done[b]) {
        next.data()[b] = seqs[b].back();  // a finished row idles on its last token (never read)
        continue;
      }
      const int64_t id = sample_token(rows.data() + int64_t(b) * V, V, opt, gens[b]);
      next.data()[b] = id;
      seqs[b].push_back(id);
      out[b].push_back(id);
      if (on_token) on_token(b, id);
      if (stop && stop(id)) done[b] = 1;
      any_left = any_left || !done[b];
    }
    if (i + 1 == n || !any_left) break;
    int64_t longest = 0;  // the most positions any unfinished row would have with this token
    for (size_t b = 0; b < B; ++b)
      if (!done[b]) longest = std::max<int64_t>(longest, cache[0].len + 1 - first[b]);
    if (longest > block || cache[0].len + 1 > capacity) {
      logits = prefill(std::max<int64_t>(block / 2, 1));
    } else {
      logits = model.decode(next, cache, first);
    }
  }
  model.train(was_training);
  return out;
}

/// Continues `prompt` by up to `n` tokens with `model`, calling on_token(id) for each new token and
/// stopping early after a token for which stop(id) is true (a chat model's end of turn): the
/// batched sampler above with one row, drawing from `gen`.
inline std::vector<int64_t> generate(nn::CausalLM& model, const std::vector<int64_t>& prompt, int64_t n,
                                     const SamplingOptions& opt, Generator& gen,
                                     const std::function<void(int64_t)>& on_token = nullptr,
                                     const std::function<bool(int64_t)>& stop = nullptr) {
  LOOM_CHECK(!prompt.empty(), value_error, "generate: the prompt needs at least one token");
  std::vector<Generator> gens{gen};
  std::vector<std::vector<int64_t>> out = generate_batch(
      model, {prompt}, n, opt, gens, stop, on_token ? [&](size_t, int64_t id) { on_token(id); }
                                                    : std::function<void(size_t, int64_t)>());
  gen = gens[0];
  return out[0];
}

}  // namespace loom::train
