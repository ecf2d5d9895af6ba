// loom/io: the JSON parser and writer, safetensors round trips for every dtype, a byte-exact
// check against a hand-built file, every kind of malformed file (each must give an io_error that
// names the file and the problem, never a crash), random corruption, atomic writes, checkpoints.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include <sys/wait.h>
#include <unistd.h>

#include <loom/io/checkpoint.hpp>
#include <loom/io/cli.hpp>
#include <loom/io/json.hpp>
#include <loom/io/safetensors.hpp>
#include <loom/loom.hpp>

#include "catch.hpp"
#include "temp_dir.hpp"

using namespace loom;
using namespace loom::io;
namespace fs = std::filesystem;

namespace {

using loom_test::TempDir;

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void spit(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), std::streamsize(bytes.size()));
}

std::string le64(uint64_t v) {
  std::string s;
  for (int i = 0; i < 8; ++i) s += char((v >> (8 * i)) & 0xff);
  return s;
}

// A safetensors file from a header text and a data buffer (header length taken from the text).
std::string st_file(const std::string& header, const std::string& data) { return le64(header.size()) + header + data; }

std::string bytes_of(const AnyTensor& t) {
  AnyTensor c = t.contiguous_cpu();
  return std::string(static_cast<const char*>(c.data()), c.nbytes());
}

// Deterministic values of every kind a type can hold, special values included.
template <class T>
std::vector<T> sample_values(int64_t n) {
  std::vector<T> v;
  for (int64_t i = 0; i < n; ++i) {
    if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>) {
      const T special[] = {T(0), -T(0), std::numeric_limits<T>::infinity(), -std::numeric_limits<T>::infinity(),
                           std::numeric_limits<T>::quiet_NaN(), std::numeric_limits<T>::denorm_min(),
                           std::numeric_limits<T>::max(), std::numeric_limits<T>::lowest()};
      v.push_back(i < 8 ? special[i] : T(std::sin(double(i)) * 1000.0 / double(i)));
    } else if constexpr (std::is_same_v<T, bf16> || std::is_same_v<T, half>) {
      v.push_back(T::from_bits(uint16_t((i * 7919 + 13) & 0xffff)));  // every bit pattern kind, NaNs too
    } else if constexpr (std::is_same_v<T, bool>) {
      v.push_back(i % 3 == 0);
    } else {
      const T special[] = {std::numeric_limits<T>::min(), std::numeric_limits<T>::max(), T(0), T(-1)};
      v.push_back(i < 4 ? special[i] : T(i * 2654435761LL % 100003 - 50000));
    }
  }
  return v;
}

}  // namespace

// --- JSON -----------------------------------------------------------------------------------

TEST_CASE("JSON parses scalars: integers stay int64, other numbers are doubles") {
  CHECK(parse_json("null").is_null());
  CHECK(parse_json(" true ").as_bool() == true);
  CHECK(parse_json("false").as_bool() == false);
  CHECK(parse_json("42").is_int());
  CHECK(parse_json("-42").as_int() == -42);
  CHECK(parse_json("9223372036854775807").as_int() == std::numeric_limits<int64_t>::max());
  CHECK(parse_json("-9223372036854775808").as_int() == std::numeric_limits<int64_t>::min());
  Json big = parse_json("9223372036854775808");  // one past int64: kept as a double
  CHECK(big.type() == Json::Type::number);
  CHECK(big.as_double() == 9223372036854775808.0);
  CHECK(parse_json("1.0").type() == Json::Type::number);
  CHECK(parse_json("1e3").as_double() == 1000.0);
  CHECK(parse_json("-0.25E-2").as_double() == -0.0025);
  CHECK(parse_json("0.1").as_double() == 0.1);
  CHECK(parse_json("7").as_double() == 7.0);  // integers convert to double on request
  CHECK_THROWS_AS(parse_json("1.5").as_int(), value_error);
  CHECK_THROWS_WITH(parse_json("\"x\"").as_int(), LOOM_CONTAINS("expected an integer, got string"));
}

TEST_CASE("JSON strings: escapes, unicode escapes with surrogate pairs, strict UTF-8") {
  CHECK(parse_json(R"("a\"b\\c\/d\b\f\n\r\t")").as_string() == "a\"b\\c/d\b\f\n\r\t");
  CHECK(parse_json(R"("\u00e9\u20AC")").as_string() == "\xc3\xa9\xe2\x82\xac");               // é €
  CHECK(parse_json(R"("\ud83d\ude00")").as_string() == "\xf0\x9f\x98\x80");                   // 😀
  CHECK(parse_json("\"\xf0\x9f\x98\x80 caf\xc3\xa9\"").as_string() == "\xf0\x9f\x98\x80 caf\xc3\xa9");
  CHECK(parse_json(R"("\u0000")").as_string() == std::string(1, '\0'));
  CHECK_THROWS_WITH(parse_json(R"("\ud83d")"), LOOM_CONTAINS("high surrogate"));
  CHECK_THROWS_WITH(parse_json(R"("\ud83d\u0041")"), LOOM_CONTAINS("low surrogate"));
  CHECK_THROWS_WITH(parse_json(R"("\ude00")"), LOOM_CONTAINS("lone low surrogate"));
  CHECK_THROWS_WITH(parse_json(R"("\u12g4")"), LOOM_CONTAINS("invalid hex digit"));
  CHECK_THROWS_WITH(parse_json(R"("\x")"), LOOM_CONTAINS("invalid escape"));
  CHECK_THROWS_WITH(parse_json("\"a\nb\""), LOOM_CONTAINS("raw control character"));
  CHECK_THROWS_WITH(parse_json("\"\xc3\""), LOOM_CONTAINS("UTF-8"));              // truncated sequence
  CHECK_THROWS_WITH(parse_json("\"\xc0\xaf\""), LOOM_CONTAINS("UTF-8"));          // overlong '/'
  CHECK_THROWS_WITH(parse_json("\"\xed\xa0\x80\""), LOOM_CONTAINS("UTF-8"));      // encoded surrogate
  CHECK_THROWS_WITH(parse_json("\"\xff\""), LOOM_CONTAINS("UTF-8"));
  CHECK_THROWS_WITH(parse_json("\"abc"), LOOM_CONTAINS("unterminated string"));
}

