// loom/data read + normalize: the corpus reader over a folder tree of plain, JSONL and gzip files
// (order, ids, options, every kind of bad line and file, truncated gzip), and text normalisation
// (UTF-8 repair, line ends, controls, BOM, NFC, idempotence on random bytes).
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <unistd.h>

#if LOOM_HAVE_ZLIB
#include <zlib.h>
#endif
#if LOOM_HAVE_UTF8PROC
#include <utf8proc.h>
#endif

#include <loom/data/normalize.hpp>
#include <loom/data/read.hpp>

#include "catch.hpp"
#include "temp_dir.hpp"

using namespace loom;
using namespace loom::data;
namespace fs = std::filesystem;

namespace {

using loom_test::TempDir;

using loom_test::write_file;

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

#if LOOM_HAVE_ZLIB
void write_gzip(const std::string& path, const std::string& bytes) {
  fs::create_directories(fs::path(path).parent_path());
  gzFile gz = gzopen(path.c_str(), "wb");
  REQUIRE(gz != nullptr);
  if (!bytes.empty()) REQUIRE(gzwrite(gz, bytes.data(), unsigned(bytes.size())) == int(bytes.size()));
  REQUIRE(gzclose(gz) == Z_OK);
}
#endif

std::vector<Document> read_all(CorpusReader& reader) {
  std::vector<Document> docs;
  Document d;
  while (reader.next(d)) docs.push_back(d);
  return docs;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const io_error& e) {
    return e.what();
  }
  return "(no io_error)";
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// Valid UTF-8 with no control characters (what normalize promises).
bool clean_utf8(const std::string& s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  for (size_t i = 0; i < s.size();) {
    auto ch = tokenizer::decode_utf8(p, i, s.size());
    if (ch.cp == tokenizer::invalid_code_point) return false;
    if ((ch.cp < 0x20 && ch.cp != '\t' && ch.cp != '\n') || (ch.cp >= 0x7F && ch.cp <= 0x9F)) return false;
    i += ch.len;
  }
  return true;
}

const std::string fffd = "\xEF\xBF\xBD";

}  // namespace

// ---------------------------------------------------------------------------------------------
// normalize

TEST_CASE("normalize: plain ASCII is returned unchanged and counts nothing") {
  std::string text = "Hello, world!\n\tTabs and newlines stay.\n";
  for (int i = 0; i < 50; ++i) text += "The quick brown fox jumps over the lazy dog. ";
  NormalizeStats st;
  st.control_chars = 99;  // overwritten
  CHECK(normalize(text, {}, &st) == text);
  CHECK(st.invalid_bytes == 0);
  CHECK(st.control_chars == 0);
  CHECK(st.newlines == 0);
  CHECK_FALSE(st.nfc_changed);
  CHECK(normalize("") == "");
  // A control character at every position of a long text is found (the 8-byte scan and the tail).
  for (size_t pos = 0; pos < 40; ++pos) {
    std::string t(40, 'x');
    t[pos] = '\x7f';
    CHECK(normalize(t) == std::string(39, 'x'));
  }
}

