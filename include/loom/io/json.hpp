#pragma once
/// @file json.hpp
/// A small, strict JSON value type with a parser and a writer, used for checkpoint headers and
/// metadata (safetensors stores its header as JSON).
///
/// - Objects keep their keys in insertion order, so what is written reads back in the same order.
/// - Numbers are int64 when the literal is integral (no fraction, no exponent) and fits, else double.
/// - Strings are UTF-8; escapes include \uXXXX with surrogate pairs. Invalid UTF-8, lone
///   surrogates, raw control characters and duplicate object keys are errors (a reader that checks
///   keys itself can allow repeats: JsonLimits::unique_keys).
/// - Limits on the input size, nesting depth and number of values keep malformed or hostile input
///   from exhausting the stack or memory. Every parse error is a loom::io::json_error (an
///   io_error) that gives the byte offset, and the file name and line when the text has a name.
/// - Each parsed value remembers where it began (Json::offset), so a reader that finds a value it
///   cannot use can name the line (json_line), as the tokenizer loaders do.

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <string_view>
#include <type_traits>
#include <unordered_set>
#include <utility>
#include <variant>
#include <vector>

#include "loom/core/error.hpp"

namespace loom::io {

/// A JSON text that cannot be parsed; the message gives the byte offset and what is wrong.
class json_error : public io_error { public: using io_error::io_error; };

class Json;
namespace detail {
class JsonParser;
}
/// A JSON array.
using JsonArray = std::vector<Json>;
/// A JSON object: key/value pairs in insertion order.
using JsonObject = std::vector<std::pair<std::string, Json>>;

/// One JSON value: null, boolean, integer (int64), number (double), string, array or object.
class Json {
 public:
  /// The kinds of value, in the order of the variant's alternatives.
  enum class Type { null, boolean, integer, number, string, array, object };

  /// null.
  Json() = default;
  /// null.
  Json(std::nullptr_t) {}  // NOLINT: implicit, like a JSON literal
  /// A boolean.
  Json(bool b) : v_(b) {}  // NOLINT
  /// An integer of any integral type (throws value_error when it does not fit in int64).
  template <class I, std::enable_if_t<std::is_integral_v<I> && !std::is_same_v<I, bool>, int> = 0>
  Json(I i) : v_(int64_t(0)) {  // NOLINT: implicit, like a JSON literal
    if constexpr (std::is_unsigned_v<I>)
      LOOM_CHECK(uint64_t(i) <= uint64_t(std::numeric_limits<int64_t>::max()), value_error, "Json: integer ",
                 uint64_t(i), " does not fit in int64");
    v_ = int64_t(i);
  }
  /// A floating-point number.
  Json(double d) : v_(d) {}  // NOLINT
  /// A string (UTF-8).
  Json(const char* s) : v_(std::string(s)) {}  // NOLINT
  /// A string (UTF-8).
  Json(std::string s) : v_(std::move(s)) {}  // NOLINT
  /// A string (UTF-8).
  Json(std::string_view s) : v_(std::string(s)) {}  // NOLINT
  /// An array.
  Json(JsonArray a) : v_(std::move(a)) {}  // NOLINT
  /// An object (keys must be distinct).
  Json(JsonObject o) : v_(std::move(o)) {}  // NOLINT

  /// An empty array.
  static Json array() { return Json(JsonArray{}); }
  /// An empty object.
  static Json object() { return Json(JsonObject{}); }