TEST_CASE("JSON syntax errors give json_error with the byte offset") {
  struct Bad { const char* text; const char* what; };
  const Bad cases[] = {
      {"", "unexpected end of input"},        {"[1, 2,]", "expected a value"},
      {"{\"a\" 1}", "expected ':'"},         {"{\"a\": 1,}", "expected a string key"},
      {"{a: 1}", "expected a string key"},    {"[1 2]", "expected ']'"},
      {"[1] x", "unexpected text after"},    {"01", "leading zero"},
      {"-", "expected a digit"},              {"1.", "after '.'"},
      {"1e", "exponent"},                     {"tru", "invalid literal"},
      {"nul", "invalid literal"},             {"NaN", "expected a value"},
      {"1e999", "out of range"},              {"{\"a\":1,\"a\":2}", "duplicate key \"a\""},
      {"[", "unexpected end of input"},       {"{\"a\":", "unexpected end of input"},
  };
  for (const auto& c : cases) {
    CAPTURE(c.text);
    CHECK_THROWS_AS(parse_json(c.text), json_error);
    CHECK_THROWS_AS(parse_json(c.text), io_error);  // json_error is an io_error
    CHECK_THROWS_WITH(parse_json(c.text), LOOM_CONTAINS(c.what));
  }
  CHECK_THROWS_WITH(parse_json("[1, 2,]"), LOOM_CONTAINS("at byte 6"));
}

TEST_CASE("JSON nesting, size and value-count limits stop hostile input") {
  std::string ok = std::string(128, '[') + std::string(128, ']');
  CHECK(parse_json(ok).is_array());
  std::string deep = std::string(129, '[') + std::string(129, ']');
  CHECK_THROWS_WITH(parse_json(deep), LOOM_CONTAINS("nesting deeper than 128"));
  // A million open brackets must fail fast at the limit, not overflow the stack.
  CHECK_THROWS_WITH(parse_json(std::string(1000000, '[')), LOOM_CONTAINS("nesting deeper"));
  std::string objs;
  for (int i = 0; i < 200; ++i) objs += "{\"k\":";
  CHECK_THROWS_WITH(parse_json(objs), LOOM_CONTAINS("nesting deeper"));

  JsonLimits lim;
  lim.max_depth = 2;
  CHECK(parse_json("[[1]]", lim).is_array());
  CHECK_THROWS_AS(parse_json("[[[1]]]", lim), json_error);
  lim = JsonLimits{};
  lim.max_bytes = 4;
  CHECK_THROWS_WITH(parse_json("[1,2]", lim), LOOM_CONTAINS("more than the limit of 4"));
  lim = JsonLimits{};
  lim.max_values = 3;
  CHECK(parse_json("[1,2]", lim).size() == 2);
  CHECK_THROWS_WITH(parse_json("[1,2,3]", lim), LOOM_CONTAINS("more than 3 values"));
}

TEST_CASE("JSON from a named file: errors give the file and line, values their offsets") {
  const std::string text = "{\n  \"a\": [1,\n    22],\n  \"b\": \"x\"\n}";
  Json j = parse_json(text, {}, "conf.json");
  CHECK(j.offset() == 0);
  CHECK(text.substr(j.at("a").offset(), 1) == "[");
  CHECK(json_line(text, j.at("a").offset()) == 2);
  CHECK(text.substr(j.at("a").at(1).offset(), 2) == "22");
  CHECK(json_line(text, j.at("a").at(1).offset()) == 3);
  CHECK(json_line(text, j.at("b").offset()) == 4);
  CHECK(json_line(text, text.size() + 10) == 5);   // past the end: the last line
  CHECK(Json(7).offset() == 0);                     // built in code
  CHECK(parse_json("  7") == Json(7));              // where a value stood does not count in ==
  CHECK(parse_json("  7").offset() == 2);
  // Errors: "name:line: malformed JSON: what at byte N"; without a name, "JSON: what at byte N".
  const std::string bad = "{\n  \"a\": [1,\n    2,]\n}";
  CHECK_THROWS_AS(parse_json(bad, {}, "conf.json"), json_error);
  CHECK_THROWS_WITH(parse_json(bad, {}, "conf.json"),
                    LOOM_CONTAINS("conf.json:3: malformed JSON: unexpected ']', expected a value at byte 19"));
  CHECK_THROWS_WITH(parse_json(bad), LOOM_CONTAINS("JSON: unexpected ']', expected a value at byte 19"));
  CHECK_THROWS_WITH(parse_json("\"\\ud800\"", {}, "s.json"), LOOM_CONTAINS("s.json:1: malformed JSON: lone high surrogate"));
  JsonLimits small;
  small.max_bytes = 4;
  CHECK_THROWS_WITH(parse_json("[1, 2]", small, "big.json"),
                    LOOM_CONTAINS("big.json:1: malformed JSON: the text is 6 bytes, more than the limit of 4"));
}

TEST_CASE("JSON objects may repeat keys when the reader asks for it") {
  const std::string text = R"({"a": 1, "b": 2, "a": 3})";
  CHECK_THROWS_WITH(parse_json(text), LOOM_CONTAINS("duplicate key \"a\""));
  JsonLimits lim;
  lim.unique_keys = false;  // e.g. a reader that reports repeated keys itself, with their line
  Json j = parse_json(text, lim);
  REQUIRE(j.size() == 3);
  CHECK(j.as_object()[2].first == "a");
  CHECK(j.as_object()[2].second.as_int() == 3);
  CHECK(j.at("a").as_int() == 1);  // lookups find the first
}

TEST_CASE("JSON objects keep key order and dump reads back to the same value") {
  Json j = parse_json(R"({"z": 1, "a": [true, null, 2.5, "s"], "m": {"k": -3}})");
  REQUIRE(j.is_object());
  REQUIRE(j.size() == 3);
  CHECK(j.as_object()[0].first == "z");
  CHECK(j.as_object()[1].first == "a");
  CHECK(j.as_object()[2].first == "m");
  CHECK(j.at("m").at("k").as_int() == -3);
  CHECK(j.at("a").at(2).as_double() == 2.5);
  CHECK(j.find("nope") == nullptr);
  CHECK_THROWS_AS(j.at("nope"), value_error);
  CHECK_THROWS_AS(j.at("a").at(9), index_error);
  CHECK(j.dump() == R"({"z":1,"a":[true,null,2.5,"s"],"m":{"k":-3}})");
  CHECK(parse_json(j.dump()) == j);
  CHECK(parse_json(j.dump(2)) == j);
  CHECK(Json(JsonArray{Json(1), Json(2)}).dump(2) == "[\n  1,\n  2\n]");

  Json o = Json::object();
  o.set("b", 1);
  o.set("a", "x");
  o.set("b", 2);  // replaces in place
  CHECK(o.dump() == R"({"b":2,"a":"x"})");

  // Doubles keep their type and exact value; integers stay integers.
  for (double d : {1.0, 0.1, -2.5e-300, 1e300, 123456789.125, 5e-324}) {
    Json back = parse_json(Json(d).dump());
    CHECK(back.type() == Json::Type::number);
    CHECK(back.as_double() == d);
  }
  CHECK(Json(1.0).dump() == "1.0");
  CHECK(Json(int64_t(-7)).dump() == "-7");
  CHECK_THROWS_AS(Json(std::nan("")).dump(), value_error);
  CHECK_THROWS_AS(Json(std::numeric_limits<double>::infinity()).dump(), value_error);
  CHECK_THROWS_AS(Json(uint64_t(1) << 63), value_error);
  CHECK(Json(uint64_t(1) << 62).as_int() == int64_t(1) << 62);
  CHECK(Json(5LL).as_int() == 5);
  CHECK(Json(short(-3)).as_int() == -3);
  CHECK(Json(true).is_bool());

  // Strings: quotes, backslashes and control characters escape; UTF-8 passes through.
  std::string s = std::string("q\"b\\n\n\x01 \xc3\xa9") + '\0';
  CHECK(Json(s).dump() == "\"q\\\"b\\\\n\\n\\u0001 \xc3\xa9\\u0000\"");
  CHECK(parse_json(Json(s).dump()).as_string() == s);
}

