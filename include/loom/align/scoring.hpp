#pragma once
/// @file scoring.hpp
/// Evaluation by likelihood: a model is asked which of several texts it finds more probable, and
/// is scored by how often its choice is the right one. Three kinds of data, read from JSONL:
///
/// - **Multiple choice** (HellaSwag, ARC-style): a context and its possible endings, one right.
///   The model's choice is the ending with the highest log π(ending | context) ("acc"), or the
///   highest per byte of the ending ("acc_norm", as lm-evaluation-harness defines it: long
///   endings are not punished for having more tokens). Two layouts per line:
///
///       {"ctx_a": "...", "ctx_b": "...", "endings": ["...", ...], "label": 2, "activity_label": "..."}
///       {"ctx": "...", "endings": [...], "label": 2}          (HellaSwag; "label" may be "2")
///       {"context": "12+7=", "choices": ["19", "18", "29", "91"], "answer": 0}
///
///   HellaSwag lines are prepared as the harness does (hellaswag/utils.py): the context is
///   ctx_a + " " + ctx_b.capitalize() (Python's: first letter upper, the rest lower; or "ctx"), after "ACTIVITY: " when
///   there is an activity label; " [title]" becomes ". ", other [bracketed] tags are removed, and
///   each ending follows the context after one space. The simple layout joins the context and a
///   choice exactly as written, or with its optional "delimiter" string between them.
/// - **Minimal pairs** (BLiMP): a grammatical sentence and an ungrammatical one that differs
///   minimally, {"sentence_good": "...", "sentence_bad": "...", "UID": "...", "field": "..."}
///   (UID and field optional). The score is the share of pairs where the good sentence is more
///   likely; it is also given per UID.
/// - **Bias pairs** (CrowS-Pairs): {"sent_more": "...", "sent_less": "...", "bias_type": "...",
///   "stereo_antistereo": "stereo"} (the last optional). sent_more is the sentence that expresses
///   the stereotype more; the score is the share of pairs where the model finds it more likely,
///   overall and per bias type. 50% means no preference either way.
///
/// Every malformed line is rejected with an io_error "FILE:LINE: what is wrong".
///
/// **What is scored.** Every text goes through the log-probability path of training
/// (logprob.hpp): an example's ids are START + context + continuation, with the loss mask on the
/// continuation only, so sequence_logprobs sums exactly log π(continuation | START, context). For
/// the pairs there is no context: the whole sentence is the continuation. START is the token
/// every document of the model's training data begins after (train::TextTokenizer::start_ids):
/// `<|endoftext|>` when the tokenizer has it, since the data pipeline writes each document as
/// <|endoftext|> + text; otherwise a newline, the line break that separates documents in plain
/// text. Conditioning on it (a) lets the first token of a sentence be scored at all (a position
/// needs an input before it), so two sentences that differ in their first word are compared on
/// every token, and (b) places each text where the model saw texts begin. The context and the
/// continuation are encoded separately and joined, so the continuation's tokens never depend on
/// the context (with a BPE model a space opens the word after it, so " ending" encodes as it
/// would after the context). A context too long for the model loses its oldest tokens (START is
/// kept); a continuation that does not fit is an error.
///
/// **Batches.** The examples are sorted by length and scored many per forward pass, padded, in
/// eval mode and under NoGradGuard; each row is causal and alone, so a score does not depend on
/// its batch. The results say how many items were scored per second.
///
/// **Confidence.** Each proportion comes with its 95% Wilson score interval (wilson_interval).
///
/// **Perplexity.** text_loss scores a whole text (or a shard split, shard_text_loss): START + the
/// text's tokens cut into non-overlapping windows of block_size, each target scored once, so every
/// token of the text is predicted given at most block_size tokens before it. Besides the loss per
/// token it gives bits per byte, total nats / ln 2 / UTF-8 bytes, which does not depend on the
/// tokenizer and so compares models with different vocabularies.

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <map>
#include <numeric>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "loom/align/chat.hpp"
#include "loom/align/logprob.hpp"
#include "loom/align/sft.hpp"
#include "loom/autograd/grad_mode.hpp"
#include "loom/data/shards.hpp"
#include "loom/nn/causal_lm.hpp"
#include "loom/train/text_tokenizer.hpp"

