#pragma once
/// @file safetensors.hpp
/// Reading and writing the Hugging Face safetensors format (docs/08-checkpoint-format.md):
///
///   [ 8 bytes: N, little-endian u64 ][ N bytes: JSON header, space-padded ][ data buffer ]
///
/// The header maps each tensor name to {"dtype", "shape", "data_offsets": [begin, end]} (offsets
/// relative to the start of the data buffer) and may hold "__metadata__": {string: string}.
/// The reader validates everything and throws loom::io_error naming the file and the problem; a
/// malformed file never crashes it: the header's parse is capped (100 MB of text, 2^20 JSON
/// values, 8 levels), and the tensors it allocates add up to at most the file's size.
/// The writer goes through write_file_atomic, so `path` always holds a complete file.

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <limits>
#include <map>
#include <numeric>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "loom/core/dtype.hpp"
#include "loom/core/error.hpp"
#include "loom/core/shape.hpp"
#include "loom/io/any_tensor.hpp"
#include "loom/io/file.hpp"
#include "loom/io/json.hpp"

// Tensor bytes are copied as they are in memory, and safetensors is little-endian.
#if defined(__BYTE_ORDER__) && defined(__ORDER_LITTLE_ENDIAN__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "loom/io/safetensors.hpp supports little-endian hosts only"
#endif

namespace loom::io {

/// Named tensors in file order, as save_safetensors takes them.
using NamedTensors = std::vector<std::pair<std::string, AnyTensor>>;

/// The largest JSON header the reader accepts (the same cap as the reference implementation).
inline constexpr uint64_t safetensors_max_header_bytes = 100'000'000;

/// The safetensors name of a DType: "F32", "F64", "BF16", "F16", "I32", "I64", "BOOL".
inline const char* safetensors_dtype_name(DType t) {
  switch (t) {
    case DType::float32: return "F32";
    case DType::float64: return "F64";
    case DType::bfloat16: return "BF16";
    case DType::float16: return "F16";
    case DType::int32: return "I32";
    case DType::int64: return "I64";
    case DType::boolean: return "BOOL";
  }
  return "?";
}

/// The DType of a safetensors dtype name; false when loom has no such element type.
inline bool safetensors_dtype_from_name(std::string_view name, DType& out) {
  static const DType all[] = {DType::float32, DType::float64, DType::bfloat16, DType::float16,
                              DType::int32,   DType::int64,   DType::boolean};
  for (DType t : all)
    if (name == safetensors_dtype_name(t)) {
      out = t;
      return true;
    }
  return false;
}

/// One tensor's entry in a safetensors header: offsets are relative to the data buffer.
struct SafetensorsEntry {
  std::string name;
  DType dtype = DType::float32;
  Shape shape;
  uint64_t begin = 0;
  uint64_t end = 0;
};

/// A parsed and validated safetensors header.
struct SafetensorsHeader {
  std::vector<SafetensorsEntry> entries;        ///< in header order
  std::map<std::string, std::string> metadata;  ///< the "__metadata__" object
};

/// The contents of a safetensors file: tensors (CPU, contiguous) by name, and the metadata.
struct SafetensorsFile {
  std::string path;                             ///< where it was read from (used in error messages)
  std::vector<std::string> names;               ///< tensor names in header order
  std::map<std::string, AnyTensor> tensors;     ///< the tensors by name
  std::map<std::string, std::string> metadata;  ///< the "__metadata__" strings