  /// The kind of value.
  Type type() const { return Type(v_.index()); }
  /// The name of the kind of value ("null", "boolean", "integer", "number", "string", "array", "object").
  const char* type_name() const { return type_name(type()); }
  /// The name of a kind of value.
  static const char* type_name(Type t) {
    static const char* const names[] = {"null", "boolean", "integer", "number", "string", "array", "object"};
    return names[int(t)];
  }
  /// The kind of value with its article, for messages: "an integer", "a string", "null", ...
  const char* type_phrase() const {
    static const char* const names[] = {"null", "a boolean", "an integer", "a number", "a string", "an array",
                                        "an object"};
    return names[int(type())];
  }
  /// True for null.
  bool is_null() const { return type() == Type::null; }
  /// True for true/false.
  bool is_bool() const { return type() == Type::boolean; }
  /// True for an integral number stored as int64.
  bool is_int() const { return type() == Type::integer; }
  /// True for any number (integer or double).
  bool is_number() const { return type() == Type::integer || type() == Type::number; }
  /// True for a string.
  bool is_string() const { return type() == Type::string; }
  /// True for an array.
  bool is_array() const { return type() == Type::array; }
  /// True for an object.
  bool is_object() const { return type() == Type::object; }

  /// The boolean; throws value_error for another kind.
  bool as_bool() const { return get<bool>("a boolean"); }
  /// The integer; throws value_error for another kind (a double is not converted).
  int64_t as_int() const { return get<int64_t>("an integer"); }
  /// The number as a double (integers are converted); throws value_error for another kind.
  double as_double() const {
    if (is_int()) return double(std::get<int64_t>(v_));
    return get<double>("a number");
  }
  /// The string; throws value_error for another kind.
  const std::string& as_string() const { return get<std::string>("a string"); }
  /// The array; throws value_error for another kind.
  const JsonArray& as_array() const { return get<JsonArray>("an array"); }
  /// The array, mutable; throws value_error for another kind.
  JsonArray& as_array() { return get<JsonArray>("an array"); }
  /// The object's key/value pairs; throws value_error for another kind.
  const JsonObject& as_object() const { return get<JsonObject>("an object"); }
  /// The object's key/value pairs, mutable; throws value_error for another kind.
  JsonObject& as_object() { return get<JsonObject>("an object"); }

  /// Number of elements of an array or members of an object; throws value_error otherwise.
  size_t size() const {
    if (is_array()) return std::get<JsonArray>(v_).size();
    if (is_object()) return std::get<JsonObject>(v_).size();
    throw value_error(loom::detail::concat("Json: size() needs an array or an object, this is ", type_name()));
  }
  /// The member `key` of an object, or nullptr when absent (linear search).
  const Json* find(std::string_view key) const {
    for (const auto& kv : as_object())
      if (kv.first == key) return &kv.second;
    return nullptr;
  }
  /// True when the object has member `key`.
  bool contains(std::string_view key) const { return find(key) != nullptr; }
  /// The member `key` of an object; throws value_error when absent.
  const Json& at(std::string_view key) const {
    const Json* j = find(key);
    LOOM_CHECK(j != nullptr, value_error, "Json: no member '", key, "' in the object");
    return *j;
  }
  /// Element i of an array; throws index_error when out of range.
  const Json& at(size_t i) const {
    const auto& a = as_array();
    LOOM_CHECK(i < a.size(), index_error, "Json: index ", i, " is out of range for an array of ", a.size());
    return a[i];
  }
  /// Sets member `key` of an object (replacing its value, or appending it at the end).
  Json& set(std::string_view key, Json value) {
    auto& o = as_object();
    for (auto& kv : o)
      if (kv.first == key) {
        kv.second = std::move(value);
        return kv.second;
      }
    o.emplace_back(std::string(key), std::move(value));
    return o.back().second;
  }
  /// Appends an element to an array.
  void push_back(Json value) { as_array().push_back(std::move(value)); }

  /// Byte offset in the parsed text where this value begins (0 for a value built in code).
  size_t offset() const { return offset_; }

  /// Structural equality (an integer and a double never compare equal; key order matters; where
  /// the values were parsed from does not count).
  friend bool operator==(const Json& a, const Json& b) { return a.v_ == b.v_; }
  friend bool operator!=(const Json& a, const Json& b) { return !(a == b); }