TEST_CASE("normalize: each maximal invalid UTF-8 subpart becomes one U+FFFD") {
  struct Case {
    std::string in, out;
    uint64_t bytes;
  };
  const std::vector<Case> cases = {
      {"\xC0\xAF", fffd + fffd, 2},                  // overlong '/': C0 never starts a sequence
      {"\xE0\x80\xAF", fffd + fffd + fffd, 3},       // overlong 3-byte form
      {"\xED\xA0\x80", fffd + fffd + fffd, 3},       // UTF-16 surrogate U+D800
      {"\xF4\x90\x80\x80", fffd + fffd + fffd + fffd, 4},  // above U+10FFFF
      {"ab\xE2\x82", "ab" + fffd, 2},                // truncated at the end: one subpart
      {"a\xF0\x9F\x98", "a" + fffd, 3},              // truncated 4-byte sequence
      {"\x80x\xBF", fffd + "x" + fffd, 2},           // stray continuation bytes
      {"\xFF\xFE", fffd + fffd, 2},                  // bytes never in UTF-8
      {"\xE2\x82x", fffd + "x", 2},                  // truncated in the middle
      // Table 3-8 of the Unicode Standard (ch. 3.9), also Python's decode(errors="replace").
      {"\x61\xF1\x80\x80\xE1\x80\xC2\x62\x80\x63\x80\xBF\x64",
       "a" + fffd + fffd + fffd + "b" + fffd + "c" + fffd + fffd + "d", 9},
  };
  for (const auto& c : cases) {
    NormalizeStats st;
    CHECK(normalize(c.in, {}, &st) == c.out);
    CHECK(st.invalid_bytes == c.bytes);
  }
  // Valid multi-byte characters pass through.
  const std::string ok = "caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80";
  NormalizeStats st;
  CHECK(normalize(ok, {}, &st) == ok);
  CHECK(st.invalid_bytes == 0);
}

TEST_CASE("normalize: CRLF and CR and U+2028/U+2029 become newlines") {
  NormalizeStats st;
  CHECK(normalize("a\r\nb\rc\nd\r\r\ne\r", {}, &st) == "a\nb\nc\nd\n\ne\n");
  CHECK(st.newlines == 5);
  CHECK(normalize("x\xE2\x80\xA8y\xE2\x80\xA9z", {}, &st) == "x\ny\nz");
  CHECK(st.newlines == 2);
}

TEST_CASE("normalize: control characters are dropped but tab and newline are kept") {
  NormalizeStats st;
  const std::string in = std::string("a\x01") + '\0' + "b\tc\x7f\n\x1b[0m\xC2\x85" + "d\xC2\x9F\xC2\xA0";
  CHECK(normalize(in, {}, &st) == "ab\tc\n[0md\xC2\xA0");  // U+00A0 (no-break space) is not a control
  CHECK(st.control_chars == 6);
  CHECK(st.invalid_bytes == 0);
}

TEST_CASE("normalize: a leading BOM is dropped and a later one kept") {
  CHECK(normalize("\xEF\xBB\xBFhello") == "hello");
  CHECK(normalize("hi \xEF\xBB\xBF!") == "hi \xEF\xBB\xBF!");
  CHECK(normalize("\x01\xEF\xBB\xBFhello") == "hello");  // still the start after a dropped control
}

TEST_CASE("normalize: NFC composes and leaves NFC text alone") {
  if (!have_nfc()) {
    CHECK_THROWS_AS(normalize("e\xCC\x81"), value_error);
    CHECK(normalize("e\xCC\x81", {false}) == "e\xCC\x81");
    WARN("loom built without utf8proc: NFC not tested");
    return;
  }
  NormalizeStats st;
  CHECK(normalize("caf" "e\xCC\x81", {}, &st) == "caf\xC3\xA9");  // e + combining acute -> U+00E9
  CHECK(st.nfc_changed);
  // Hangul jamo L V T -> one syllable U+AC01.
  CHECK(normalize("\xE1\x84\x80\xE1\x85\xA1\xE1\x86\xA8", {}, &st) == "\xEA\xB0\x81");
  CHECK(st.nfc_changed);
  // Already NFC: unchanged, and the flag says so.
  const std::string nfc = "na\xC3\xAFve \xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E \xEA\xB0\x81 \xCE\xB1\xCE\xB2";
  CHECK(normalize(nfc, {}, &st) == nfc);
  CHECK_FALSE(st.nfc_changed);
  // nfc=false keeps the decomposed form but still cleans.
  CHECK(normalize("e\xCC\x81\r\n", {false}, &st) == "e\xCC\x81\n");
  CHECK_FALSE(st.nfc_changed);
  // Combining marks are put in canonical order: dot below (ccc 220) before acute (ccc 230).
  CHECK(normalize("q\xCC\x81\xCC\xA3") == "q\xCC\xA3\xCC\x81");
  // A mark at the very start, after a long ASCII run, and at the end.
  CHECK(normalize("\xCC\x81" "abc") == "\xCC\x81" "abc");
  CHECK(normalize(std::string(100, 'x') + "e\xCC\x81" + std::string(100, 'y')) ==
        std::string(100, 'x') + "\xC3\xA9" + std::string(100, 'y'));
}

