// Tests for loom's byte-level BPE tokenizer: GPT-2 and cl100k parity on golden cases, the minbpe
// training vectors, special tokens, round trips, file formats and malformed files.
#include <loom/tokenizer.hpp>

#include <cstdio>
#include <fstream>
#include <random>
#include <sstream>

#include "catch.hpp"

using loom::BpeTokenizer;
namespace tk = loom::tokenizer;

#ifndef LOOM_TEST_DATA_DIR
#define LOOM_TEST_DATA_DIR "tests/data"
#endif
#ifndef LOOM_SHARED_DATA_DIR
#define LOOM_SHARED_DATA_DIR "../shared/data"
#endif

namespace {

const std::string data_dir = std::string(LOOM_TEST_DATA_DIR) + "/tokenizer";
const std::string shared_dir = LOOM_SHARED_DATA_DIR;

bool file_exists(const std::string& path) { return std::ifstream(path).good(); }

std::string slurp(const std::string& path) { return tk::detail::read_file(path); }

std::string from_hex(const std::string& h) {
  std::string out;
  for (std::size_t i = 0; i + 1 < h.size(); i += 2) out += static_cast<char>(std::stoi(h.substr(i, 2), nullptr, 16));
  return out;
}

const BpeTokenizer& gpt2() {
  static const BpeTokenizer t = tk::load_gpt2(data_dir);
  return t;
}
const BpeTokenizer& r50k() {
  static const BpeTokenizer t = tk::load_tiktoken(data_dir + "/r50k_base.tiktoken", tk::Pattern::gpt2);
  return t;
}
const BpeTokenizer& cl100k() {
  static const BpeTokenizer t = tk::load_tiktoken(data_dir + "/cl100k_base.tiktoken", tk::Pattern::cl100k);
  return t;
}

struct GoldenCase {
  std::string name, text;
  std::vector<std::uint32_t> ids;
  std::vector<std::string> pieces;
};

std::vector<GoldenCase> read_golden(const std::string& file) {
  std::vector<GoldenCase> out;
  std::istringstream in(slurp(data_dir + "/" + file));
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    auto v = tk::detail::JsonParser::parse(line, file);
    GoldenCase c;
    c.name = v.find("name")->string;
    c.text = from_hex(v.find("utf8_hex")->string);
    for (const auto& id : v.find("ids")->array) c.ids.push_back(static_cast<std::uint32_t>(id.integer));
    for (const auto& p : v.find("pieces")->array) c.pieces.push_back(p.string);
    REQUIRE(c.text == v.find("text")->string);  // the JSON \u escapes decode to the same bytes
    out.push_back(std::move(c));
  }
  return out;
}

}  // namespace

TEST_CASE("golden GPT-2 cases match encoder.json + vocab.bpe and r50k_base", "[tokenizer][golden]") {
  auto cases = read_golden("golden.jsonl");
  REQUIRE(cases.size() == 72);
  for (const auto& c : cases) {
    INFO("case " << c.name);
    CHECK(gpt2().encode_ordinary(c.text) == c.ids);
    CHECK(r50k().encode_ordinary(c.text) == c.ids);
    CHECK(gpt2().decode(c.ids) == c.text);
    std::vector<std::string> pieces;
    for (auto id : c.ids) pieces.push_back(tk::bytes_to_byte_level(gpt2().token_bytes(id)));
    CHECK(pieces == c.pieces);
  }
}

TEST_CASE("golden cl100k cases match cl100k_base", "[tokenizer][golden]") {
  auto cases = read_golden("golden_cl100k.jsonl");
  REQUIRE(cases.size() == 72);
  for (const auto& c : cases) {
    INFO("case " << c.name);
    CHECK(cl100k().encode_ordinary(c.text) == c.ids);
    CHECK(cl100k().decode(c.ids) == c.text);
  }
}
