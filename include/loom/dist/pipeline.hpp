#pragma once
/// @file pipeline.hpp
/// The data pipeline (data/pipeline.hpp) over the ranks of a communicator: `mpirun -np N
/// loom-data run ...` writes the same files as one process, byte for byte, and splits the work
/// that grows with the documents.
///
/// Documents are numbered in input order (g = 0, 1, 2, ...), and rank g % N owns document g.
/// Every rank reads and parses the whole input (the cheap, sequential part; it also keeps the
/// numbering and the chunks identical everywhere) and does the per-document work only for the
/// documents it owns. The stages, and what the ranks exchange (every exchange an all_gather, in
/// rank order, sizes first through gather_values):
///   1. scan     owners normalise, filter, scrub, hash and sign their documents; per chunk of
///               input, each document's outcome (reason, counts, text size, 128-bit hash, no
///               text) goes to every rank, and every rank runs the same exact dedup in input
///               order, so all agree on the kept documents and their numbers k; owners spool
///               their kept texts and keep their signatures
///   2. neardup  every kept document's band keys (band hash -> k) go to every rank; rank r sorts
///               bands r, r + N, ...; the members of groups of two or more are exchanged, then
///               their signatures, then each rank's pairs to join; every rank runs the same
///               union-find, so each cluster keeps its lowest k, as in one process
///   3. split    owners draw the splits of their kept documents and send the n-gram hashes of
///               their val/test documents; every rank builds the same reference set, owners
///               check their train documents, and the splits go to every rank
///   4. shards   owners tokenise their kept documents in blocks of k; rank 0 receives the
///               tokens of each block and writes the shards in order
/// Rank 0 writes every output file (index.jsonl, rejects.jsonl, report.json, tokenizer.loom and
/// the shards); the lines and counts are produced in the order of one process, so the files
/// equal its output, except the measured figures in report.json (seconds, throughput, memory)
/// and the final line's mb_per_s. The stage-skipping restart of one process does not apply:
/// every stage runs. Spool files live in DIR/.work/mpi and are removed at the end.

#include <algorithm>
#include <climits>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "loom/core/error.hpp"
#include "loom/data/dedup.hpp"
#include "loom/data/hash.hpp"
#include "loom/data/pipeline.hpp"
#include "loom/data/split.hpp"
#include "loom/dist/communicator.hpp"

namespace loom::dist {

namespace detail {

/// Values and strings appended to a byte buffer, for an exchange.
struct Packer {
  std::vector<uint8_t> bytes;  ///< what was packed
  /// Appends n raw bytes.
  void raw(const void* p, size_t n) {
    const auto* b = static_cast<const uint8_t*>(p);
    bytes.insert(bytes.end(), b, b + n);
  }
  /// Appends a 64-bit value.
  void u64(uint64_t v) { raw(&v, sizeof v); }
  /// Appends a string (its length, then its bytes).
  void str(std::string_view s) {
    u64(s.size());
    raw(s.data(), s.size());
  }
};

/// Reads back what a Packer wrote; dist_error when the bytes run out.
class Unpacker {
 public:
  /// Reads [p, p + n).
  Unpacker(const uint8_t* p, size_t n) : p_(p), end_(p + n) {}
  /// Copies the next n bytes to `out`.
  void raw(void* out, size_t n) {
    LOOM_CHECK(size_t(end_ - p_) >= n, dist_error, "dist: a rank's message of the data pipeline is shorter than expected");
    if (n) std::memcpy(out, p_, n);
    p_ += n;
  }
  /// The next 64-bit value.
  uint64_t u64() {
    uint64_t v = 0;
    raw(&v, sizeof v);
    return v;
  }
  /// The next string.
  std::string str() {
    std::string s(size_t(u64()), '\0');
    raw(s.data(), s.size());
    return s;
  }
  /// True when everything was read.
  bool done() const { return p_ == end_; }