// --- AnyTensor ------------------------------------------------------------------------------

TEST_CASE("AnyTensor reports dtype and shape and refuses the wrong element type") {
  AnyTensor a = zeros<bf16>({2, 3});
  CHECK(a.dtype() == DType::bfloat16);
  CHECK(a.shape() == Shape{2, 3});
  CHECK(a.numel() == 6);
  CHECK(a.nbytes() == 12);
  CHECK(a.holds<bf16>());
  CHECK_FALSE(a.holds<float>());
  CHECK(a.get<bf16>().shape() == Shape{2, 3});
  CHECK_THROWS_AS(a.get<float>("wte"), dtype_error);
  CHECK_THROWS_WITH(a.get<float>("wte"), LOOM_CONTAINS("wte: holds a bfloat16 tensor, not float32"));
  CHECK_FALSE(AnyTensor().defined());
  CHECK(AnyTensor::empty(DType::int64, {4}).holds<int64_t>());
  CHECK(dtype_itemsize(DType::float64) == 8);
  CHECK(dtype_itemsize(DType::boolean) == 1);
}

// --- safetensors: round trips ---------------------------------------------------------------

TEMPLATE_TEST_CASE("safetensors round-trips every dtype bit for bit", "", float, double, bf16, half, int32_t,
                   int64_t, bool) {
  using T = TestType;
  auto full_t = from_vector<T>(sample_values<T>(24), {2, 3, 4});
  auto scalar = from_vector<T>(sample_values<T>(1), {});                 // 0-d
  auto empty_t = Tensor<T>::empty({0, 5});                               // no elements
  auto base = from_vector<T>(sample_values<T>(30), {5, 6});
  auto transposed = base.t();                                            // non-contiguous
  auto strided = base.slice(1, 1, 6, 2);                                 // every other column
  REQUIRE_FALSE(transposed.is_contiguous());
  REQUIRE_FALSE(strided.is_contiguous());

  NamedTensors in = {{"full", full_t}, {"scalar", scalar}, {"empty", empty_t},
                     {"transposed", transposed}, {"strided", strided}};
  std::string bytes = serialize_safetensors(in);
  SafetensorsFile f = parse_safetensors(bytes, "rt.safetensors");
  REQUIRE(f.names == std::vector<std::string>{"full", "scalar", "empty", "transposed", "strided"});
  for (const auto& [name, t] : in) {
    CAPTURE(name);
    REQUIRE(f.contains(name));
    Tensor<T> back = f.get<T>(name);
    CHECK(back.shape() == t.shape());
    CHECK(back.is_contiguous());
    CHECK(bytes_of(back) == bytes_of(t));  // bit-exact: NaN payloads, -0, subnormals
  }
  CHECK(f.get<T>("scalar").dim() == 0);
  CHECK(f.get<T>("empty").numel() == 0);
  // The data buffer holds exactly the elements (no padding between tensors).
  size_t want = size_t(24 + 1 + 0 + 30 + 15) * sizeof(T);
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  CHECK(bytes.size() == 8 + n + want);
  CHECK(n % 8 == 0);
}

TEST_CASE("safetensors metadata round-trips, and files round-trip through disk") {
  TempDir dir;
  std::map<std::string, std::string> meta = {
      {"format", "pt"}, {"config", R"({"n_layer": 4, "name": "t\"iny"})"}, {"unicode", "caf\xc3\xa9 \xf0\x9f\x98\x80"},
      {"empty", ""},    {"ctl", std::string("a\nb\tc") + '\0' + "d"}};
  auto w = from_vector<float>({1.5f, -2.0f, 3.25f, 0.0f}, {2, 2});
  auto ids = from_vector<int64_t>({5, 6, 7});
  std::string path = dir.file("m.safetensors");
  save_safetensors(path, {{"w", w}, {"ids", ids}}, meta);
  SafetensorsFile f = load_safetensors(path);
  CHECK(f.path == path);
  CHECK(f.metadata == meta);
  CHECK(f.names == std::vector<std::string>{"w", "ids"});
  CHECK(f.get<float>("w").to_vector() == w.to_vector());
  CHECK(f.get<int64_t>("ids").to_vector() == ids.to_vector());
  CHECK(slurp(path) == serialize_safetensors({{"w", w}, {"ids", ids}}, meta));
  CHECK(dir.list() == std::vector<std::string>{"m.safetensors"});  // no temporary file left

  // Wrong element type or a missing name: io_error naming the file, the tensor and both dtypes.
  CHECK_THROWS_AS(f.get<double>("w"), io_error);
  CHECK_THROWS_WITH(f.get<double>("w"), LOOM_CONTAINS("tensor 'w' is stored as F32 (float32), not F64 (float64)"));
  CHECK_THROWS_WITH(f.get<float>("nope"), LOOM_CONTAINS(path + ": no tensor named 'nope'"));
  CHECK_THROWS_WITH(load_safetensors(dir.file("missing.safetensors")), LOOM_CONTAINS("cannot open"));
}

TEST_CASE("safetensors writer refuses what it cannot write") {
  auto x = zeros<float>({2});
  CHECK_THROWS_WITH(serialize_safetensors({{"x", x}, {"x", x}}), LOOM_CONTAINS("'x' appears twice"));
  CHECK_THROWS_WITH(serialize_safetensors({{"__metadata__", x}}), LOOM_CONTAINS("reserved"));
  CHECK_THROWS_AS(serialize_safetensors({{"u", Tensor<float>()}}), value_error);
  CHECK_THROWS_WITH(serialize_safetensors({{"u", Tensor<float>()}}), LOOM_CONTAINS("tensor 'u' is undefined"));
}