#if LOOM_HAVE_UTF8PROC
TEST_CASE("normalize: NFC by non-ASCII runs equals utf8proc over the whole text") {
  // Pieces that interact under NFC: bases, combining marks of several classes, precomposed
  // letters, Hangul jamo and syllables, singletons (U+212B ANGSTROM SIGN), CJK, punctuation.
  const std::vector<std::string> pieces = {
      "a", "e", "o", "A", " ", ".", "\n", "\xCC\x81", "\xCC\x88", "\xCC\xA3", "\xCD\x85", "\xC3\xA9",
      "\xE1\x84\x80", "\xE1\x85\xA1", "\xE1\x86\xA8", "\xEA\xB0\x80", "\xE2\x84\xAB", "\xE6\x97\xA5",
      "\xE2\x80\x99", "\xE0\xA4\xA8\xE0\xA4\xBC", "\xF0\x9D\x85\x97\xF0\x9D\x85\xA5"};
  std::mt19937_64 rng(7);
  for (int t = 0; t < 3000; ++t) {
    std::string s;
    const int n = int(rng() % 12);
    for (int k = 0; k < n; ++k) s += pieces[rng() % pieces.size()];
    utf8proc_uint8_t* whole = nullptr;
    auto len = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(s.data()), utf8proc_ssize_t(s.size()),
                            &whole, utf8proc_option_t(UTF8PROC_STABLE | UTF8PROC_COMPOSE));
    REQUIRE(len >= 0);
    const std::string want(reinterpret_cast<const char*>(whole), size_t(len));
    std::free(whole);
    NormalizeStats st;
    INFO("case " << t);
    CHECK(normalize(s, {}, &st) == want);
    CHECK(st.nfc_changed == (want != s));
  }
}
#endif

TEST_CASE("normalize: idempotent on random byte strings and the output is clean UTF-8") {
  // Bytes drawn to hit the interesting cases often: ASCII, controls, CR/LF, lead and
  // continuation bytes, and whole sequences (BOM, U+2028, combining marks, Hangul jamo).
  const std::vector<std::string> pieces = {
      "a", "b", " ", "\n", "\r", "\t", "\x01", "\x7f", "\x80", "\xBF", "\xC2", "\xC3", "\xE0", "\xE1",
      "\xED", "\xF0", "\xF4", "\xFF", "\xC2\x85", "\xEF\xBB\xBF", "\xE2\x80\xA8", "\xCC\x81", "\xCC\xA3",
      "\xE1\x84\x80", "\xE1\x85\xA1", "\xE1\x86\xA8", "\xC3\xA9", "\xF0\x9F\x98\x80", "\xE2\x84\xAB"};
  std::mt19937_64 rng(12345);
  const NormalizeOptions opt{have_nfc()};
  for (int t = 0; t < 5000; ++t) {
    std::string s;
    const int n = int(rng() % 24);
    for (int k = 0; k < n; ++k) {
      if (rng() % 4 == 0) s += char(rng() & 0xFF);  // any byte at all
      else s += pieces[rng() % pieces.size()];
    }
    const std::string once = normalize(s, opt);
    INFO("case " << t);
    CHECK(clean_utf8(once));
    CHECK(normalize(once, opt) == once);
  }
}

// ---------------------------------------------------------------------------------------------
// CorpusReader

TEST_CASE("is_jsonl_path: by the file name") {
  CHECK(is_jsonl_path("a.jsonl"));
  CHECK(is_jsonl_path("dir/a.json.gz"));
  CHECK(is_jsonl_path("a.ndjson"));
  CHECK(is_jsonl_path("a.jsonl.gz"));
  CHECK_FALSE(is_jsonl_path("a.txt"));
  CHECK_FALSE(is_jsonl_path("a.txt.gz"));
  CHECK_FALSE(is_jsonl_path("jsonl"));
  CHECK_FALSE(is_jsonl_path("a.jsonl.bz2"));
}

