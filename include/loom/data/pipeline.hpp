#pragma once
/// @file pipeline.hpp
/// The whole data stage in one call: raw text in, clean, deduplicated, split, tokenised shards out.
/// loom-data is a command line over run_pipeline(); docs/18-data-pipeline.md walks through it.
///
/// Four stages run in order, each over the output of the one before:
///   1. scan     read (read.hpp) → normalise (normalize.hpp) → quality rules (quality.hpp) →
///               PII (pii.hpp) → exact dedup and MinHash signatures (dedup.hpp); the surviving
///               documents are spooled to DIR/.work/docs.bin, their signatures to sigs.bin
///   2. neardup  LSH bands over the signatures, union-find clusters, the lowest-numbered
///               (earliest) document of each cluster kept
///   3. split    train/val/test by a hash of the cluster (split.hpp), then train documents that
///               share a 13-gram with val or test removed (decontamination)
///   4. shards   each kept document tokenised as <|endoftext|> + its text (special-token text in
///               the text encoded as ordinary text), written as llm.c shards (shards.hpp), with
///               DIR/index.jsonl, DIR/rejects.jsonl, DIR/report.json and DIR/tokenizer.loom
///
/// Restarting: each stage ends by writing DIR/.work/<stage>.json, which records the settings (and
/// the input files' sizes and modification times) it ran with. A new run skips every stage whose
/// record matches, so an interrupted run resumes at the stage it was in; a changed setting reruns
/// that stage and the ones after it.
///
/// Memory: documents stream through in chunks; what grows with the corpus is the dedup state
/// (16 bytes per distinct text, bands × rows × 4 bytes per MinHash signature), the ids of the
/// kept documents, and the 13-gram set of the val and test splits.
///
/// Determinism: the chunks are processed in parallel and merged in input order, and every choice
/// (which duplicate is kept, which split a cluster goes to) depends only on the input and the
/// seed, so the output is byte-identical for any thread count.
///
/// Several processes: dist/pipeline.hpp runs the same stages over the ranks of an MPI job (each
/// rank cleans, signs and tokenises every N-th document) and writes the same files.

#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "loom/core/error.hpp"
#include "loom/data/dedup.hpp"
#include "loom/data/normalize.hpp"
#include "loom/data/pii.hpp"
#include "loom/data/quality.hpp"
#include "loom/data/read.hpp"
#include "loom/data/shards.hpp"
#include "loom/data/split.hpp"
#include "loom/io/file.hpp"
#include "loom/io/json.hpp"
#include "loom/tokenizer/io.hpp"