// --- safetensors: the byte layout -----------------------------------------------------------

TEST_CASE("safetensors bytes match a hand-built file exactly") {
  // 8-byte little-endian header length, compact JSON header padded with spaces to a multiple of 8,
  // then the raw little-endian elements, packed in order.
  std::string header =
      R"({"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
      R"("b":{"dtype":"I64","shape":[1,1],"data_offsets":[8,16]},"c":{"dtype":"BF16","shape":[],"data_offsets":[16,18]}})";
  header.append((8 - header.size() % 8) % 8, ' ');
  std::string data = std::string("\x00\x00\x80\x3f\x00\x00\x00\xc0", 8)      // 1.0f, -2.0f
                     + std::string("\xfe\xff\xff\xff\xff\xff\xff\xff", 8)  // int64 -2
                     + std::string("\xc0\x3f", 2);                        // bf16 1.5
  std::string want = le64(header.size()) + header + data;

  NamedTensors t = {{"a", from_vector<float>({1.0f, -2.0f})},
                    {"b", from_vector<int64_t>({-2}, {1, 1})},
                    {"c", from_vector<bf16>({bf16(1.5f)}, {})}};
  std::string got = serialize_safetensors(t, {{"format", "pt"}});
  CHECK(got.size() == want.size());
  CHECK(got == want);
  CHECK(uint8_t(got[0]) == header.size());  // the length is little-endian
  CHECK(header.size() == 200);               // the numbers docs/08-checkpoint-format.md shows
  CHECK(got.substr(8 + 196, 4) == "    ");
}

TEST_CASE("safetensors reader accepts what other writers produce") {
  // Padded header, keys in another order, metadata last, non-8-aligned tensor offsets, offsets
  // out of header order, and whitespace everywhere JSON allows it.
  std::string header =
      "{ \"y\" : {\"shape\": [3], \"data_offsets\": [2, 14], \"dtype\": \"I32\"},\n"
      "  \"x\" : {\"dtype\": \"F16\", \"data_offsets\": [0, 2], \"shape\": [1]},\n"
      "  \"__metadata__\": {\"note\": \"hi\"} }";
  header += "        ";
  std::string data = std::string("\x00\x3c", 2)  // half 1.0
                     + std::string("\x01\x00\x00\x00\xff\xff\xff\xff\x00\x00\x00\x80", 12);
  SafetensorsFile f = parse_safetensors(st_file(header, data), "other.safetensors");
  CHECK(f.names == std::vector<std::string>{"y", "x"});
  CHECK(f.metadata.at("note") == "hi");
  CHECK(float(f.get<half>("x").item()) == 1.0f);
  CHECK(f.get<int32_t>("y").to_vector() == std::vector<int32_t>{1, -1, std::numeric_limits<int32_t>::min()});

  // No tensors at all is a valid file; so is an empty buffer with empty tensors.
  CHECK(parse_safetensors(st_file("{}", "")).tensors.empty());
  auto e = parse_safetensors(st_file(R"({"e":{"dtype":"F64","shape":[0,7],"data_offsets":[0,0]}})", ""));
  CHECK(e.get<double>("e").shape() == Shape{0, 7});
  // BOOL bytes other than 0/1 read as true.
  auto b = parse_safetensors(st_file(R"({"b":{"dtype":"BOOL","shape":[3],"data_offsets":[0,3]}})",
                                     std::string("\x00\x01\x07", 3)));
  CHECK(b.get<bool>("b").to_vector() == std::vector<bool>{false, true, true});
}

// --- safetensors: malformed files -----------------------------------------------------------

TEST_CASE("safetensors rejects malformed files with an io_error naming the file and the problem") {
  const std::string ok_entry = R"("t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})";
  const std::string eight(8, '\x01');
  std::string many_zeros = "[0";
  for (int i = 0; i < (1 << 20); ++i) many_zeros += ",0";
  many_zeros += "]";
  struct Bad { std::string name; std::string bytes; std::string what; };
  std::vector<Bad> cases = {
      {"empty file", "", "too short for the 8-byte header length"},
      {"truncated length", std::string("\x10\x00\x00", 3), "too short"},
      {"header length past the end", le64(1000) + "{}", "header length 1000 runs past the end of the file (10 bytes"},
      {"header length over the cap", le64(uint64_t(1) << 40) + "{}", "exceeds the limit of 100000000 bytes"},
      {"header length 2^64-1", le64(~uint64_t(0)) + "{}", "exceeds the limit"},
      {"invalid JSON", st_file("{\"t\": ", ""), "the header is not valid JSON"},
      {"root not an object", st_file("[1, 2]", ""), "the header must be a JSON object, got an array"},
      {"unknown dtype", st_file(R"({"t":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}})", "ab"),
       "tensor 't' has dtype 'U8', which loom does not support (supported: F32, F64, BF16, F16, I32, I64, BOOL)"},
      {"dtype not a string", st_file(R"({"t":{"dtype":4,"shape":[1],"data_offsets":[0,4]}})", "abcd"),
       "dtype is an integer, expected a string"},
      {"offsets out of the file", st_file(R"({"t":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", eight),
       "tensor 't' data_offsets [0, 16] run past the end of the data buffer (8 bytes"},
      {"file truncated in the data", st_file("{" + ok_entry + "}", "abcd"), "run past the end of the data buffer"},
      {"overlapping tensors",
       st_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
               eight),
       "tensors 'a' [0, 8] and 'b' [4, 8] overlap"},
      {"size mismatch",
       st_file(R"({"wte":{"dtype":"F32","shape":[10,4],"data_offsets":[0,100]}})", std::string(100, '\0')),
       "tensor 'wte' data_offsets [0, 100] do not match shape [10, 4] of F32 (160 bytes)"},
      {"duplicate names", st_file("{" + ok_entry + "," + ok_entry + "}", eight), "duplicate key \"t\""},
      {"negative shape", st_file(R"({"t":{"dtype":"F32","shape":[-1,2],"data_offsets":[0,8]}})", eight),
       "tensor 't' has a negative dimension -1 in its shape"},
      {"negative offset", st_file(R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[-8,0]}})", eight),
       "negative offset -8"},
      {"fractional shape", st_file(R"({"t":{"dtype":"F32","shape":[2.0],"data_offsets":[0,8]}})", eight),
       "shape[0] is a number, expected a non-negative integer"},
      {"too many dimensions",
       st_file(R"({"t":{"dtype":"F32","shape":[1,1,1,1,1,1,1,1,2],"data_offsets":[0,8]}})", eight),
       "has 9 dimensions; loom supports at most 8"},
      {"shape product overflows",
       st_file(R"({"t":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,8]}})", eight),
       "do not match shape [4294967296, 4294967296, 16] of F32 (more than 2^64 bytes)"},
      {"huge shape, no overflow", st_file(R"({"t":{"dtype":"F64","shape":[1000000,1000000],"data_offsets":[0,8]}})", eight),
       "do not match shape [1000000, 1000000] of F64 (8000000000000 bytes)"},
      {"begin after end", st_file(R"({"t":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}})", eight),
       "end before they begin"},
      {"one offset", st_file(R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[8]}})", eight),
       "data_offsets must be an array of two integers"},
      {"missing field", st_file(R"({"t":{"dtype":"F32","data_offsets":[0,8]}})", eight), "tensor 't' lacks 'shape'"},
      {"unknown field", st_file(R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"x":1}})", eight),
       "unknown field 'x'"},
      {"entry not an object", st_file(R"({"t":[1]})", ""), "tensor 't' must be described by an object, got an array"},
      {"metadata not strings", st_file(R"({"__metadata__":{"step":10}})", ""),
       "__metadata__ value of 'step' is an integer, expected a string"},
      {"metadata not an object", st_file(R"({"__metadata__":"x"})", ""), "__metadata__ must be an object"},
      {"gap between tensors",
       st_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
               std::string(12, '\0')),
       "bytes [4, 8) of the data buffer belong to no tensor"},
      {"trailing bytes", st_file("{" + ok_entry + "}", eight + "xx"),
       "the data buffer has 10 bytes but the tensors cover only 8"},
      {"deeply nested header", st_file(std::string(100, '[') + std::string(100, ']'), ""), "nesting deeper"},
      {"too many values in the header", st_file(many_zeros, ""), "more than 1048576 values"},
  };
  TempDir dir;
  for (const auto& c : cases) {
    CAPTURE(c.name);
    CHECK_THROWS_AS(parse_safetensors(c.bytes, "bad.safetensors"), io_error);
    CHECK_THROWS_WITH(parse_safetensors(c.bytes, "bad.safetensors"), LOOM_CONTAINS("bad.safetensors: "));
    CHECK_THROWS_WITH(parse_safetensors(c.bytes, "bad.safetensors"), LOOM_CONTAINS(c.what));
    // The file reader gives the same verdict, naming the path.
    std::string path = dir.file("bad.safetensors");
    spit(path, c.bytes);
    CHECK_THROWS_AS(load_safetensors(path), io_error);
    CHECK_THROWS_WITH(load_safetensors(path), LOOM_CONTAINS(path + ": "));
    CHECK_THROWS_WITH(load_safetensors(path), LOOM_CONTAINS(c.what));
  }
}