#if LOOM_HAVE_ZLIB
TEST_CASE("CorpusReader: a folder tree in sorted order with the documented ids") {
  TempDir dir;
  write_file(dir / "b.txt", "plain text\nof two lines\n");
  write_file(dir / "a.jsonl",
             "{\"id\": \"doc-1\", \"text\": \"first\"}\n"
             "\n"
             "   \n"
             "{\"text\": \"no id\", \"meta\": {\"x\": [1, 2]}}\r\n"
             "{\"id\": 42, \"text\": \"int id \\u00e9\"}");  // no newline at the end
  write_gzip(dir / "sub/c.jsonl.gz", "{\"text\": \"gz one\"}\n{\"text\": \"gz two\", \"id\": -7}\n");
  write_gzip(dir / "sub/d.txt.gz", "compressed plain");
  write_gzip(dir / "sub/e.json", "{\"text\": \"gzip without .gz\"}\n");  // gzip found by magic bytes
  write_file(dir / "sub/f.gz", "not gzip at all");                       // plain despite the name
  write_file(dir / ".hidden.txt", "skip me");
  write_file(dir / ".git/objects/x.txt", "skip me too");
  write_file(dir / "sub/.cache", "and me");
  write_file(dir / "a-empty.txt", "");
  write_file(dir / "a-empty.jsonl", "");

  const std::string root = dir.path.string();
  CorpusReader reader({root});
  const std::vector<std::string> want_files = {root + "/a-empty.jsonl", root + "/a-empty.txt", root + "/a.jsonl",
                                               root + "/b.txt",         root + "/sub/c.jsonl.gz",
                                               root + "/sub/d.txt.gz",  root + "/sub/e.json",
                                               root + "/sub/f.gz"};
  CHECK(reader.files() == want_files);
  uint64_t total = 0;
  for (const auto& f : want_files) total += fs::file_size(f);
  CHECK(reader.total_file_bytes() == total);
  CHECK(reader.file_bytes_done() == 0);

  const auto docs = read_all(reader);
  std::vector<std::pair<std::string, std::string>> got;
  for (const auto& d : docs) got.emplace_back(d.id, d.text);
  const std::vector<std::pair<std::string, std::string>> want = {
      {root + "/a-empty.txt", ""},
      {"doc-1", "first"},
      {root + "/a.jsonl:4", "no id"},
      {"42", "int id \xC3\xA9"},
      {root + "/b.txt", "plain text\nof two lines\n"},
      {root + "/sub/c.jsonl.gz:1", "gz one"},
      {"-7", "gz two"},
      {root + "/sub/d.txt.gz", "compressed plain"},
      {root + "/sub/e.json:1", "gzip without .gz"},
      {root + "/sub/f.gz", "not gzip at all"},
  };
  CHECK(got == want);
  CHECK(reader.errors() == 0);
  CHECK(reader.file_bytes_done() == total);
  uint64_t uncompressed = fs::file_size(root + "/a.jsonl") + fs::file_size(root + "/b.txt") +
                          std::string("{\"text\": \"gz one\"}\n{\"text\": \"gz two\", \"id\": -7}\n").size() +
                          std::string("compressed plain").size() +
                          std::string("{\"text\": \"gzip without .gz\"}\n").size() +
                          fs::file_size(root + "/sub/f.gz");
  CHECK(reader.bytes_read() == uncompressed);
  Document d;
  CHECK_FALSE(reader.next(d));  // stays at the end

  // Files given one by one keep their order and their names as given; a trailing '/' on a folder
  // is not doubled.
  CorpusReader two({root + "/b.txt", root + "/sub/"});
  CHECK(two.files() == std::vector<std::string>{root + "/b.txt", root + "/sub/c.jsonl.gz", root + "/sub/d.txt.gz",
                                                root + "/sub/e.json", root + "/sub/f.gz"});
}
#endif