namespace loom::data {

/// What to do with a document that contains personal data.
enum class PiiMode { redact, drop, keep };

/// Every setting of a pipeline run (loom-data's flags; the defaults are the published ones).
struct PipelineOptions {
  std::vector<std::string> inputs;        ///< files and folders (folders recursively)
  std::string out;                        ///< output folder
  std::string tokenizer = "bytes";        ///< bytes | gpt2:DIR | tiktoken:FILE:gpt2|cl100k | loom:FILE
  std::string split = "0.98,0.01,0.01";   ///< train,val,test fractions
  std::string quality = "gopher,c4";      ///< rule sets (QualityOptions::parse), or "none"
  PiiMode pii = PiiMode::redact;          ///< redact, drop or keep documents with PII
  std::string dedup = "exact,minhash";    ///< "exact,minhash", "exact", "minhash" or "none"
  MinHashOptions minhash;                 ///< 14 bands × 8 rows, word 5-grams (FineWeb)
  int decontamination_ngram = 13;         ///< GPT-3's 13-gram overlap rule (0: off)
  int64_t shard_tokens = 100'000'000;     ///< tokens per shard (llm.c's FineWeb shards hold 1e8)
  int threads = 0;                        ///< OpenMP threads (0: all)
  uint64_t seed = 1337;                   ///< the split hash
  ReadOptions read;                       ///< JSONL text field, skip or fail on bad input
  bool nfc = true;                        ///< Unicode NFC (needs utf8proc)
  bool fresh = false;                     ///< ignore finished stages of an earlier run
};

/// "redact", "drop", "keep".
inline const char* pii_mode_name(PiiMode m) { return m == PiiMode::redact ? "redact" : m == PiiMode::drop ? "drop" : "keep"; }

/// The PiiMode called `name`; value_error for anything else.
inline PiiMode parse_pii_mode(const std::string& name) {
  if (name == "redact") return PiiMode::redact;
  if (name == "drop") return PiiMode::drop;
  if (name == "keep") return PiiMode::keep;
  throw value_error("--pii must be redact, drop or keep, got '" + name + "'");
}

/// Called as work progresses: the stage's name, units done and the total (bytes for scan,
/// documents for the others).
using PipelineProgress = std::function<void(const std::string& stage, uint64_t done, uint64_t total)>;

/// The tokenizer named by `spec` (tokenizer::load_spec: bytes, gpt2:DIR, tiktoken:FILE:NAME,
/// hf:FILE, loom:FILE) with an <|endoftext|> special token: one that has none (a loom-bpe model
/// trained without it) gets it at the next free id.
inline BpeTokenizer load_pipeline_tokenizer(const std::string& spec) {
  BpeTokenizer t = tokenizer::load_spec(spec);
  const std::string eot = "<|endoftext|>";
  if (t.special_id(eot)) return t;
  std::vector<tokenizer::SpecialToken> specials = t.special_tokens();
  specials.push_back({eot, uint32_t(t.vocab_size())});
  return BpeTokenizer(t.pattern(), t.vocab(), t.merges(), std::move(specials));
}

namespace detail {

/// A buffered binary file written under a temporary name and renamed into place by commit().
class SpoolWriter {
 public:
  explicit SpoolWriter(std::string path) : path_(std::move(path)), tmp_(io::atomic_temp_path(path_)) {
    f_ = std::fopen(tmp_.c_str(), "wb");
    LOOM_CHECK(f_ != nullptr, io_error, tmp_, ": cannot create (", std::strerror(errno), ")");
  }
  SpoolWriter(const SpoolWriter&) = delete;
  SpoolWriter& operator=(const SpoolWriter&) = delete;
  ~SpoolWriter() {
    if (f_) {
      std::fclose(f_);
      std::remove(tmp_.c_str());
    }
  }
  void write(const void* p, size_t n) {
    LOOM_CHECK(n == 0 || std::fwrite(p, 1, n, f_) == n, io_error, tmp_, ": write failed (", std::strerror(errno), ")");
  }
  void write_str(std::string_view s) { write(s.data(), s.size()); }
  void write_u64(uint64_t v) { write(&v, sizeof v); }
  /// Flushes, closes and renames the file over its final name.
  void commit() {
    const bool ok = std::fflush(f_) == 0 && ::fsync(fileno(f_)) == 0;
    std::fclose(f_);
    f_ = nullptr;
    if (!ok || std::rename(tmp_.c_str(), path_.c_str()) != 0) {
      std::remove(tmp_.c_str());
      throw io_error(path_ + ": cannot write (" + std::strerror(errno) + ")");
    }
  }

 private:
  std::string path_, tmp_;
  std::FILE* f_ = nullptr;
};

/// Reads a file of records written by SpoolWriter.
class SpoolReader {
 public:
  explicit SpoolReader(const std::string& path) : path_(path) {
    f_ = std::fopen(path.c_str(), "rb");
    LOOM_CHECK(f_ != nullptr, io_error, path, ": cannot open (", std::strerror(errno), ")");
  }
  SpoolReader(const SpoolReader&) = delete;
  SpoolReader& operator=(const SpoolReader&) = delete;
  ~SpoolReader() { std::fclose(f_); }
  /// Reads n bytes; false at a clean end of file, io_error for a short record.
  bool read(void* p, size_t n, bool at_record_start = false) {
    size_t got = std::fread(p, 1, n, f_);
    if (got == 0 && at_record_start && std::feof(f_)) return false;
    LOOM_CHECK(got == n, io_error, path_, ": truncated (rerun with --fresh)");
    return true;
  }
  /// The next (id, text) document record; false at the end.
  bool next_doc(std::string& id, std::string& text) {
    uint64_t n = 0;
    if (!read(&n, sizeof n, true)) return false;
    id.resize(n);
    read(id.data(), n);
    read(&n, sizeof n);
    text.resize(n);
    read(text.data(), n);
    return true;
  }

