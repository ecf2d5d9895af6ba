#pragma once
/// @file checkpoint.hpp
/// Checkpoint: named tensors plus string metadata, saved as a safetensors file that any
/// safetensors reader (PyTorch, Hugging Face) can open. It is generic: the model, optimizer and
/// training code choose the names and keys; docs/08-checkpoint-format.md lists the conventions
/// (tensors "model.<param>", "optim.<param>.exp_avg", ...; metadata "config", "step", "rng", ...).
///
///   loom::io::Checkpoint ck;
///   ck.add("model.transformer.wte.weight", wte);           // any Tensor<T>
///   ck.set_meta("step", std::to_string(step));
///   loom::io::save_checkpoint("out/ckpt.safetensors", ck);  // atomic: temp file + rename
///   auto back = loom::io::load_checkpoint("out/ckpt.safetensors");
///   int64_t step = back.meta_int("step");
///   auto w = back.get<float>("model.transformer.wte.weight");

#include <charconv>
#include <map>
#include <string>
#include <string_view>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

#include "loom/core/error.hpp"
#include "loom/io/any_tensor.hpp"
#include "loom/io/json.hpp"
#include "loom/io/safetensors.hpp"
#include "loom/version.hpp"

namespace loom::io {

/// Metadata key holding the container format's name; its value is checkpoint_format_name.
inline constexpr const char* checkpoint_format_key = "loom.format";
/// The value of "loom.format" in a loom checkpoint.
inline constexpr const char* checkpoint_format_name = "checkpoint";
/// Metadata key holding the container format's version.
inline constexpr const char* checkpoint_version_key = "loom.format_version";
/// The container format version this build writes and the newest it reads.
inline constexpr int checkpoint_format_version = 1;
/// Metadata key holding the loom version that wrote the file.
inline constexpr const char* checkpoint_writer_key = "loom.version";

/// Named tensors (in insertion order) and string metadata: what a checkpoint file holds.
class Checkpoint {
 public:
  /// An empty checkpoint; `source` names it in error messages (load_checkpoint sets the path).
  explicit Checkpoint(std::string source = "<checkpoint>") : source_(std::move(source)) {}

  /// Adds tensor `name`; throws value_error when the name is taken, reserved or the tensor undefined.
  void add(const std::string& name, AnyTensor t) {
    LOOM_CHECK(!contains(name), value_error, source_, ": tensor '", name, "' is already in the checkpoint");
    LOOM_CHECK(name != "__metadata__", value_error, source_, ": '__metadata__' is reserved and cannot name a tensor");
    LOOM_CHECK(t.defined(), value_error, source_, ": tensor '", name, "' is undefined (it has no storage)");
    index_.emplace(name, tensors_.size());
    tensors_.emplace_back(name, std::move(t));
  }
  /// Adds tensor `name`, or replaces the tensor already stored under that name.
  void set(const std::string& name, AnyTensor t) {
    auto it = index_.find(name);
    if (it == index_.end()) return add(name, std::move(t));
    LOOM_CHECK(t.defined(), value_error, source_, ": tensor '", name, "' is undefined (it has no storage)");
    tensors_[it->second].second = std::move(t);
  }
  /// True when a tensor called `name` is present.
  bool contains(const std::string& name) const { return index_.count(name) != 0; }
  /// The tensor `name`; throws io_error naming the checkpoint when absent.
  const AnyTensor& at(const std::string& name) const {
    auto it = index_.find(name);
    LOOM_CHECK(it != index_.end(), io_error, source_, ": no tensor named '", name, "' in the checkpoint (",
               tensors_.size(), " tensors)");
    return tensors_[it->second].second;
  }
  /// The tensor `name` as Tensor<T>; throws io_error naming the checkpoint, the tensor and both
  /// dtypes when it has another element type, or when absent.
  template <class T>
  Tensor<T> get(const std::string& name) const {
    const AnyTensor& t = at(name);
    LOOM_CHECK(t.holds<T>(), io_error, source_, ": tensor '", name, "' is ", dtype_name(t.dtype()), ", not ",
               dtype_name(dtype_of_v<T>), " as requested");
    return t.get<T>();
  }
  /// All tensors, in insertion (file) order.
  const NamedTensors& tensors() const { return tensors_; }
  /// The names that start with `prefix` (all names for ""), in order: names("optim.").
  std::vector<std::string> names(std::string_view prefix = "") const {
    std::vector<std::string> out;
    for (const auto& kv : tensors_)
      if (std::string_view(kv.first).substr(0, prefix.size()) == prefix) out.push_back(kv.first);
    return out;
  }
  /// Number of tensors.
  size_t size() const { return tensors_.size(); }

