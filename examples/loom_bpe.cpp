// loom-bpe: train a byte-level BPE tokenizer, and encode or decode text with it.
//
//   loom-bpe train  --input FILE --vocab-size N [--pattern gpt2|cl100k|none] [--special TOKEN]... --out FILE
//   loom-bpe encode (--model FILE | --gpt2 DIR | --tiktoken FILE --pattern NAME) [--input FILE]
//                   [--output FILE] [--format text|u16|u32] [--allow-special | --ordinary] [--threads N]
//   loom-bpe decode (same tokenizer options) [--input FILE] [--output FILE] [--format text|u16|u32] [--lossy]
//
// Build: part of loom's examples (cmake --build build --target loom-bpe). Example:
//   loom-bpe train --input tinyshakespeare.txt --vocab-size 4096 --special '<|endoftext|>' --out shakespeare.loom
//   echo "To be, or not to be" | loom-bpe encode --model shakespeare.loom
//   echo "2514 307 11 393 407 284 307" | loom-bpe decode --gpt2 path/to/gpt2
// Errors print one line, "loom-bpe: error: ...", and exit with status 1 (2 for usage errors).

#include <loom/io/cli.hpp>
#include <loom/io/file.hpp>
#include <loom/tokenizer.hpp>
#include <loom/train/report.hpp>

#include <chrono>
#include <cstdio>
#include <functional>
#include <iostream>
#include <iterator>
#include <optional>
#include <string>
#include <vector>

namespace {

namespace tk = loom::tokenizer;

const char* main_help =
    "usage: loom-bpe <command> [options]\n"
    "\n"
    "commands:\n"
    "  train    learn a BPE vocabulary from a text file\n"
    "  encode   turn text into token ids\n"
    "  decode   turn token ids back into text\n"
    "\n"
    "Run 'loom-bpe <command> --help' for the options of each command.\n";

const char* train_help =
    "usage: loom-bpe train --input FILE --vocab-size N --out FILE [options]\n"
    "\n"
    "Learns a byte-level BPE vocabulary of N tokens (256 bytes + N-256 merges) from FILE and saves\n"
    "it in loom's text format.\n"
    "\n"
    "  --input FILE        training text ('-' for stdin)\n"
    "  --vocab-size N      number of ordinary tokens, at least 256\n"
    "  --out FILE          where to save the tokenizer\n"
    "  --pattern NAME      pre-tokenizer: cl100k (default; alias gpt4), gpt2, or none\n"
    "  --special TOKEN     add a special token (repeatable); its text is cut out of the training text\n"
    "  --quiet             no progress bar\n";

const char* encode_help =
    "usage: loom-bpe encode TOKENIZER [--input FILE] [--output FILE] [--format text|u16|u32] [options]\n"
    "\n"
    "TOKENIZER is one of:\n"
    "  --model FILE                    a tokenizer saved by 'loom-bpe train' (loom format)\n"
    "  --gpt2 DIR                      a folder with GPT-2's encoder.json and vocab.bpe\n"
    "  --tiktoken FILE --pattern NAME  a tiktoken rank file with its pre-tokenizer (gpt2 or cl100k)\n"
    "\n"
    "  --input FILE        text to encode (default: stdin)\n"
    "  --output FILE       where to write the ids (default: stdout)\n"
    "  --format F          text: ids separated by single spaces and a final newline (default);\n"
    "                      u16 / u32: little-endian binary, for training data\n"
    "  --allow-special     special-token text (e.g. <|endoftext|>) becomes the special id\n"
    "  --ordinary          special-token text is encoded as plain text, like any other\n"
    "                      (tiktoken's encode_ordinary); with neither option, special-token\n"
    "                      text in the input is an error\n"
    "  --threads N         encoding threads (default: all)\n";

const char* decode_help =
    "usage: loom-bpe decode TOKENIZER [--input FILE] [--output FILE] [--format text|u16|u32] [--lossy]\n"
    "\n"
    "TOKENIZER is --model FILE, --gpt2 DIR, or --tiktoken FILE --pattern NAME (see 'encode --help').\n"
    "\n"
    "  --input FILE        ids to decode (default: stdin); text format: ids separated by whitespace\n"
    "  --output FILE       where to write the bytes (default: stdout)\n"
    "  --format F          text (default), u16 or u32 (little-endian binary)\n"
    "  --lossy             replace invalid UTF-8 in the output with U+FFFD\n";

/// Applies the options after the command name to the table; false at --help. Any error in them
/// (an unknown option, a missing or malformed value) is a loom::usage_error (exit status 2).
bool parse(int argc, char** argv, const loom::io::OptionTable& table, const std::string& command) {
  return loom::io::parse_options(argc, argv, 2, table, "loom-bpe " + command);
}

std::string read_input(const std::string& path) {
  if (path.empty() || path == "-") {
    std::string s((std::istreambuf_iterator<char>(std::cin)), std::istreambuf_iterator<char>());
    return s;
  }
  return loom::io::read_file(path, tk::max_file_bytes);
}

void write_output(const std::string& path, const std::string& data) {
  if (path.empty() || path == "-") {
    std::fwrite(data.data(), 1, data.size(), stdout);
    LOOM_CHECK(std::fflush(stdout) == 0, io_error, "cannot write to stdout");
    return;
  }
  loom::io::write_file_atomic(path, data);
}

enum class Format { text, u16, u32 };

Format parse_format(const std::string& s) {
  if (s == "text") return Format::text;
  if (s == "u16") return Format::u16;
  if (s == "u32") return Format::u32;
  throw loom::usage_error("unknown --format '" + s + "' (expected text, u16 or u32)");
}

/// Tokenizer options shared by encode and decode.
struct TokenizerSource {
  std::string model, gpt2, tiktoken, pattern;