  /// The compact JSON text; throws value_error for NaN or infinite numbers (JSON has none).
  std::string dump() const {
    std::string out;
    write(out, -1, 0);
    return out;
  }
  /// JSON text indented by `indent` spaces per level (compact when indent < 0).
  std::string dump(int indent) const {
    std::string out;
    write(out, indent, 0);
    return out;
  }

 private:
  template <class V>
  const V& get(const char* what) const {
    const V* p = std::get_if<V>(&v_);
    LOOM_CHECK(p != nullptr, value_error, "Json: expected ", what, ", got ", type_name());
    return *p;
  }
  template <class V>
  V& get(const char* what) {
    V* p = std::get_if<V>(&v_);
    LOOM_CHECK(p != nullptr, value_error, "Json: expected ", what, ", got ", type_name());
    return *p;
  }

  inline void write(std::string& out, int indent, int level) const;
  friend class detail::JsonParser;  // sets offset_

  std::variant<std::nullptr_t, bool, int64_t, double, std::string, JsonArray, JsonObject> v_ = nullptr;
  size_t offset_ = 0;
};

/// Limits that bound the work and memory of parsing untrusted text, and how strict it is.
struct JsonLimits {
  size_t max_bytes = size_t(100) << 20;  ///< longest input accepted
  int max_depth = 128;                   ///< deepest nesting of arrays and objects
  size_t max_values = size_t(1) << 24;   ///< most values (scalars, arrays, objects) in total
  bool unique_keys = true;               ///< reject an object that repeats a key (false: keep every pair)
};

/// The 1-based line of byte `offset` in `text` (for messages about a parsed value).
inline size_t json_line(std::string_view text, size_t offset) {
  offset = std::min(offset, text.size());
  size_t line = 1;
  for (size_t i = 0; i < offset; ++i) line += text[i] == '\n';
  return line;
}

/// Appends `s` to `out` as a quoted JSON string (escaping ", \ and control characters).
inline void json_write_string(std::string& out, std::string_view s) {
  static const char hex[] = "0123456789abcdef";
  out += '"';
  for (char ch : s) {
    unsigned char c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) {
          out += "\\u00";
          out += hex[c >> 4];
          out += hex[c & 15];
        } else {
          out += ch;  // UTF-8 bytes are written as they are
        }
    }
  }
  out += '"';
}

inline void Json::write(std::string& out, int indent, int level) const {
  auto newline = [&](int lvl) {
    if (indent < 0) return;
    out += '\n';
    out.append(size_t(indent) * size_t(lvl), ' ');
  };
  switch (type()) {
    case Type::null: out += "null"; break;
    case Type::boolean: out += std::get<bool>(v_) ? "true" : "false"; break;
    case Type::integer: out += std::to_string(std::get<int64_t>(v_)); break;
    case Type::number: {
      double d = std::get<double>(v_);
      LOOM_CHECK(std::isfinite(d), value_error, "Json: cannot write the non-finite number ", d,
                 " (JSON has no NaN or Infinity)");
      char buf[32];
      auto res = std::to_chars(buf, buf + sizeof(buf), d);  // shortest text that reads back exactly
      std::string_view txt(buf, size_t(res.ptr - buf));
      out += txt;
      // Keep the value a double when read back: 1.0 is written "1.0", not "1".
      if (txt.find_first_of(".eE") == std::string_view::npos) out += ".0";
      break;
    }
    case Type::string: json_write_string(out, std::get<std::string>(v_)); break;
    case Type::array: {
      const auto& a = std::get<JsonArray>(v_);
      out += '[';
      for (size_t i = 0; i < a.size(); ++i) {
        if (i) out += ',';
        newline(level + 1);
        a[i].write(out, indent, level + 1);
      }
      if (!a.empty()) newline(level);
      out += ']';
      break;
    }
    case Type::object: {
      const auto& o = std::get<JsonObject>(v_);
      out += '{';
      for (size_t i = 0; i < o.size(); ++i) {
        if (i) out += ',';
        newline(level + 1);
        json_write_string(out, o[i].first);
        out += indent < 0 ? ":" : ": ";
        o[i].second.write(out, indent, level + 1);
      }
      if (!o.empty()) newline(level);
      out += '}';
      break;
    }
  }
}