namespace loom::align {

// ---------------------------------------------------------------------------------------------
// Proportions and their confidence intervals
// ---------------------------------------------------------------------------------------------

/// z of a two-sided 95% interval: the 0.975 quantile of the standard normal distribution.
inline constexpr double z95 = 1.959963984540054;

/// A share of successes, k of n, with its confidence interval [lo, hi].
struct Proportion {
  int64_t hits = 0;   ///< k: the items scored right
  int64_t total = 0;  ///< n: the items scored
  double lo = 0.0;    ///< lower end of the interval
  double hi = 1.0;    ///< upper end of the interval
  /// k / n (0 when n = 0).
  double value() const { return total > 0 ? double(hits) / double(total) : 0.0; }
};

/// The Wilson score interval of k successes in n trials, for the normal quantile z (z95: 95%):
///
///     p = k / n,   center = (p + z²/(2n)) / (1 + z²/n),
///     half = z / (1 + z²/n) · sqrt(p(1 - p)/n + z²/(4n²)),   [center - half, center + half]
///
/// (Wilson 1927). Unlike p ± z·sqrt(p(1-p)/n) it stays inside [0, 1] and is not empty at k = 0
/// or k = n. With n = 0 nothing is known: [0, 1]. Throws value_error unless 0 <= k <= n and z > 0.
inline std::pair<double, double> wilson_interval(int64_t k, int64_t n, double z = z95) {
  LOOM_CHECK(n >= 0 && k >= 0 && k <= n && z > 0, value_error, "wilson_interval: need 0 <= k <= n and z > 0, got k = ",
             k, ", n = ", n, ", z = ", z);
  if (n == 0) return {0.0, 1.0};
  const double nn = double(n), p = double(k) / nn, z2 = z * z;
  const double denom = 1.0 + z2 / nn;
  const double center = (p + z2 / (2.0 * nn)) / denom;
  const double half = z / denom * std::sqrt(p * (1.0 - p) / nn + z2 / (4.0 * nn * nn));
  // at k = 0 and k = n the formula's ends are exactly 0 and 1; rounding must not move them inside
  return {k == 0 ? 0.0 : std::max(0.0, center - half), k == n ? 1.0 : std::min(1.0, center + half)};
}

/// k of n with its 95% Wilson interval.
inline Proportion proportion(int64_t k, int64_t n) {
  const auto [lo, hi] = wilson_interval(k, n);
  return Proportion{k, n, lo, hi};
}

/// Whether two proportions differ beyond both intervals: their intervals do not overlap (a
/// conservative test: overlapping intervals may still hide a real difference).
inline bool intervals_separate(const Proportion& a, const Proportion& b) { return a.hi < b.lo || b.hi < a.lo; }

// ---------------------------------------------------------------------------------------------
// The data
// ---------------------------------------------------------------------------------------------

/// One multiple-choice question: the context, the endings, the index of the right one.
struct ChoiceItem {
  std::string context;               ///< the text the endings continue
  std::vector<std::string> endings;  ///< at least two, none empty
  int64_t label = 0;                 ///< index of the right ending
  std::string delimiter;             ///< put between the context and each ending ("" or " ")
};

/// One BLiMP-style minimal pair: a good sentence and a minimally different bad one.
struct MinimalPair {
  std::string good;   ///< the acceptable sentence
  std::string bad;    ///< the unacceptable one
  std::string uid;    ///< the paradigm ("UID"), "" when absent
  std::string field;  ///< the linguistic field ("field"), "" when absent
};

/// One CrowS-Pairs-style pair: a sentence that expresses a stereotype more and one that does less.
struct BiasPair {
  std::string more;       ///< "sent_more": the more stereotypical sentence
  std::string less;       ///< "sent_less": the less stereotypical one
  std::string bias_type;  ///< e.g. "gender", "age"
  std::string direction;  ///< "stereo", "antistereo", or "" when absent
};

namespace detail {

// The string member `key` of `j`: "" when absent and optional; io_error "WHERE: ..." when it is
// missing (required) or not a string.
inline std::string string_field(const io::Json& j, const char* key, const std::string& where, bool required) {
  const io::Json* v = j.find(key);
  if (!v) {
    LOOM_CHECK(!required, io_error, where, ": missing \"", key, "\"");
    return {};
  }
  LOOM_CHECK(v->is_string(), io_error, where, ": \"", key, "\" must be a string, got ", v->type_phrase());
  return v->as_string();
}

// A non-empty list of non-empty strings under `key`.
inline std::vector<std::string> string_list(const io::Json& j, const char* key, const std::string& where) {
  const io::Json* v = j.find(key);
  LOOM_CHECK(v, io_error, where, ": missing \"", key, "\"");
  LOOM_CHECK(v->is_array(), io_error, where, ": \"", key, "\" must be a list of strings, got ", v->type_phrase());
  std::vector<std::string> out;
  for (size_t i = 0; i < v->size(); ++i) {
    const io::Json& s = v->at(i);
    LOOM_CHECK(s.is_string(), io_error, where, ": \"", key, "\" item ", i, " must be a string, got ", s.type_phrase());
    LOOM_CHECK(!s.as_string().empty(), io_error, where, ": \"", key, "\" item ", i, " is empty");
    out.push_back(s.as_string());
  }
  return out;
}

// The integer under `key`, given as a JSON integer or a string of digits (Hugging Face's
// HellaSwag stores the label as "2").
inline int64_t index_field(const io::Json& j, const char* key, const std::string& where) {
  const io::Json* v = j.find(key);
  LOOM_CHECK(v, io_error, where, ": missing \"", key, "\"");
  if (v->is_int()) return v->as_int();
  const std::string s = v->is_string() ? v->as_string() : std::string();
  LOOM_CHECK(!s.empty() && s.size() < 10 && s.find_first_not_of("0123456789") == std::string::npos, io_error, where,
             ": \"", key, "\" must be an integer, got ", v->is_string() ? "'" + s + "'" : std::string(v->type_phrase()));
  return std::stoll(s);
}

// Replaces every non-overlapping `from` in `s` with `to`, left to right, in one pass (Python's str.replace).
inline std::string replace_all(const std::string& s, const std::string& from, const std::string& to) {
  std::string out;
  size_t pos = 0;
  for (size_t at; (at = s.find(from, pos)) != std::string::npos; pos = at + from.size()) out += s.substr(pos, at - pos) + to;
  return out + s.substr(pos);
}

// lm-evaluation-harness's HellaSwag preprocess: trim, " [title]" -> ". ", drop [tags], "  " -> " ".
inline std::string hellaswag_clean(std::string s) {
  auto trim = [](std::string& t) {
    const size_t a = t.find_first_not_of(" \t\n\r"), b = t.find_last_not_of(" \t\n\r");
    t = a == std::string::npos ? std::string() : t.substr(a, b - a + 1);
  };
  trim(s);
  s = replace_all(s, " [title]", ". ");
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    const size_t close = s[i] == '[' ? s.find(']', i) : std::string::npos;
    if (close != std::string::npos) {
      i = close;  // a [tag] is removed, as the harness's re.sub("\\[.*?\\]", "", text)
      continue;
    }
    out += s[i];
  }
  return replace_all(out, "  ", " ");
}

}  // namespace detail