TEST_CASE("CorpusReader: another text field and id field") {
  TempDir dir;
  write_file(dir / "x.jsonl", "{\"content\": \"hello\", \"doc\": 5, \"text\": 1}\n{\"content\": \"bye\"}\n");
  ReadOptions opt;
  opt.text_field = "content";
  opt.id_field = "doc";
  CorpusReader reader({dir / "x.jsonl"}, opt);
  const auto docs = read_all(reader);
  REQUIRE(docs.size() == 2);
  CHECK(docs[0].id == "5");
  CHECK(docs[0].text == "hello");
  CHECK(docs[1].id == dir / "x.jsonl" + ":2");
  CHECK(docs[1].text == "bye");
}

TEST_CASE("CorpusReader: bad lines name FILE:LINE and skip mode counts and reports them") {
  TempDir dir;
  const std::string f = dir / "bad.jsonl";
  write_file(f,
             "{\"text\": \"good 1\"}\n"                 // 1
             "[1, 2]\n"                                 // 2 not an object
             "{\"id\": \"x\"}\n"                        // 3 no text
             "{\"text\": 3.5}\n"                        // 4 text is a number
             "{\"text\": \"bad \xFF utf8\"}\n"          // 5 invalid UTF-8 in a string
             "{\"text\": \"unterminated}\n"             // 6 malformed
             "{\"text\": \"a\", \"text\": \"b\"}\n"     // 7 text twice
             "{\"text\": \"x\", \"id\": [1]}\n"         // 8 id of a wrong type
             "{\"text\": \"good 2\"}\n");               // 9
  const std::vector<std::pair<int, std::string>> expect = {
      {2, "not a JSON object but an array"},       {3, "field \"text\" is missing"},
      {4, "field \"text\" is a number, not a string"}, {5, "malformed JSON: "},
      {6, "malformed JSON: "},                     {7, "field \"text\" appears twice"},
      {8, "field \"id\" is an array, not a string or an integer"}};

  // Default: the first bad line throws, naming FILE:LINE.
  {
    CorpusReader reader({f});
    Document d;
    REQUIRE(reader.next(d));
    CHECK(d.text == "good 1");
    const std::string msg = error_of([&] { reader.next(d); });
    CHECK(contains(msg, f + ":2: not a JSON object"));
  }
  // Each bad line alone throws with its own message.
  for (const auto& [line, what] : expect) {
    std::string content;
    std::istringstream all(read_bytes(f));
    std::string l;
    for (int k = 1; std::getline(all, l); ++k)
      if (k == line) content = l + "\n";
    const std::string one = dir / ("one" + std::to_string(line) + ".jsonl");
    write_file(one, "\n" + content);  // the bad line is line 2 of its file
    CorpusReader reader({one});
    Document d;
    const std::string msg = error_of([&] { reader.next(d); });
    INFO(msg);
    CHECK(contains(msg, one + ":2: " + what));
  }
  // Skip mode: good lines read, bad ones counted and reported.
  ReadOptions opt;
  opt.skip_errors = true;
  CorpusReader reader({f}, opt);
  std::vector<ReadError> seen;
  reader.on_error = [&](const ReadError& e) { seen.push_back(e); };
  const auto docs = read_all(reader);
  REQUIRE(docs.size() == 2);
  CHECK(docs[0].text == "good 1");
  CHECK(docs[1].text == "good 2");
  CHECK(docs[1].id == f + ":9");
  CHECK(reader.errors() == expect.size());
  REQUIRE(seen.size() == expect.size());
  for (size_t k = 0; k < expect.size(); ++k) {
    CHECK(seen[k].where == f + ":" + std::to_string(expect[k].first));
    CHECK(contains(seen[k].what, expect[k].second));
  }
}

TEST_CASE("CorpusReader: a missing path is an error naming it") {
  TempDir dir;
  const std::string missing = dir / "nope.jsonl";
  const std::string msg = error_of([&] { CorpusReader r({missing}); });
  CHECK(contains(msg, missing + ": no such file or folder"));
}