namespace detail {

/// Recursive-descent parser over a string_view; depth-limited, so recursion stays shallow.
class JsonParser {
 public:
  JsonParser(std::string_view text, const JsonLimits& limits, std::string_view name)
      : s_(text), lim_(limits), name_(name) {}

  Json parse_document() {
    if (s_.size() > lim_.max_bytes)
      fail(loom::detail::concat("the text is ", s_.size(), " bytes, more than the limit of ", lim_.max_bytes), false);
    skip_ws();
    Json v = parse_value(0);
    skip_ws();
    if (i_ != s_.size()) fail("unexpected text after the JSON value");
    return v;
  }

 private:
  // "JSON: what at byte N", or "name:line: malformed JSON: what at byte N" for a named text.
  [[noreturn]] void fail(const std::string& what, bool at = true) const {
    const std::string pos = at ? loom::detail::concat(" at byte ", i_) : std::string();
    if (name_.empty()) throw json_error(loom::detail::concat("JSON: ", what, pos));
    throw json_error(loom::detail::concat(name_, ":", json_line(s_, i_), ": malformed JSON: ", what, pos));
  }
  static std::string show(char c) {
    unsigned char u = static_cast<unsigned char>(c);
    if (u >= 0x20 && u < 0x7f) return std::string("'") + c + "'";
    static const char hex[] = "0123456789abcdef";
    return std::string("byte 0x") + hex[u >> 4] + hex[u & 15];
  }
  void skip_ws() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\n' || s_[i_] == '\r')) ++i_;
  }
  void count_value() {
    if (++values_ > lim_.max_values)
      fail(loom::detail::concat("more than ", lim_.max_values, " values (limit)"));
  }
  void expect(char c) {
    if (i_ >= s_.size()) fail(loom::detail::concat("unexpected end of input, expected '", c, "'"));
    if (s_[i_] != c) fail(loom::detail::concat("expected '", c, "' but found ", show(s_[i_])));
    ++i_;
  }

  Json parse_value(int depth) {
    const size_t start = i_;
    Json v = parse_value_here(depth);
    v.offset_ = start;
    return v;
  }

  Json parse_value_here(int depth) {
    if (i_ >= s_.size()) fail("unexpected end of input, expected a value");
    count_value();
    char c = s_[i_];
    switch (c) {
      case '{': return parse_object(depth + 1);
      case '[': return parse_array(depth + 1);
      case '"': return Json(parse_string());
      case 't': literal("true"); return Json(true);
      case 'f': literal("false"); return Json(false);
      case 'n': literal("null"); return Json();
      default:
        if (c == '-' || (c >= '0' && c <= '9')) return parse_number();
        fail(loom::detail::concat("unexpected ", show(c), ", expected a value"));
    }
  }

  void literal(const char* word) {
    size_t n = std::strlen(word);
    if (s_.substr(i_, n) != word) fail(loom::detail::concat("invalid literal, expected '", word, "'"));
    i_ += n;
  }

  void check_depth(int depth) {
    if (depth > lim_.max_depth) fail(loom::detail::concat("nesting deeper than ", lim_.max_depth, " levels (limit)"));
  }

  Json parse_array(int depth) {
    check_depth(depth);
    ++i_;  // '['
    JsonArray a;
    skip_ws();
    if (i_ < s_.size() && s_[i_] == ']') {
      ++i_;
      return Json(std::move(a));
    }
    for (;;) {
      skip_ws();
      a.push_back(parse_value(depth));
      skip_ws();
      if (i_ < s_.size() && s_[i_] == ',') {
        ++i_;
        continue;
      }
      expect(']');
      return Json(std::move(a));
    }
  }