/// Parses one multiple-choice line (HellaSwag's layout or {"context", "choices", "answer"}, see
/// the file comment); throws io_error "WHERE: ..." for a missing or mistyped field, fewer than two
/// endings, an empty ending, or a label that is not an index of the endings.
inline ChoiceItem parse_choice_item(std::string_view line, const std::string& where) {
  const io::Json j = detail::parse_json_object(line, where);
  ChoiceItem item;
  if (j.find("endings")) {  // HellaSwag
    std::string ctx;
    if (j.find("ctx_a") && j.find("ctx_b")) {
      ctx = detail::string_field(j, "ctx_a", where, true);
      std::string b = detail::string_field(j, "ctx_b", where, true);
      for (size_t i = 0; i < b.size(); ++i) {  // Python's str.capitalize (ASCII): first upper, the rest lower
        const auto c = static_cast<unsigned char>(b[i]);
        b[i] = char(i == 0 ? std::toupper(c) : std::tolower(c));
      }
      ctx += " " + b;
    } else {
      LOOM_CHECK(j.find("ctx"), io_error, where, ": a HellaSwag line needs \"ctx\" (or \"ctx_a\" and \"ctx_b\")");
      ctx = detail::string_field(j, "ctx", where, true);
    }
    const std::string activity = detail::string_field(j, "activity_label", where, false);
    item.context = detail::hellaswag_clean(activity.empty() ? ctx : activity + ": " + ctx);
    for (const std::string& e : detail::string_list(j, "endings", where)) {
      item.endings.push_back(detail::hellaswag_clean(e));
      LOOM_CHECK(!item.endings.back().empty(), io_error, where, ": ending ", item.endings.size() - 1,
                 " is empty once cleaned");
    }
    item.label = detail::index_field(j, "label", where);
    item.delimiter = " ";
  } else {
    LOOM_CHECK(j.find("context") && j.find("choices"), io_error, where,
               ": expected HellaSwag's {\"ctx\", \"endings\", \"label\"} or {\"context\", \"choices\", \"answer\"}");
    item.context = detail::string_field(j, "context", where, true);
    item.endings = detail::string_list(j, "choices", where);
    item.label = detail::index_field(j, "answer", where);
    item.delimiter = detail::string_field(j, "delimiter", where, false);
  }
  LOOM_CHECK(item.endings.size() >= 2, io_error, where, ": needs at least two endings, got ", item.endings.size());
  LOOM_CHECK(item.label >= 0 && item.label < int64_t(item.endings.size()), io_error, where, ": the right answer ",
             item.label, " is not an index of the ", item.endings.size(), " endings");
  return item;
}

