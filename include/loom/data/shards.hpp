#pragma once
/// @file shards.hpp
/// Token shards in llm.c's format, written by loom-data and streamed by loom-train.
///
/// A shard is a header of 256 little-endian int32 followed by the tokens:
///   header[0]  magic:   20240520 for uint16 tokens (GPT-2 sized vocabularies),
///                       20240801 for uint32 tokens (vocabularies over 65,535 ids)
///   header[1]  version: 1 with uint16 tokens, 7 with uint32 tokens (llm.c's values)
///   header[2]  the number of tokens that follow
/// The rest of the header is zero. This is the layout of llm.c's dev/data/data_common.py, so
/// shards move between the two projects in either direction.
///
/// The shards of one split (DIR/train_000000.bin, DIR/train_000001.bin, ...) are one token stream
/// cut into files of `shard_tokens` tokens (the last one shorter), as llm.c cuts them: a document
/// may continue from one shard into the next. Each shard is written atomically when it is full
/// (io::write_file_atomic), so a shard under its final name is always complete.
///
/// Reading maps each file into memory (mmap) and checks the header against the file's size: a
/// truncated or foreign file is an io_error that names it, never a silently short stream.

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <dirent.h>
#include <memory>
#include <string>
#include <vector>

#include "loom/core/error.hpp"
#include "loom/io/file.hpp"

namespace loom::data {

/// Header magic of shards holding uint16 tokens (llm.c, GPT-2).
inline constexpr int32_t shard_magic_u16 = 20240520;
/// Header version of shards holding uint16 tokens.
inline constexpr int32_t shard_version_u16 = 1;
/// Header magic of shards holding uint32 tokens (llm.c, Llama 3).
inline constexpr int32_t shard_magic_u32 = 20240801;
/// Header version of shards holding uint32 tokens.
inline constexpr int32_t shard_version_u32 = 7;
/// Header size in int32 values.
inline constexpr size_t shard_header_ints = 256;
/// Header size in bytes.
inline constexpr size_t shard_header_bytes = shard_header_ints * sizeof(int32_t);

/// Bytes per token for a vocabulary of `vocab_size` ids: 2 up to 65,536 ids, else 4.
inline int shard_token_bytes(uint64_t vocab_size) { return vocab_size <= 65536 ? 2 : 4; }

/// The name of shard `index` of split `prefix` in `dir`: DIR/PREFIX_000123.bin.
inline std::string shard_path(const std::string& dir, const std::string& prefix, int64_t index) {
  char num[32];
  std::snprintf(num, sizeof num, "_%06lld.bin", (long long)index);
  return dir + "/" + prefix + num;
}

/// Writes one split's token stream into numbered shards of `shard_tokens` tokens each.
class ShardWriter {
 public:
  /// A writer of DIR/PREFIX_*.bin for ids below `vocab_size`; nothing is written until a shard fills
  /// or finish() is called.
  ShardWriter(std::string dir, std::string prefix, uint64_t vocab_size, int64_t shard_tokens)
      : dir_(std::move(dir)), prefix_(std::move(prefix)), vocab_size_(vocab_size), shard_tokens_(shard_tokens),
        width_(shard_token_bytes(vocab_size)) {
    LOOM_CHECK(shard_tokens > 0, value_error, "ShardWriter: shard_tokens must be positive, got ", shard_tokens);
    LOOM_CHECK(shard_tokens < (int64_t(1) << 31), value_error, "ShardWriter: shard_tokens must be below 2^31 (llm.c's int32 count), got ",
               shard_tokens);
    LOOM_CHECK(vocab_size > 0 && vocab_size <= (uint64_t(1) << 32), value_error, "ShardWriter: vocab_size ", vocab_size,
               " must lie in [1, 2^32]");
    buf_.reserve(size_t(std::min<int64_t>(shard_tokens_, int64_t(1) << 22)) * size_t(width_));
  }

  /// Where the next token goes: the shard index and the offset inside it.
  std::pair<int64_t, int64_t> position() const { return {shards_written_, count_}; }