  Json parse_object(int depth) {
    check_depth(depth);
    ++i_;  // '{'
    JsonObject o;
    std::unordered_set<std::string> seen;  // duplicate check stays O(n) for large headers (unique_keys)
    skip_ws();
    if (i_ < s_.size() && s_[i_] == '}') {
      ++i_;
      return Json(std::move(o));
    }
    for (;;) {
      skip_ws();
      if (i_ >= s_.size()) fail("unexpected end of input, expected a key");
      if (s_[i_] != '"') fail(loom::detail::concat("expected a string key but found ", show(s_[i_])));
      size_t key_at = i_;
      std::string key = parse_string();
      if (lim_.unique_keys && !seen.insert(key).second) {
        i_ = key_at;
        fail(loom::detail::concat("duplicate key \"", key, "\""));
      }
      skip_ws();
      expect(':');
      skip_ws();
      Json v = parse_value(depth);
      o.emplace_back(std::move(key), std::move(v));
      skip_ws();
      if (i_ < s_.size() && s_[i_] == ',') {
        ++i_;
        continue;
      }
      expect('}');
      return Json(std::move(o));
    }
  }

  Json parse_number() {
    size_t start = i_;
    bool integral = true;
    if (s_[i_] == '-') ++i_;
    if (i_ >= s_.size() || !isdigit(s_[i_])) fail("invalid number: expected a digit");
    if (s_[i_] == '0') {
      ++i_;
      if (i_ < s_.size() && isdigit(s_[i_])) fail("invalid number: leading zero");
    } else {
      while (i_ < s_.size() && isdigit(s_[i_])) ++i_;
    }
    if (i_ < s_.size() && s_[i_] == '.') {
      integral = false;
      ++i_;
      if (i_ >= s_.size() || !isdigit(s_[i_])) fail("invalid number: expected a digit after '.'");
      while (i_ < s_.size() && isdigit(s_[i_])) ++i_;
    }
    if (i_ < s_.size() && (s_[i_] == 'e' || s_[i_] == 'E')) {
      integral = false;
      ++i_;
      if (i_ < s_.size() && (s_[i_] == '+' || s_[i_] == '-')) ++i_;
      if (i_ >= s_.size() || !isdigit(s_[i_])) fail("invalid number: expected a digit in the exponent");
      while (i_ < s_.size() && isdigit(s_[i_])) ++i_;
    }
    const char* b = s_.data() + start;
    const char* e = s_.data() + i_;
    if (integral) {
      int64_t v = 0;
      auto r = std::from_chars(b, e, v);
      if (r.ec == std::errc() && r.ptr == e) return Json(v);
      // Too large for int64: fall through and keep it as a double.
    }
    double d = 0;
    auto r = std::from_chars(b, e, d);
    if (r.ec == std::errc::result_out_of_range) {
      i_ = start;
      fail("number out of range");
    }
    if (r.ec != std::errc() || r.ptr != e) {
      i_ = start;
      fail("invalid number");
    }
    return Json(d);
  }

  static bool isdigit(char c) { return c >= '0' && c <= '9'; }