TEST_CASE("safetensors survives random corruption: every outcome is a valid file or an io_error") {
  NamedTensors t = {{"a", from_vector<float>({1, 2, 3, 4, 5, 6}, {2, 3})},
                    {"b", from_vector<bf16>({bf16(1.f), bf16(2.f)})},
                    {"c", from_vector<bool>({true, false, true})}};
  const std::string good = serialize_safetensors(t, {{"k", "v"}});
  REQUIRE_NOTHROW(parse_safetensors(good));
  int ok = 0, rejected = 0;
  auto attempt = [&](const std::string& bytes) {
    try {
      SafetensorsFile f = parse_safetensors(bytes, "fuzz");
      size_t total = 0;
      for (const auto& kv : f.tensors) total += kv.second.nbytes();
      if (total > bytes.size()) FAIL("a parsed file claims more bytes than it has");
      ++ok;
    } catch (const io_error&) {
      ++rejected;
    }  // anything else (or a crash) fails the test
  };
  for (size_t n = 0; n < good.size(); ++n) attempt(good.substr(0, n));  // every truncation
  CHECK(ok == 0);
  uint64_t state = 12345;
  auto next = [&] { return state = state * 6364136223846793005ULL + 1442695040888963407ULL, state >> 33; };
  for (int i = 0; i < 3000; ++i) {
    std::string b = good;
    int flips = 1 + int(next() % 4);
    for (int k = 0; k < flips; ++k) {
      size_t pos = next() % b.size();
      switch (next() % 3) {
        case 0: b[pos] = char(next()); break;                       // random byte
        case 1: b[pos] = "{}[]\":,0123456789-e "[next() % 20]; break;  // JSON-ish byte
        default: b.erase(pos, 1 + next() % 4); break;               // deletion
      }
    }
    attempt(b);
  }
  CHECK(rejected > 2500);  // nearly every mutation is caught
  CHECK(ok + rejected == int(good.size()) + 3000);
}

// --- atomic writes --------------------------------------------------------------------------

TEST_CASE("a failed write leaves the previous file intact and no temporary file behind") {
  TempDir dir;
  std::string path = dir.file("ckpt.safetensors");
  save_safetensors(path, {{"w", from_vector<float>({1, 2, 3})}});
  const std::string before = slurp(path);
  REQUIRE(before.size() > 8);

  // A tensor that cannot be serialised: refused before the file system is touched.
  CHECK_THROWS_AS(save_safetensors(path, {{"w", from_vector<float>({9})}, {"bad", Tensor<float>()}}), value_error);
  CHECK(slurp(path) == before);
  CHECK(dir.list() == std::vector<std::string>{"ckpt.safetensors"});

  // The body fails halfway through writing: the temporary file is removed, the old file stays.
  CHECK_THROWS_WITH(write_file_atomic(path,
                                      [](FileWriter& w) {
                                        w.write("partial contents");
                                        throw io_error("disk full (simulated)");
                                      }),
                    LOOM_CONTAINS("disk full (simulated)"));
  CHECK(slurp(path) == before);
  CHECK(dir.list() == std::vector<std::string>{"ckpt.safetensors"});

  // The directory does not exist: io_error naming the path, nothing created anywhere.
  std::string nowhere = dir.file("no/such/dir/ckpt.safetensors");
  CHECK_THROWS_AS(save_safetensors(nowhere, {{"w", from_vector<float>({1})}}), io_error);
  CHECK_THROWS_WITH(save_safetensors(nowhere, {{"w", from_vector<float>({1})}}),
                    LOOM_CONTAINS(nowhere + ": cannot create the temporary file"));
  CHECK_FALSE(fs::exists(dir.path / "no"));
  CHECK(dir.list() == std::vector<std::string>{"ckpt.safetensors"});

  // The target is a directory: the rename fails, the temporary file is cleaned up.
  fs::create_directory(dir.path / "adir");
  CHECK_THROWS_WITH(write_file_atomic(dir.file("adir"), std::string_view("x")), LOOM_CONTAINS("renaming"));
  CHECK(dir.list() == std::vector<std::string>{"adir", "ckpt.safetensors"});

  // A successful write replaces the file completely.
  write_file_atomic(path, std::string_view("new"));
  CHECK(slurp(path) == "new");
  CHECK(atomic_temp_path(path) == path + ".tmp." + std::to_string(long(::getpid())));
  CHECK(read_file(path) == "new");
  CHECK_THROWS_WITH(read_file(path, 2), LOOM_CONTAINS("larger than the limit of 2 bytes"));
}