 private:
  std::string path_;
  std::FILE* f_ = nullptr;
};

/// The scan reads documents in chunks of up to this many raw bytes or documents, works on a
/// chunk in parallel and merges it in input order.
inline constexpr size_t scan_chunk_bytes = size_t(8) << 20, scan_chunk_docs = 4096;
/// The shards stage tokenises kept documents in chunks of up to this many bytes of text.
inline constexpr size_t shard_chunk_bytes = size_t(4) << 20;

/// Seconds on a steady clock.
inline double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

/// Peak resident memory of this process in bytes (getrusage).
inline uint64_t peak_rss_bytes() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return uint64_t(ru.ru_maxrss) * 1024;
}

/// The record of a finished stage, or null when it is missing or unreadable.
inline io::Json read_stage(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return nullptr;
  try {
    return io::parse_json(io::read_file(path), {}, path);
  } catch (const io_error&) {
    return nullptr;
  }
}

/// A reject line of rejects.jsonl.
inline std::string reject_line(const std::string& id, const std::string& reason, const std::string& duplicate_of = {},
                               const std::string& detail = {}) {
  io::Json j = io::Json::object();
  j.set("id", id);
  j.set("reason", reason);
  if (!duplicate_of.empty()) j.set("duplicate_of", duplicate_of);
  if (!detail.empty()) j.set("detail", detail);
  return j.dump() + "\n";
}

/// A JSON string with invalid UTF-8 replaced (ids come from file names, which may be any bytes).
inline std::string json_safe(std::string_view s) { return normalize(s, NormalizeOptions{false}); }

/// What run_pipeline derives from its options, each checked (value_error naming the option), in
/// the order the checks run; the tokenizer is loaded last, so that a bad file fails before any work.
struct PipelineSetup {
  QualityOptions quality;
  SplitFractions fractions;
  bool exact_on = false, near_on = false;
  BpeTokenizer tok;
  int threads = 1;

  explicit PipelineSetup(const PipelineOptions& o)
      : quality(check_paths(o)), fractions(SplitFractions::parse(o.split)), tok(check_rest(o)) {
    exact_on = o.dedup.find("exact") != std::string::npos, near_on = o.dedup.find("minhash") != std::string::npos;
#ifdef _OPENMP
    threads = o.threads > 0 ? o.threads : omp_get_max_threads();
#endif
  }

 private:
  static QualityOptions check_paths(const PipelineOptions& o) {
    LOOM_CHECK(!o.inputs.empty(), value_error, "no input: give at least one file or folder");
    LOOM_CHECK(!o.out.empty(), value_error, "no output folder");
    return QualityOptions::parse(o.quality);
  }
  static BpeTokenizer check_rest(const PipelineOptions& o) {
    LOOM_CHECK(o.dedup == "exact,minhash" || o.dedup == "minhash,exact" || o.dedup == "exact" || o.dedup == "minhash" ||
                   o.dedup == "none",
               value_error, "--dedup must be exact,minhash, exact, minhash or none, got '", o.dedup, "'");
    LOOM_CHECK(o.minhash.bands > 0 && o.minhash.rows > 0 && o.minhash.ngram > 0, value_error,
               "--minhash-bands, --minhash-rows and --ngram must be positive");
    LOOM_CHECK(o.shard_tokens > 0, value_error, "--shard-tokens must be positive, got ", o.shard_tokens);
    LOOM_CHECK(o.decontamination_ngram >= 0, value_error, "--decontaminate must be 0 (off) or an n-gram length");
    LOOM_CHECK(!o.nfc || have_nfc(), value_error,
               "NFC needs utf8proc: apt-get install libutf8proc-dev and reconfigure, or pass --no-nfc");
    return load_pipeline_tokenizer(o.tokenizer);
  }
};

/// What the scan made of one document: its cleaned text and signature, or why it was dropped.
struct ScannedDoc {
  std::string text;      ///< normalised, filtered, scrubbed
  std::string reason;    ///< why it was dropped; empty when it passed
  NormalizeStats norm;   ///< what normalisation changed
  uint64_t lines_removed = 0;  ///< lines the C4 rules removed
  PiiCounts pii;         ///< personal data found
  std::vector<uint32_t> sig;   ///< MinHash signature (near-dup on, passed)
};

/// Normalises, filters and scrubs the raw text of one document into `s`, and signs the result
/// when `hasher` is given. Thread-safe: the scan runs it on many documents at once.
inline void scan_document(const std::string& raw, const PipelineOptions& o, const QualityOptions& quality,
                          const MinHasher* hasher, ScannedDoc& s) {
  s.text = normalize(raw, NormalizeOptions{o.nfc}, &s.norm);
  QualityResult q = check_quality(s.text, quality);
  if (!q.keep) {
    s.reason = q.reason;
    return;
  }
  s.text = std::move(q.text);
  s.lines_removed = q.lines_removed;
  if (s.text.find_first_not_of(" \t\n") == std::string::npos) {
    s.reason = "empty";
    return;
  }
  if (o.pii != PiiMode::keep) {
    const std::vector<PiiMatch> found = find_pii(s.text);
    for (const PiiMatch& m : found) ++s.pii.n[int(m.type)];
    if (!found.empty() && o.pii == PiiMode::drop) {
      s.reason = "pii";
      return;
    }
    if (!found.empty()) s.text = redact_pii(s.text, found);
  }
  if (hasher) s.sig = hasher->signature(s.text);
}

/// The scan's counts, taken document by document in input order (the order of the reasons in
/// the report is the order they first occurred).
struct ScanTally {
  uint64_t docs_in = 0, bytes_in = 0, docs_kept = 0, bytes_kept = 0, read_errors = 0, lines_removed = 0;
  uint64_t norm_invalid = 0, norm_controls = 0, norm_newlines = 0, norm_nfc = 0, pii_docs = 0;
  PiiCounts pii;
  io::Json reasons = io::Json::object();