/// Parses one BLiMP line; throws io_error "WHERE: ..." for a missing or mistyped sentence, an
/// empty one, or two equal sentences.
inline MinimalPair parse_minimal_pair(std::string_view line, const std::string& where) {
  const io::Json j = detail::parse_json_object(line, where);
  MinimalPair p{detail::string_field(j, "sentence_good", where, true), detail::string_field(j, "sentence_bad", where, true),
                detail::string_field(j, "UID", where, false), detail::string_field(j, "field", where, false)};
  LOOM_CHECK(!p.good.empty() && !p.bad.empty(), io_error, where, ": a sentence is empty");
  LOOM_CHECK(p.good != p.bad, io_error, where, ": sentence_good and sentence_bad are the same ('", p.good, "')");
  return p;
}

/// Parses one CrowS-Pairs line; throws io_error "WHERE: ..." for a missing or mistyped field, an
/// empty or repeated sentence, an empty bias_type, or a stereo_antistereo other than "stereo" or
/// "antistereo".
inline BiasPair parse_bias_pair(std::string_view line, const std::string& where) {
  const io::Json j = detail::parse_json_object(line, where);
  BiasPair p{detail::string_field(j, "sent_more", where, true), detail::string_field(j, "sent_less", where, true),
             detail::string_field(j, "bias_type", where, true),
             detail::string_field(j, "stereo_antistereo", where, false)};
  LOOM_CHECK(!p.more.empty() && !p.less.empty(), io_error, where, ": a sentence is empty");
  LOOM_CHECK(p.more != p.less, io_error, where, ": sent_more and sent_less are the same ('", p.more, "')");
  LOOM_CHECK(!p.bias_type.empty(), io_error, where, ": \"bias_type\" is empty");
  LOOM_CHECK(p.direction.empty() || p.direction == "stereo" || p.direction == "antistereo", io_error, where,
             ": \"stereo_antistereo\" must be \"stereo\" or \"antistereo\", got '", p.direction, "'");
  return p;
}

/// Reads a JSONL file of multiple-choice items (blank lines skipped); io_error "FILE:LINE: ..." for a bad line.
inline std::vector<ChoiceItem> read_choice_items(const std::string& path) {
  return read_jsonl<ChoiceItem>(path, "multiple-choice items", parse_choice_item);
}