TEST_CASE("reading a folder says it is a folder, for every reader") {
  TempDir dir;
  fs::create_directory(dir.path / "data");
  const std::string folder = dir.file("data");
  CHECK_THROWS_AS(read_file(folder), io_error);
  CHECK_THROWS_WITH(read_file(folder), LOOM_CONTAINS(folder + " is a directory, not a file"));
  CHECK_THROWS_WITH(load_safetensors(folder), LOOM_CONTAINS(folder + " is a directory, not a file"));
  CHECK_THROWS_WITH(load_checkpoint(folder), LOOM_CONTAINS(folder + " is a directory, not a file"));
  CHECK_THROWS_WITH(read_file(dir.file("missing.txt")), LOOM_CONTAINS("missing.txt: cannot open for reading"));
  spit(dir.file("empty.txt"), "");
  CHECK(read_file(dir.file("empty.txt")).empty());
}

TEST_CASE("make_directories creates a folder with its parents, and refuses a file in the way") {
  TempDir dir;
  const std::string nested = dir.file("a/b/c");
  make_directories(nested);
  CHECK(fs::is_directory(nested));
  make_directories(nested);  // already there: nothing to do
  spit(dir.file("plain"), "x");
  CHECK_THROWS_AS(make_directories(dir.file("plain")), io_error);
  CHECK_THROWS_WITH(make_directories(dir.file("plain")), LOOM_CONTAINS(dir.file("plain")));
  CHECK_THROWS_WITH(make_directories(dir.file("plain/sub")), LOOM_CONTAINS(dir.file("plain/sub") + ": cannot create"));
}

TEST_CASE("remove_stale_temp_files removes what killed writers left, and nothing else") {
  TempDir dir;
  // A process id that is surely not running: a child that has exited and been reaped.
  pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) ::_exit(0);
  int status = 0;
  REQUIRE(::waitpid(child, &status, 0) == child);
  const std::string dead = std::to_string(long(child)), alive = std::to_string(long(::getppid()));
  const std::string mine = std::to_string(long(::getpid()));
  const std::string path = dir.file("ckpt.safetensors");
  spit(path, "the checkpoint");
  const std::vector<std::string> leftovers = {"ckpt.safetensors.tmp." + dead,   // a killed writer's: removed
                                              "ckpt.safetensors.tmp." + alive,  // a running process's: kept
                                              "ckpt.safetensors.tmp." + mine,   // this process's own: kept
                                              "ckpt.safetensors.tmp.notapid",   // not write_file_atomic's: kept
                                              "ckpt.safetensors.tmp.",          //   nor this
                                              "log.csv.tmp." + dead};           // another file's: kept
  for (const std::string& name : leftovers)
    spit(dir.file(name), "partial");
  std::vector<std::string> removed = remove_stale_temp_files(path);
  CHECK(removed == std::vector<std::string>{dir.file("ckpt.safetensors.tmp." + dead)});
  std::vector<std::string> want = {"ckpt.safetensors", "ckpt.safetensors.tmp.", "ckpt.safetensors.tmp." + alive,
                                   "ckpt.safetensors.tmp." + mine, "ckpt.safetensors.tmp.notapid",
                                   "log.csv.tmp." + dead};
  std::sort(want.begin(), want.end());
  CHECK(dir.list() == want);
  CHECK(slurp(path) == "the checkpoint");
  CHECK(remove_stale_temp_files(path).empty());  // nothing left to do
  CHECK(remove_stale_temp_files(dir.file("log.csv")) == std::vector<std::string>{dir.file("log.csv.tmp." + dead)});
  CHECK(remove_stale_temp_files(dir.file("no/such/folder/ckpt.safetensors")).empty());
}

// --- checkpoints ----------------------------------------------------------------------------

TEST_CASE("checkpoints round-trip tensors and metadata exactly") {
  TempDir dir;
  Generator g(7);
  auto wte = randn<float>({16, 8}, g);
  auto exp_avg = randn<float>({16, 8}, g);
  auto counts = from_vector<int64_t>({3, 1, 4});
  Checkpoint ck;
  ck.add("model.transformer.wte.weight", wte);
  ck.add("optim.transformer.wte.weight.exp_avg", exp_avg);
  ck.add("data.counts", counts);
  ck.set_meta("step", "1200");
  ck.set_meta("rng.offset", std::to_string(std::numeric_limits<uint64_t>::max()));
  Json config = Json::object();
  config.set("n_layer", 4);
  config.set("n_embd", 128);
  config.set("dropout", 0.1);
  ck.set_meta_json("config", config);
  CHECK_THROWS_AS(ck.add("data.counts", counts), value_error);
  CHECK_THROWS_AS(ck.add("undefined", Tensor<float>()), value_error);

  std::string path = dir.file("ckpt.safetensors");
  save_checkpoint(path, ck);
  Checkpoint back = load_checkpoint(path);
  CHECK(back.source() == path);
  CHECK(back.size() == 3);
  CHECK(back.names() == ck.names());
  CHECK(back.names("optim.") == std::vector<std::string>{"optim.transformer.wte.weight.exp_avg"});
  CHECK(back.get<float>("model.transformer.wte.weight").to_vector() == wte.to_vector());
  CHECK(back.get<float>("optim.transformer.wte.weight.exp_avg").to_vector() == exp_avg.to_vector());
  CHECK(back.get<int64_t>("data.counts").to_vector() == counts.to_vector());
  CHECK(back.meta_int("step") == 1200);
  CHECK(back.meta_uint("rng.offset") == std::numeric_limits<uint64_t>::max());
  CHECK(back.meta_json("config") == config);
  CHECK(back.meta_json("config").at("dropout").as_double() == 0.1);
  CHECK(back.meta("loom.format") == "checkpoint");
  CHECK(back.meta("loom.format_version") == "1");
  CHECK(back.meta_or("absent", "dflt") == "dflt");

  // Errors name the checkpoint file and what is missing or wrong.
  CHECK_THROWS_WITH(back.get<double>("data.counts"), LOOM_CONTAINS(path + ": tensor 'data.counts' is int64, not float64"));
  CHECK_THROWS_WITH(back.at("model.nope"), LOOM_CONTAINS("no tensor named 'model.nope'"));
  CHECK_THROWS_WITH(back.meta("absent"), LOOM_CONTAINS("no metadata key 'absent'"));
  CHECK_THROWS_WITH(back.meta_int("config"), LOOM_CONTAINS("metadata 'config'"));
  CHECK_THROWS_WITH(back.meta_uint("loom.version"), LOOM_CONTAINS("not a non-negative"));

  // The bytes of the file parse to the same checkpoint, named as the caller says.
  Checkpoint parsed = parse_checkpoint(read_file(path), "bytes");
  CHECK(parsed.source() == "bytes");
  CHECK(parsed.names() == back.names());
  CHECK(parsed.get<float>("model.transformer.wte.weight").to_vector() == wte.to_vector());
  CHECK(parsed.meta_json("config") == config);
  CHECK_THROWS_WITH(parse_checkpoint(read_file(path).substr(0, 100), "cut"), LOOM_CONTAINS("cut: header length"));

  // set() replaces a tensor in place, keeping the order.
  back.set("data.counts", from_vector<int64_t>({9}));
  CHECK(back.names().back() == "data.counts");
  CHECK(back.get<int64_t>("data.counts").to_vector() == std::vector<int64_t>{9});
}