  /// True when the file holds a tensor called `name`.
  bool contains(const std::string& name) const { return tensors.count(name) != 0; }
  /// The tensor `name`; throws io_error naming the file when absent.
  const AnyTensor& at(const std::string& name) const {
    auto it = tensors.find(name);
    LOOM_CHECK(it != tensors.end(), io_error, path, ": no tensor named '", name, "' (the file has ",
               tensors.size(), " tensors)");
    return it->second;
  }
  /// The tensor `name` as Tensor<T>; throws io_error naming the file and both dtypes when it is
  /// stored with another element type, or when absent.
  template <class T>
  Tensor<T> get(const std::string& name) const {
    const AnyTensor& t = at(name);
    LOOM_CHECK(t.holds<T>(), io_error, path, ": tensor '", name, "' is stored as ",
               safetensors_dtype_name(t.dtype()), " (", dtype_name(t.dtype()), "), not ",
               safetensors_dtype_name(dtype_of_v<T>), " (", dtype_name(dtype_of_v<T>), ") as requested");
    return t.get<T>();
  }
};

namespace detail {

inline uint64_t read_u64_le(const char* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | uint64_t(static_cast<unsigned char>(p[i]));
  return v;
}

inline std::string u64_le(uint64_t v) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[size_t(i)] = char((v >> (8 * i)) & 0xff);
  return s;
}

// Checks the 8-byte header length against the cap and the file size.
inline void check_header_length(uint64_t n, uint64_t file_size, const std::string& name) {
  LOOM_CHECK(n <= safetensors_max_header_bytes, io_error, name, ": header length ", n,
             " exceeds the limit of ", safetensors_max_header_bytes, " bytes (not a safetensors file?)");
  LOOM_CHECK(n <= file_size - 8, io_error, name, ": header length ", n, " runs past the end of the file (",
             file_size, " bytes; truncated, or not a safetensors file?)");
}

// Reads one integer array element of a header field, or throws.
inline uint64_t header_uint(const Json& v, const std::string& name, const std::string& tensor, const char* field,
                            size_t index) {
  LOOM_CHECK(v.is_int(), io_error, name, ": tensor '", tensor, "' ", field, "[", index, "] is ", v.type_phrase(),
             ", expected a non-negative integer");
  int64_t x = v.as_int();
  LOOM_CHECK(x >= 0, io_error, name, ": tensor '", tensor, "' has a negative ", field == std::string("shape") ?
             "dimension" : "offset", " ", x, " in its ", field);
  return uint64_t(x);
}

}  // namespace detail

