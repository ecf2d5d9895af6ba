#pragma once
/// @file json.hpp
/// A small JSON reader and string writer for the tokenizer's file formats (encoder.json,
/// tokenizer.json). Strict RFC 8259 syntax, \uXXXX escapes with surrogate pairs, a nesting limit,
/// and errors that name the file and line.

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "loom/core/error.hpp"
#include "loom/tokenizer/utf8.hpp"

namespace loom::tokenizer::detail {

/// A parsed JSON value. Numbers keep their integer value when they are integers.
struct JsonValue {
  enum class Type { null, boolean, number, string, array, object };
  Type type = Type::null;
  bool boolean = false;
  bool is_integer = false;
  std::int64_t integer = 0;
  double number = 0;
  std::string string;
  std::vector<JsonValue> array;
  std::vector<std::pair<std::string, JsonValue>> object;  ///< in file order
  std::size_t line = 1;                                   ///< line where the value starts

  /// The member named key of an object, or nullptr.
  const JsonValue* find(std::string_view key) const {
    for (const auto& kv : object)
      if (kv.first == key) return &kv.second;
    return nullptr;
  }
};

/// Recursive-descent JSON parser over a whole document held in memory.
class JsonParser {
 public:
  static constexpr int max_depth = 64;

  /// Parses text (named `name` in errors) into a value; throws io_error on any syntax error.
  static JsonValue parse(std::string_view text, std::string_view name) {
    JsonParser p(text, name);
    p.skip_ws();
    JsonValue v = p.value(0);
    p.skip_ws();
    if (p.i_ != text.size()) p.fail("unexpected text after the JSON value");
    return v;
  }

 private:
  JsonParser(std::string_view text, std::string_view name) : s_(text), name_(name) {}