  /// Appends tokens to the stream; a full shard is written out at once. Throws value_error for an
  /// id at or above vocab_size (nothing of the call is appended then).
  void append(const uint32_t* ids, size_t n) {
    for (size_t i = 0; i < n; ++i)
      LOOM_CHECK(ids[i] < vocab_size_, value_error, "ShardWriter: token id ", ids[i], " is outside the vocabulary of ",
                 vocab_size_);
    for (size_t i = 0; i < n; ++i) {
      const uint32_t v = uint32_t(ids[i]);
      unsigned char b[4] = {uint8_t(v), uint8_t(v >> 8), uint8_t(v >> 16), uint8_t(v >> 24)};  // little-endian
      buf_.insert(buf_.end(), b, b + width_);
      if (++count_ == shard_tokens_) flush();
    }
    total_ += int64_t(n);
  }

  /// Writes the last, partly filled shard (if any tokens are pending). Returns the number of shards.
  int64_t finish() {
    if (count_ > 0) flush();
    return shards_written_;
  }

  /// Tokens appended so far.
  int64_t tokens() const { return total_; }
  /// Shards written so far.
  int64_t shards() const { return shards_written_; }
  /// Paths of the shards written so far.
  const std::vector<std::string>& paths() const { return paths_; }

 private:
  void flush() {
    const std::string path = shard_path(dir_, prefix_, shards_written_);
    int32_t header[shard_header_ints] = {};
    header[0] = width_ == 2 ? shard_magic_u16 : shard_magic_u32;
    header[1] = width_ == 2 ? shard_version_u16 : shard_version_u32;
    header[2] = int32_t(count_);
    io::write_file_atomic(path, [&](io::FileWriter& w) {
      unsigned char le[shard_header_bytes];
      for (size_t i = 0; i < shard_header_ints; ++i)
        for (int k = 0; k < 4; ++k) le[4 * i + size_t(k)] = uint8_t(uint32_t(header[i]) >> (8 * k));
      w.write(le, sizeof le);
      w.write(buf_.data(), buf_.size());
    });
    paths_.push_back(path);
    ++shards_written_;
    count_ = 0;
    buf_.clear();
  }

  std::string dir_, prefix_;
  uint64_t vocab_size_;
  int64_t shard_tokens_;
  int width_;
  std::vector<unsigned char> buf_;
  int64_t count_ = 0, total_ = 0, shards_written_ = 0;
  std::vector<std::string> paths_;
};

/// One shard file mapped into memory, its header checked against its size.
class ShardFile {
 public:
  /// Maps `path`; throws io_error naming the file when it cannot be opened, is not a shard in
  /// llm.c's format, or is shorter or longer than its header says.
  explicit ShardFile(const std::string& path) : path_(path) {
    io::require_not_directory(path);
    int fd = ::open(path.c_str(), O_RDONLY);
    LOOM_CHECK(fd >= 0, io_error, path, ": cannot open (", std::strerror(errno), ")");
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
      ::close(fd);
      throw io_error(path + ": cannot stat (" + std::strerror(errno) + ")");
    }
    size_ = size_t(st.st_size);
    if (size_ < shard_header_bytes) {
      ::close(fd);
      throw io_error(path + ": " + std::to_string(size_) + " bytes is too short for an llm.c token shard (header: " +
                     std::to_string(shard_header_bytes) + " bytes)");
    }
    void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    ::close(fd);
    LOOM_CHECK(p != MAP_FAILED, io_error, path, ": cannot map into memory (", std::strerror(errno), ")");
    base_ = static_cast<const unsigned char*>(p);
    auto header = [&](int i) {
      uint32_t v = 0;
      for (int k = 0; k < 4; ++k) v |= uint32_t(base_[4 * i + k]) << (8 * k);
      return int32_t(v);
    };
    const int32_t magic = header(0), version = header(1);
    count_ = header(2);
    try {
      if (magic == shard_magic_u16) {
        width_ = 2;
        LOOM_CHECK(version == shard_version_u16, io_error, path, ": uint16 shard of version ", version, ", expected ",
                   shard_version_u16);
      } else if (magic == shard_magic_u32) {
        width_ = 4;
        LOOM_CHECK(version == shard_version_u32, io_error, path, ": uint32 shard of version ", version, ", expected ",
                   shard_version_u32);
      } else {
        throw io_error(path + ": not an llm.c token shard (magic " + std::to_string(magic) + ", expected " +
                       std::to_string(shard_magic_u16) + " or " + std::to_string(shard_magic_u32) + ")");
      }
      LOOM_CHECK(count_ >= 0, io_error, path, ": negative token count ", count_, " in the header");
      const size_t want = shard_header_bytes + size_t(count_) * size_t(width_);
      LOOM_CHECK(size_ == want, io_error, path, ": the header says ", count_, " tokens (", want, " bytes) but the file has ",
                 size_, " bytes", size_ < want ? " (truncated)" : "");
    } catch (...) {
      ::munmap(const_cast<unsigned char*>(base_), size_);
      throw;
    }
  }
  ShardFile(const ShardFile&) = delete;
  ShardFile& operator=(const ShardFile&) = delete;
  ~ShardFile() {
    if (base_) ::munmap(const_cast<unsigned char*>(base_), size_);
  }