TEST_CASE("CorpusReader: a file that cannot be opened is an error and skipped in skip mode") {
  TempDir dir;
  fs::create_symlink(dir / "gone.txt", dir / "a.txt");  // a dangling link: listed, cannot be opened
  write_file(dir / "b.txt", "open");
  {
    CorpusReader reader({dir.path.string()});
    Document d;
    CHECK(contains(error_of([&] { reader.next(d); }), dir / "a.txt" + ": cannot open"));
  }
  ReadOptions opt;
  opt.skip_errors = true;
  CorpusReader reader({dir.path.string()}, opt);
  std::vector<ReadError> seen;
  reader.on_error = [&](const ReadError& e) { seen.push_back(e); };
  const auto docs = read_all(reader);
  REQUIRE(docs.size() == 1);
  CHECK(docs[0].text == "open");
  REQUIRE(seen.size() == 1);
  CHECK(seen[0].where == dir / "a.txt");
}

#if LOOM_HAVE_ZLIB
TEST_CASE("CorpusReader: truncated or corrupt gzip is an error and never shortened text") {
  TempDir dir;
  std::string jsonl, plain;
  std::mt19937_64 rng(3);
  for (int i = 0; i < 2000; ++i) {
    std::string t;
    for (int k = 0; k < 40; ++k) t += char('a' + rng() % 26);
    jsonl += "{\"text\": \"" + t + "\"}\n";
    plain += t + "\n";
  }
  write_gzip(dir / "full.jsonl.gz", jsonl);
  write_gzip(dir / "full.txt.gz", plain);
  const std::string gz_jsonl = read_bytes(dir / "full.jsonl.gz");
  const std::string gz_plain = read_bytes(dir / "full.txt.gz");
  // Cut in the deflate data, in the 8-byte trailer, and just one byte off.
  for (size_t cut : {gz_jsonl.size() / 2, gz_jsonl.size() - 6, gz_jsonl.size() - 1}) {
    const std::string p = dir / "cut.jsonl.gz";
    write_file(p, gz_jsonl.substr(0, cut));
    CorpusReader reader({p});
    Document d;
    std::string msg;
    size_t n = 0;
    try {
      while (reader.next(d)) ++n;
    } catch (const io_error& e) {
      msg = e.what();
    }
    INFO("cut at " << cut << " of " << gz_jsonl.size());
    CHECK(contains(msg, p + ": corrupt gzip data ("));
    CHECK(n < 2000);
  }
  for (size_t cut : {gz_plain.size() / 3, gz_plain.size() - 3}) {
    const std::string p = dir / "cut.txt.gz";
    write_file(p, gz_plain.substr(0, cut));
    CorpusReader reader({p});
    Document d;
    CHECK(contains(error_of([&] { reader.next(d); }), p + ": corrupt gzip data ("));
  }
  // A flipped bit in the CRC: the data decompresses, but the check fails.
  std::string bad = gz_plain;
  bad[bad.size() - 8] = char(bad[bad.size() - 8] ^ 1);
  write_file(dir / "crc.txt.gz", bad);
  {
    CorpusReader reader({dir / "crc.txt.gz"});
    Document d;
    CHECK(contains(error_of([&] { reader.next(d); }), "crc.txt.gz: corrupt gzip data ("));
  }
  // Skip mode: the broken file is reported once and the next file is read.
  write_file(dir / "tree/a.txt.gz", gz_plain.substr(0, gz_plain.size() / 2));
  write_file(dir / "tree/b.txt", "after");
  ReadOptions opt;
  opt.skip_errors = true;
  CorpusReader reader({dir / "tree"}, opt);
  std::vector<ReadError> seen;
  reader.on_error = [&](const ReadError& e) { seen.push_back(e); };
  const auto docs = read_all(reader);
  REQUIRE(docs.size() == 1);
  CHECK(docs[0].text == "after");
  REQUIRE(seen.size() == 1);
  CHECK(seen[0].where == dir / "tree" + "/a.txt.gz");
  CHECK(contains(seen[0].what, "corrupt gzip data"));
  CHECK(reader.errors() == 1);
  // The intact files read fully.
  CorpusReader full({dir / "full.jsonl.gz", dir / "full.txt.gz"});
  const auto all = read_all(full);
  REQUIRE(all.size() == 2001);
  CHECK(all.back().text == plain);
}
#endif