  [[noreturn]] void fail(const std::string& what) const {
    throw io_error(loom::detail::concat(name_, ":", line_, ": malformed JSON: ", what));
  }
  void skip_ws() {
    while (i_ < s_.size()) {
      char c = s_[i_];
      if (c == '\n') ++line_;
      else if (c != ' ' && c != '\t' && c != '\r') break;
      ++i_;
    }
  }
  bool eat(char c) {
    if (i_ < s_.size() && s_[i_] == c) { ++i_; return true; }
    return false;
  }
  void expect(char c) {
    if (!eat(c)) fail(std::string("expected '") + c + "'");
  }
  JsonValue value(int depth) {
    if (depth > max_depth) fail("nesting deeper than 64 levels");
    if (i_ >= s_.size()) fail("unexpected end of file");
    JsonValue v;
    v.line = line_;
    char c = s_[i_];
    if (c == '{') {
      v.type = JsonValue::Type::object;
      ++i_;
      skip_ws();
      if (eat('}')) return v;
      while (true) {
        skip_ws();
        if (i_ >= s_.size() || s_[i_] != '"') fail("expected a string key");
        std::string key = string();
        skip_ws();
        expect(':');
        skip_ws();
        v.object.emplace_back(std::move(key), value(depth + 1));
        skip_ws();
        if (eat('}')) return v;
        expect(',');
      }
    }
    if (c == '[') {
      v.type = JsonValue::Type::array;
      ++i_;
      skip_ws();
      if (eat(']')) return v;
      while (true) {
        skip_ws();
        v.array.push_back(value(depth + 1));
        skip_ws();
        if (eat(']')) return v;
        expect(',');
      }
    }
    if (c == '"') {
      v.type = JsonValue::Type::string;
      v.string = string();
      return v;
    }
    if (s_.compare(i_, 4, "true") == 0) { i_ += 4; v.type = JsonValue::Type::boolean; v.boolean = true; return v; }
    if (s_.compare(i_, 5, "false") == 0) { i_ += 5; v.type = JsonValue::Type::boolean; return v; }
    if (s_.compare(i_, 4, "null") == 0) { i_ += 4; return v; }
    if (c == '-' || (c >= '0' && c <= '9')) return number(v);
    fail(std::string("unexpected character '") + c + "'");
  }
  JsonValue number(JsonValue& v) {
    v.type = JsonValue::Type::number;
    std::size_t start = i_;
    bool neg = eat('-');
    if (i_ >= s_.size() || s_[i_] < '0' || s_[i_] > '9') fail("bad number");
    bool integer = true;
    std::uint64_t mag = 0;
    bool overflow = false;
    if (s_[i_] == '0') ++i_;
    else
      while (i_ < s_.size() && s_[i_] >= '0' && s_[i_] <= '9') {
        if (mag > (std::uint64_t{1} << 62)) overflow = true;
        else mag = mag * 10 + static_cast<unsigned>(s_[i_] - '0');
        ++i_;
      }
    if (eat('.')) {
      integer = false;
      if (i_ >= s_.size() || s_[i_] < '0' || s_[i_] > '9') fail("bad number");
      while (i_ < s_.size() && s_[i_] >= '0' && s_[i_] <= '9') ++i_;
    }
    if (i_ < s_.size() && (s_[i_] == 'e' || s_[i_] == 'E')) {
      integer = false;
      ++i_;
      if (!eat('+')) eat('-');
      if (i_ >= s_.size() || s_[i_] < '0' || s_[i_] > '9') fail("bad number");
      while (i_ < s_.size() && s_[i_] >= '0' && s_[i_] <= '9') ++i_;
    }
    v.is_integer = integer && !overflow;
    v.integer = neg ? -static_cast<std::int64_t>(mag) : static_cast<std::int64_t>(mag);
    v.number = std::strtod(std::string(s_.substr(start, i_ - start)).c_str(), nullptr);
    return v;
  }
  unsigned hex4() {
    if (i_ + 4 > s_.size()) fail("truncated \\u escape");
    unsigned u = 0;
    for (int k = 0; k < 4; ++k) {
      char c = s_[i_++];
      u <<= 4;
      if (c >= '0' && c <= '9') u |= static_cast<unsigned>(c - '0');
      else if (c >= 'a' && c <= 'f') u |= static_cast<unsigned>(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F') u |= static_cast<unsigned>(c - 'A' + 10);
      else fail("bad \\u escape");
    }
    return u;
  }
  std::string string() {
    ++i_;  // opening quote
    std::string out;
    while (true) {
      if (i_ >= s_.size()) fail("unterminated string");
      unsigned char c = static_cast<unsigned char>(s_[i_]);
      if (c == '"') { ++i_; return out; }
      if (c < 0x20) fail("control character in string");
      if (c != '\\') {
        if (c < 0x80) { out += static_cast<char>(c); ++i_; continue; }
        Utf8Char ch = decode_utf8(reinterpret_cast<const unsigned char*>(s_.data()), i_, s_.size());
        if (ch.cp == invalid_code_point) fail("invalid UTF-8 in string");
        out.append(s_.data() + i_, ch.len);
        i_ += ch.len;
        continue;
      }
      ++i_;
      if (i_ >= s_.size()) fail("unterminated string");
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
          unsigned u = hex4();
          if (u >= 0xD800 && u <= 0xDBFF) {  // a high surrogate must be followed by a low one
            if (i_ + 2 > s_.size() || s_[i_] != '\\' || s_[i_ + 1] != 'u') fail("lone high surrogate");
            i_ += 2;
            unsigned lo = hex4();
            if (lo < 0xDC00 || lo > 0xDFFF) fail("bad surrogate pair");
            u = 0x10000 + ((u - 0xD800) << 10) + (lo - 0xDC00);
          } else if (u >= 0xDC00 && u <= 0xDFFF) {
            fail("lone low surrogate");
          }
          append_utf8(out, u);
          break;
        }
        default: fail(std::string("bad escape '\\") + e + "'");
      }
    }
  }

  std::string_view s_;
  std::string_view name_;
  std::size_t i_ = 0;
  std::size_t line_ = 1;
};

/// Appends s as a JSON string literal (s must be valid UTF-8; controls are \u-escaped).
inline void json_write_string(std::string& out, std::string_view s) {
  static const char* hexd = "0123456789abcdef";
  out += '"';
  for (char ch : s) {
    unsigned char c = static_cast<unsigned char>(ch);
    if (c == '"') out += "\\\"";
    else if (c == '\\') out += "\\\\";
    else if (c == '\n') out += "\\n";
    else if (c == '\t') out += "\\t";
    else if (c == '\r') out += "\\r";
    else if (c < 0x20 || c == 0x7F) { out += "\\u00"; out += hexd[c >> 4]; out += hexd[c & 15]; }
    else out += ch;
  }
  out += '"';
}

}  // namespace loom::tokenizer::detail
