#pragma once
/// @file grpo.hpp
/// On-policy reinforcement learning from a reward: the model answers, a judge scores the answers,
/// and answers that scored above their group's mean are made more likely.
///
/// **GRPO** (Shao et al. 2024, DeepSeekMath; nanochat's RL stage): for each prompt, G answers are
/// sampled from the current policy π; with rewards r_1..r_G, the advantage of answer i is
/// A_i = r_i - mean(r) (optionally ÷ std(r), as the paper does; Dr. GRPO, Liu et al. 2025, drops
/// it, and so does loom's default). The group mean is the baseline of REINFORCE: no value network.
/// Every token t of answer i gets the same advantage, and the loss is averaged over all answer
/// tokens of the batch (token-level, as DAPO, Yu et al. 2025):
///
///   ρ_t = π(y_t) / π_old(y_t)              (1 on the first pass over a batch)
///   L = -Σ_t min(ρ_t A, clip(ρ_t, 1 - ε, 1 + ε) A) / N  +  β_kl Σ_t k3_t / N
///   k3_t = π_ref(y_t) / π(y_t) - log(π_ref(y_t) / π(y_t)) - 1  ≥ 0   (Schulman's k3 estimator of KL(π‖π_ref))
///
/// With a batch used once, ρ = 1 and the gradient is REINFORCE's, A ∇log π(y_t). Reusing a batch
/// for several passes (PPO epochs) makes ρ ≠ 1, and the clip (ε = 0.2) stops the policy moving
/// far from the one that sampled. A group whose answers all scored the same has A = 0: it teaches
/// nothing, and the share of such groups is logged (too easy or too hard prompts).
///
/// Sampling is seeded per (seed, step, prompt, sample) through sample_seed, so a run reproduces
/// and a sample does not depend on which others share its batch.

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "loom/align/chat.hpp"
#include "loom/align/finetune.hpp"
#include "loom/align/preference.hpp"
#include "loom/core/hash.hpp"
#include "loom/ops/elementwise.hpp"
#include "loom/ops/reduce.hpp"