TEST_CASE("CorpusReader: long lines across buffer refills and a line over the limit") {
  TempDir dir;
  std::mt19937_64 rng(11);
  std::string big(3'500'000, 'x');  // longer than the 1 MiB read chunk
  for (auto& c : big) c = char('a' + rng() % 26);
  std::string content;
  for (int i = 0; i < 3; ++i) content += "{\"text\": \"" + big.substr(size_t(i) * 1000) + "\"}\n";
  content += "{\"text\": \"short\"}\n";
  write_file(dir / "long.jsonl", content);
  CorpusReader reader({dir / "long.jsonl"});
  const auto docs = read_all(reader);
  REQUIRE(docs.size() == 4);
  for (int i = 0; i < 3; ++i) CHECK(docs[size_t(i)].text == big.substr(size_t(i) * 1000));
  CHECK(docs[3].text == "short");
  CHECK(reader.bytes_read() == content.size());

  // A line longer than 64 MiB is an error naming its line; in skip mode reading goes on after it.
  const std::string huge = dir / "huge.jsonl";
  {
    std::ofstream out(huge, std::ios::binary);
    out << "{\"text\": \"before\"}\n{\"text\": \"";
    const std::string mb(size_t(1) << 20, 'y');
    for (int i = 0; i < 65; ++i) out << mb;
    out << "\"}\n{\"text\": \"after\"}\n";
  }
  {
    CorpusReader r({huge});
    Document d;
    REQUIRE(r.next(d));
    const std::string msg = error_of([&] { r.next(d); });
    INFO(msg.substr(0, 300));
    CHECK(contains(msg, huge + ":2: line is longer than 64 MiB"));
  }
  ReadOptions opt;
  opt.skip_errors = true;
  CorpusReader r({huge}, opt);
  const auto got = read_all(r);
  REQUIRE(got.size() == 2);
  CHECK(got[0].text == "before");
  CHECK(got[1].text == "after");
  CHECK(got[1].id == huge + ":3");
  CHECK(r.errors() == 1);
  CHECK(r.bytes_read() == fs::file_size(huge));
}

TEST_CASE("CorpusReader: invalid UTF-8 in a plain text file is kept for normalize to repair") {
  TempDir dir;
  write_file(dir / "bin.txt", "ok \xFF\xFE bytes\r\n");
  CorpusReader reader({dir / "bin.txt"});
  const auto docs = read_all(reader);
  REQUIRE(docs.size() == 1);
  CHECK(docs[0].text == "ok \xFF\xFE bytes\r\n");
  CHECK(normalize(docs[0].text, {false}) == "ok " + fffd + fffd + " bytes\n");
}

// ---------------------------------------------------------------------------------------------
// Timings for the report (hidden: run with `test_data_read "[.bench]"`). They assert only that the
// work was done, never a speed.

namespace {
double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}
void time_normalize(const std::string& name, const std::string& text, const NormalizeOptions& opt) {
  size_t sink = 0;
  const int reps = int(std::max<size_t>(1, (size_t(200) << 20) / std::max<size_t>(text.size(), 1)));
  const auto t0 = std::chrono::steady_clock::now();
  for (int r = 0; r < reps; ++r) sink += normalize(text, opt).size();
  const double s = seconds_since(t0);
  CHECK(sink > 0);
  WARN(name << " (" << text.size() << " bytes, nfc=" << opt.nfc << "): " << double(text.size()) * reps / s / 1e6
            << " MB/s");
}
}  // namespace