TEST_CASE("load_checkpoint refuses files that are not loom checkpoints of a known version") {
  TempDir dir;
  std::string plain = dir.file("plain.safetensors");
  save_safetensors(plain, {{"w", zeros<float>({2})}}, {{"format", "pt"}});
  CHECK_THROWS_AS(load_checkpoint(plain), io_error);
  CHECK_THROWS_WITH(load_checkpoint(plain), LOOM_CONTAINS("not a loom checkpoint"));
  CHECK_THROWS_WITH(parse_checkpoint(read_file(plain), "plain"), LOOM_CONTAINS("plain: not a loom checkpoint"));
  CHECK_NOTHROW(load_safetensors(plain));

  std::string future = dir.file("future.safetensors");
  save_safetensors(future, {}, {{"loom.format", "checkpoint"}, {"loom.format_version", "2"}});
  CHECK_THROWS_WITH(load_checkpoint(future), LOOM_CONTAINS("format version 2 is newer than this loom reads (1)"));
  std::string garbled = dir.file("garbled.safetensors");
  save_safetensors(garbled, {}, {{"loom.format", "checkpoint"}, {"loom.format_version", "x"}});
  CHECK_THROWS_WITH(load_checkpoint(garbled), LOOM_CONTAINS("invalid \"loom.format_version\""));

  // A corrupt checkpoint is reported as such, naming the file.
  std::string corrupt = dir.file("corrupt.safetensors");
  spit(corrupt, le64(12) + "{\"a\":");
  CHECK_THROWS_WITH(load_checkpoint(corrupt), LOOM_CONTAINS(corrupt + ": header length 12 runs past the end"));
}

// --- docs/08-checkpoint-format.md -----------------------------------------------------------

TEST_CASE("docs example") {
  TempDir dir;
  fs::path old_cwd = fs::current_path();
  fs::current_path(dir.path);
  struct Restore { fs::path p; ~Restore() { fs::current_path(p); } } restore{old_cwd};
  namespace io = loom::io;

  auto wte = loom::zeros<float>({65, 128});
  auto ids = loom::from_vector<int64_t>({1, 2, 3});

  // Plain safetensors: named tensors (any dtype, any layout) plus string metadata.
  io::save_safetensors("weights.safetensors", {{"wte", wte}, {"ids", ids}}, {{"format", "pt"}});
  io::SafetensorsFile f = io::load_safetensors("weights.safetensors");
  loom::Tensor<float> w = f.get<float>("wte");             // io_error if absent or not F32

  // A checkpoint: the same file format, with loom's conventions for names and metadata.
  io::Checkpoint ck;
  ck.add("model.transformer.wte.weight", wte);
  ck.set_meta("step", "1200");
  io::save_checkpoint("ckpt.safetensors", ck);             // atomic: temp file + fsync + rename
  io::Checkpoint back = io::load_checkpoint("ckpt.safetensors");
  int64_t step = back.meta_int("step");                     // 1200

  CHECK(w.shape() == Shape{65, 128});
  CHECK(f.get<int64_t>("ids").to_vector() == std::vector<int64_t>{1, 2, 3});
  CHECK(step == 1200);

  std::string csv_text = "step,loss\n1,2.5\n", header = "HDR";
  std::vector<char> data = {'a', 'b'};
  loom::io::write_file_atomic("log.csv", csv_text);                     // whole contents at once
  loom::io::write_file_atomic("big.bin", [&](loom::io::FileWriter& w) { // or streamed
    w.write(header);
    w.write(data.data(), data.size());
  });
  CHECK(slurp("log.csv") == csv_text);
  CHECK(slurp("big.bin") == "HDRab");

  // LOOM_IO_WRITE_SAMPLE=path writes a file with every dtype, for checking other readers by hand
  // (docs/08-checkpoint-format.md, section 5).
  if (const char* out = std::getenv("LOOM_IO_WRITE_SAMPLE")) {
    Checkpoint s;
    s.add("model.f32", from_vector<float>({1.5f, -2.f, 3.f, 4.f, 5.f, 6.f}, {2, 3}));
    s.add("model.f64", from_vector<double>({0.1}, {}));
    s.add("model.bf16", from_vector<bf16>({bf16(1.f), bf16(-0.5f)}));
    s.add("model.f16", from_vector<half>({half(65504.f), half(1e-7f)}));
    s.add("model.i32", from_vector<int32_t>({-7, 7}));
    s.add("model.i64", from_vector<int64_t>({int64_t(1) << 40}));
    s.add("model.bool", from_vector<bool>({true, false, true}));
    s.add("model.empty", zeros<float>({0, 4}));
    s.add("model.t", from_vector<float>({1, 2, 3, 4, 5, 6}, {2, 3}).t());
    s.set_meta_json("config", parse_json(R"({"n_layer":4,"note":"caf\u00e9"})"));
    s.set_meta("step", "1200");
    save_checkpoint(old_cwd.is_absolute() && !fs::path(out).is_absolute() ? (old_cwd / out).string() : out, s);
  }
}

// --- command-line options (io/cli.hpp) ---------------------------------------------------------