  /// Sets metadata `key` to `value`.
  void set_meta(const std::string& key, std::string value) { metadata_[key] = std::move(value); }
  /// Sets metadata `key` to a JSON value, written compactly (configs, hyper-parameters).
  void set_meta_json(const std::string& key, const Json& value) { metadata_[key] = value.dump(); }
  /// True when metadata `key` is present.
  bool has_meta(const std::string& key) const { return metadata_.count(key) != 0; }
  /// Metadata `key`; throws io_error naming the checkpoint and the key when absent.
  const std::string& meta(const std::string& key) const {
    auto it = metadata_.find(key);
    LOOM_CHECK(it != metadata_.end(), io_error, source_, ": no metadata key '", key, "' in the checkpoint");
    return it->second;
  }
  /// Metadata `key`, or `fallback` when absent.
  std::string meta_or(const std::string& key, const std::string& fallback) const {
    auto it = metadata_.find(key);
    return it == metadata_.end() ? fallback : it->second;
  }
  /// Metadata `key` parsed as a decimal int64; throws io_error when absent or not an integer.
  int64_t meta_int(const std::string& key) const { return parse_integer<int64_t>(key); }
  /// Metadata `key` parsed as a decimal uint64 (RNG seeds and counters); throws io_error likewise.
  uint64_t meta_uint(const std::string& key) const { return parse_integer<uint64_t>(key); }
  /// Metadata `key` parsed as JSON; throws io_error naming the key when absent or invalid.
  Json meta_json(const std::string& key) const {
    const std::string& s = meta(key);
    try {
      return parse_json(s);
    } catch (const json_error& e) {
      throw io_error(loom::detail::concat(source_, ": metadata '", key, "' is not valid JSON: ", e.what()));
    }
  }
  /// All metadata.
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  /// The name used in error messages (the path for a loaded checkpoint).
  const std::string& source() const { return source_; }

 private:
  template <class I>
  I parse_integer(const std::string& key) const {
    const std::string& s = meta(key);
    I v{};
    auto r = std::from_chars(s.data(), s.data() + s.size(), v);
    LOOM_CHECK(!s.empty() && r.ec == std::errc() && r.ptr == s.data() + s.size(), io_error, source_,
               ": metadata '", key, "' = '", s, "' is not a ", std::is_signed_v<I> ? "64-bit integer" :
               "non-negative 64-bit integer");
    return v;
  }

  std::string source_;
  NamedTensors tensors_;
  std::unordered_map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
};

/// Saves a checkpoint to `path` as safetensors, atomically; adds the metadata keys
/// "loom.format" = "checkpoint", "loom.format_version" and "loom.version".
inline void save_checkpoint(const std::string& path, const Checkpoint& ckpt) {
  std::map<std::string, std::string> meta = ckpt.metadata();
  meta[checkpoint_format_key] = checkpoint_format_name;
  meta[checkpoint_version_key] = std::to_string(checkpoint_format_version);
  meta[checkpoint_writer_key] = loom::detail::concat(LOOM_VERSION_MAJOR, '.', LOOM_VERSION_MINOR, '.',
                                                     LOOM_VERSION_PATCH);
  save_safetensors(path, ckpt.tensors(), meta);
}

namespace detail {
// The checkpoint in a safetensors file read from `path` (a file name, or "<memory>").
inline Checkpoint checkpoint_of(const SafetensorsFile& f, const std::string& path) {
  auto fmt = f.metadata.find(checkpoint_format_key);
  LOOM_CHECK(fmt != f.metadata.end() && fmt->second == checkpoint_format_name, io_error, path,
             ": not a loom checkpoint (no \"", checkpoint_format_key, "\": \"", checkpoint_format_name,
             "\" in its metadata); read plain safetensors files with load_safetensors");
  auto ver = f.metadata.find(checkpoint_version_key);
  int version = 0;
  if (ver != f.metadata.end()) {
    auto r = std::from_chars(ver->second.data(), ver->second.data() + ver->second.size(), version);
    if (r.ec != std::errc() || r.ptr != ver->second.data() + ver->second.size()) version = 0;
  }
  LOOM_CHECK(version >= 1, io_error, path, ": invalid \"", checkpoint_version_key, "\" in its metadata");
  LOOM_CHECK(version <= checkpoint_format_version, io_error, path, ": checkpoint format version ", version,
             " is newer than this loom reads (", checkpoint_format_version, "); upgrade loom");
  Checkpoint ck(path);
  for (auto& [k, v] : f.metadata) ck.set_meta(k, v);
  for (const auto& name : f.names) ck.add(name, f.tensors.at(name));
  return ck;
}
}  // namespace detail

/// Loads a checkpoint written by save_checkpoint; throws io_error naming the file for a malformed
/// file, a safetensors file that is not a loom checkpoint, or one from a newer format version.
inline Checkpoint load_checkpoint(const std::string& path) {
  return detail::checkpoint_of(load_safetensors(path), path);
}

/// The checkpoint in the bytes of a checkpoint file, checked like load_checkpoint's; `name`
/// starts every error message.
inline Checkpoint parse_checkpoint(std::string_view bytes, const std::string& name = "<memory>") {
  return detail::checkpoint_of(parse_safetensors(bytes, name), name);
}

}  // namespace loom::io