  /// Adds --model, --gpt2, --tiktoken and --pattern to a command's options.
  void add_to(loom::io::OptionTable& table) {
    using loom::io::store;
    table.values.insert({{"--model", store(model)},
                         {"--gpt2", store(gpt2)},
                         {"--tiktoken", store(tiktoken)},
                         {"--pattern", store(pattern)}});
  }
  loom::BpeTokenizer load() const {
    const int n = !model.empty() + !gpt2.empty() + !tiktoken.empty();
    if (n != 1) throw loom::usage_error("give exactly one of --model FILE, --gpt2 DIR, --tiktoken FILE");
    if (!tiktoken.empty()) {
      if (pattern.empty()) throw loom::usage_error("--tiktoken needs --pattern gpt2|cl100k");
      return tk::load_tiktoken(tiktoken, tk::parse_pattern(pattern));
    }
    if (!pattern.empty()) throw loom::usage_error("--pattern goes with --tiktoken only");
    if (!gpt2.empty()) return tk::load_gpt2(gpt2);
    return tk::load(model);
  }
};

int cmd_train(int argc, char** argv) {
  std::string input, out, pattern = "cl100k";
  int64_t vocab_size = 0;
  std::vector<std::string> specials;
  bool quiet = false;
  loom::io::OptionTable table;
  using loom::io::store;
  table.values = {{"--input", store(input)},
                  {"--out", store(out)},
                  {"--pattern", store(pattern)},
                  {"--special", [&](const std::string& v) { specials.push_back(v); }},
                  {"--vocab-size", [&](const std::string& v) { vocab_size = loom::io::to_integer(v, 1, 1 << 22); }}};
  table.switches = {{"--quiet", [&] { quiet = true; }}};
  if (!parse(argc, argv, table, "train")) {
    std::fputs(train_help, stdout);
    return 0;
  }
  if (input.empty() || out.empty() || !vocab_size)
    throw loom::usage_error("train needs --input, --vocab-size and --out");
  tk::TrainOptions opt;
  opt.vocab_size = std::size_t(vocab_size);
  opt.pattern = tk::parse_pattern(pattern);
  opt.special_tokens = specials;
  loom::train::MergeProgressBar bar(stderr);
  if (!quiet) opt.on_progress = std::ref(bar);
  const std::string text = read_input(input);
  auto t0 = std::chrono::steady_clock::now();
  tk::TrainReport report;
  loom::BpeTokenizer tok = tk::train_bpe(text, opt, &report);
  bar.finish();
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  tk::save(tok, out);
  if (!quiet)
    std::fprintf(stderr, "trained %zu merges on %zu bytes (%zu unique chunks of %zu) in %.2f s; saved %s\n",
                 tok.merges().size(), text.size(), report.unique_chunks, report.total_chunks, secs, out.c_str());
  return 0;
}

int cmd_encode(int argc, char** argv) {
  TokenizerSource src;
  std::string input, output;
  Format format = Format::text;
  bool allow_special = false, ordinary = false;
  int64_t threads = 0;
  loom::io::OptionTable table;
  using loom::io::store;
  table.values = {{"--input", store(input)},
                  {"--output", store(output)},
                  {"--format", [&](const std::string& v) { format = parse_format(v); }},
                  {"--threads", [&](const std::string& v) { threads = loom::io::to_integer(v, 0, 1024); }}};
  table.switches = {{"--allow-special", [&] { allow_special = true; }}, {"--ordinary", [&] { ordinary = true; }}};
  src.add_to(table);
  if (!parse(argc, argv, table, "encode")) {
    std::fputs(encode_help, stdout);
    return 0;
  }
  if (allow_special && ordinary) throw loom::usage_error("--allow-special and --ordinary exclude each other");
  loom::BpeTokenizer tok = src.load();
  const std::string text = read_input(input);
  auto policy = allow_special ? tk::SpecialPolicy::all()
                : ordinary    ? tk::SpecialPolicy::as_text()
                              : tk::SpecialPolicy::none();
  std::vector<std::uint32_t> ids;
  try {
    ids = tok.encode_parallel(text, policy, int(threads));
  } catch (const loom::value_error& e) {
    throw loom::value_error(std::string(e.what()).substr(0, std::string(e.what()).find(" (SpecialPolicy")) +
                            (allow_special ? "" : " (pass --allow-special, or --ordinary to encode it as text)"));
  }
  std::string out;
  if (format == Format::text) {
    out.reserve(ids.size() * 6);
    for (std::size_t i = 0; i < ids.size(); ++i) {
      if (i) out += ' ';
      out += std::to_string(ids[i]);
    }
    out += '\n';
  } else {
    const int width = format == Format::u16 ? 2 : 4;
    if (format == Format::u16)
      LOOM_CHECK(tok.vocab_size() <= 65536, value_error, "--format u16 cannot hold this tokenizer's ids (vocabulary ",
                 tok.vocab_size(), " > 65536); use u32");
    out.resize(ids.size() * width);
    for (std::size_t i = 0; i < ids.size(); ++i)
      for (int b = 0; b < width; ++b) out[i * width + b] = static_cast<char>((ids[i] >> (8 * b)) & 0xFF);
  }
  write_output(output, out);
  return 0;
}

int cmd_decode(int argc, char** argv) {
  TokenizerSource src;
  std::string input, output;
  Format format = Format::text;
  bool lossy = false;
  loom::io::OptionTable table;
  using loom::io::store;
  table.values = {{"--input", store(input)}, {"--output", store(output)}, {"--format", [&](const std::string& v) {
                                                                             format = parse_format(v);
                                                                           }}};
  table.switches = {{"--lossy", [&] { lossy = true; }}};
  src.add_to(table);
  if (!parse(argc, argv, table, "decode")) {
    std::fputs(decode_help, stdout);
    return 0;
  }
  loom::BpeTokenizer tok = src.load();
  const std::string data = read_input(input);
  std::vector<std::uint32_t> ids;
  if (format == Format::text) {
    auto space = [](char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; };
    std::size_t i = 0;
    while (i < data.size()) {
      while (i < data.size() && space(data[i])) ++i;
      std::size_t j = i;
      while (j < data.size() && !space(data[j])) ++j;
      if (j == i) break;
      auto v = tk::detail::parse_uint(std::string_view(data).substr(i, j - i), 0xFFFFFFFFu);
      LOOM_CHECK(v.has_value(), value_error, "decode: '", data.substr(i, std::min<std::size_t>(j - i, 32)),
                 "' at byte ", i, " is not a token id");
      ids.push_back(static_cast<std::uint32_t>(*v));
      i = j;
    }
  } else {
    const std::size_t width = format == Format::u16 ? 2 : 4;
    LOOM_CHECK(data.size() % width == 0, value_error, "decode: input size ", data.size(),
               " is not a multiple of ", width, " bytes");
    ids.resize(data.size() / width);
    for (std::size_t i = 0; i < ids.size(); ++i) {
      std::uint32_t v = 0;
      for (std::size_t b = 0; b < width; ++b) v |= std::uint32_t(static_cast<unsigned char>(data[i * width + b])) << (8 * b);
      ids[i] = v;
    }
  }
  std::string text = lossy ? tok.decode_lossy(ids) : tok.decode(ids);
  write_output(output, text);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fputs(main_help, stderr);
    return 2;
  }
  const std::string cmd = argv[1];
  try {
    if (cmd == "--help" || cmd == "-h" || cmd == "help") { std::fputs(main_help, stdout); return 0; }
    if (cmd == "train") return cmd_train(argc, argv);
    if (cmd == "encode") return cmd_encode(argc, argv);
    if (cmd == "decode") return cmd_decode(argc, argv);
    throw loom::usage_error("unknown command '" + cmd + "' (expected train, encode or decode)");
  } catch (const loom::usage_error& e) {
    std::fprintf(stderr, "loom-bpe: error: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::string msg = e.what();
    for (char& c : msg)
      if (c == '\n') c = ' ';
    std::fprintf(stderr, "loom-bpe: error: %s\n", msg.c_str());
    return 1;
  }
}