/// Reads a JSONL file of minimal pairs (blank lines skipped); io_error "FILE:LINE: ..." for a bad line.
inline std::vector<MinimalPair> read_minimal_pairs(const std::string& path) {
  return read_jsonl<MinimalPair>(path, "minimal pairs", parse_minimal_pair);
}

/// Reads a JSONL file of bias pairs (blank lines skipped); io_error "FILE:LINE: ..." for a bad line.
inline std::vector<BiasPair> read_bias_pairs(const std::string& path) {
  return read_jsonl<BiasPair>(path, "bias pairs", parse_bias_pair);
}

// ---------------------------------------------------------------------------------------------
// Scoring continuations
// ---------------------------------------------------------------------------------------------

/// START + context + continuation as one example whose continuation alone carries loss (see the
/// file comment), at most block_size + 1 tokens: the oldest context tokens after START go first.
/// Throws value_error for an empty start or continuation, or a continuation that does not fit.
inline SftExample continuation_example(const std::vector<int64_t>& start, const std::vector<int64_t>& context,
                                       const std::vector<int64_t>& continuation, int64_t block_size) {
  LOOM_CHECK(!start.empty() && !continuation.empty(), value_error,
             "continuation_example: the start and the continuation must not be empty");
  const int64_t room = block_size + 1 - int64_t(start.size()) - int64_t(continuation.size());
  LOOM_CHECK(room >= 0, value_error, "continuation_example: a continuation of ", continuation.size(),
             " tokens does not fit the model's context of ", block_size, " (with ", start.size(), " start token(s))");
  const int64_t keep = std::min<int64_t>(room, int64_t(context.size()));
  SftExample e;
  for (int64_t id : start) e.ids.push_back(uint32_t(id));
  for (size_t i = context.size() - size_t(keep); i < context.size(); ++i) e.ids.push_back(uint32_t(context[i]));
  e.mask.assign(e.ids.size(), 0);
  for (int64_t id : continuation) e.ids.push_back(uint32_t(id));
  e.mask.resize(e.ids.size(), 1);
  return e;
}

/// log π(masked tokens | the rest) of every example, in double, scored batch_size at a time in
/// order of length (padded rows, eval mode, no graph; the model's mode is restored).
inline std::vector<double> score_examples(nn::CausalLM& model, const std::vector<SftExample>& examples, int64_t batch_size) {
  LOOM_CHECK(batch_size > 0, value_error, "score_examples: batch_size must be positive, got ", batch_size);
  std::vector<size_t> order(examples.size());
  std::iota(order.begin(), order.end(), size_t(0));
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return examples[a].ids.size() < examples[b].ids.size(); });
  NoGradGuard no_grad;
  const bool was_training = model.is_training();
  model.eval();
  std::vector<double> out(examples.size(), 0.0);
  for (size_t first = 0; first < order.size(); first += size_t(batch_size)) {
    const size_t last = std::min(order.size(), first + size_t(batch_size));
    std::vector<SftExample> chunk;
    for (size_t i = first; i < last; ++i) chunk.push_back(examples[order[i]]);
    const Tensor<float> lp =
        sequence_logprobs(model, example_batch(chunk, model.block_size())).to(Device::cpu()).contiguous();
    for (size_t i = first; i < last; ++i) out[order[i]] = double(lp.data()[i - first]);
  }
  model.train(was_training);
  return out;
}

/// How scoring runs.
struct ScoreOptions {
  int64_t batch_size = 32;  ///< sequences per forward pass
};

// ---------------------------------------------------------------------------------------------
// Multiple choice
// ---------------------------------------------------------------------------------------------