  /// One more document dropped for `reason`.
  void count_reason(const std::string& reason) {
    const io::Json* c = reasons.find(reason);
    reasons.set(reason, c ? c->as_int() + 1 : int64_t(1));
  }
  /// One more input that could not be read.
  void read_error() {
    ++read_errors;
    count_reason("read_error");
  }
  /// Counts a document of `raw_bytes` and what the scan made of it; false when the scan dropped
  /// it (its reason counted).
  bool add(uint64_t raw_bytes, const ScannedDoc& s) {
    ++docs_in, bytes_in += raw_bytes;
    norm_invalid += s.norm.invalid_bytes, norm_controls += s.norm.control_chars, norm_newlines += s.norm.newlines;
    norm_nfc += s.norm.nfc_changed;
    if (!s.reason.empty()) {
      if (s.reason == "pii") {
        for (int t = 0; t < 5; ++t) pii.n[t] += s.pii.n[t];
        ++pii_docs;
      }
      count_reason(s.reason);
      return false;
    }
    for (int t = 0; t < 5; ++t) pii.n[t] += s.pii.n[t];
    pii_docs += s.pii.total() > 0;
    lines_removed += s.lines_removed;
    return true;
  }
  /// One more document kept (past exact dedup), of `text_bytes` cleaned bytes.
  void keep(uint64_t text_bytes) { ++docs_kept, bytes_kept += text_bytes; }
  /// The scan stage's stats: these counts, the corpus files, the exact-dedup index size and the time.
  io::Json stats(const CorpusReader& reader, size_t exact_index_bytes, double seconds) const {
    io::Json p = io::Json::object();
    for (int t = 0; t < 5; ++t) p.set(pii_name(PiiType(t)), int64_t(pii.n[t]));
    io::Json s = io::Json::object();
    s.set("files", int64_t(reader.files().size()));
    s.set("file_bytes", int64_t(reader.total_file_bytes()));
    s.set("documents_in", int64_t(docs_in));
    s.set("bytes_in", int64_t(bytes_in));
    s.set("read_errors", int64_t(read_errors));
    s.set("documents_kept", int64_t(docs_kept));
    s.set("bytes_kept", int64_t(bytes_kept));
    s.set("dropped", reasons);
    s.set("c4_lines_removed", int64_t(lines_removed));
    s.set("pii", p);
    s.set("pii_documents", int64_t(pii_docs));
    io::Json norm = io::Json::object();
    norm.set("invalid_utf8_replaced", int64_t(norm_invalid));
    norm.set("control_chars_dropped", int64_t(norm_controls));
    norm.set("newlines_unified", int64_t(norm_newlines));
    norm.set("nfc_changed_documents", int64_t(norm_nfc));
    s.set("normalize", norm);
    s.set("exact_index_bytes", int64_t(exact_index_bytes));
    s.set("seconds", seconds);
    s.set("mb_per_s", double(bytes_in) / 1e6 / std::max(seconds, 1e-9));
    return s;
  }
};

/// The shards stage's output: the kept documents, in order, as <|endoftext|> + their tokens in
/// DIR/{train,val,test}_*.bin, and a line each in DIR/index.jsonl.
class ShardOutput {
 public:
  /// Removes an earlier run's shards and opens the writers (nothing under a final name until finish()).
  ShardOutput(const std::string& dir, const BpeTokenizer& tok, int64_t shard_tokens)
      : eot_(*tok.special_id("<|endoftext|>")), index_(dir + "/index.jsonl") {
    for (const char* name : {"train", "val", "test"})
      for (const std::string& p : list_shards(dir, name)) std::remove(p.c_str());  // an earlier run's shards
    for (const char* name : {"train", "val", "test"})
      writers_.push_back(std::make_unique<ShardWriter>(dir, name, tok.vocab_size(), shard_tokens));
  }
  /// Appends the next kept document: its id, split (0 train, 1 val, 2 test), tokens, and the
  /// bytes of its text.
  void add(const std::string& id, int split, const std::vector<uint32_t>& tokens, int64_t text_bytes) {
    ShardWriter& w = *writers_[size_t(split)];
    w.append(&eot_, 1);
    const auto [shard, offset] = w.position();
    w.append(tokens.data(), tokens.size());
    ++docs_[split], bytes_[split] += text_bytes;
    io::Json line = io::Json::object();
    line.set("id", id);
    line.set("split", split_name(Split(split)));
    line.set("shard", shard);
    line.set("offset", offset);
    line.set("tokens", int64_t(tokens.size()));
    index_.write_str(line.dump() + "\n");
  }
  /// Writes the last shards and DIR/index.jsonl.
  void finish() {
    for (auto& w : writers_) w->finish();
    index_.commit();
  }
  /// The report's "kept": documents, bytes, tokens and shards of each split.
  io::Json kept() const {
    io::Json kept = io::Json::object();
    for (int s = 0; s < 3; ++s) {
      io::Json k = io::Json::object();
      k.set("documents", docs_[s]);
      k.set("bytes", bytes_[s]);
      k.set("tokens", writers_[size_t(s)]->tokens());
      k.set("shards", writers_[size_t(s)]->shards());
      kept.set(split_name(Split(s)), k);
    }
    return kept;
  }
  /// Tokens of all splits (each document's <|endoftext|> included).
  int64_t tokens() const { return writers_[0]->tokens() + writers_[1]->tokens() + writers_[2]->tokens(); }