 private:
  const uint8_t* p_;
  const uint8_t* end_;
};

/// Every rank's bytes, in rank order.
struct Gathered {
  std::vector<uint8_t> bytes;  ///< rank 0's bytes, then rank 1's, ...
  std::vector<size_t> start;   ///< rank r's bytes are [start[r], start[r + 1])
  /// A reader of rank r's bytes.
  Unpacker from(int r) const { return Unpacker(bytes.data() + start[size_t(r)], start[size_t(r) + 1] - start[size_t(r)]); }
};

/// All ranks' `mine`, on every rank: the sizes through gather_values, then all_gather, in rounds
/// that keep each call within MPI's int counts.
inline Gathered all_gather_bytes(Communicator& comm, const std::vector<uint8_t>& mine, const char* what) {
  const int ranks = comm.size();
  const std::vector<int64_t> sizes = comm.gather_values<int64_t>(int64_t(mine.size()), what);
  Gathered g;
  g.start.assign(size_t(ranks) + 1, 0);
  for (int r = 0; r < ranks; ++r) g.start[size_t(r) + 1] = g.start[size_t(r)] + size_t(sizes[size_t(r)]);
  g.bytes.resize(g.start.back());
  const int64_t cap = int64_t(INT_MAX) / ranks, largest = *std::max_element(sizes.begin(), sizes.end());
  if (largest <= cap) {  // one call, straight into place
    comm.all_gather(mine.data(), g.bytes.data(), sizes, what);
    return g;
  }
  std::vector<uint8_t> recv;
  std::vector<int64_t> counts(static_cast<size_t>(ranks));
  for (int64_t off = 0; off < largest; off += cap) {
    int64_t total = 0;
    for (int r = 0; r < ranks; ++r) total += counts[size_t(r)] = std::clamp<int64_t>(sizes[size_t(r)] - off, 0, cap);
    recv.resize(size_t(total));
    comm.all_gather(mine.data() + std::min<int64_t>(off, int64_t(mine.size())), recv.data(), counts, what);
    size_t at = 0;
    for (int r = 0; r < ranks; ++r) {
      std::memcpy(g.bytes.data() + g.start[size_t(r)] + size_t(off), recv.data() + at, size_t(counts[size_t(r)]));
      at += size_t(counts[size_t(r)]);
    }
  }
  return g;
}

/// Packs what the scan made of a document, without its text and signature: the reason, the
/// counts, and for a document that passed its text's size and 128-bit hash.
inline void pack_scanned(Packer& p, const data::detail::ScannedDoc& s) {
  p.str(s.reason);
  p.u64(s.norm.invalid_bytes), p.u64(s.norm.control_chars), p.u64(s.norm.newlines), p.u64(s.norm.nfc_changed);
  p.u64(s.lines_removed);
  for (uint64_t n : s.pii.n) p.u64(n);
  if (!s.reason.empty()) return;
  const data::Hash128 h = data::hash128(s.text);
  p.u64(s.text.size()), p.u64(h.lo), p.u64(h.hi);
}

/// Reads what pack_scanned wrote into `s` (no text), `text_bytes` and `hash`.
inline void unpack_scanned(Unpacker& u, data::detail::ScannedDoc& s, uint64_t& text_bytes, data::Hash128& hash) {
  s.reason = u.str();
  s.norm.invalid_bytes = u.u64(), s.norm.control_chars = u.u64(), s.norm.newlines = u.u64();
  s.norm.nfc_changed = u.u64() != 0;
  s.lines_removed = u.u64();
  for (uint64_t& n : s.pii.n) n = u.u64();
  if (!s.reason.empty()) return;
  text_bytes = u.u64(), hash.lo = u.u64(), hash.hi = u.u64();
}

}  // namespace detail

/// data::run_pipeline over the ranks of `comm` (see the file comment): every rank calls it with
/// the same options; the output equals one process's. Rank 0 writes the files, reports progress
/// and returns the report; the other ranks return null. One rank returns the plain
/// data::run_pipeline. Errors are thrown on the rank that meets them (a caller with more ranks
/// should then abort them all: Communicator::abort).
inline io::Json run_pipeline(const data::PipelineOptions& o, Communicator& comm,
                             const data::PipelineProgress& progress = {}) {
  if (comm.size() == 1) return data::run_pipeline(o, progress);
  namespace dd = data::detail;
  const dd::PipelineSetup setup(o);
  const int rank = comm.rank(), ranks = comm.size();
  const bool root = rank == 0;
  const std::string dir = o.out, work = o.out + "/.work/mpi", own_path = work + "/rank" + std::to_string(rank) + ".docs";
  io::make_directories(work);
  data::CorpusReader reader(o.inputs, o.read);
  auto report_progress = [&](const char* stage, uint64_t done, uint64_t total) {
    if (root && progress) progress(stage, done, total);
  };
  std::unique_ptr<dd::SpoolWriter> rejects;  // rank 0: the scan's reject lines
  if (root) rejects = std::make_unique<dd::SpoolWriter>(work + "/rejects_scan.jsonl");

  // --- 1. scan: owners clean and sign their documents; every rank runs the exact dedup -----------
  const double t0 = dd::now_seconds();
  const data::MinHasher hasher(o.minhash);
  dd::ScanTally tally;
  data::ExactDedup exact;
  std::vector<std::string> kept_ids;  // rank 0: every kept document's id
  std::vector<int64_t> kept_bytes;    // every kept document's text bytes
  std::vector<int64_t> own_k;         // the numbers of this rank's kept documents, ascending
  std::vector<uint32_t> own_sigs;     // and their signatures
  const size_t sig_len = size_t(o.minhash.num_hashes());
  {
    dd::SpoolWriter own_out(own_path);
    reader.on_error = [&](const data::ReadError& e) {  // every rank reads everything, so every rank counts it
      tally.read_error();
      if (root) rejects->write_str(dd::reject_line(dd::json_safe(e.where), "read_error", {}, dd::json_safe(e.what)));
    };
    std::vector<data::Document> chunk;
    std::vector<dd::ScannedDoc> out;
    std::vector<size_t> mine;
    const uint64_t total_bytes = std::max<uint64_t>(reader.total_file_bytes(), 1);
    uint64_t g0 = 0;  // the number of the chunk's first document
    for (bool more = true; more;) {
      chunk.clear();
      size_t chunk_bytes = 0;
      data::Document d;
      while (chunk_bytes < dd::scan_chunk_bytes && chunk.size() < dd::scan_chunk_docs && (more = reader.next(d))) {
        chunk_bytes += d.text.size();
        chunk.push_back(std::move(d));
      }
      mine.clear();
      for (size_t i = 0; i < chunk.size(); ++i)
        if ((g0 + i) % uint64_t(ranks) == uint64_t(rank)) mine.push_back(i);
      out.assign(mine.size(), dd::ScannedDoc{});
      const int64_t n = int64_t(mine.size());
#ifdef _OPENMP
#pragma omp parallel for schedule(dynamic, 16) num_threads(setup.threads) if (n > 16)
#endif
      for (int64_t j = 0; j < n; ++j)
        dd::scan_document(chunk[mine[size_t(j)]].text, o, setup.quality, setup.near_on ? &hasher : nullptr, out[size_t(j)]);
      detail::Packer packed;
      for (const dd::ScannedDoc& s : out) detail::pack_scanned(packed, s);
      const detail::Gathered all = detail::all_gather_bytes(comm, packed.bytes, "loom-data scan");
      std::vector<detail::Unpacker> from;
      for (int r = 0; r < ranks; ++r) from.push_back(all.from(r));

      size_t next_mine = 0;
      for (size_t i = 0; i < chunk.size(); ++i) {  // merged in input order, as one process does
        const int owner = int((g0 + i) % uint64_t(ranks));
        dd::ScannedDoc s;
        uint64_t text_bytes = 0;
        data::Hash128 hash;
        detail::unpack_scanned(from[size_t(owner)], s, text_bytes, hash);
        const dd::ScannedDoc* own = owner == rank ? &out[next_mine++] : nullptr;
        const std::string id = root ? dd::json_safe(chunk[i].id) : std::string();
        if (!tally.add(chunk[i].text.size(), s)) {
          if (root) rejects->write_str(dd::reject_line(id, s.reason));
          continue;
        }
        if (setup.exact_on) {
          const int64_t first = exact.insert_hash(hash, int64_t(tally.docs_kept));
          if (first >= 0) {
            tally.count_reason("exact_dup");
            if (root) rejects->write_str(dd::reject_line(id, "exact_dup", kept_ids[size_t(first)]));
            continue;
          }
        }
        if (root) kept_ids.push_back(id);
        kept_bytes.push_back(int64_t(text_bytes));
        if (own) {
          own_k.push_back(int64_t(tally.docs_kept));
          own_out.write_u64(0);  // SpoolReader::next_doc's records, without the id
          own_out.write_u64(own->text.size());
          own_out.write_str(own->text);
          own_sigs.insert(own_sigs.end(), own->sig.begin(), own->sig.end());
        }
        tally.keep(text_bytes);
      }
      g0 += chunk.size();
      report_progress("scan", reader.file_bytes_done(), total_bytes);
    }
    LOOM_CHECK(tally.docs_in > 0 || tally.read_errors > 0, value_error, "the corpus is empty: no documents in ",
               reader.files().size(), " input file(s)");
    own_out.commit();
    if (root) rejects->commit();
  }
  const io::Json scan_stats = tally.stats(reader, exact.memory_bytes(), dd::now_seconds() - t0);
  const int64_t n_docs = int64_t(tally.docs_kept);

  // --- 2. neardup: band keys to every rank, bands split over the ranks, one union-find ----------
  const double t1 = dd::now_seconds();
  std::vector<int64_t> dup_of(static_cast<size_t>(n_docs), -1);
  size_t index_bytes = 0;
  if (setup.near_on && n_docs > 0) {
    const int bands = o.minhash.bands, rows = o.minhash.rows;
    std::vector<int> my_bands;  // this rank sorts bands rank, rank + N, ...
    for (int b = rank; b < bands; b += ranks) my_bands.push_back(b);
    const size_t nm = my_bands.size();
    std::vector<std::vector<std::pair<uint64_t, int64_t>>> keys(nm);
    {
      detail::Packer packed;
      for (size_t j = 0; j < own_k.size(); ++j) {
        packed.u64(uint64_t(own_k[j]));
        for (int b = 0; b < bands; ++b) packed.u64(data::band_key(own_sigs.data() + j * sig_len, b, rows));
      }
      const detail::Gathered all = detail::all_gather_bytes(comm, packed.bytes, "loom-data band keys");
      for (std::vector<std::pair<uint64_t, int64_t>>& v : keys) v.reserve(size_t(n_docs));
      std::vector<uint64_t> rec(static_cast<size_t>(bands));
      for (int r = 0; r < ranks; ++r)
        for (detail::Unpacker u = all.from(r); !u.done();) {
          const int64_t k = int64_t(u.u64());
          u.raw(rec.data(), rec.size() * sizeof(uint64_t));
          for (size_t m = 0; m < nm; ++m) keys[m].emplace_back(rec[size_t(my_bands[m])], k);
        }
    }
#ifdef _OPENMP
#pragma omp parallel for schedule(dynamic, 1) num_threads(std::max(1, std::min(setup.threads, int(nm))))
#endif
    for (int64_t m = 0; m < int64_t(nm); ++m) std::sort(keys[size_t(m)].begin(), keys[size_t(m)].end());

    // The signatures that the threshold check can ask for: of documents in groups of two or more.
    std::vector<int64_t> cand_k;     // ascending
    std::vector<uint32_t> cand_sigs;  // cand_k's signatures, in that order
    if (o.minhash.threshold > 0.0) {
      std::vector<uint8_t> grouped(static_cast<size_t>(n_docs), 0);
      for (const auto& v : keys)
        for (size_t g = 0; g < v.size();) {
          size_t e = g + 1;
          while (e < v.size() && v[e].first == v[g].first) ++e;
          if (e - g > 1)
            for (size_t j = g; j < e; ++j) grouped[size_t(v[j].second)] = 1;
          g = e;
        }
      detail::Packer packed;
      for (int64_t k = 0; k < n_docs; ++k)
        if (grouped[size_t(k)]) packed.u64(uint64_t(k));
      const detail::Gathered all = detail::all_gather_bytes(comm, packed.bytes, "loom-data candidates");
      for (int r = 0; r < ranks; ++r)
        for (detail::Unpacker u = all.from(r); !u.done();) grouped[size_t(u.u64())] = 1;
      detail::Packer sigs;
      for (size_t j = 0; j < own_k.size(); ++j)
        if (grouped[size_t(own_k[j])]) {
          sigs.u64(uint64_t(own_k[j]));
          sigs.raw(own_sigs.data() + j * sig_len, sig_len * sizeof(uint32_t));
        }
      const detail::Gathered got = detail::all_gather_bytes(comm, sigs.bytes, "loom-data signatures");
      std::vector<std::pair<int64_t, size_t>> at;  // (k, offset of its signature in got)
      for (int r = 0; r < ranks; ++r) {
        const size_t rec = sizeof(uint64_t) + sig_len * sizeof(uint32_t);
        for (size_t p = got.start[size_t(r)]; p < got.start[size_t(r) + 1]; p += rec) {
          uint64_t k = 0;
          std::memcpy(&k, got.bytes.data() + p, sizeof k);
          at.emplace_back(int64_t(k), p + sizeof k);
        }
      }
      std::sort(at.begin(), at.end());
      cand_sigs.resize(at.size() * sig_len);
      for (size_t c = 0; c < at.size(); ++c) {
        cand_k.push_back(at[c].first);
        std::memcpy(cand_sigs.data() + c * sig_len, got.bytes.data() + at[c].second, sig_len * sizeof(uint32_t));
      }
    }
    auto sig_of = [&](int64_t k) {
      const size_t c = size_t(std::lower_bound(cand_k.begin(), cand_k.end(), k) - cand_k.begin());
      LOOM_CHECK(c < cand_k.size() && cand_k[c] == k, dist_error, "dist: the signature of kept document ", k,
                 " was not exchanged");
      return cand_sigs.data() + c * sig_len;
    };
    auto similar = [&](int64_t x, int64_t y) {
      return o.minhash.threshold <= 0.0 || data::signatures_similar(sig_of(x), sig_of(y), o.minhash);
    };
    std::vector<std::vector<std::pair<int64_t, int64_t>>> edges(nm);
#ifdef _OPENMP
#pragma omp parallel for schedule(dynamic, 1) num_threads(std::max(1, std::min(setup.threads, int(nm))))
#endif
    for (int64_t m = 0; m < int64_t(nm); ++m) data::band_pairs(keys[size_t(m)], similar, edges[size_t(m)]);
    index_bytes = nm * size_t(n_docs) * sizeof(std::pair<uint64_t, int64_t>) + cand_sigs.size() * sizeof(uint32_t) +
                  cand_k.size() * sizeof(int64_t);
    keys.clear();

    detail::Packer packed;
    for (const auto& list : edges)
      for (const auto& e : list) packed.u64(uint64_t(e.first)), packed.u64(uint64_t(e.second));
    const detail::Gathered all = detail::all_gather_bytes(comm, packed.bytes, "loom-data near-duplicate pairs");
    std::vector<std::vector<std::pair<int64_t, int64_t>>> joined(static_cast<size_t>(ranks));
    for (int r = 0; r < ranks; ++r)
      for (detail::Unpacker u = all.from(r); !u.done();) {
        const int64_t a = int64_t(u.u64());
        joined[size_t(r)].emplace_back(a, int64_t(u.u64()));
      }
    dup_of = data::lowest_in_component(n_docs, joined);
  }
  io::Json near_stats = io::Json::object();
  {
    int64_t removed = 0;
    for (int64_t d : dup_of) removed += d >= 0;
    near_stats.set("near_dup", removed);
    near_stats.set("index_bytes", int64_t(index_bytes));
    near_stats.set("seconds", dd::now_seconds() - t1);
    report_progress("neardup", uint64_t(n_docs), uint64_t(n_docs));
  }

  // --- 3. split: owners draw splits; the val/test n-grams go to every rank; owners decontaminate -
  const double t2 = dd::now_seconds();
  const int ngram = o.decontamination_ngram;
  std::vector<int8_t> own_split(own_k.size(), -1);
  std::vector<uint8_t> own_contaminated(own_k.size(), 0);
  data::Decontaminator decon(std::max(ngram, 1));
  {
    std::vector<uint64_t> refs, grams, words;
    std::string id, text;
    dd::SpoolReader docs(own_path);
    for (size_t j = 0; docs.next_doc(id, text); ++j) {
      if (dup_of[size_t(own_k[j])] >= 0) continue;
      own_split[j] = int8_t(data::assign_split(text, setup.fractions, o.seed));  // the cluster's key: its kept text
      if (ngram > 0 && own_split[j] != int8_t(data::Split::train)) {
        data::shingle_hashes(text, ngram, grams, words);
        refs.insert(refs.end(), grams.begin(), grams.end());
      }
    }
    std::sort(refs.begin(), refs.end());
    refs.erase(std::unique(refs.begin(), refs.end()), refs.end());
    detail::Packer packed;
    packed.raw(refs.data(), refs.size() * sizeof(uint64_t));
    const detail::Gathered all = detail::all_gather_bytes(comm, packed.bytes, "loom-data reference n-grams");
    for (int r = 0; r < ranks; ++r)
      for (detail::Unpacker u = all.from(r); !u.done();) decon.add_reference_hash(u.u64());
  }
  if (ngram > 0 && decon.size() > 0) {
    std::string id, text;
    dd::SpoolReader docs(own_path);
    for (size_t j = 0; docs.next_doc(id, text); ++j)
      if (own_split[j] == int8_t(data::Split::train) && decon.contaminated(text))
        own_split[j] = -1, own_contaminated[j] = 1;
  }
  std::vector<int8_t> split(static_cast<size_t>(n_docs), -1);
  std::vector<uint8_t> contaminated(static_cast<size_t>(n_docs), 0);
  {
    detail::Packer packed;
    for (size_t j = 0; j < own_k.size(); ++j)
      if (dup_of[size_t(own_k[j])] < 0)
        packed.u64(uint64_t(own_k[j])), packed.u64(uint64_t(int64_t(own_split[j]))), packed.u64(own_contaminated[j]);
    const detail::Gathered all = detail::all_gather_bytes(comm, packed.bytes, "loom-data splits");
    for (int r = 0; r < ranks; ++r)
      for (detail::Unpacker u = all.from(r); !u.done();) {
        const size_t k = size_t(u.u64());
        split[k] = int8_t(int64_t(u.u64()));
        contaminated[k] = uint8_t(u.u64());
      }
  }
  int64_t decontaminated = 0;
  for (uint8_t c : contaminated) decontaminated += c;
  if (root) {  // the near duplicates in order, then the decontaminated documents in order, as one process
    dd::SpoolWriter rej(work + "/rejects_split.jsonl");
    for (int64_t k = 0; k < n_docs; ++k)
      if (dup_of[size_t(k)] >= 0)
        rej.write_str(dd::reject_line(kept_ids[size_t(k)], "near_dup", kept_ids[size_t(dup_of[size_t(k)])]));
    for (int64_t k = 0; k < n_docs; ++k)
      if (contaminated[size_t(k)]) rej.write_str(dd::reject_line(kept_ids[size_t(k)], "decontaminated"));
    rej.commit();
  }
  io::Json split_stats = io::Json::object();
  split_stats.set("decontaminated", decontaminated);
  split_stats.set("reference_ngrams", int64_t(decon.size()));
  split_stats.set("seconds", dd::now_seconds() - t2);

  // --- 4. shards: owners tokenise blocks of kept documents; rank 0 writes them in order ----------
  const double t3 = dd::now_seconds();
  std::unique_ptr<dd::ShardOutput> shards;
  if (root) shards = std::make_unique<dd::ShardOutput>(dir, setup.tok, o.shard_tokens);
  {
    dd::SpoolReader docs(own_path);
    std::string id, text;
    size_t j = 0;  // this rank's next kept document
    std::vector<int64_t> block_k;
    std::vector<std::string> texts;
    std::vector<std::vector<uint32_t>> tokens;
    for (int64_t kb = 0; kb < n_docs;) {
      int64_t ke = kb;  // the block [kb, ke): the same on every rank
      for (size_t bytes = 0; ke < n_docs && bytes < dd::shard_chunk_bytes; ++ke)
        if (split[size_t(ke)] >= 0) bytes += size_t(kept_bytes[size_t(ke)]);
      block_k.clear(), texts.clear();
      for (; j < own_k.size() && own_k[j] < ke; ++j) {
        LOOM_CHECK(docs.next_doc(id, text), io_error, own_path, ": truncated");
        if (split[size_t(own_k[j])] >= 0) block_k.push_back(own_k[j]), texts.push_back(std::move(text));
      }
      const int64_t n = int64_t(texts.size());
      tokens.assign(size_t(n), {});
#ifdef _OPENMP
#pragma omp parallel for schedule(dynamic, 4) num_threads(setup.threads) if (n > 4)
#endif
      for (int64_t i = 0; i < n; ++i) tokens[size_t(i)] = setup.tok.encode_ordinary(texts[size_t(i)]);
      detail::Packer packed;
      for (int64_t i = 0; i < n; ++i) {
        packed.u64(uint64_t(block_k[size_t(i)]));
        packed.u64(tokens[size_t(i)].size());
        packed.raw(tokens[size_t(i)].data(), tokens[size_t(i)].size() * sizeof(uint32_t));
      }
      const detail::Gathered all = detail::all_gather_bytes(comm, packed.bytes, "loom-data tokens");
      if (root) {
        std::vector<std::vector<uint32_t>> block(static_cast<size_t>(ke - kb));
        for (int r = 0; r < ranks; ++r)
          for (detail::Unpacker u = all.from(r); !u.done();) {
            std::vector<uint32_t>& t = block[size_t(int64_t(u.u64()) - kb)];
            t.resize(size_t(u.u64()));
            u.raw(t.data(), t.size() * sizeof(uint32_t));
          }
        for (int64_t k = kb; k < ke; ++k)
          if (split[size_t(k)] >= 0)
            shards->add(kept_ids[size_t(k)], split[size_t(k)], block[size_t(k - kb)], kept_bytes[size_t(k)]);
      }
      kb = ke;
      report_progress("shards", uint64_t(kb), uint64_t(n_docs));
    }
  }
  std::filesystem::remove(own_path);
  const std::vector<int64_t> peaks = comm.gather_values<int64_t>(int64_t(dd::peak_rss_bytes()), "loom-data memory");
  int64_t kept = 0;
  for (int8_t s : split) kept += s >= 0;
  if (!root) {
    LOOM_CHECK(kept > 0, value_error, "every document was dropped (", tally.docs_in, " in; see ", dir,
               "/rejects.jsonl and ", dir, "/report.json)");
    return nullptr;
  }
  shards->finish();
  dd::write_tokenizer_and_rejects(dir, setup.tok, {work + "/rejects_scan.jsonl", work + "/rejects_split.jsonl"});
  std::error_code ec;
  std::filesystem::remove_all(work, ec);  // every rank removed its spool before the last exchange
  const double shard_seconds = dd::now_seconds() - t3;
  return dd::write_report(o, setup.tok, scan_stats, near_stats, split_stats, *shards, shard_seconds, setup.threads,
                          ranks, uint64_t(*std::max_element(peaks.begin(), peaks.end())));
}

}  // namespace loom::dist
