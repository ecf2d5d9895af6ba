// loom-eval: how well a fine-tuned model answers held-out conversations.
//
//   loom-eval --ckpt DIR/ckpt.safetensors --data test.jsonl [--max-answer N] [--limit N] [--show N]
//             [--samples K --temperature X --seed N]
//
// Reports the masked loss (cross-entropy per assistant token, as loom-finetune trains it) and the
// exact match of greedy answers: the model's reply to each conversation without its last turn,
// compared with that turn (white space at either end aside). --show N prints the first N answers.
// --samples K also samples K answers per conversation (temperature 1 unless --temperature) and
// reports pass@1 (the share of right samples) and pass@K (at least one of the K right).
// The last line on stdout: eval loss=X exact_match=Y n=Z [pass_at_1=P pass_at_k=Q k=K]
//
//   loom-eval --ckpt FILE --task mc|pairs|bias --data FILE.jsonl [--limit N] [--batch-size N]
//
// --task scores by likelihood instead (loom/align/scoring.hpp), with the checkpoint's own
// tokenizer: mc reads multiple-choice items (HellaSwag's layout or {"context", "choices",
// "answer"}) and reports acc and acc_norm; pairs reads BLiMP minimal pairs and reports the share
// whose good sentence is more likely (per UID on the lines before); bias reads CrowS-Pairs and
// reports pct_stereotype, the share whose sent_more is more likely (per bias type before). Each
// score comes with its 95% Wilson interval (_lo, _hi). The last line on stdout:
//   eval task=mc acc=X acc_lo=L acc_hi=H acc_norm=Y acc_norm_lo=L acc_norm_hi=H n=N examples_per_s=E
//   eval task=pairs acc=X acc_lo=L acc_hi=H n=N examples_per_s=E
//   eval task=bias pct_stereotype=X pct_stereotype_lo=L pct_stereotype_hi=H n=N examples_per_s=E
//
//   loom-eval --ckpt FILE --text FILE | --shards DIR [--batch-size N]
//
// --text scores a text file, --shards the "test" split of a loom-data folder (align::text_loss,
// shard_text_loss: non-overlapping windows of the model's context). The last line on stdout:
//   eval task=ppl loss=X ppl=P bits_per_byte=B tokens=N bytes=M
//
//   loom-eval --ckpt A [--ckpt B ...] --card DIR --sets DIR [--text FILE] [--chat FILE.jsonl] [--prompt TEXT ...]
//
// A report card: DIR/report.json and DIR/report.md with, per checkpoint, its config, parameter
// count and step (when recorded), the text's loss and bits per byte (with --text), the score of
// each set in --sets that exists (arith_mc.jsonl, grammar_pairs.jsonl, counterfactual_pairs.jsonl,
// as scripts/make_eval_sets.py names them) with its 95% interval, the bias preference per type,
// the exact match of greedy answers to --chat's held-out conversations (up to 8 tokens, through
// the chat template; a model without chat tokens gets them added, untrained), and greedy samples
// of the --prompt texts (default "The", "Once upon a time", "1+1="). With two
// or more checkpoints (the stages of one model, in order), a side-by-side table marks each score
// whose interval does not overlap the previous checkpoint's ("separate": true in the JSON's
// comparison rows, which go from each checkpoint to the next; "**differs**" in the table).
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <loom/align/grpo.hpp>
#include <loom/align/scoring.hpp>
#include <loom/io/cli.hpp>
#include <loom/loom.hpp>

using namespace loom;