 private:
  uint32_t eot_;
  std::vector<std::unique_ptr<ShardWriter>> writers_;
  SpoolWriter index_;
  int64_t docs_[3] = {}, bytes_[3] = {};
};

/// DIR/tokenizer.loom and DIR/rejects.jsonl (the reject spools `parts`, in order).
inline void write_tokenizer_and_rejects(const std::string& dir, const BpeTokenizer& tok,
                                        const std::vector<std::string>& parts) {
  tokenizer::save(tok, dir + "/tokenizer.loom");
  io::write_file_atomic(dir + "/rejects.jsonl", [&](io::FileWriter& w) {
    for (const std::string& part : parts) {
      const std::string s = io::read_file(part);
      w.write(s.data(), s.size());
    }
  });
}

/// Writes DIR/report.json from the stages' stats and the shards, and returns it; value_error when
/// no token was written. `ranks` (> 1 under mpirun) is recorded with the timing, and
/// `peak_rss_bytes` is the largest process's.
inline io::Json write_report(const PipelineOptions& o, const BpeTokenizer& tok, const io::Json& scan_stats,
                             const io::Json& near_stats, const io::Json& split_stats, const ShardOutput& shards,
                             double shard_seconds, int threads, int ranks, uint64_t peak_rss_bytes) {
  io::Json dropped = scan_stats.at("dropped");
  if (near_stats.at("near_dup").as_int() > 0) dropped.set("near_dup", near_stats.at("near_dup"));
  if (split_stats.at("decontaminated").as_int() > 0) dropped.set("decontaminated", split_stats.at("decontaminated"));
  const int64_t total_tokens = shards.tokens();
  const double scan_s = scan_stats.at("seconds").as_double(), near_s = near_stats.at("seconds").as_double(),
               split_s = split_stats.at("seconds").as_double();
  const double bytes_in = double(scan_stats.at("bytes_in").as_int());
  io::Json timing = io::Json::object();
  timing.set("scan_s", scan_s);
  timing.set("neardup_s", near_s);
  timing.set("split_s", split_s);
  timing.set("shards_s", shard_seconds);
  timing.set("threads", threads);
  if (ranks > 1) timing.set("ranks", ranks);
  timing.set("mb_per_s", bytes_in / 1e6 / std::max(scan_s + near_s + split_s + shard_seconds, 1e-9));
  io::Json report = io::Json::object();
  report.set("input", scan_stats);
  report.set("kept", shards.kept());
  report.set("dropped", dropped);
  report.set("pii", scan_stats.at("pii"));
  report.set("pii_mode", pii_mode_name(o.pii));
  report.set("tokenizer", o.tokenizer);
  report.set("vocab_size", int64_t(tok.vocab_size()));
  report.set("tokens", total_tokens);
  report.set("neardup", near_stats);
  report.set("split", split_stats);
  report.set("timing", timing);
  report.set("peak_rss_bytes", int64_t(peak_rss_bytes));
  io::write_file_atomic(o.out + "/report.json", report.dump(2) + "\n");
  LOOM_CHECK(total_tokens > 0, value_error, "every document was dropped (", scan_stats.at("documents_in").as_int(),
             " in; see ", o.out, "/rejects.jsonl and ", o.out, "/report.json)");
  return report;
}

}  // namespace detail