TEST_CASE("bench: normalize speed", "[.bench]") {
  const std::string shakespeare = std::string(LOOM_SHARED_DATA_DIR) + "/tinyshakespeare.txt";
  if (fs::exists(shakespeare)) {
    const std::string text = read_bytes(shakespeare);
    time_normalize("tinyshakespeare", text, {true});
    // Split into ~2 KB documents, as the pipeline sees them.
    size_t sink = 0;
    const auto t0 = std::chrono::steady_clock::now();
    for (int r = 0; r < 20; ++r)
      for (size_t i = 0; i < text.size(); i += 2048) sink += normalize(std::string_view(text).substr(i, 2048)).size();
    WARN("tinyshakespeare in 2 KB documents: " << double(text.size()) * 20 / seconds_since(t0) / 1e6 << " MB/s");
    CHECK(sink > 0);
  } else {
    WARN("no " << shakespeare << ": skipped");
  }
#if LOOM_HAVE_ZLIB
  const std::string jargon = "/usr/share/doc/jargon-text/jargon.txt.gz";
  if (fs::exists(jargon)) {
    CorpusReader reader({jargon});
    Document d;
    REQUIRE(reader.next(d));
    time_normalize("jargon.txt", d.text, {true});
    time_normalize("jargon.txt", d.text, {false});
  } else {
    WARN("no " << jargon << ": skipped");
  }
#endif
  // Mostly-English text with a curly quote or an accent every ~200 bytes.
  std::string mixed;
  std::mt19937_64 rng(1);
  while (mixed.size() < (size_t(4) << 20)) {
    for (int k = 0; k < 30; ++k) mixed += "word ";
    mixed += (rng() % 2) ? "don\xE2\x80\x99t " : "caf\xC3\xA9 ";
    if (rng() % 4 == 0) mixed += "\n";
  }
  time_normalize("English with some non-ASCII", mixed, {true});
}

TEST_CASE("bench: reader speed over 50 MB of JSONL", "[.bench]") {
  TempDir dir;
  std::mt19937_64 rng(2);
  std::string line, all;
  size_t n = 0;
  {
    std::ofstream out(dir / "big.jsonl", std::ios::binary);
    while (all.size() < (size_t(50) << 20)) {
      std::string t;
      while (t.size() < 2000) {
        t += "lorem ipsum dolor sit amet ";
        if (rng() % 8 == 0) t += "\\\"quoted\\\" \\n ";
        if (rng() % 16 == 0) t += "caf\xC3\xA9 ";
      }
      line = "{\"id\": " + std::to_string(n++) + ", \"text\": \"" + t + "\", \"url\": \"https://example.com/\"}\n";
      all += line;
    }
    out << all;
  }
  const auto t0 = std::chrono::steady_clock::now();
  CorpusReader reader({dir / "big.jsonl"});
  Document d;
  size_t docs = 0, text_bytes = 0;
  while (reader.next(d)) ++docs, text_bytes += d.text.size();
  const double s = seconds_since(t0);
  CHECK(docs == n);
  WARN("read " << all.size() << " bytes of JSONL (" << docs << " documents): " << double(all.size()) / s / 1e6
               << " MB/s");
  // The JSON parser alone, for comparison.
  const auto t1 = std::chrono::steady_clock::now();
  size_t pos = 0, parsed = 0;
  io::JsonLimits lim;
  lim.unique_keys = false;
  while (pos < all.size()) {
    size_t nl = all.find('\n', pos);
    parsed += io::parse_json(std::string_view(all).substr(pos, nl - pos), lim).size();
    pos = nl + 1;
  }
  CHECK(parsed == 3 * n);
  WARN("parse_json alone: " << double(all.size()) / seconds_since(t1) / 1e6 << " MB/s");
  // Read + normalize.
  const auto t2 = std::chrono::steady_clock::now();
  CorpusReader again({dir / "big.jsonl"});
  size_t out = 0;
  while (again.next(d)) out += normalize(d.text).size();
  CHECK(out > 0);
  WARN("read + normalize: " << double(all.size()) / seconds_since(t2) / 1e6 << " MB/s");
}
