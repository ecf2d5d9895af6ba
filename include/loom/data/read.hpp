#pragma once
/// @file read.hpp
/// The first stage of the data pipeline: a streaming reader of a corpus made of files and folders.
///
/// Formats, chosen by the file name:
/// - `*.jsonl`, `*.ndjson`, `*.json` (each optionally `.gz`): JSON Lines, one JSON object per line,
///   the way datatrove's JsonlReader and the Hugging Face dumps (FineWeb, The Pile, C4) store
///   documents: the text in field "text", an optional "id" (string or integer). Blank lines are
///   skipped; a document without an id is named "FILE:LINE".
/// - anything else: plain text, the whole file is one document named by its path.
/// Gzip is recognised by its magic bytes (1f 8b), not by the name, for both formats, and read
/// through zlib (CMake defines LOOM_HAVE_ZLIB=1 when it finds it). A truncated or corrupt gzip
/// stream is an error, never silently shortened text.
///
/// Streaming: JSONL is read line by line through one buffer, so memory stays bounded by the
/// longest line (at most max_line_bytes, 64 MiB) or, for plain text, by the largest file.
/// Folders are walked recursively and their files read in byte order of their paths, so that two
/// runs over the same corpus see the same documents in the same order; hidden files and folders
/// (name starting with '.') are skipped.
///
/// Errors: a JSONL line that is not a JSON object, lacks the text field or has invalid UTF-8
/// (loom's JSON parser is strict), and a file that cannot be opened or whose gzip data is broken,
/// throw io_error naming "FILE:LINE" or "FILE"; with ReadOptions::skip_errors they are counted,
/// reported to on_error, and reading goes on with the next line or file.

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "loom/core/error.hpp"
#include "loom/io/json.hpp"

#if LOOM_HAVE_ZLIB
#include <zlib.h>
#endif

namespace loom::data {

/// One document of a corpus: a stable id and its raw text.
struct Document {
  std::string id;    ///< the JSONL id field, or "FILE:LINE", or the path of a plain text file
  std::string text;  ///< the raw text (not normalised)
};

/// Where and why an input could not be read.
struct ReadError {
  std::string where;  ///< "FILE:LINE" or "FILE"
  std::string what;   ///< what is wrong
};

/// Options of the reader.
struct ReadOptions {
  std::string text_field = "text";  ///< JSONL field holding the text
  std::string id_field = "id";      ///< JSONL field holding the id (string or integer), optional per line
  bool skip_errors = false;         ///< false: throw io_error at the first bad line/file; true: report it to on_error and go on
};

/// Longest JSONL line accepted (bytes, without the newline).
inline constexpr size_t max_line_bytes = size_t(64) << 20;

/// Is `path` a JSONL file by its name: ends in .jsonl or .json or .ndjson, optionally followed by .gz.
inline bool is_jsonl_path(const std::string& path) {
  std::string_view p(path);
  auto ends_with = [&](std::string_view suffix) {
    return p.size() >= suffix.size() && p.substr(p.size() - suffix.size()) == suffix;
  };
  if (ends_with(".gz")) p.remove_suffix(3);
  return ends_with(".jsonl") || ends_with(".json") || ends_with(".ndjson");
}

namespace detail {

/// One input file opened for reading, plain or gzip (by its magic bytes); reads raw or
/// decompressed bytes and turns every failure into an io_error naming the file.
class InputFile {
 public:
  /// Opens `path`; throws io_error when it cannot, or when it is gzip and zlib is missing.
  explicit InputFile(std::string path) : path_(std::move(path)) {
    f_ = std::fopen(path_.c_str(), "rb");
    LOOM_CHECK(f_ != nullptr, io_error, path_, ": cannot open: ", std::strerror(errno));
    unsigned char magic[2] = {0, 0};
    const size_t got = std::fread(magic, 1, 2, f_);
    const bool gzip = got == 2 && magic[0] == 0x1f && magic[1] == 0x8b;
    if (!gzip) {
      std::rewind(f_);
      return;
    }
    std::fclose(f_);
    f_ = nullptr;
#if LOOM_HAVE_ZLIB
    gz_ = gzopen(path_.c_str(), "rb");
    LOOM_CHECK(gz_ != nullptr, io_error, path_, ": cannot open: ", std::strerror(errno));
    gzbuffer(gz_, 1u << 18);
#else
    throw io_error(loom::detail::concat(
        path_, ": is gzip-compressed, but loom was built without zlib (apt-get install zlib1g-dev and reconfigure)"));
#endif
  }
  InputFile(const InputFile&) = delete;
  InputFile& operator=(const InputFile&) = delete;
  ~InputFile() {
    if (f_) std::fclose(f_);
#if LOOM_HAVE_ZLIB
    if (gz_) gzclose(gz_);
#endif
  }