/// Parses and validates a safetensors JSON header for a data buffer of `buffer_size` bytes;
/// `name` (the file) starts every error message. Checks: valid JSON object; string-to-string
/// metadata; per tensor a known dtype, a shape of at most max_dims non-negative sizes, two
/// data_offsets with begin <= end <= buffer_size whose span equals numel * itemsize; and, over
/// all tensors sorted by offset, that they neither overlap nor leave gaps and cover the buffer.
inline SafetensorsHeader parse_safetensors_header(std::string_view header, uint64_t buffer_size,
                                                  const std::string& name) {
  JsonLimits lim;
  lim.max_bytes = size_t(safetensors_max_header_bytes);
  lim.max_depth = 8;                  // {tensor: {shape: [..]}} needs 3
  lim.max_values = size_t(1) << 20;   // ~15 values per tensor: room for 70k tensors
  Json root;
  try {
    root = parse_json(header, lim);
  } catch (const json_error& e) {
    throw io_error(loom::detail::concat(name, ": the header is not valid JSON: ", e.what()));
  }
  LOOM_CHECK(root.is_object(), io_error, name, ": the header must be a JSON object, got ", root.type_phrase());

  SafetensorsHeader out;
  for (const auto& [key, val] : root.as_object()) {
    if (key == "__metadata__") {
      LOOM_CHECK(val.is_object(), io_error, name, ": __metadata__ must be an object of strings, got ",
                 val.type_phrase());
      for (const auto& [k, v] : val.as_object()) {
        LOOM_CHECK(v.is_string(), io_error, name, ": __metadata__ value of '", k, "' is ", v.type_phrase(),
                   ", expected a string");
        out.metadata.emplace(k, v.as_string());
      }
      continue;
    }
    LOOM_CHECK(val.is_object(), io_error, name, ": tensor '", key, "' must be described by an object, got ",
               val.type_phrase());
    const Json *dt = nullptr, *sh = nullptr, *off = nullptr;
    for (const auto& [field, fv] : val.as_object()) {
      if (field == "dtype") dt = &fv;
      else if (field == "shape") sh = &fv;
      else if (field == "data_offsets") off = &fv;
      else throw io_error(loom::detail::concat(name, ": tensor '", key, "' has an unknown field '", field, "'"));
    }
    LOOM_CHECK(dt && sh && off, io_error, name, ": tensor '", key, "' lacks '",
               !dt ? "dtype" : !sh ? "shape" : "data_offsets", "'");

    SafetensorsEntry e;
    e.name = key;
    LOOM_CHECK(dt->is_string(), io_error, name, ": tensor '", key, "' dtype is ", dt->type_phrase(),
               ", expected a string");
    LOOM_CHECK(safetensors_dtype_from_name(dt->as_string(), e.dtype), io_error, name, ": tensor '", key,
               "' has dtype '", dt->as_string(),
               "', which loom does not support (supported: F32, F64, BF16, F16, I32, I64, BOOL)");

    LOOM_CHECK(sh->is_array(), io_error, name, ": tensor '", key, "' shape is ", sh->type_phrase(),
               ", expected an array");
    LOOM_CHECK(sh->size() <= size_t(max_dims), io_error, name, ": tensor '", key, "' has ", sh->size(),
               " dimensions; loom supports at most ", max_dims);
    for (size_t i = 0; i < sh->size(); ++i)
      e.shape.push_back(int64_t(detail::header_uint(sh->at(i), name, key, "shape", i)));

    LOOM_CHECK(off->is_array() && off->size() == 2, io_error, name, ": tensor '", key,
               "' data_offsets must be an array of two integers [begin, end]");
    e.begin = detail::header_uint(off->at(0), name, key, "data_offsets", 0);
    e.end = detail::header_uint(off->at(1), name, key, "data_offsets", 1);
    LOOM_CHECK(e.begin <= e.end, io_error, name, ": tensor '", key, "' data_offsets [", e.begin, ", ", e.end,
               "] end before they begin");
    LOOM_CHECK(e.end <= buffer_size, io_error, name, ": tensor '", key, "' data_offsets [", e.begin, ", ", e.end,
               "] run past the end of the data buffer (", buffer_size, " bytes; truncated file?)");

    // numel * itemsize, computed without overflow (a product past 2^64 cannot match any offsets).
    uint64_t bytes = dtype_itemsize(e.dtype);
    bool overflow = false;
    for (int64_t d : e.shape) {
      if (d == 0) {
        bytes = 0, overflow = false;
        break;
      }
      if (!overflow && bytes > std::numeric_limits<uint64_t>::max() / uint64_t(d)) overflow = true;
      if (!overflow) bytes *= uint64_t(d);
    }
    LOOM_CHECK(!overflow && bytes == e.end - e.begin, io_error, name, ": tensor '", key, "' data_offsets [",
               e.begin, ", ", e.end, "] do not match shape ", e.shape, " of ", dt->as_string(), " (",
               overflow ? std::string("more than 2^64 bytes") : loom::detail::concat(bytes, " bytes"), ")");
    out.entries.push_back(std::move(e));
  }

  // Sorted by offset, the tensors must tile the buffer exactly: no overlap, no gap, no tail.
  std::vector<size_t> order(out.entries.size());
  std::iota(order.begin(), order.end(), size_t(0));
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    const auto &x = out.entries[a], &y = out.entries[b];
    return x.begin != y.begin ? x.begin < y.begin : x.end < y.end;
  });
  uint64_t covered = 0;
  const SafetensorsEntry* prev = nullptr;
  for (size_t k : order) {
    const SafetensorsEntry& e = out.entries[k];
    LOOM_CHECK(e.begin >= covered, io_error, name, ": tensors '", prev ? prev->name : "", "' [", prev ? prev->begin : 0,
               ", ", prev ? prev->end : 0, "] and '", e.name, "' [", e.begin, ", ", e.end, "] overlap");
    LOOM_CHECK(e.begin == covered, io_error, name, ": bytes [", covered, ", ", e.begin,
               ") of the data buffer belong to no tensor (a gap before '", e.name, "')");
    covered = e.end;
    if (e.end > e.begin || !prev) prev = &e;
  }
  LOOM_CHECK(covered == buffer_size, io_error, name, ": the data buffer has ", buffer_size,
             " bytes but the tensors cover only ", covered, " (trailing bytes after the last tensor)");
  return out;
}