namespace {

// "NAME=X NAME_lo=L NAME_hi=H" of a proportion.
std::string score_fields(const char* name, const align::Proportion& p) {
  char buf[160];
  std::snprintf(buf, sizeof buf, "%s=%.4f %s_lo=%.4f %s_hi=%.4f", name, p.value(), name, p.lo, name, p.hi);
  return buf;
}

// A checkpoint's model and tokenizer (the checkpoint's own, or the BPE spec given).
struct LoadedModel {
  io::Checkpoint ckpt;
  std::unique_ptr<nn::CausalLM> model;
  train::TextTokenizer tok;
};

// Loads `ckpt`; throws value_error when the tokenizer has more ids than the model.
LoadedModel load_model(const std::string& ckpt, const std::string& tokenizer_spec) {
  io::Checkpoint c = io::load_checkpoint(ckpt);
  std::unique_ptr<nn::CausalLM> model = train::model_from_checkpoint(c);
  train::TextTokenizer tok = tokenizer_spec.empty()
                                 ? train::TextTokenizer::from_checkpoint(c)
                                 : train::TextTokenizer::bpe(tokenizer::load_spec(tokenizer_spec), tokenizer_spec);
  LOOM_CHECK(tok.vocab_size() <= model->vocab_size(), value_error, ckpt, ": the tokenizer has ", tok.vocab_size(),
             " ids but the model only ", model->vocab_size(), ": they do not belong together");
  return LoadedModel{std::move(c), std::move(model), std::move(tok)};
}

// Perplexity and bits per byte of a text file or a shard folder's test split; returns the exit status.
int run_ppl(const std::string& ckpt, const std::string& text, const std::string& shards,
            const std::string& tokenizer_spec, int64_t batch) {
  LoadedModel m = load_model(ckpt, tokenizer_spec);
  const align::TextLoss l = text.empty() ? align::shard_text_loss(*m.model, m.tok, shards, "test", batch)
                                         : align::text_loss(*m.model, m.tok, io::read_file(text), batch);
  std::printf("eval task=ppl loss=%.4f ppl=%.6g bits_per_byte=%.4f tokens=%lld bytes=%lld\n", l.loss(), l.perplexity(),
              l.bits_per_byte(), (long long)l.tokens, (long long)l.bytes);
  return 0;
}

// One row of a report card: a score's name and its proportion.
using ScoreRow = std::pair<std::string, align::Proportion>;

// The JSON of a proportion: value, lo, hi, hits, n.
io::Json proportion_json(const align::Proportion& p) {
  io::Json j = io::Json::object();
  j.set("value", p.value()), j.set("lo", p.lo), j.set("hi", p.hi), j.set("hits", p.hits), j.set("n", p.total);
  return j;
}

// "0.5000 [0.2000, 0.8000]" of a proportion.
std::string proportion_text(const align::Proportion& p) {
  char buf[96];
  std::snprintf(buf, sizeof buf, "%.4f [%.4f, %.4f]", p.value(), p.lo, p.hi);
  return buf;
}

// What the card says of one checkpoint: its JSON, its scores in order, its markdown section.
struct CardEntry {
  double text_bits_per_byte = -1;  ///< of --text, when given
  io::Json json;
  std::vector<ScoreRow> scores;
  std::string markdown;
};

// Scores checkpoint `ckpt` for the card (see the file comment).
CardEntry card_entry(const std::string& ckpt, const std::string& sets, const std::string& text, const std::string& chat,
                     const std::vector<std::string>& prompts, const std::string& tokenizer_spec, int64_t batch) {
  LoadedModel m = load_model(ckpt, tokenizer_spec);
  nn::CausalLM& model = *m.model;
  const align::ScoreOptions opt{batch};
  CardEntry e;
  e.json = io::Json::object();
  e.json.set("checkpoint", ckpt);
  e.json.set("config", train::config_json(model));
  e.json.set("parameters", model.num_parameters());
  std::string md = "## " + ckpt + "\n\n";
  md += "- config: " + train::config_summary(model) + "\n- parameters: " + std::to_string(model.num_parameters()) + "\n";
  for (const char* key : {"step", "tokens"})
    if (m.ckpt.has_meta(key)) {
      e.json.set(key, m.ckpt.meta(key));
      md += std::string("- ") + key + ": " + m.ckpt.meta(key) + "\n";
    }
  if (!text.empty()) {
    const align::TextLoss l = align::text_loss(model, m.tok, io::read_file(text), batch);
    io::Json t = io::Json::object();
    t.set("file", text), t.set("loss", l.loss()), t.set("ppl", l.perplexity()), t.set("bits_per_byte", l.bits_per_byte());
    t.set("tokens", l.tokens), t.set("bytes", l.bytes);
    e.json.set("text", t);
    char buf[200];
    std::snprintf(buf, sizeof buf, "- text %s: loss %.4f, ppl %.6g, bits per byte %.4f (%lld tokens, %lld bytes)\n",
                  text.c_str(), l.loss(), l.perplexity(), l.bits_per_byte(), (long long)l.tokens, (long long)l.bytes);
    md += buf;
  }
  const std::string mc = sets + "/arith_mc.jsonl", mp = sets + "/grammar_pairs.jsonl",
                    bp = sets + "/counterfactual_pairs.jsonl";
  std::vector<ScoreRow> by_type;
  if (std::filesystem::exists(mc)) {
    const align::ChoiceScores s = align::score_choices(model, m.tok, align::read_choice_items(mc), opt);
    e.scores.push_back({"mc acc", s.acc});
    e.scores.push_back({"mc acc_norm", s.acc_norm});
  }
  if (std::filesystem::exists(mp))
    e.scores.push_back({"pairs acc", align::score_minimal_pairs(model, m.tok, align::read_minimal_pairs(mp), opt).first_more_likely});
  if (std::filesystem::exists(bp)) {
    const align::PairScores s = align::score_bias_pairs(model, m.tok, align::read_bias_pairs(bp), opt);
    e.scores.push_back({"bias pct_stereotype", s.first_more_likely});
    for (const auto& [type, p] : s.by_group) by_type.push_back({"bias " + (type.empty() ? "(none)" : type), p});
  }
  if (!chat.empty()) {  // greedy answers to held-out conversations, through the chat template
    align::ChatModel cm = align::load_chat_model(ckpt, tokenizer_spec);
    const align::ExactMatch em = align::exact_match(*cm.model, cm.chat, align::read_conversations(chat), 8);
    e.scores.push_back({"chat exact_match", align::proportion(em.correct, em.total)});
  }
  io::Json scores = io::Json::object(), bias = io::Json::object();
  md += "\n| score | value [95% interval] | n |\n|---|---|---|\n";
  for (const auto& [name, p] : e.scores) {
    scores.set(name, proportion_json(p));
    md += "| " + name + " | " + proportion_text(p) + " | " + std::to_string(p.total) + " |\n";
  }
  for (const auto& [name, p] : by_type) {
    bias.set(name.substr(5), proportion_json(p));
    md += "| " + name + " | " + proportion_text(p) + " | " + std::to_string(p.total) + " |\n";
  }
  e.json.set("scores", scores);
  if (e.json.contains("text")) e.text_bits_per_byte = e.json.at("text").at("bits_per_byte").as_double();
  e.json.set("bias_by_type", bias);
  e.scores.insert(e.scores.end(), by_type.begin(), by_type.end());
  // greedy samples, all decoded together
  std::vector<std::vector<int64_t>> ids;
  for (const std::string& p : prompts) {
    ids.push_back(m.tok.start_ids());
    for (int64_t id : m.tok.encode(p)) ids.back().push_back(id);
  }
  std::vector<Generator> gens(prompts.size(), Generator(0));
  const auto out = train::generate_batch(model, ids, 32, train::SamplingOptions{0.0, 0, 1.0}, gens);
  io::Json samples = io::Json::array();
  md += "\nGreedy samples:\n\n";
  for (size_t i = 0; i < prompts.size(); ++i) {
    const std::string sample = prompts[i] + m.tok.decode(out[i]);
    samples.push_back(sample);
    md += "    " + align::detail::replace_all(sample, "\n", "\\n") + "\n";
  }
  e.json.set("samples", samples);
  e.markdown = md;
  return e;
}

// Writes DIR/report.json and DIR/report.md for `ckpts` (see the file comment); returns the exit status.
int run_card(const std::vector<std::string>& ckpts, const std::string& dir, const std::string& sets,
             const std::string& text, const std::string& chat, std::vector<std::string> prompts,
             const std::string& tokenizer_spec, int64_t batch) {
  LOOM_CHECK(!ckpts.empty(), usage_error, "--card needs at least one --ckpt");
  LOOM_CHECK(!sets.empty(), usage_error, "--card needs --sets DIR (the files of scripts/make_eval_sets.py)");
  if (prompts.empty()) prompts = {"The", "Once upon a time", "1+1="};
  std::vector<CardEntry> entries;
  for (const std::string& c : ckpts) entries.push_back(card_entry(c, sets, text, chat, prompts, tokenizer_spec, batch));
  io::Json report = io::Json::object(), list = io::Json::array();
  std::string md = "# Report card\n\n";
  for (const CardEntry& e : entries) list.push_back(e.json), md += e.markdown + "\n";
  report.set("checkpoints", list);
  if (entries.size() >= 2) {
    // One column per checkpoint; a cell is marked when its interval and the previous column's are apart.
    io::Json cmp = io::Json::array();
    md += "## Side by side\n\n";
    for (size_t i = 0; i < ckpts.size(); ++i) md += std::string(1, char('A' + i % 26)) + ": " + ckpts[i] + "\n";
    md += "\n**differs**: the 95% interval does not overlap the previous column's.\n\n| score |";
    for (size_t i = 0; i < ckpts.size(); ++i) md += " " + std::string(1, char('A' + i % 26)) + " |";
    md += "\n|---|";
    for (size_t i = 0; i < ckpts.size(); ++i) md += "---|";
    md += "\n";
    if (!text.empty()) {  // a measurement on one text: no interval, no mark
      md += "| text bits per byte |";
      for (const CardEntry& e : entries) {
        char buf[32];
        std::snprintf(buf, sizeof buf, " %.4f |", e.text_bits_per_byte);
        md += buf;
      }
      md += "\n";
    }
    for (const auto& [name, first] : entries[0].scores) {
      md += "| " + name + " | " + proportion_text(first) + " |";
      const align::Proportion* prev = &first;
      for (size_t i = 1; i < entries.size(); ++i) {
        auto it = std::find_if(entries[i].scores.begin(), entries[i].scores.end(),
                               [&](const ScoreRow& r) { return r.first == name; });
        if (it == entries[i].scores.end()) {
          md += " |";
          prev = nullptr;
          continue;
        }
        const bool separate = prev && align::intervals_separate(*prev, it->second);
        if (prev) {
          io::Json row = io::Json::object();
          row.set("score", name), row.set("from", ckpts[i - 1]), row.set("to", ckpts[i]);
          row.set("a", proportion_json(*prev)), row.set("b", proportion_json(it->second)), row.set("separate", separate);
          cmp.push_back(row);
        }
        md += " " + proportion_text(it->second) + (separate ? " **differs**" : "") + " |";
        prev = &it->second;
      }
      md += "\n";
    }
    report.set("comparison", cmp);
  }
  io::make_directories(dir);
  io::write_file_atomic(dir + "/report.json", report.dump(2) + "\n");
  io::write_file_atomic(dir + "/report.md", md);
  std::printf("wrote %s/report.json and %s/report.md\n", dir.c_str(), dir.c_str());
  return 0;
}

// Likelihood scoring of `data` as `task` (see the file comment); returns the exit status.
int run_task(const std::string& task, const std::string& ckpt, const std::string& data, const std::string& tokenizer_spec,
             int64_t limit, int64_t batch) {
  LOOM_CHECK(task == "mc" || task == "pairs" || task == "bias", usage_error, "--task must be mc, pairs or bias, got '",
             task, "'");
  LoadedModel m = load_model(ckpt, tokenizer_spec);
  nn::CausalLM& model = *m.model;
  const train::TextTokenizer& tok = m.tok;
  const align::ScoreOptions opt{batch};
  auto head = [&](auto v) {
    if (limit > 0 && size_t(limit) < v.size()) v.resize(size_t(limit));
    return v;
  };
  auto groups = [](const char* what, const std::map<std::string, align::Proportion>& by) {
    for (const auto& [g, p] : by)
      std::printf("%s %s: %.4f [%.4f, %.4f] n=%lld\n", what, g.empty() ? "(none)" : g.c_str(), p.value(), p.lo, p.hi,
                  (long long)p.total);
  };
  if (task == "mc") {
    const align::ChoiceScores s = align::score_choices(model, tok, head(align::read_choice_items(data)), opt);
    std::printf("eval task=mc %s %s n=%lld examples_per_s=%.1f\n", score_fields("acc", s.acc).c_str(),
                score_fields("acc_norm", s.acc_norm).c_str(), (long long)s.acc.total, s.examples_per_s());
  } else if (task == "pairs") {
    const align::PairScores s = align::score_minimal_pairs(model, tok, head(align::read_minimal_pairs(data)), opt);
    groups("uid", s.by_group);
    std::printf("eval task=pairs %s n=%lld examples_per_s=%.1f\n", score_fields("acc", s.first_more_likely).c_str(),
                (long long)s.first_more_likely.total, s.examples_per_s());
  } else {
    const align::PairScores s = align::score_bias_pairs(model, tok, head(align::read_bias_pairs(data)), opt);
    groups("bias_type", s.by_group);
    std::printf("eval task=bias %s n=%lld examples_per_s=%.1f\n",
                score_fields("pct_stereotype", s.first_more_likely).c_str(), (long long)s.first_more_likely.total,
                s.examples_per_s());
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    std::string ckpt, data, tokenizer_spec, task, text, shards, card, sets, chat;
    std::vector<std::string> ckpts, prompts;
    int64_t max_answer = 32, limit = 0, show = 0, batch = 16, threads = 0, samples = 0;
    double temperature = 1.0;
    uint64_t seed = 1337;
    io::OptionTable table;
    using io::store;
    table.values = {{"--card", store(card)},
                    {"--chat", store(chat)},
                    {"--sets", store(sets)},
                    {"--data", store(data)},
                    {"--task", store(task)},
                    {"--text", store(text)},
                    {"--shards", store(shards)},
                    {"--tokenizer", store(tokenizer_spec)},
                    {"--max-answer", store(max_answer)},
                    {"--limit", store(limit)},
                    {"--show", store(show)},
                    {"--batch-size", store(batch)},
                    {"--threads", store(threads)},
                    {"--samples", store(samples)},
                    {"--temperature", store(temperature)},
                    {"--seed", store(seed)}};
    table.values["--ckpt"] = [&](const std::string& v) { ckpt = v, ckpts.push_back(v); };  // repeatable (--card)
    table.values["--prompt"] = [&](const std::string& v) { prompts.push_back(v); };        // repeatable
    if (!io::parse_options(argc, argv, 1, table)) {
      std::cout << "usage: loom-eval --ckpt FILE --data FILE.jsonl [--max-answer N] [--limit N] [--show N]\n"
                   "                 [--batch-size N] [--threads N] [--tokenizer SPEC]\n"
                   "                 [--samples K] [--temperature X] [--seed N]   pass@1 and pass@K of K sampled answers\n"
                   "       loom-eval --ckpt FILE --task mc|pairs|bias --data FILE.jsonl [--limit N] [--batch-size N]\n"
                   "                 likelihood scores: multiple choice, minimal pairs, bias pairs\n"
                   "       loom-eval --ckpt FILE --text FILE | --shards DIR [--batch-size N]\n"
                   "                 loss, perplexity and bits per byte of a text or a loom-data test split\n"
                   "       loom-eval --ckpt A [--ckpt B ...] --card DIR --sets DIR [--text FILE] [--chat FILE.jsonl]\n"
                   "                 [--prompt TEXT ...]\n"
                   "                 a report card (DIR/report.json, DIR/report.md), side by side for several\n";
      return 0;
    }
    LOOM_CHECK(batch > 0, usage_error, "--batch-size must be positive");
    if (!card.empty()) return run_card(ckpts, card, sets, text, chat, prompts, tokenizer_spec, batch);
    LOOM_CHECK(ckpts.size() <= 1, usage_error, "several --ckpt only with --card DIR");
    if (!text.empty() || !shards.empty()) {
      LOOM_CHECK(!ckpt.empty() && (text.empty() || shards.empty()), usage_error,
                 "--text FILE or --shards DIR (one of them) needs --ckpt FILE (see --help)");
      return run_ppl(ckpt, text, shards, tokenizer_spec, batch);
    }
    LOOM_CHECK(!ckpt.empty() && !data.empty(), usage_error, "--ckpt FILE and --data FILE are required (see --help)");
    LOOM_CHECK(samples >= 0 && temperature > 0, usage_error, "--samples must be >= 0 and --temperature > 0");
    LOOM_CHECK(batch > 0, usage_error, "--batch-size must be positive");
    if (threads > 0) set_num_threads(int(threads));
    if (!task.empty()) return run_task(task, ckpt, data, tokenizer_spec, limit, batch);
    align::ChatModel cm = align::load_chat_model(ckpt, tokenizer_spec);
    nn::CausalLM& model = *cm.model;
    std::vector<align::Conversation> convs = align::read_conversations(data);
    if (limit > 0 && size_t(limit) < convs.size()) convs.resize(size_t(limit));
    const int64_t T = model.block_size();
    const std::vector<align::SftExample> ex = align::render_examples(cm.chat, convs, T + 1);
    const double loss = align::masked_loss(model, align::SftLoader(ex, batch, T, true, 0).all());
    const align::ExactMatch em =
        align::exact_match(model, cm.chat, convs, max_answer, 0, [&](size_t i, const std::string& got, bool ok) {
          if (int64_t(i) < show) {
            const auto [prompt, reference] = align::split_last_answer(convs[i]);
            std::cout << (ok ? "right" : "wrong") << ": " << prompt.messages.back().content << " -> " << got
                      << " (reference " << reference << ")\n";
          }
        });
    std::printf("eval loss=%.4f exact_match=%.4f n=%lld", loss, em.rate(), (long long)em.total);
    if (samples > 0) {
      std::vector<align::PromptItem> prompts;
      for (const align::Conversation& c : convs) {
        auto [prompt, reference] = align::split_last_answer(c);
        prompts.push_back({prompt, reference});
      }
      const align::PassRates p = align::pass_rates(model, cm.chat, prompts, samples, max_answer, {temperature, 0, 1.0}, seed);
      std::printf(" pass_at_1=%.4f pass_at_k=%.4f k=%lld", p.pass_at_1, p.pass_at_k, (long long)samples);
    }
    std::printf("\n");
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "loom-eval: " << e.what() << "\n";
    return io::exit_status(e);  // 2 for a usage error
  }
}