/// Runs the pipeline; returns the report (also written to DIR/report.json). Throws io_error for
/// unreadable or malformed input (unless options.read.skip_errors), value_error for impossible
/// options or an empty corpus. Nothing under DIR's final names is ever half-written.
inline io::Json run_pipeline(const PipelineOptions& o, const PipelineProgress& progress = {}) {
  const detail::PipelineSetup setup(o);
  const bool exact_on = setup.exact_on, near_on = setup.near_on;
  const BpeTokenizer& tok = setup.tok;
  const int threads = setup.threads;

  const std::string dir = o.out, work = o.out + "/.work";
  io::make_directories(work);
  CorpusReader reader(o.inputs, o.read);
  const int sig_len = o.minhash.bands * o.minhash.rows;

  // --- Settings each stage depends on (a stage reruns when its own or an earlier one changed) ---
  io::Json files = io::Json::array();
  for (const std::string& f : reader.files()) {
    struct stat st {};
    ::stat(f.c_str(), &st);
    files.as_array().push_back(io::Json(detail::json_safe(f) + " " + std::to_string(st.st_size) + " " +
                                        std::to_string(int64_t(st.st_mtime))));
  }
  io::Json scan_cfg = io::Json::object();
  scan_cfg.set("files", files);
  scan_cfg.set("text_field", o.read.text_field);
  scan_cfg.set("skip_errors", o.read.skip_errors);
  scan_cfg.set("nfc", o.nfc);
  scan_cfg.set("quality", o.quality);
  scan_cfg.set("pii", pii_mode_name(o.pii));
  scan_cfg.set("exact", exact_on);
  scan_cfg.set("minhash", near_on ? std::to_string(o.minhash.bands) + "x" + std::to_string(o.minhash.rows) + " n" +
                                        std::to_string(o.minhash.ngram) + " seed " + std::to_string(o.minhash.seed)
                                  : std::string("off"));
  io::Json near_cfg = io::Json::object();
  near_cfg.set("scan", scan_cfg);
  near_cfg.set("threshold", o.minhash.threshold);
  io::Json split_cfg = io::Json::object();
  split_cfg.set("near", near_cfg);
  split_cfg.set("split", o.split);
  split_cfg.set("seed", int64_t(o.seed));
  split_cfg.set("decontamination_ngram", o.decontamination_ngram);
  auto stage_done = [&](const std::string& name, const io::Json& cfg) {
    if (o.fresh) return false;
    io::Json rec = detail::read_stage(work + "/" + name + ".json");
    return rec.is_object() && rec.contains("config") && rec.at("config").dump() == cfg.dump();
  };
  auto finish_stage = [&](const std::string& name, const io::Json& cfg, io::Json stats) {
    io::Json rec = io::Json::object();
    rec.set("config", cfg);
    rec.set("stats", std::move(stats));
    io::write_file_atomic(work + "/" + name + ".json", rec.dump(2) + "\n");
  };
  auto report_progress = [&](const char* stage, uint64_t done, uint64_t total) {
    if (progress) progress(stage, done, total);
  };

  // --- 1. scan: read, normalise, filter, scrub, exact dedup, signatures --------------------------
  if (!stage_done("scan", scan_cfg)) {
    const double t0 = detail::now_seconds();
    detail::SpoolWriter docs_out(work + "/docs.bin"), sigs_out(work + "/sigs.bin"), rej_out(work + "/rejects_scan.jsonl");
    ExactDedup exact;
    std::vector<std::string> kept_ids;  // for naming what an exact duplicate duplicates
    const MinHasher hasher(o.minhash);
    detail::ScanTally tally;
    reader.on_error = [&](const ReadError& e) {
      tally.read_error();
      rej_out.write_str(detail::reject_line(detail::json_safe(e.where), "read_error", {}, detail::json_safe(e.what)));
    };
    std::vector<Document> chunk;
    std::vector<detail::ScannedDoc> out;
    const uint64_t total_bytes = std::max<uint64_t>(reader.total_file_bytes(), 1);
    for (bool more = true; more;) {
      chunk.clear();
      size_t chunk_bytes = 0;
      Document d;
      while (chunk_bytes < detail::scan_chunk_bytes && chunk.size() < detail::scan_chunk_docs && (more = reader.next(d))) {
        chunk_bytes += d.text.size();
        chunk.push_back(std::move(d));
      }
      out.assign(chunk.size(), detail::ScannedDoc{});
      const int64_t n = int64_t(chunk.size());
#ifdef _OPENMP
#pragma omp parallel for schedule(dynamic, 16) num_threads(threads) if (n > 16)
#endif
      for (int64_t i = 0; i < n; ++i)
        detail::scan_document(chunk[size_t(i)].text, o, setup.quality, near_on ? &hasher : nullptr, out[size_t(i)]);
      for (size_t i = 0; i < chunk.size(); ++i) {  // merged in input order: deterministic
        const detail::ScannedDoc& s = out[i];
        const std::string id = detail::json_safe(chunk[i].id);
        if (!tally.add(chunk[i].text.size(), s)) {
          rej_out.write_str(detail::reject_line(id, s.reason));
          continue;
        }
        if (exact_on) {
          const int64_t first = exact.insert(s.text, int64_t(tally.docs_kept));
          if (first >= 0) {
            tally.count_reason("exact_dup");
            rej_out.write_str(detail::reject_line(id, "exact_dup", kept_ids[size_t(first)]));
            continue;
          }
        }
        kept_ids.push_back(id);
        docs_out.write_u64(id.size());
        docs_out.write_str(id);
        docs_out.write_u64(s.text.size());
        docs_out.write_str(s.text);
        if (near_on) sigs_out.write(s.sig.data(), s.sig.size() * sizeof(uint32_t));
        tally.keep(s.text.size());
      }
      report_progress("scan", reader.file_bytes_done(), total_bytes);
    }
    LOOM_CHECK(tally.docs_in > 0 || tally.read_errors > 0, value_error, "the corpus is empty: no documents in ",
               reader.files().size(), " input file(s)");
    docs_out.commit(), sigs_out.commit(), rej_out.commit();
    finish_stage("scan", scan_cfg, tally.stats(reader, exact.memory_bytes(), detail::now_seconds() - t0));
  }
  const io::Json scan_stats = detail::read_stage(work + "/scan.json").at("stats");
  const int64_t n_docs = scan_stats.at("documents_kept").as_int();

  // --- 2. neardup: LSH + union-find over the signatures -------------------------------------------
  if (!stage_done("neardup", near_cfg)) {
    const double t0 = detail::now_seconds();
    std::vector<int64_t> dup_of(static_cast<size_t>(n_docs), -1);
    size_t index_bytes = 0;
    if (near_on && n_docs > 0) {
      NearDupIndex index(o.minhash);
      detail::SpoolReader sigs(work + "/sigs.bin");
      std::vector<uint32_t> sig(static_cast<size_t>(sig_len));
      for (int64_t k = 0; k < n_docs; ++k) {
        sigs.read(sig.data(), sig.size() * sizeof(uint32_t));
        index.add(sig.data());
        if (k % 65536 == 0) report_progress("neardup", uint64_t(k), uint64_t(n_docs));
      }
      dup_of = index.resolve(threads);
      index_bytes = index.memory_bytes();
    }
    detail::SpoolWriter dup_out(work + "/neardup.bin");
    dup_out.write(dup_of.data(), dup_of.size() * sizeof(int64_t));
    dup_out.commit();
    int64_t removed = 0;
    for (int64_t d : dup_of) removed += d >= 0;
    io::Json stats = io::Json::object();
    stats.set("near_dup", removed);
    stats.set("index_bytes", int64_t(index_bytes));
    stats.set("seconds", detail::now_seconds() - t0);
    finish_stage("neardup", near_cfg, stats);
    report_progress("neardup", uint64_t(n_docs), uint64_t(n_docs));
  }
  std::vector<int64_t> dup_of(static_cast<size_t>(n_docs));
  {
    detail::SpoolReader r(work + "/neardup.bin");
    if (n_docs > 0) r.read(dup_of.data(), dup_of.size() * sizeof(int64_t));
  }

  // --- 3. split: a hash of the cluster picks the split; then decontamination ----------------------
  if (!stage_done("split", split_cfg)) {
    const double t0 = detail::now_seconds();
    std::vector<int8_t> split(static_cast<size_t>(n_docs), -1);
    std::vector<std::string> ids(static_cast<size_t>(n_docs));
    detail::SpoolWriter rej_out(work + "/rejects_split.jsonl");
    Decontaminator decon(std::max(o.decontamination_ngram, 1));
    std::string id, text;
    {
      detail::SpoolReader docs(work + "/docs.bin");
      for (int64_t k = 0; docs.next_doc(id, text); ++k) {
        ids[size_t(k)] = id;
        if (dup_of[size_t(k)] >= 0) {
          rej_out.write_str(detail::reject_line(id, "near_dup", ids[size_t(dup_of[size_t(k)])]));
          continue;
        }
        split[size_t(k)] = int8_t(assign_split(text, setup.fractions, o.seed));  // the cluster's key: its kept document's text
        if (o.decontamination_ngram > 0 && split[size_t(k)] != int8_t(Split::train)) decon.add_reference(text);
      }
    }
    int64_t decontaminated = 0;
    if (o.decontamination_ngram > 0 && decon.size() > 0) {
      detail::SpoolReader docs(work + "/docs.bin");
      for (int64_t k = 0; docs.next_doc(id, text); ++k) {
        if (split[size_t(k)] != int8_t(Split::train) || !decon.contaminated(text)) continue;
        split[size_t(k)] = -1;
        ++decontaminated;
        rej_out.write_str(detail::reject_line(id, "decontaminated"));
        if (k % 4096 == 0) report_progress("split", uint64_t(k), uint64_t(n_docs));
      }
    }
    rej_out.commit();
    detail::SpoolWriter split_out(work + "/split.bin");
    split_out.write(split.data(), split.size());
    split_out.commit();
    io::Json stats = io::Json::object();
    stats.set("decontaminated", decontaminated);
    stats.set("reference_ngrams", int64_t(decon.size()));
    stats.set("seconds", detail::now_seconds() - t0);
    finish_stage("split", split_cfg, stats);
  }
  std::vector<int8_t> split(static_cast<size_t>(n_docs));
  {
    detail::SpoolReader r(work + "/split.bin");
    if (n_docs > 0) r.read(split.data(), split.size());
  }

  // --- 4. shards: tokenise the kept documents ----------------------------------------------------
  const double t4 = detail::now_seconds();
  detail::ShardOutput shards(dir, tok, o.shard_tokens);
  {
    detail::SpoolReader docs(work + "/docs.bin");
    std::vector<std::string> chunk_ids, chunk_texts;
    std::vector<int64_t> chunk_k;
    std::vector<std::vector<uint32_t>> chunk_tokens;
    int64_t k = 0;
    for (bool more = true; more;) {
      chunk_ids.clear(), chunk_texts.clear(), chunk_k.clear();
      size_t bytes = 0;
      std::string id, text;
      while (bytes < detail::shard_chunk_bytes && (more = docs.next_doc(id, text))) {
        if (split[size_t(k)] >= 0) {
          bytes += text.size();
          chunk_ids.push_back(id), chunk_texts.push_back(text), chunk_k.push_back(k);
        }
        ++k;
      }
      const int64_t n = int64_t(chunk_texts.size());
      chunk_tokens.assign(size_t(n), {});
#ifdef _OPENMP
#pragma omp parallel for schedule(dynamic, 4) num_threads(threads) if (n > 4)
#endif
      for (int64_t i = 0; i < n; ++i) chunk_tokens[size_t(i)] = tok.encode_ordinary(chunk_texts[size_t(i)]);
      for (int64_t i = 0; i < n; ++i)
        shards.add(chunk_ids[size_t(i)], split[size_t(chunk_k[size_t(i)])], chunk_tokens[size_t(i)],
                   int64_t(chunk_texts[size_t(i)].size()));
      report_progress("shards", uint64_t(k), uint64_t(n_docs));
    }
  }
  shards.finish();
  detail::write_tokenizer_and_rejects(dir, tok, {work + "/rejects_scan.jsonl", work + "/rejects_split.jsonl"});
  const double shard_seconds = detail::now_seconds() - t4;

  // --- report ------------------------------------------------------------------------------------
  return detail::write_report(o, tok, scan_stats, detail::read_stage(work + "/neardup.json").at("stats"),
                              detail::read_stage(work + "/split.json").at("stats"), shards, shard_seconds, threads, 1,
                              detail::peak_rss_bytes());
}

}  // namespace loom::data