namespace loom::align {

/// A prompt for on-policy training or evaluation, with its reference answer when it has one.
struct PromptItem {
  Conversation prompt;  ///< ends with a user turn
  std::string answer;   ///< the reference answer ("" when the data gives none)
};

/// Parses one JSONL line of prompts: {"prompt": TEXT or [messages], "answer": TEXT}, or
/// {"messages": [...]} (a conversation: when it ends with an assistant turn, that turn is the
/// answer). "answer" is optional. Throws io_error "WHERE: ..." for anything else.
inline PromptItem parse_prompt(std::string_view line, const std::string& where) {
  const io::Json j = detail::parse_json_object(line, where);
  PromptItem p;
  const io::Json* prompt = j.find("prompt");
  const io::Json* messages = j.find("messages");
  const io::Json* answer = j.find("answer");
  LOOM_CHECK(!prompt != !messages, io_error, where, ": expected exactly one of \"prompt\" and \"messages\"");
  if (prompt && prompt->is_string()) {
    LOOM_CHECK(!prompt->as_string().empty(), io_error, where, ": the prompt is empty");
    p.prompt.messages.push_back({"user", prompt->as_string()});
  } else {
    p.prompt.messages = detail::message_list(prompt ? *prompt : *messages, where, prompt ? "prompt" : "messages");
    if (!p.prompt.messages.empty() && p.prompt.messages.back().role == "assistant") {
      LOOM_CHECK(!answer, io_error, where, ": the conversation ends with an answer and has an \"answer\" field too");
      p.answer = p.prompt.messages.back().content;
      p.prompt.messages.pop_back();
    }
  }
  if (answer) {
    LOOM_CHECK(answer->is_string(), io_error, where, ": \"answer\" must be a string, got ", answer->type_phrase());
    p.answer = answer->as_string();
  }
  Conversation probe = with_answer(p.prompt, "x");
  const std::string problem = align::detail::conversation_problem(probe);
  LOOM_CHECK(problem.empty(), io_error, where, ": the prompt does not end with a user turn: ", problem);
  return p;
}

/// Reads a JSONL file of prompts (blank lines skipped); throws io_error "FILE:LINE: ..." for a bad
/// line and "FILE: no prompts" for an empty set.
inline std::vector<PromptItem> read_prompts(const std::string& path) {
  return read_jsonl<PromptItem>(path, "prompts", parse_prompt);
}

/// The exact-answer reward: 1 when the answer equals the reference (white space at either end
/// aside), else 0.
inline double exact_reward(const std::string& completion, const std::string& answer) {
  return trim(completion) == trim(answer) ? 1.0 : 0.0;
}

/// The format reward, for partial credit: 1 for the exact answer, 0.1 for a wrong answer in the
/// reference's form (as many characters, each a digit where the reference has a digit), else 0.
/// A small bonus for the form gives a signal while no answer is right yet (nanochat and
/// DeepSeek-R1 reward the format too).
inline double format_reward(const std::string& completion, const std::string& answer) {
  const std::string c = trim(completion), a = trim(answer);
  if (c == a) return 1.0;
  if (c.size() != a.size() || c.empty()) return 0.0;
  for (size_t i = 0; i < c.size(); ++i) {
    const bool da = a[i] >= '0' && a[i] <= '9', dc = c[i] >= '0' && c[i] <= '9';
    if (da != dc || (!da && a[i] != c[i])) return 0.0;
  }
  return 0.1;
}

/// The seed of sample `sample` of prompt `prompt` at step `step` of a run seeded with `seed`.
inline uint64_t sample_seed(uint64_t seed, int64_t step, int64_t prompt, int64_t sample) {
  uint64_t h = mix64(seed);
  for (int64_t v : {step, prompt, sample}) h = mix64(h ^ uint64_t(v));
  return h;
}

/// Advantages of one batch of groups and how many groups carried no signal.
struct GroupAdvantages {
  std::vector<double> advantages;  ///< r_i - mean of its group (÷ its std when asked)
  double zero_std_share = 0;       ///< share of groups whose rewards were all equal (advantages 0)
};

/// GRPO advantages for rewards laid out group after group (G each): r - group mean, divided by
/// (group std + 1e-4) when scale_std (see the file comment).
inline GroupAdvantages group_advantages(const std::vector<double>& rewards, int64_t G, bool scale_std = false) {
  LOOM_CHECK(G >= 1 && !rewards.empty() && rewards.size() % size_t(G) == 0, value_error, "group_advantages: ",
             rewards.size(), " rewards do not split into groups of ", G);
  GroupAdvantages out;
  out.advantages.resize(rewards.size());
  const size_t groups = rewards.size() / size_t(G);
  int64_t flat = 0;
  for (size_t g = 0; g < groups; ++g) {
    const double* r = rewards.data() + g * size_t(G);
    double m = 0, v = 0;
    for (int64_t i = 0; i < G; ++i) m += r[i];
    m /= double(G);
    for (int64_t i = 0; i < G; ++i) v += (r[i] - m) * (r[i] - m);
    const double sd = G > 1 ? std::sqrt(v / double(G - 1)) : 0.0;  // the sample std, as torch.std
    bool all_equal = true;
    for (int64_t i = 0; i < G; ++i) all_equal = all_equal && r[i] == r[0];
    flat += all_equal;
    for (int64_t i = 0; i < G; ++i)
      out.advantages[g * size_t(G) + size_t(i)] = all_equal ? 0.0 : scale_std ? (r[i] - m) / (sd + 1e-4) : r[i] - m;
  }
  out.zero_std_share = double(flat) / double(groups);
  return out;
}

/// The policy loss of one batch of sampled answers and what to log.
template <class T = float>
struct PolicyLossTerms {
  Tensor<T> loss;        ///< scalar (with a graph to the policy's log-probabilities)
  double kl = 0;             ///< mean k3 estimate of KL(π‖π_ref) per answer token (0 without a reference)
  double clip_fraction = 0;  ///< share of answer tokens whose ratio was clipped
};

/// The clipped, token-level policy-gradient loss of the file comment. logp (B, T): the policy's
/// log-probabilities of the sampled tokens (with a graph); old_logp, ref_logp (B, T): those of
/// the policy that sampled and of the reference (constants; ref_logp undefined or kl_coef = 0:
/// no KL term); mask (B, T): 1 on answer tokens; advantages (B): one per answer.
template <class T>
PolicyLossTerms<T> policy_loss(const Tensor<T>& logp, const Tensor<T>& old_logp,
                                   const Tensor<T>& ref_logp, const Tensor<T>& mask,
                                   const std::vector<double>& advantages, double clip = 0.2, double kl_coef = 0.0) {
  LOOM_CHECK(logp.dim() == 2 && old_logp.shape() == logp.shape() && mask.shape() == logp.shape() &&
                 int64_t(advantages.size()) == logp.size(0),
             shape_error, "policy_loss: logp ", logp.shape(), ", old_logp ", old_logp.shape(), ", mask ", mask.shape(),
             " and ", advantages.size(), " advantages do not fit together");
  LOOM_CHECK(clip > 0 && clip < 1, value_error, "policy_loss: clip must lie in (0, 1), got ", clip);
  LOOM_CHECK(kl_coef >= 0, value_error, "policy_loss: the KL coefficient must be >= 0, got ", kl_coef);
  const Device d = logp.device();
  const int64_t B = logp.size(0);
  const Tensor<T> m = mask.detach().to(d);
  Tensor<T> adv = Tensor<T>::empty({B, 1});                              // (B, 1)
  for (int64_t b = 0; b < B; ++b) adv.data()[b] = T(advantages[size_t(b)]);
  adv = adv.to(d);
  const Tensor<T> mc = m.to(Device::cpu()).contiguous();
  double n = 0;
  for (int64_t i = 0; i < mc.numel(); ++i) n += mc.data()[i];
  LOOM_CHECK(n > 0, value_error, "policy_loss: no answer token in the batch");
  const Tensor<T> ratio = exp(logp - old_logp.detach().to(d));              // (B, T)
  const Tensor<T> clipped = minimum(maximum(ratio, full<T>({1}, 1 - clip, d)),
                                        full<T>({1}, 1 + clip, d));
  const Tensor<T> surrogate = minimum(ratio * adv, clipped * adv);           // (B, T)
  PolicyLossTerms<T> out;
  out.loss = -sum(surrogate * m) / T(n);
  if (ref_logp.defined() && kl_coef > 0) {
    const Tensor<T> diff = ref_logp.detach().to(d) - logp;                  // log π_ref / π
    const Tensor<T> k3 = exp(diff) - diff - T(1);                            // (B, T), >= 0
    const Tensor<T> kl = sum(k3 * m) / T(n);
    out.kl = double(kl.detach().item());
    out.loss = out.loss + kl * T(kl_coef);
  } else if (ref_logp.defined()) {
    NoGradGuard no_grad;
    const Tensor<T> diff = ref_logp.detach().to(d) - logp.detach();
    out.kl = double((sum((exp(diff) - diff - T(1)) * m) / T(n)).item());
  }
  const Tensor<T> r = ratio.detach().to(Device::cpu()).contiguous();
  double clipped_n = 0;
  for (int64_t i = 0; i < r.numel(); ++i)
    clipped_n += mc.data()[i] > 0 && (r.data()[i] < 1 - clip || r.data()[i] > 1 + clip);
  out.clip_fraction = clipped_n / n;
  return out;
}

/// The unbiased pass@k estimate from n samples of which c were right (Chen et al. 2021):
/// 1 - C(n - c, k) / C(n, k), the chance that k of the n, drawn without replacement, hold one right.
inline double pass_at_k(int64_t n, int64_t c, int64_t k) {
  LOOM_CHECK(n >= 1 && c >= 0 && c <= n && k >= 1 && k <= n, value_error, "pass_at_k: need 0 <= c <= n and 1 <= k <= n, "
             "got n ", n, ", c ", c, ", k ", k);
  if (n - c < k) return 1.0;
  double miss = 1.0;  // C(n - c, k) / C(n, k) as a product
  for (int64_t i = 0; i < k; ++i) miss *= double(n - c - i) / double(n - i);
  return 1.0 - miss;
}

/// Sampled answers to prompts: G per prompt, as token ids and text.
struct SampledAnswers {
  std::vector<std::vector<uint32_t>> prompt_ids;  ///< the rendered prompt of each prompt
  std::vector<std::vector<uint32_t>> ids;         ///< answer tokens, prompt-major (prompt i, sample j at i * G + j), <|end|> kept when sampled
  std::vector<std::string> text;                  ///< the answers decoded, without <|end|>
  int64_t tokens = 0;                             ///< answer tokens in all
};

/// G answers to each prompt, sampled in batches of up to `batch` rows, each row seeded by
/// sample_seed(seed, step, prompt_index[i], j) (prompt_index: the prompts' indices in their data
/// set, so a prompt's samples do not depend on its neighbours). An answer ends at <|end|> or after
/// max_tokens tokens.
inline SampledAnswers sample_answers(nn::CausalLM& model, const ChatTemplate& chat, const std::vector<PromptItem>& prompts,
                                     const std::vector<int64_t>& prompt_index, int64_t G, int64_t max_tokens,
                                     const train::SamplingOptions& opt, uint64_t seed, int64_t step,
                                     int64_t batch = 64) {
  LOOM_CHECK(prompts.size() == prompt_index.size(), value_error, "sample_answers: one index per prompt");
  LOOM_CHECK(G >= 1 && batch >= 1, value_error, "sample_answers: G and batch must be positive");
  const int64_t room = model.block_size() - max_tokens;
  LOOM_CHECK(room > 1, value_error, "answers of ", max_tokens, " tokens leave no room for the prompt in a context of ",
             model.block_size());
  SampledAnswers out;
  std::vector<std::vector<int64_t>> rows;
  std::vector<Generator> gens;
  for (size_t i = 0; i < prompts.size(); ++i) {
    out.prompt_ids.push_back(chat.render_prompt(prompts[i].prompt, room));
    for (int64_t j = 0; j < G; ++j) {
      rows.emplace_back(out.prompt_ids.back().begin(), out.prompt_ids.back().end());
      gens.emplace_back(sample_seed(seed, step, prompt_index[i], j));
    }
  }
  auto stop = [&](int64_t id) { return chat.is_end(uint32_t(id)); };
  for (size_t r = 0; r < rows.size(); r += size_t(batch)) {
    const size_t e = std::min(rows.size(), r + size_t(batch));
    std::vector<std::vector<int64_t>> chunk(rows.begin() + long(r), rows.begin() + long(e));
    std::vector<Generator> g(gens.begin() + long(r), gens.begin() + long(e));
    for (const std::vector<int64_t>& a : train::generate_batch(model, chunk, max_tokens, opt, g, stop)) {
      std::vector<uint32_t> ids(a.begin(), a.end()), shown;
      for (uint32_t id : ids)
        if (!chat.is_end(id)) shown.push_back(id);
      out.tokens += int64_t(ids.size());
      out.text.push_back(chat.tokenizer().decode(shown));
      out.ids.push_back(std::move(ids));
    }
  }
  return out;
}

/// pass@1 and pass@k of sampled answers on prompts with reference answers.
struct PassRates {
  double pass_at_1 = 0;  ///< mean over prompts of the share of right samples (the unbiased pass@1)
  double pass_at_k = 0;  ///< mean over prompts of pass_at_k(k, right, k): at least one of k right
  int64_t k = 0;         ///< samples per prompt
  int64_t prompts = 0;   ///< prompts scored
};

/// Samples k answers to every prompt (seeded by sample_seed(seed, -1, i, j): the same samples for
/// the same model) and scores them by exact match with the reference; throws value_error for a
/// prompt without a reference answer.
inline PassRates pass_rates(nn::CausalLM& model, const ChatTemplate& chat, const std::vector<PromptItem>& prompts, int64_t k,
                            int64_t max_tokens, const train::SamplingOptions& opt, uint64_t seed, int64_t batch = 64) {
  LOOM_CHECK(k >= 1 && !prompts.empty(), value_error, "pass_rates: need k >= 1 and at least one prompt");
  std::vector<int64_t> index(prompts.size());
  for (size_t i = 0; i < prompts.size(); ++i) {
    LOOM_CHECK(!prompts[i].answer.empty(), value_error, "pass_rates: prompt ", i, " has no reference answer");
    index[i] = int64_t(i);
  }
  const SampledAnswers s = sample_answers(model, chat, prompts, index, k, max_tokens, opt, seed, -1, batch);
  PassRates r;
  r.k = k, r.prompts = int64_t(prompts.size());
  for (size_t i = 0; i < prompts.size(); ++i) {
    int64_t right = 0;
    for (int64_t j = 0; j < k; ++j) right += exact_reward(s.text[i * size_t(k) + size_t(j)], prompts[i].answer) > 0;
    r.pass_at_1 += double(right) / double(k);
    r.pass_at_k += pass_at_k(k, right, k);
  }
  r.pass_at_1 /= double(prompts.size()), r.pass_at_k /= double(prompts.size());
  return r;
}

/// The training examples of sampled answers: prompt + answer ids, the answer carrying loss.
inline std::vector<SftExample> answer_examples(const SampledAnswers& s, int64_t G) {
  std::vector<SftExample> out;
  for (size_t k = 0; k < s.ids.size(); ++k) {
    const std::vector<uint32_t>& p = s.prompt_ids[k / size_t(G)];
    SftExample e;
    e.ids = p;
    e.ids.insert(e.ids.end(), s.ids[k].begin(), s.ids[k].end());
    e.mask.assign(p.size(), 0);
    e.mask.resize(e.ids.size(), 1);
    out.push_back(std::move(e));
  }
  return out;
}

}  // namespace loom::align