  /// Number of tokens.
  int64_t size() const { return count_; }
  /// Bytes per token (2 or 4).
  int token_bytes() const { return width_; }
  /// Token i (no bounds check).
  uint32_t operator[](int64_t i) const {
    const unsigned char* p = base_ + shard_header_bytes + size_t(i) * size_t(width_);
    return width_ == 2 ? uint32_t(p[0] | (p[1] << 8))
                       : uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24;
  }
  /// The file's path.
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  const unsigned char* base_ = nullptr;
  size_t size_ = 0;
  int64_t count_ = 0;
  int width_ = 2;
};

/// The paths DIR/PREFIX_<digits>.bin, sorted by name (the order they were written in).
inline std::vector<std::string> list_shards(const std::string& dir, const std::string& prefix) {
  DIR* d = ::opendir(dir.c_str());
  LOOM_CHECK(d != nullptr, io_error, dir, ": cannot open the folder (", std::strerror(errno), ")");
  std::vector<std::string> names;
  while (dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    const std::string head = prefix + "_", tail = ".bin";
    if (name.size() <= head.size() + tail.size() || name.compare(0, head.size(), head) != 0 ||
        name.compare(name.size() - tail.size(), tail.size(), tail) != 0)
      continue;
    const std::string digits = name.substr(head.size(), name.size() - head.size() - tail.size());
    if (std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; })) names.push_back(name);
  }
  ::closedir(d);
  std::sort(names.begin(), names.end());
  for (std::string& n : names) n = dir + "/" + n;
  return names;
}

/// The shards of one split read as one token stream (each file memory-mapped, nothing copied).
class TokenShards {
 public:
  /// Opens every DIR/PREFIX_*.bin; throws io_error when there is none, or one is malformed.
  TokenShards(const std::string& dir, const std::string& prefix) {
    const std::vector<std::string> paths = list_shards(dir, prefix);
    LOOM_CHECK(!paths.empty(), io_error, dir, ": no ", prefix, "_*.bin token shards");
    starts_.push_back(0);
    for (const std::string& p : paths) {
      files_.push_back(std::make_unique<ShardFile>(p));
      LOOM_CHECK(files_.back()->token_bytes() == files_.front()->token_bytes(), io_error, p, ": ",
                 files_.back()->token_bytes() * 8, "-bit tokens, but ", paths.front(), " has ",
                 files_.front()->token_bytes() * 8, "-bit tokens");
      starts_.push_back(starts_.back() + files_.back()->size());
    }
  }

  /// Tokens in all shards.
  int64_t size() const { return starts_.back(); }
  /// Number of shard files.
  size_t num_files() const { return files_.size(); }
  /// Shard file i.
  const ShardFile& file(size_t i) const { return *files_[i]; }

  /// Copies tokens [offset, offset + n) of the stream into out (which may span shard files);
  /// throws value_error when the range runs past the end.
  template <class Id>
  void copy(int64_t offset, int64_t n, Id* out) const {
    LOOM_CHECK(offset >= 0 && n >= 0 && offset + n <= size(), value_error, "TokenShards: tokens [", offset, ", ",
               offset + n, ") run past the end (", size(), " tokens)");
    size_t f = size_t(std::upper_bound(starts_.begin(), starts_.end(), offset) - starts_.begin()) - 1;
    while (n > 0) {
      const ShardFile& s = *files_[f];
      int64_t i = offset - starts_[f], take = std::min(n, s.size() - i);
      for (int64_t k = 0; k < take; ++k) out[k] = Id(s[i + k]);
      out += take, offset += take, n -= take, ++f;
    }
  }

 private:
  std::vector<std::unique_ptr<ShardFile>> files_;
  std::vector<int64_t> starts_;  // starts_[i]: stream offset of file i's first token; back(): total
};

}  // namespace loom::data