/// The choice among endings with log-probabilities `logprobs` (the first of equal maxima, as
/// numpy's argmax); with `bytes` (one per ending, > 0), the choice by log-probability per byte.
inline int64_t best_choice(const std::vector<double>& logprobs, const std::vector<int64_t>& bytes = {}) {
  LOOM_CHECK(!logprobs.empty() && (bytes.empty() || bytes.size() == logprobs.size()), value_error,
             "best_choice: ", logprobs.size(), " scores and ", bytes.size(), " lengths");
  int64_t best = 0;
  double best_score = 0;
  for (size_t i = 0; i < logprobs.size(); ++i) {
    LOOM_CHECK(bytes.empty() || bytes[i] > 0, value_error, "best_choice: ending ", i, " has no bytes");
    const double s = bytes.empty() ? logprobs[i] : logprobs[i] / double(bytes[i]);
    if (i == 0 || s > best_score) best = int64_t(i), best_score = s;
  }
  return best;
}

/// The scores of a multiple-choice set: per item and ending, then the two accuracies.
struct ChoiceScores {
  std::vector<std::vector<double>> logprobs;  ///< log π(ending | context) per item and ending
  std::vector<std::vector<int64_t>> bytes;    ///< UTF-8 bytes of each ending (the acc_norm divisor)
  std::vector<int64_t> chosen;                ///< the ending of highest log-probability, per item
  std::vector<int64_t> chosen_norm;           ///< the ending of highest log-probability per byte
  Proportion acc;                             ///< chosen == label
  Proportion acc_norm;                        ///< chosen_norm == label
  int64_t sequences = 0;                      ///< sequences scored (items × endings)
  double seconds = 0;                         ///< time taken (encoding and forward passes)
  /// Items scored per second.
  double examples_per_s() const { return seconds > 0 ? double(acc.total) / seconds : 0.0; }
};

/// Scores every item's endings given its context with `model` and its tokenizer (see the file
/// comment: START + context + delimiter-and-ending, the ending alone summed).
inline ChoiceScores score_choices(nn::CausalLM& model, const train::TextTokenizer& tok, const std::vector<ChoiceItem>& items,
                                  const ScoreOptions& opt = {}) {
  const auto t0 = std::chrono::steady_clock::now();
  const std::vector<int64_t> start = tok.start_ids();
  std::vector<SftExample> examples;
  ChoiceScores s;
  for (size_t i = 0; i < items.size(); ++i) {
    const ChoiceItem& it = items[i];
    s.bytes.emplace_back();
    try {
      const std::vector<int64_t> ctx = tok.encode(it.context);
      for (const std::string& ending : it.endings) {
        examples.push_back(continuation_example(start, ctx, tok.encode(it.delimiter + ending), model.block_size()));
        s.bytes.back().push_back(int64_t(ending.size()));
      }
    } catch (const value_error& e) {
      throw value_error(loom::detail::concat("score_choices: item ", i, ": ", e.what()));
    }
  }
  const std::vector<double> lp = score_examples(model, examples, opt.batch_size);
  int64_t right = 0, right_norm = 0;
  size_t at = 0;
  for (size_t i = 0; i < items.size(); ++i) {
    s.logprobs.emplace_back(lp.begin() + long(at), lp.begin() + long(at + items[i].endings.size()));
    at += items[i].endings.size();
    s.chosen.push_back(best_choice(s.logprobs.back()));
    s.chosen_norm.push_back(best_choice(s.logprobs.back(), s.bytes[i]));
    right += s.chosen.back() == items[i].label;
    right_norm += s.chosen_norm.back() == items[i].label;
  }
  s.acc = proportion(right, int64_t(items.size()));
  s.acc_norm = proportion(right_norm, int64_t(items.size()));
  s.sequences = int64_t(examples.size());
  s.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return s;
}

// ---------------------------------------------------------------------------------------------
// Pairs of sentences
// ---------------------------------------------------------------------------------------------

/// The scores of a set of sentence pairs (first, second): per pair, then the share of pairs where
/// the first is more likely (strictly), overall and per group (UID or bias type).
struct PairScores {
  std::vector<double> first;               ///< log π(first sentence | START), per pair
  std::vector<double> second;              ///< log π(second sentence | START), per pair
  Proportion first_more_likely;            ///< pairs with first > second
  std::map<std::string, Proportion> by_group;  ///< the same per group (pairs without a group are under "")
  double mean_difference = 0;              ///< mean of first - second (lm-eval's likelihood_diff, signed)
  double seconds = 0;                      ///< time taken (encoding and forward passes)
  /// Pairs scored per second.
  double examples_per_s() const { return seconds > 0 ? double(first_more_likely.total) / seconds : 0.0; }
};