  /// Reads up to n bytes (decompressed for gzip) into buf; 0 at the end of the file.
  size_t read(char* buf, size_t n) {
#if LOOM_HAVE_ZLIB
    if (gz_) {
      const int got = gzread(gz_, buf, unsigned(n));
      int err = Z_OK;
      const char* msg = gzerror(gz_, &err);
      // A truncated stream sets Z_BUF_ERROR ("unexpected end of file") while gzread still returns
      // the bytes it had; a CRC or length mismatch sets Z_DATA_ERROR. Both are errors.
      if (got < 0 || (err != Z_OK && err != Z_STREAM_END))
        throw io_error(loom::detail::concat(path_, ": corrupt gzip data (", msg ? msg : "unknown error", ")"));
      return size_t(got);
    }
#endif
    const size_t got = std::fread(buf, 1, n, f_);
    LOOM_CHECK(got == n || !std::ferror(f_), io_error, path_, ": read failed: ", std::strerror(errno));
    raw_ += got;
    return got;
  }

  /// Bytes of the file on disk consumed so far (compressed bytes for gzip).
  uint64_t raw_offset() const {
#if LOOM_HAVE_ZLIB
    if (gz_) {
      const z_off_t off = gzoffset(gz_);
      return off < 0 ? 0 : uint64_t(off);
    }
#endif
    return raw_;
  }

 private:
  std::string path_;
  std::FILE* f_ = nullptr;
#if LOOM_HAVE_ZLIB
  gzFile gz_ = nullptr;
#endif
  uint64_t raw_ = 0;
};

/// The files under folder `dir` (recursively, hidden entries skipped), as dir + "/" + relative
/// path, sorted by the relative path's bytes.
inline std::vector<std::string> list_folder(const std::string& dir) {
  namespace fs = std::filesystem;
  std::vector<std::string> rel;
  std::error_code ec;
  fs::recursive_directory_iterator it(dir, ec), end;
  LOOM_CHECK(!ec, io_error, dir, ": cannot list the folder: ", ec.message());
  for (; it != end; it.increment(ec)) {
    LOOM_CHECK(!ec, io_error, dir, ": cannot list the folder: ", ec.message());
    const fs::path& p = it->path();
    if (p.filename().string().rfind('.', 0) == 0) {  // hidden: skip it (and all below it)
      if (it->is_directory(ec)) it.disable_recursion_pending();
      continue;
    }
    if (it->is_directory(ec)) continue;
    rel.push_back(p.lexically_relative(dir).generic_string());
  }
  std::sort(rel.begin(), rel.end());
  const std::string prefix = (!dir.empty() && dir.back() == '/') ? dir : dir + "/";
  for (auto& r : rel) r = prefix + r;
  return rel;
}

}  // namespace detail

/// A streaming reader of documents from files and folders (see the file comment for formats).
class CorpusReader {
 public:
  /// A reader over files and folders (folders recursively; each folder's files in sorted byte
  /// order of their paths; hidden files skipped). Throws io_error naming a path that does not
  /// exist. Paths are kept as given (folder + "/" + relative name).
  explicit CorpusReader(std::vector<std::string> inputs, ReadOptions options = {}) : opt_(std::move(options)) {
    namespace fs = std::filesystem;
    for (const auto& in : inputs) {
      std::error_code ec;
      const auto st = fs::status(in, ec);
      LOOM_CHECK(fs::exists(st), io_error, in, ": no such file or folder");
      if (fs::is_directory(st)) {
        for (auto& f : detail::list_folder(in)) files_.push_back(std::move(f));
      } else {
        files_.push_back(in);
      }
    }
    for (const auto& f : files_) {
      std::error_code ec;
      const auto size = fs::file_size(f, ec);
      total_bytes_ += ec ? 0 : uint64_t(size);
    }
    limits_.max_bytes = max_line_bytes;
    limits_.unique_keys = false;  // faster; the reader checks its own two fields for repeats
  }