namespace detail {

// The header text (space-padded to a multiple of 8) for tensors packed in the given order.
inline std::string build_safetensors_header(const NamedTensors& tensors,
                                            const std::map<std::string, std::string>& metadata,
                                            const char* op) {
  Json root = Json::object();
  auto& obj = root.as_object();
  obj.reserve(tensors.size() + 1);
  if (!metadata.empty()) {
    Json meta = Json::object();
    for (const auto& [k, v] : metadata) meta.as_object().emplace_back(k, Json(v));
    obj.emplace_back("__metadata__", std::move(meta));
  }
  std::map<std::string_view, size_t> seen;
  uint64_t offset = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const auto& [name, t] = tensors[i];
    LOOM_CHECK(name != "__metadata__", value_error, op, ": '__metadata__' is reserved and cannot name a tensor");
    LOOM_CHECK(seen.emplace(name, i).second, value_error, op, ": tensor name '", name, "' appears twice");
    LOOM_CHECK(t.defined(), value_error, op, ": tensor '", name, "' is undefined (it has no storage)");
    const Shape dims = t.shape();
    JsonArray shape(dims.begin(), dims.end());  // one integer per dimension
    uint64_t n = t.nbytes();
    Json entry = Json::object();
    entry.as_object().emplace_back("dtype", Json(safetensors_dtype_name(t.dtype())));
    entry.as_object().emplace_back("shape", Json(std::move(shape)));
    entry.as_object().emplace_back("data_offsets", Json(JsonArray{Json(offset), Json(offset + n)}));
    obj.emplace_back(name, std::move(entry));
    offset += n;
  }
  std::string header = root.dump();
  header.append((8 - header.size() % 8) % 8, ' ');  // data starts 8-byte aligned, as HF writes it
  return header;
}

// Writes the whole file through `w`: length, header, then each tensor's bytes (one CPU copy at a time).
template <class Writer>
void write_safetensors(Writer& w, const NamedTensors& tensors, const std::map<std::string, std::string>& metadata,
                       const char* op) {
  std::string header = build_safetensors_header(tensors, metadata, op);
  std::string len = u64_le(header.size());
  w.write(len.data(), len.size());
  w.write(header.data(), header.size());
  for (const auto& kv : tensors) {
    AnyTensor c = kv.second.contiguous_cpu();
    if (c.nbytes() > 0) w.write(c.data(), c.nbytes());
  }
}

struct StringWriter {
  std::string& out;
  void write(const void* p, size_t n) { out.append(static_cast<const char*>(p), n); }
};

// Bool bytes other than 0 and 1 are not valid C++ bools: normalise them after reading.
inline void fix_bools(AnyTensor& t) {
  if (!t.holds<bool>()) return;
  auto* p = static_cast<unsigned char*>(t.data());
  for (int64_t i = 0, n = t.numel(); i < n; ++i) p[i] = p[i] != 0;
}

}  // namespace detail

/// The bytes of a safetensors file holding `tensors` (in this order) and `metadata`.
/// Non-contiguous and GPU tensors are copied to contiguous CPU memory first. Throws value_error
/// for an undefined tensor, a repeated name or the reserved name "__metadata__".
inline std::string serialize_safetensors(const NamedTensors& tensors,
                                         const std::map<std::string, std::string>& metadata = {}) {
  std::string out;
  detail::StringWriter w{out};
  detail::write_safetensors(w, tensors, metadata, "serialize_safetensors");
  return out;
}