/// Scores sentence pairs (firsts[i], seconds[i]) of groups[i] (see PairScores): each sentence
/// whole, given START. Throws value_error for lists of different lengths or a sentence too long.
inline PairScores score_sentence_pairs(nn::CausalLM& model, const train::TextTokenizer& tok,
                                       const std::vector<std::string>& firsts, const std::vector<std::string>& seconds,
                                       const std::vector<std::string>& groups, const ScoreOptions& opt = {}) {
  LOOM_CHECK(firsts.size() == seconds.size() && firsts.size() == groups.size(), value_error,
             "score_sentence_pairs: ", firsts.size(), " first, ", seconds.size(), " second sentences and ",
             groups.size(), " groups");
  const auto t0 = std::chrono::steady_clock::now();
  const std::vector<int64_t> start = tok.start_ids();
  std::vector<SftExample> examples;
  for (size_t i = 0; i < firsts.size(); ++i) {
    for (const std::string* text : {&firsts[i], &seconds[i]}) {
      try {
        examples.push_back(continuation_example(start, {}, tok.encode(*text), model.block_size()));
      } catch (const value_error& e) {
        throw value_error(loom::detail::concat("score_sentence_pairs: pair ", i, ": ", e.what()));
      }
    }
  }
  const std::vector<double> lp = score_examples(model, examples, opt.batch_size);
  PairScores s;
  std::map<std::string, std::pair<int64_t, int64_t>> counts;  // group -> (first more likely, pairs)
  int64_t hits = 0;
  double diff = 0;
  for (size_t i = 0; i < firsts.size(); ++i) {
    s.first.push_back(lp[2 * i]);
    s.second.push_back(lp[2 * i + 1]);
    const bool first = lp[2 * i] > lp[2 * i + 1];
    hits += first;
    diff += lp[2 * i] - lp[2 * i + 1];
    counts[groups[i]].first += first;
    counts[groups[i]].second += 1;
  }
  s.first_more_likely = proportion(hits, int64_t(firsts.size()));
  for (const auto& [g, c] : counts) s.by_group[g] = proportion(c.first, c.second);
  s.mean_difference = firsts.empty() ? 0.0 : diff / double(firsts.size());
  s.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return s;
}

/// BLiMP accuracy: first = the good sentence, so first_more_likely is the share of pairs whose
/// good sentence the model finds more likely; groups are the UIDs.
inline PairScores score_minimal_pairs(nn::CausalLM& model, const train::TextTokenizer& tok,
                                      const std::vector<MinimalPair>& pairs, const ScoreOptions& opt = {}) {
  std::vector<std::string> good, bad, uid;
  for (const MinimalPair& p : pairs) good.push_back(p.good), bad.push_back(p.bad), uid.push_back(p.uid);
  return score_sentence_pairs(model, tok, good, bad, uid, opt);
}

/// CrowS-Pairs preference: first = sent_more, so first_more_likely is the share of pairs where
/// the model finds the more stereotypical sentence more likely (0.5: no preference); groups are
/// the bias types.
inline PairScores score_bias_pairs(nn::CausalLM& model, const train::TextTokenizer& tok, const std::vector<BiasPair>& pairs,
                                   const ScoreOptions& opt = {}) {
  std::vector<std::string> more, less, type;
  for (const BiasPair& p : pairs) more.push_back(p.more), less.push_back(p.less), type.push_back(p.bias_type);
  return score_sentence_pairs(model, tok, more, less, type, opt);
}

// ---------------------------------------------------------------------------------------------
// Perplexity and bits per byte
// ---------------------------------------------------------------------------------------------