  /// The files to read, in reading order.
  const std::vector<std::string>& files() const { return files_; }
  /// Total size on disk of the files (for a progress bar).
  uint64_t total_file_bytes() const { return total_bytes_; }
  /// Bytes of the files consumed so far (on disk, i.e. compressed for .gz), for progress.
  uint64_t file_bytes_done() const { return done_bytes_ + (in_ ? in_->raw_offset() : 0); }
  /// Uncompressed bytes of input read so far (text of documents plus JSON overhead).
  uint64_t bytes_read() const { return bytes_read_; }
  /// Bad lines and files skipped so far (skip_errors mode).
  uint64_t errors() const { return errors_; }

  /// Called for each skipped bad line or file in skip_errors mode.
  std::function<void(const ReadError&)> on_error;

  /// Reads the next document into `doc`; false at the end of the corpus.
  bool next(Document& doc) {
    for (;;) {
      if (!in_) {
        if (next_file_ >= files_.size()) return false;
        const std::string& path = files_[next_file_++];
        if (!open(path)) continue;
        if (!jsonl_) {
          if (read_whole(path, doc)) return true;
          continue;
        }
      }
      std::string_view line;
      LineResult r;
      try {
        r = next_line(line);
      } catch (const io_error& e) {
        file_failed(e);
        continue;
      }
      if (r == LineResult::end) {
        close();
        continue;
      }
      ++line_no_;
      if (r == LineResult::too_long) {
        bad_line(loom::detail::concat("line is longer than ", max_line_bytes >> 20, " MiB"));
        continue;
      }
      if (line.find_first_not_of(" \t\r") == std::string_view::npos) continue;  // blank line
      if (parse_line(line, doc)) return true;
    }
  }

 private:
  enum class LineResult { line, too_long, end };

  std::string where() const { return path_ + ":" + std::to_string(line_no_); }

  // Reports (skip mode) or throws an error.
  void report(std::string where, std::string what) {
    if (!opt_.skip_errors) throw io_error(where + ": " + what);
    ++errors_;
    if (on_error) on_error(ReadError{std::move(where), std::move(what)});
  }
  // Reports (skip mode) or throws the error of the current line; returns false.
  bool bad_line(std::string what) {
    report(where(), std::move(what));
    return false;
  }
  // A file-level io_error (its message starts "FILE: "): the file is closed and given up.
  void file_failed(const io_error& e) {
    const std::string path = path_;
    close();
    std::string msg = e.what();
    if (msg.compare(0, path.size() + 2, path + ": ") == 0) msg.erase(0, path.size() + 2);
    report(path, msg);
  }

  bool open(const std::string& path) {
    path_ = path;
    try {
      in_ = std::make_unique<detail::InputFile>(path);
    } catch (const io_error& e) {
      file_failed(e);
      return false;
    }
    jsonl_ = is_jsonl_path(path);
    line_no_ = 0;
    pos_ = end_ = scanned_ = 0;
    eof_ = false;
    return true;
  }

  void close() {
    if (in_) {
      std::error_code ec;
      const auto size = std::filesystem::file_size(path_, ec);
      done_bytes_ += ec ? in_->raw_offset() : uint64_t(size);
    }
    in_.reset();
  }

  // A plain text file: the whole (decompressed) file is one document.
  bool read_whole(const std::string& path, Document& doc) {
    doc.text.clear();
    try {
      size_t chunk = size_t(1) << 16;
      for (;;) {
        const size_t old = doc.text.size();
        doc.text.resize(old + chunk);
        const size_t got = in_->read(&doc.text[old], chunk);
        doc.text.resize(old + got);
        if (got == 0) break;
        chunk = std::min<size_t>(chunk * 2, size_t(1) << 24);
      }
    } catch (const io_error& e) {
      doc.text.clear();
      file_failed(e);
      return false;
    }
    bytes_read_ += doc.text.size();
    doc.id = path;
    close();
    return true;
  }