TEST_CASE("to_integer, to_unsigned and to_number take the whole argument or throw") {
  CHECK(to_integer("12") == 12);
  CHECK(to_integer("-3") == -3);
  CHECK(to_integer("+4") == 4);
  CHECK(to_integer("9223372036854775807") == std::numeric_limits<int64_t>::max());
  for (const char* bad : {"", "-", "12x", " 3", "3 ", "1e3", "0x10", "1.5"}) {
    CAPTURE(bad);
    CHECK_THROWS_AS(to_integer(bad), std::invalid_argument);
  }
  CHECK_THROWS_AS(to_integer("9223372036854775808"), std::out_of_range);
  CHECK_THROWS_AS(to_integer("5", 0, 4), std::out_of_range);
  CHECK(to_unsigned("18446744073709551615") == std::numeric_limits<uint64_t>::max());
  CHECK_THROWS_AS(to_unsigned("-1"), std::invalid_argument);  // std::stoull would make it 2^64 - 1
  CHECK_THROWS_AS(to_unsigned("18446744073709551616"), std::out_of_range);
  CHECK(to_number("0.5") == 0.5);
  CHECK(to_number("3e-4") == 3e-4);
  CHECK(to_number(".5") == 0.5);
  CHECK(to_number("-2") == -2.0);
  for (const char* bad : {"", "1e-3x", "nan", "inf", "-inf", "0x1p3", "1e", "--1", "1,5"}) {
    CAPTURE(bad);
    CHECK_THROWS_AS(to_number(bad), std::invalid_argument);
  }
  CHECK_THROWS_AS(to_number("1e999"), std::out_of_range);
}

TEST_CASE("parse_options_or_usage: the usage and 0 at --help, the error, the usage and 2 when wrong") {
  int64_t steps = 0;
  std::string name;
  OptionTable table;
  table.values["--steps"] = store(steps);
  table.values["--name"] = store(name);
  const std::string usage = "usage: prog --name X [--steps N]\n";
  auto check = [&] { LOOM_CHECK(!name.empty(), value_error, "--name is needed"); };
  // runs it on args; returns its exit code (-1: go on) and what it printed to out and to err
  auto run = [&](std::vector<std::string> args) {
    args.insert(args.begin(), "prog");
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    std::FILE *out = std::tmpfile(), *err = std::tmpfile();
    REQUIRE((out && err));
    std::optional<int> code = parse_options_or_usage(int(argv.size()), argv.data(), 1, table, "prog", usage, check, out,
                                                     err);
    auto text = [](std::FILE* f) {
      std::string t(size_t(std::ftell(f)), '\0');
      std::rewind(f);
      t.resize(std::fread(t.data(), 1, t.size(), f));
      std::fclose(f);
      return t;
    };
    return std::tuple<int, std::string, std::string>{code.value_or(-1), text(out), text(err)};
  };
  CHECK(run({"--name", "a", "--steps", "3"}) == std::tuple<int, std::string, std::string>{-1, "", ""});
  CHECK(steps == 3);
  CHECK(run({"--help"}) == std::tuple<int, std::string, std::string>{0, usage, ""});
  CHECK(run({"--steps", "3x"}) ==
        std::tuple<int, std::string, std::string>{2, "", "prog: option --steps: '3x' is not a number\n" + usage});
  name.clear();
  CHECK(run({"--steps", "4"}) == std::tuple<int, std::string, std::string>{2, "", "prog: --name is needed\n" + usage});
}

TEST_CASE("parse_options applies values, switches and lists in order and names what is wrong") {
  struct Parsed {
    std::string out;
    int64_t steps = 0;
    int threads = 0;
    double lr = 0;
    uint64_t seed = 0;
    bool fresh = false;
    std::vector<std::string> inputs;
  };
  auto parse = [](std::vector<std::string> args, Parsed& p, const std::string& context = "") {
    args.insert(args.begin(), "prog");
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    OptionTable table;
    table.values = {{"--out", store(p.out)},     {"--steps", store(p.steps)}, {"--threads", store(p.threads)},
                    {"--lr", store(p.lr)},       {"--seed", store(p.seed)}};
    table.values["--mode"] = [&p](const std::string& v) {
      LOOM_CHECK(v == "a" || v == "b", value_error, "--mode must be a or b, got '", v, "'");
      p.out = v;
    };
    table.switches["--fresh"] = [&p] { p.fresh = true; };
    table.lists["--input"] = [&p](const std::string& v) { p.inputs.push_back(v); };
    return parse_options(int(argv.size()), argv.data(), 1, table, context);
  };
  // every error in the options is a usage_error (programs exit with status 2 for it)
  auto error = [&](std::vector<std::string> args, const std::string& context = "") {
    Parsed p;
    try {
      parse(std::move(args), p, context);
    } catch (const usage_error& e) {
      return std::string(e.what());
    } catch (const std::exception& e) {
      return std::string("not a usage_error: ") + e.what();
    }
    return std::string("no error");
  };
  Parsed p;
  CHECK(parse({"--input", "a", "b", "--steps", "7", "--fresh", "--lr", "3e-4", "--out", "--x", "--seed", "9",
               "--threads", "-2", "--input", "c"},
              p));
  CHECK(p.inputs == std::vector<std::string>{"a", "b", "c"});
  CHECK(p.steps == 7);
  CHECK(p.fresh);
  CHECK(p.lr == 3e-4);
  CHECK(p.out == "--x");  // a value option takes the next argument whatever it looks like
  CHECK(p.seed == 9);
  CHECK(p.threads == -2);
  Parsed q;
  CHECK_FALSE(parse({"--steps", "3", "--help", "--steps", "4"}, q));  // --help stops the parse
  CHECK(q.steps == 3);
  CHECK_FALSE(parse({"-h"}, q));
  CHECK(parse({}, q));

  CHECK_THAT(error({"--steps", "10x"}), LOOM_CONTAINS("option --steps: '10x' is not a number"));
  CHECK_THAT(error({"--lr", "nan"}), LOOM_CONTAINS("option --lr: 'nan' is not a number"));
  CHECK_THAT(error({"--seed", "-1"}), LOOM_CONTAINS("option --seed: '-1' is not a number"));
  CHECK_THAT(error({"--threads", "3000000000"}), LOOM_CONTAINS("option --threads: '3000000000' is out of range"));
  CHECK_THAT(error({"--bogus", "1"}), LOOM_CONTAINS("unknown option '--bogus' (see --help)"));
  CHECK_THAT(error({"--bogus"}, "prog run"), LOOM_CONTAINS("unknown option '--bogus' for prog run (see --help)"));
  CHECK_THAT(error({"--steps"}), LOOM_CONTAINS("option --steps needs a value"));
  CHECK_THAT(error({"--input", "--fresh"}), LOOM_CONTAINS("option --input needs a value"));
  CHECK_THAT(error({"--input"}), LOOM_CONTAINS("option --input needs a value"));
  CHECK(error({"--mode", "c"}) == "--mode must be a or b, got 'c'");  // the handler's own message
}