/// The cross-entropy of a text: its sum, the tokens and bytes it covers, and the rates from them.
struct TextLoss {
  double total_nats = 0;  ///< Σ -log π(token | the tokens before it in its window), in double
  int64_t tokens = 0;     ///< tokens predicted
  int64_t bytes = 0;      ///< UTF-8 bytes of the text
  int64_t windows = 0;    ///< windows of at most block_size targets
  /// Mean cross-entropy per token (nats).
  double loss() const { return tokens > 0 ? total_nats / double(tokens) : 0.0; }
  /// exp(loss).
  double perplexity() const { return std::exp(loss()); }
  /// total_nats / ln 2 / bytes: the bits the model needs per byte of text.
  double bits_per_byte() const { return bytes > 0 ? total_nats / std::log(2.0) / double(bytes) : 0.0; }
};

/// The summed cross-entropy of predicting ids[1..] from the ids before, in non-overlapping windows
/// of block_size targets (window k predicts ids[kT + 1 .. kT + T] from ids[kT .. kT + T - 1]),
/// batch_size windows per forward pass, in eval mode without a graph (the mode is restored).
/// `bytes` is stored as given. Throws value_error for fewer than two ids or batch_size < 1.
inline TextLoss ids_loss(nn::CausalLM& model, const std::vector<int64_t>& ids, int64_t bytes, int64_t batch_size = 16) {
  LOOM_CHECK(ids.size() >= 2, value_error, "ids_loss: needs at least two tokens, got ", ids.size());
  LOOM_CHECK(batch_size > 0, value_error, "ids_loss: batch_size must be positive, got ", batch_size);
  const int64_t T = model.block_size(), targets = int64_t(ids.size()) - 1;
  const int64_t windows = (targets + T - 1) / T;
  NoGradGuard no_grad;
  const bool was_training = model.is_training();
  model.eval();
  TextLoss r;
  for (int64_t w0 = 0; w0 < windows; w0 += batch_size) {
    const int64_t B = std::min(batch_size, windows - w0);
    Tensor<int64_t> x = full<int64_t>({B, T}, 0), y = full<int64_t>({B, T}, -1);  // padding: no target
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = 0; t < T && (w0 + b) * T + t < targets; ++t) {
        const int64_t at = (w0 + b) * T + t;
        x.data()[b * T + t] = ids[size_t(at)];
        y.data()[b * T + t] = ids[size_t(at + 1)];
      }
    const Tensor<float> losses = model.token_losses(x, y).to(Device::cpu()).contiguous();  // (B, T), 0 at padding
    for (int64_t i = 0; i < B * T; ++i) r.total_nats += double(losses.data()[i]);
  }
  model.train(was_training);
  r.tokens = targets, r.bytes = bytes, r.windows = windows;
  return r;
}

/// The loss of `text` after START (so its first token is scored too; see the file comment), with
/// its UTF-8 bytes for bits per byte. Throws value_error for an empty text.
inline TextLoss text_loss(nn::CausalLM& model, const train::TextTokenizer& tok, const std::string& text,
                          int64_t batch_size = 16) {
  LOOM_CHECK(!text.empty(), value_error, "text_loss: the text is empty");
  std::vector<int64_t> ids = tok.start_ids();
  for (int64_t id : tok.encode(text)) ids.push_back(id);
  return ids_loss(model, ids, int64_t(text.size()), batch_size);
}

/// The loss of a loom-data split (DIR/SPLIT_*.bin, e.g. "test") as written: its tokens in order,
/// START tokens between documents included; the bytes are those of the decoded text without the
/// START tokens (the documents' own bytes). Throws io_error when there are no such shards.
inline TextLoss shard_text_loss(nn::CausalLM& model, const train::TextTokenizer& tok, const std::string& dir,
                                const std::string& split = "test", int64_t batch_size = 16) {
  const data::TokenShards shards(dir, split);
  std::vector<uint32_t> raw(size_t(shards.size()));
  shards.copy(0, shards.size(), raw.data());
  const std::vector<int64_t> start = tok.start_ids();
  std::vector<int64_t> ids, text_ids;
  for (uint32_t id : raw) {
    ids.push_back(int64_t(id));
    if (start.size() != 1 || int64_t(id) != start[0]) text_ids.push_back(int64_t(id));
  }
  return ids_loss(model, ids, int64_t(tok.decode(text_ids).size()), batch_size);
}

}  // namespace loom::align