  unsigned hex4() {
    if (s_.size() - i_ < 4) fail("truncated \\u escape");
    unsigned v = 0;
    for (int k = 0; k < 4; ++k) {
      char c = s_[i_++];
      v <<= 4;
      if (c >= '0' && c <= '9') v |= unsigned(c - '0');
      else if (c >= 'a' && c <= 'f') v |= unsigned(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F') v |= unsigned(c - 'A' + 10);
      else { --i_; fail(loom::detail::concat("invalid hex digit ", show(c), " in \\u escape")); }
    }
    return v;
  }

  static void append_utf8(std::string& out, uint32_t cp) {
    if (cp < 0x80) {
      out += char(cp);
    } else if (cp < 0x800) {
      out += char(0xc0 | (cp >> 6));
      out += char(0x80 | (cp & 0x3f));
    } else if (cp < 0x10000) {
      out += char(0xe0 | (cp >> 12));
      out += char(0x80 | ((cp >> 6) & 0x3f));
      out += char(0x80 | (cp & 0x3f));
    } else {
      out += char(0xf0 | (cp >> 18));
      out += char(0x80 | ((cp >> 12) & 0x3f));
      out += char(0x80 | ((cp >> 6) & 0x3f));
      out += char(0x80 | (cp & 0x3f));
    }
  }

  // Checks one UTF-8 sequence starting at i_ (a lead byte >= 0x80) and copies it to out.
  void copy_utf8(std::string& out) {
    unsigned char c = static_cast<unsigned char>(s_[i_]);
    int n = 0;
    uint32_t cp = 0, min = 0;
    if (c >= 0xc2 && c <= 0xdf) n = 1, cp = c & 0x1f, min = 0x80;
    else if (c >= 0xe0 && c <= 0xef) n = 2, cp = c & 0x0f, min = 0x800;
    else if (c >= 0xf0 && c <= 0xf4) n = 3, cp = c & 0x07, min = 0x10000;
    else fail(loom::detail::concat("invalid UTF-8 lead ", show(char(c)), " in a string"));
    if (s_.size() - i_ <= size_t(n)) fail("truncated UTF-8 sequence in a string");
    for (int k = 1; k <= n; ++k) {
      unsigned char cc = static_cast<unsigned char>(s_[i_ + size_t(k)]);
      if ((cc & 0xc0) != 0x80) fail("invalid UTF-8 continuation byte in a string");
      cp = (cp << 6) | (cc & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
      fail("invalid UTF-8 sequence (overlong, surrogate or out of range) in a string");
    out.append(s_.data() + i_, size_t(n) + 1);
    i_ += size_t(n) + 1;
  }

  std::string parse_string() {
    ++i_;  // opening quote
    std::string out;
    for (;;) {
      if (i_ >= s_.size()) fail("unterminated string");
      char c = s_[i_];
      unsigned char u = static_cast<unsigned char>(c);
      if (c == '"') {
        ++i_;
        return out;
      }
      if (u < 0x20) fail(loom::detail::concat("raw control character ", show(c), " in a string (escape it)"));
      if (u >= 0x80) {
        copy_utf8(out);
        continue;
      }
      if (c != '\\') {
        out += c;
        ++i_;
        continue;
      }
      ++i_;
      if (i_ >= s_.size()) fail("unterminated escape in a string");
      char e = s_[i_++];
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          uint32_t cp = hex4();
          if (cp >= 0xdc00 && cp <= 0xdfff) fail("lone low surrogate in \\u escape");
          if (cp >= 0xd800 && cp <= 0xdbff) {
            if (s_.substr(i_, 2) != "\\u") fail("lone high surrogate (not followed by a \\u low surrogate)");
            i_ += 2;
            uint32_t lo = hex4();
            if (lo < 0xdc00 || lo > 0xdfff) fail("high surrogate not followed by a low surrogate");
            cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
          }
          append_utf8(out, cp);
          break;
        }
        default:
          --i_;
          fail(loom::detail::concat("invalid escape \\", show(e), " in a string"));
      }
    }
  }

  std::string_view s_;
  JsonLimits lim_;
  std::string_view name_;
  size_t i_ = 0;
  size_t values_ = 0;
};

}  // namespace detail

/// Parses one JSON document (surrounding whitespace allowed); throws json_error on any mistake.
/// With a `name` (a file name), errors read "name:line: malformed JSON: what at byte N".
inline Json parse_json(std::string_view text, const JsonLimits& limits = {}, std::string_view name = {}) {
  return detail::JsonParser(text, limits, name).parse_document();
}

}  // namespace loom::io