/// Parses the bytes of a safetensors file (validated like load_safetensors); `name` starts every
/// error message. The tensors are copies (CPU, contiguous) and do not refer to `bytes`.
inline SafetensorsFile parse_safetensors(std::string_view bytes, const std::string& name = "<memory>") {
  LOOM_CHECK(bytes.size() >= 8, io_error, name, ": the file is ", bytes.size(),
             " bytes, too short for the 8-byte header length (truncated?)");
  uint64_t n = detail::read_u64_le(bytes.data());
  detail::check_header_length(n, bytes.size(), name);
  SafetensorsHeader h = parse_safetensors_header(bytes.substr(8, size_t(n)), bytes.size() - 8 - n, name);
  const char* buffer = bytes.data() + 8 + n;
  SafetensorsFile f;
  f.path = name;
  f.metadata = std::move(h.metadata);
  for (auto& e : h.entries) {
    AnyTensor t = AnyTensor::empty(e.dtype, e.shape);
    if (e.end > e.begin) std::memcpy(t.data(), buffer + e.begin, size_t(e.end - e.begin));
    detail::fix_bools(t);
    f.names.push_back(e.name);
    f.tensors.emplace(std::move(e.name), std::move(t));
  }
  return f;
}

/// Writes `tensors` (in this order) and string `metadata` to a safetensors file at `path`,
/// atomically (temporary file + fsync + rename). Throws value_error for an undefined tensor, a
/// repeated name or the name "__metadata__", io_error when the file cannot be written; on any
/// error a previous file at `path` is left untouched.
inline void save_safetensors(const std::string& path, const NamedTensors& tensors,
                             const std::map<std::string, std::string>& metadata = {}) {
  // Validate (and build the header) before touching the file system.
  (void)detail::build_safetensors_header(tensors, metadata, "save_safetensors");
  write_file_atomic(path, [&](FileWriter& w) { detail::write_safetensors(w, tensors, metadata, "save_safetensors"); });
}

/// Reads and validates a safetensors file; throws io_error naming the file and the problem
/// (see parse_safetensors_header for the checks). The tensors allocated add up to at most the
/// file's size, and are read straight from the file one at a time.
inline SafetensorsFile load_safetensors(const std::string& path) {
  require_not_directory(path);
  std::ifstream in(path, std::ios::binary);
  LOOM_CHECK(in.is_open(), io_error, path, ": cannot open for reading: ", std::strerror(errno));
  in.seekg(0, std::ios::end);
  const std::streamoff end = in.tellg();
  LOOM_CHECK(end >= 0, io_error, path, ": cannot determine the file size");
  const uint64_t size = uint64_t(end);
  in.seekg(0, std::ios::beg);
  LOOM_CHECK(size >= 8, io_error, path, ": the file is ", size,
             " bytes, too short for the 8-byte header length (truncated?)");
  char len[8];
  in.read(len, 8);
  LOOM_CHECK(in.good(), io_error, path, ": cannot read the header length");
  uint64_t n = detail::read_u64_le(len);
  detail::check_header_length(n, size, path);
  std::string header(size_t(n), '\0');
  in.read(header.data(), std::streamsize(n));
  LOOM_CHECK(in.good(), io_error, path, ": cannot read the ", n, "-byte header");
  SafetensorsHeader h = parse_safetensors_header(header, size - 8 - n, path);

  SafetensorsFile f;
  f.path = path;
  f.metadata = std::move(h.metadata);
  const uint64_t base = 8 + n;
  for (auto& e : h.entries) {
    AnyTensor t = AnyTensor::empty(e.dtype, e.shape);  // its size was checked against the file's
    if (e.end > e.begin) {
      in.seekg(std::streamoff(base + e.begin), std::ios::beg);
      in.read(static_cast<char*>(t.data()), std::streamsize(e.end - e.begin));
      LOOM_CHECK(in.good(), io_error, path, ": reading the ", e.end - e.begin, " bytes of tensor '", e.name,
                 "' failed (did the file change while it was read?)");
    }
    detail::fix_bools(t);
    f.names.push_back(e.name);
    f.tensors.emplace(std::move(e.name), std::move(t));
  }
  return f;
}

}  // namespace loom::io