  // The next line of the current file (without its '\n'), a line over max_line_bytes (skipped to
  // its end), or the end of the file. The view stays valid until the next call.
  LineResult next_line(std::string_view& line) {
    bool discarding = false;  // inside a line that is too long: drop bytes up to its newline
    for (;;) {
      const char* base = buf_.data();
      const void* nl = scanned_ < end_ ? std::memchr(base + scanned_, '\n', end_ - scanned_) : nullptr;
      if (nl) {
        const size_t at = size_t(static_cast<const char*>(nl) - base);
        line = std::string_view(base + pos_, at - pos_);
        bytes_read_ += at - pos_ + 1;
        pos_ = scanned_ = at + 1;
        return discarding || line.size() > max_line_bytes ? LineResult::too_long : LineResult::line;
      }
      scanned_ = end_;
      if (eof_) {
        if (pos_ == end_) return discarding ? LineResult::too_long : LineResult::end;
        line = std::string_view(base + pos_, end_ - pos_);
        bytes_read_ += end_ - pos_;
        pos_ = scanned_ = end_;
        return discarding || line.size() > max_line_bytes ? LineResult::too_long : LineResult::line;
      }
      if (end_ - pos_ > max_line_bytes) {  // too long: forget what we have, keep reading to '\n'
        discarding = true;
        bytes_read_ += end_ - pos_;
        pos_ = scanned_ = end_;
      }
      // Make room: move the partial line to the front, grow the buffer when it is nearly full.
      if (pos_ > 0) {
        std::memmove(&buf_[0], buf_.data() + pos_, end_ - pos_);
        end_ -= pos_;
        scanned_ -= pos_;
        pos_ = 0;
      }
      constexpr size_t chunk = size_t(1) << 20;
      // (end_ <= max_line_bytes here, so the buffer never grows past max_line_bytes + 2 chunks)
      if (buf_.size() - end_ < chunk)
        buf_.resize(std::min(std::max(buf_.size() * 2, end_ + chunk), max_line_bytes + 2 * chunk));
      const size_t got = in_->read(&buf_[end_], buf_.size() - end_);
      if (got == 0) eof_ = true;
      end_ += got;
    }
  }

  // Parses one JSONL line into doc; false (after reporting) when the line is bad.
  bool parse_line(std::string_view line, Document& doc) {
    io::Json j;
    try {
      j = io::parse_json(line, limits_);
    } catch (const io::json_error& e) {
      std::string msg = e.what();
      if (msg.rfind("JSON: ", 0) == 0) msg.erase(0, 6);
      return bad_line("malformed JSON: " + msg);
    }
    if (!j.is_object()) {
      return bad_line(loom::detail::concat("not a JSON object but ", j.type_phrase()));
    }
    const io::Json* text = nullptr;
    const io::Json* id = nullptr;
    for (const auto& kv : j.as_object()) {
      if (kv.first == opt_.text_field) {
        if (text) return bad_line(loom::detail::concat("field \"", opt_.text_field, "\" appears twice"));
        text = &kv.second;
      } else if (kv.first == opt_.id_field) {
        if (id) return bad_line(loom::detail::concat("field \"", opt_.id_field, "\" appears twice"));
        id = &kv.second;
      }
    }
    if (!text) return bad_line(loom::detail::concat("field \"", opt_.text_field, "\" is missing"));
    if (!text->is_string())
      return bad_line(loom::detail::concat("field \"", opt_.text_field, "\" is ", phrase(*text), ", not a string"));
    if (id && !id->is_string() && !id->is_int())
      return bad_line(loom::detail::concat("field \"", opt_.id_field, "\" is ", phrase(*id),
                                           ", not a string or an integer"));
    doc.text.assign(text->as_string());
    if (!id) doc.id = where();
    else if (id->is_string()) doc.id.assign(id->as_string());
    else doc.id = std::to_string(id->as_int());
    return true;
  }

  // "a number" for integers and doubles alike, else the JSON type with its article.
  static const char* phrase(const io::Json& v) { return v.is_number() ? "a number" : v.type_phrase(); }

  ReadOptions opt_;
  io::JsonLimits limits_;
  std::vector<std::string> files_;
  uint64_t total_bytes_ = 0;
  size_t next_file_ = 0;               // index in files_ of the next file to open
  std::string path_;                   // the file being read
  std::unique_ptr<detail::InputFile> in_;
  bool jsonl_ = false;
  uint64_t line_no_ = 0;
  std::string buf_;                    // JSONL read buffer: [pos_, end_) not yet consumed
  size_t pos_ = 0, end_ = 0, scanned_ = 0;  // scanned_: no '\n' in [pos_, scanned_)
  bool eof_ = false;
  uint64_t done_bytes_ = 0, bytes_read_ = 0, errors_ = 0;
};

}  // namespace loom::data
