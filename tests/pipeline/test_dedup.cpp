// loom/data hash.hpp, dedup.hpp, split.hpp: hash quality, exact dedup, MinHash estimates, the
// near-duplicate accuracy target on a planted corpus, determinism across thread counts, split
// assignment and 13-gram decontamination. "[.bench]" cases time the hot loops (not run by default).
#include <algorithm>
#include <bitset>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <fstream>
#include <iostream>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <unordered_set>
#include <vector>

#include <loom/data/dedup.hpp>
#include <loom/data/hash.hpp>
#include <loom/data/split.hpp>

#include "catch.hpp"

using namespace loom::data;

namespace {

/// A vocabulary of `n` distinct random lowercase words of 3..9 letters.
std::vector<std::string> make_vocab(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> len(3, 9), letter(0, 25);
  std::set<std::string> seen;
  std::vector<std::string> v;
  while (v.size() < n) {
    std::string w(size_t(len(rng)), 'a');
    for (char& c : w) c = char('a' + letter(rng));
    if (seen.insert(w).second) v.push_back(w);
  }
  return v;
}

std::string join(const std::vector<std::string>& words) {
  std::string s;
  for (size_t i = 0; i < words.size(); ++i) {
    if (i) s += ' ';
    s += words[i];
  }
  return s;
}

std::string read_text(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::ostringstream os;
  os << f.rdbuf();
  return os.str();
}

}  // namespace

TEST_CASE("hash64 avalanche: one flipped input bit flips about half the output bits") {
  std::mt19937_64 rng(42);
  for (size_t len : {1u, 3u, 7u, 8u, 15u, 16u, 17u, 31u, 64u, 100u}) {
    double flipped = 0, trials = 0;
    for (int t = 0; t < 200; ++t) {
      std::string s(len, '\0');
      for (char& c : s) c = char(rng());
      const uint64_t h = hash64(s, 7);
      for (size_t bit = 0; bit < len * 8; ++bit) {
        std::string u = s;
        u[bit / 8] = char(u[bit / 8] ^ (1 << (bit % 8)));
        flipped += double(std::bitset<64>(h ^ hash64(u, 7)).count());
        trials += 64;
      }
    }
    INFO("length " << len << ": " << 100 * flipped / trials << "% of output bits flipped");
    CHECK(flipped / trials > 0.45);
    CHECK(flipped / trials < 0.55);
  }
  // The seed matters, and so does every bit of it.
  double flipped = 0;
  for (int bit = 0; bit < 64; ++bit)
    flipped += double(std::bitset<64>(hash64("abc", 0) ^ hash64("abc", uint64_t(1) << bit)).count());
  CHECK(flipped / (64 * 64) > 0.45);
  CHECK(flipped / (64 * 64) < 0.55);
  // mix64 avalanches too.
  flipped = 0;
  for (int bit = 0; bit < 64; ++bit)
    flipped += double(std::bitset<64>(mix64(12345) ^ mix64(12345 ^ (uint64_t(1) << bit))).count());
  CHECK(flipped / (64 * 64) > 0.45);
  CHECK(flipped / (64 * 64) < 0.55);
}

TEST_CASE("hash64 and hash128 give distinct outputs for 1e5 distinct short strings") {
  std::unordered_set<uint64_t> h64, h128lo, h128hi;
  std::set<std::string> inputs;
  std::mt19937_64 rng(7);
  for (int i = 0; i < 100000; ++i) {
    // Half of them counters ("doc0", "doc1", ...), half random short byte strings.
    std::string s = (i % 2) ? "doc" + std::to_string(i) : std::string(size_t(1 + rng() % 12), 'x');
    if (i % 2 == 0)
      for (char& c : s) c = char(rng());
    if (!inputs.insert(s).second) continue;
    h64.insert(hash64(s, 99));
    Hash128 h = hash128(s);
    h128lo.insert(h.lo);
    h128hi.insert(h.hi);
  }
  CHECK(h64.size() == inputs.size());
  CHECK(h128lo.size() == inputs.size());
  CHECK(h128hi.size() == inputs.size());
  CHECK(hash64("") != hash64("", 1));
  CHECK(hash64("a") != hash64(std::string_view("a\0", 2)));
  CHECK(hash128("same text") == hash128("same text"));
  CHECK(hash128("same text") != hash128("same text."));
  Hash128 e = hash128("");
  CHECK(e.lo != e.hi);
}

TEST_CASE("word_hashes lowercases and splits at punctuation and whitespace") {
  std::vector<uint64_t> a, b;
  word_hashes("Don't STOP--now!\tcafé", a);
  word_hashes("  don t stop now  CAFé ", b);
  REQUIRE(a.size() == 5);
  CHECK(a == b);
  word_hashes("", a);
  CHECK(a.empty());
  word_hashes(" ,.;!? \n", a);
  CHECK(a.empty());
  // Long words (longer than the stack buffer) are lowercased too.
  std::string lw(300, 'Q'), lw2(300, 'q');
  word_hashes(lw, a);
  word_hashes(lw2, b);
  REQUIRE(a.size() == 1);
  CHECK(a == b);
  word_hashes(lw + "x", b);
  CHECK(a != b);
}

TEST_CASE("ExactDedup keeps the first occurrence and returns its number") {
  ExactDedup d;
  CHECK(d.insert("alpha", 0) == -1);
  CHECK(d.insert("beta", 1) == -1);
  CHECK(d.insert("alpha", 2) == 0);
  CHECK(d.insert("gamma", 3) == -1);
  CHECK(d.insert("beta", 4) == 1);
  CHECK(d.insert("alpha", 5) == 0);
  CHECK(d.insert("Alpha", 6) == -1);  // exact: case matters
  CHECK(d.insert("", 7) == -1);
  CHECK(d.insert("", 8) == 7);
  CHECK(d.size() == 5);
  CHECK_THROWS_AS(d.insert("x", -1), loom::value_error);

  // Many texts: the table grows and still answers right.
  ExactDedup big;
  for (int i = 0; i < 50000; ++i) REQUIRE(big.insert("text " + std::to_string(i), i) == -1);
  for (int i = 0; i < 50000; i += 7) REQUIRE(big.insert("text " + std::to_string(i), 100000 + i) == i);
  CHECK(big.size() == 50000);
  CHECK(big.memory_bytes() >= 50000 * 24);
  CHECK(big.memory_bytes() < 50000 * 24 * 4);
}

TEST_CASE("shingle_jaccard on hand cases") {
  // 6 words, 3-grams: {a b c, b c d, c d e, d e f}.
  CHECK(shingle_jaccard("a b c d e f", "a b c d e f", 3) == 1.0);
  CHECK(shingle_jaccard("a b c d e f", "A, b; C d. E f!", 3) == 1.0);
  // Change f -> x: shared {abc, bcd, cde}, union 5.
  CHECK(shingle_jaccard("a b c d e f", "a b c d e x", 3) == Approx(3.0 / 5.0));
  // Change c -> x: every shingle but "d e f" is hit: shared 1, union 7.
  CHECK(shingle_jaccard("a b c d e f", "a b x d e f", 3) == Approx(1.0 / 7.0));
  CHECK(shingle_jaccard("a b c", "d e f", 3) == 0.0);
  // Repeated shingles count once: "a a a a" has the single 2-gram {a a}.
  CHECK(shingle_jaccard("a a a a", "a a", 2) == 1.0);
  // Fewer words than n: one shingle of all words.
  CHECK(shingle_jaccard("hello world", "Hello, world!", 5) == 1.0);
  CHECK(shingle_jaccard("hello world", "hello there", 5) == 0.0);
  CHECK(shingle_jaccard("", "", 5) == 1.0);
  CHECK(shingle_jaccard("", "word", 5) == 0.0);
}

TEST_CASE("MinHasher signatures: shape and determinism and empty text and an estimate close to exact") {
  MinHasher mh;
  REQUIRE(mh.num_hashes() == 112);
  const auto vocab = make_vocab(2000, 3);
  std::mt19937_64 rng(11);
  std::vector<std::string> doc(200);
  for (auto& w : doc) w = vocab[rng() % vocab.size()];
  const std::string text = join(doc);
  auto s1 = mh.signature(text);
  REQUIRE(s1.size() == 112);
  CHECK(s1 == mh.signature(text));
  CHECK(s1 == MinHasher().signature(text));  // same seed: same permutations
  MinHashOptions other;
  other.seed = 2;
  CHECK(s1 != MinHasher(other).signature(text));
  // Case and punctuation do not change the signature.
  std::string upper = text;
  for (char& c : upper) c = char(std::toupper(static_cast<unsigned char>(c)));
  CHECK(mh.signature(upper) == s1);
  // Empty text: all max.
  auto e = mh.signature("  ... ");
  CHECK(std::all_of(e.begin(), e.end(), [](uint32_t v) { return v == 0xFFFFFFFFu; }));
  // Option checks.
  MinHashOptions bad;
  bad.rows = 0;
  CHECK_THROWS_AS(MinHasher(bad), loom::value_error);
  bad = MinHashOptions{};
  bad.threshold = 1.5;
  CHECK_THROWS_AS(NearDupIndex(bad), loom::value_error);

  // Random pairs across the whole similarity range: the estimate is within 0.1 of the truth.
  int within = 0, total = 0;
  double max_err = 0;
  for (int t = 0; t < 200; ++t) {
    std::vector<std::string> a(150);
    for (auto& w : a) w = vocab[rng() % vocab.size()];
    std::vector<std::string> b = a;
    const int edits = int(rng() % 60);
    for (int k = 0; k < edits; ++k) b[rng() % b.size()] = vocab[rng() % vocab.size()];
    const std::string ta = join(a), tb = join(b);
    const double exact = shingle_jaccard(ta, tb);
    auto sa = mh.signature(ta), sb = mh.signature(tb);
    const double est = estimated_jaccard(sa.data(), sb.data(), sa.size());
    max_err = std::max(max_err, std::fabs(est - exact));
    within += std::fabs(est - exact) <= 0.1;
    ++total;
  }
  INFO("max |estimate - exact| = " << max_err);
  // 0.1 is ~2.5 std of the estimate at J = 0.5; allow a few of 200 beyond it.
  CHECK(within >= total - 4);
  CHECK(max_err < 0.2);
}

TEST_CASE("NearDupIndex accuracy on planted near-copies (FineWeb 14x8 + 0.7 check)") {
  // 500 unrelated base documents of 300 words from a 5000-word vocabulary, each with one close
  // copy (1..5 words replaced: J ~ 0.85..0.97) and one distant copy (23..30 words replaced:
  // J ~ 0.4..0.52, just below 0.5 where LSH alone errs most). Every (base, copy) pair is bucketed
  // by its measured shingle Jaccard.
  const auto vocab = make_vocab(5000, 5);
  std::mt19937_64 rng(2024);
  const int nbase = 500, nwords = 300;
  std::vector<std::pair<int, int>> pairs;  // (base doc, copy doc)
  std::vector<std::vector<std::string>> bases(nbase);
  for (auto& b : bases) {
    b.resize(nwords);
    for (auto& w : b) w = vocab[rng() % vocab.size()];
  }
  // Documents in a shuffled order, so that a copy may come before its base.
  std::vector<std::string> docs;
  std::vector<int> base_doc(nbase);
  std::vector<std::pair<int, int>> plan;  // (base index, edits) for copies; edits = -1: the base
  for (int i = 0; i < nbase; ++i) {
    plan.push_back({i, -1});
    plan.push_back({i, 1 + int(rng() % 5)});
    plan.push_back({i, 23 + int(rng() % 8)});
  }
  std::shuffle(plan.begin(), plan.end(), rng);
  for (const auto& p : plan)
    if (p.second < 0) base_doc[size_t(p.first)] = int(docs.size()), docs.push_back(join(bases[size_t(p.first)]));
    else docs.emplace_back();
  for (size_t d = 0; d < plan.size(); ++d) {
    if (plan[d].second < 0) continue;
    std::vector<std::string> w = bases[size_t(plan[d].first)];
    for (int k = 0; k < plan[d].second; ++k) w[rng() % w.size()] = vocab[rng() % vocab.size()];
    // Cosmetic differences that the word definition removes.
    w[0][0] = char(std::toupper(static_cast<unsigned char>(w[0][0])));
    docs[d] = join(w) + ".";
    pairs.push_back({base_doc[size_t(plan[d].first)], int(d)});
  }

  MinHasher mh;
  NearDupIndex index;
  MinHashOptions fineweb;
  fineweb.threshold = 0.0;  // every band candidate joined, as FineWeb does
  NearDupIndex index_fw(fineweb);
  std::vector<uint32_t> sig(112);
  for (const auto& t : docs) {
    mh.signature(t, sig.data());
    index.add(sig.data());
    index_fw.add(sig.data());
  }
  REQUIRE(index.size() == int64_t(docs.size()));
  CHECK(index.memory_bytes() >= docs.size() * 448);
  const auto rep = index.resolve(1);
  const auto rep_fw = index_fw.resolve(1);
  auto cluster = [](const std::vector<int64_t>& r, int d) {
    return r[size_t(d)] < 0 ? int64_t(d) : r[size_t(d)];
  };

  int hi_n = 0, hi_joined = 0, lo_n = 0, lo_joined = 0, mid_n = 0, mid_joined = 0;
  int hi_fw = 0, lo_fw = 0;
  double lo_max = 0;
  for (const auto& p : pairs) {
    const double j = shingle_jaccard(docs[size_t(p.first)], docs[size_t(p.second)]);
    const bool joined = cluster(rep, p.first) == cluster(rep, p.second);
    const bool joined_fw = cluster(rep_fw, p.first) == cluster(rep_fw, p.second);
    if (j >= 0.85) ++hi_n, hi_joined += joined, hi_fw += joined_fw;
    else if (j < 0.5) ++lo_n, lo_joined += joined, lo_fw += joined_fw, lo_max = std::max(lo_max, j);
    else ++mid_n, mid_joined += joined;
  }
  const double hi_pct = 100.0 * hi_joined / std::max(hi_n, 1);
  const double lo_pct = 100.0 * lo_joined / std::max(lo_n, 1);
  std::ostringstream report;
  report << "near-dup accuracy (threshold 0.7): J>=0.85: " << hi_joined << "/" << hi_n << " joined ("
         << hi_pct << "%); 0.5<=J<0.85: " << mid_joined << "/" << mid_n << "; J<0.5 (max "
         << lo_max << "): " << lo_joined << "/" << lo_n << " joined (" << lo_pct
         << "%). Without the check (threshold 0): J>=0.85: " << hi_fw << "/" << hi_n
         << "; J<0.5: " << lo_fw << "/" << lo_n;
  WARN(report.str());
  REQUIRE(hi_n >= 300);
  REQUIRE(lo_n >= 300);
  CHECK(hi_pct >= 95.0);
  CHECK(lo_pct <= 1.0);
  // The signature check is what keeps the low bucket out: LSH alone joins more of it.
  CHECK(lo_fw > lo_joined);

  // Unrelated base documents never share a cluster.
  std::set<int64_t> base_clusters;
  for (int i = 0; i < nbase; ++i) base_clusters.insert(cluster(rep, base_doc[size_t(i)]));
  CHECK(base_clusters.size() == size_t(nbase));

  // The kept document of every cluster is its lowest number.
  for (size_t d = 0; d < rep.size(); ++d)
    if (rep[d] >= 0) {
      REQUIRE(rep[d] < int64_t(d));
      REQUIRE(rep[size_t(rep[d])] == -1);
    }

  // Same result with 2 threads and with all threads.
  CHECK(index.resolve(2) == rep);
  CHECK(index.resolve(0) == rep);
}

TEST_CASE("NearDupIndex: threshold 0 joins every band candidate; identical texts always join") {
  MinHasher mh;
  MinHashOptions o;
  o.threshold = 0.0;
  NearDupIndex all(o), checked;
  const std::vector<std::string> texts = {
      "the quick brown fox jumps over the lazy dog today",   // 0
      "completely different words that share nothing at all",  // 1
      "The quick brown fox jumps over the lazy dog today!",  // 2: copy of 0
      "completely different words that share nothing at all",  // 3: copy of 1
      "",                                                    // 4
      "one more unrelated sentence about cheese and bread"};  // 5
  for (const auto& t : texts) {
    auto s = mh.signature(t);
    all.add(s.data());
    checked.add(s.data());
  }
  const std::vector<int64_t> expect = {-1, -1, 0, 1, -1, -1};
  CHECK(checked.resolve() == expect);
  CHECK(all.resolve() == expect);
  NearDupIndex empty;
  CHECK(empty.resolve().empty());
}

TEST_CASE("NearDupIndex: big groups of identical documents stay linear and form one cluster") {
  // 3000 copies of one text plus 3000 distinct texts; every band has a group of 3000.
  MinHasher mh;
  NearDupIndex index;
  const auto vocab = make_vocab(3000, 9);
  std::mt19937_64 rng(5);
  const auto same = mh.signature("this exact text is repeated many many times over");
  std::vector<int> is_copy;
  for (int i = 0; i < 6000; ++i) {
    if (rng() % 2) {
      index.add(same.data());
      is_copy.push_back(1);
    } else {
      std::vector<std::string> w(40);
      for (auto& x : w) x = vocab[rng() % vocab.size()];
      index.add(mh.signature(join(w)).data());
      is_copy.push_back(0);
    }
  }
  const auto rep = index.resolve(2);
  int64_t first = -1;
  for (size_t d = 0; d < rep.size(); ++d) {
    if (!is_copy[d]) {
      CHECK(rep[d] == -1);
      continue;
    }
    if (first < 0) {
      first = int64_t(d);
      CHECK(rep[d] == -1);
    } else {
      CHECK(rep[d] == first);
    }
  }
}

TEST_CASE("SplitFractions::parse accepts valid fractions and names the problem otherwise") {
  auto f = SplitFractions::parse("0.98,0.01,0.01");
  CHECK(f.train == 0.98);
  CHECK(f.val == 0.01);
  CHECK(f.test == 0.01);
  f = SplitFractions::parse("1,0,0");
  CHECK(f.train == 1.0);
  f = SplitFractions::parse("0.8, 0.1, 0.1");
  CHECK(f.val == Approx(0.1));
  auto msg = [](const std::string& s) {
    try {
      SplitFractions::parse(s);
    } catch (const loom::value_error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  CHECK(msg("0.9,0.1").find("three") != std::string::npos);
  CHECK(msg("0.9,0.05,0.05,0") .find("three") != std::string::npos);
  CHECK(msg("0.9,abc,0.1").find("'abc' is not a number") != std::string::npos);
  CHECK(msg("0.9,,0.1").find("not a number") != std::string::npos);
  CHECK(msg("1.2,-0.1,-0.1").find("non-negative") != std::string::npos);
  CHECK(msg("0.5,0.2,0.2").find("sum to 1") != std::string::npos);
  CHECK(msg("0.9,0.1,0.1x").find("not a number") != std::string::npos);
  CHECK(msg("nan,0,0").find("non-negative") != std::string::npos);
  CHECK(std::string(split_name(Split::train)) == "train");
  CHECK(std::string(split_name(Split::val)) == "val");
  CHECK(std::string(split_name(Split::test)) == "test");
}

TEST_CASE("assign_split: proportions and determinism and seed dependence") {
  const SplitFractions f;  // 98/1/1
  const SplitFractions g = SplitFractions::parse("0.8,0.15,0.05");
  int count[3] = {0, 0, 0}, count_g[3] = {0, 0, 0}, changed = 0;
  const int n = 100000;
  for (int i = 0; i < n; ++i) {
    const std::string key = std::to_string(i);
    const Split s = assign_split(key, f, 17);
    REQUIRE(assign_split(key, f, 17) == s);  // same key, same split
    ++count[int(s)];
    ++count_g[int(assign_split(key, g, 17))];
    changed += assign_split(key, g, 18) != assign_split(key, g, 17);
  }
  CHECK(std::fabs(count[0] / double(n) - 0.98) < 0.01);
  CHECK(std::fabs(count[1] / double(n) - 0.01) < 0.01);
  CHECK(std::fabs(count[2] / double(n) - 0.01) < 0.01);
  CHECK(count[1] > 0);
  CHECK(count[2] > 0);
  CHECK(std::fabs(count_g[0] / double(n) - 0.8) < 0.01);
  CHECK(std::fabs(count_g[1] / double(n) - 0.15) < 0.01);
  CHECK(std::fabs(count_g[2] / double(n) - 0.05) < 0.01);
  // A new seed reassigns: for 80/15/5, a key changes split with probability 1 - sum p^2 = 0.335.
  CHECK(changed > n / 4);
  CHECK(changed < n / 2);
  // Degenerate fractions.
  const SplitFractions only_train = SplitFractions::parse("1,0,0");
  for (int i = 0; i < 1000; ++i) CHECK(assign_split(std::to_string(i), only_train, 1) == Split::train);
}

TEST_CASE("Decontaminator: the 13-gram rule") {
  const auto vocab = make_vocab(3000, 21);
  std::mt19937_64 rng(8);
  auto words = [&](size_t n) {
    std::vector<std::string> w(n);
    for (auto& x : w) x = vocab[rng() % vocab.size()];
    return w;
  };
  const auto val = words(100);
  Decontaminator dc;
  CHECK_FALSE(dc.contaminated(join(val)));  // empty reference set
  dc.add_reference(join(val));
  CHECK(dc.size() == 100 - 13 + 1);
  CHECK(dc.memory_bytes() > dc.size() * 8);

  // A train text containing a 13-word run of the val text is flagged...
  auto train = words(80);
  std::vector<std::string> t13 = train;
  t13.insert(t13.begin() + 40, val.begin() + 30, val.begin() + 43);
  CHECK(dc.contaminated(join(t13)));
  // ...with case and punctuation differences too...
  std::string noisy;
  for (size_t i = 0; i < t13.size(); ++i) {
    std::string w = t13[i];
    if (i % 3 == 0) w[0] = char(std::toupper(static_cast<unsigned char>(w[0])));
    noisy += w + (i % 4 == 0 ? ", " : i % 5 == 0 ? " -- " : " ");
  }
  CHECK(dc.contaminated(noisy));
  // ...but 12 shared words are not enough.
  std::vector<std::string> t12 = train;
  t12.insert(t12.begin() + 40, val.begin() + 30, val.begin() + 42);
  CHECK_FALSE(dc.contaminated(join(t12)));
  CHECK_FALSE(dc.contaminated(join(train)));
  // Two 12-word runs from different places do not make a 13-gram either.
  std::vector<std::string> split_runs = train;
  split_runs.insert(split_runs.begin() + 10, val.begin(), val.begin() + 12);
  split_runs.insert(split_runs.begin() + 60, val.begin() + 50, val.begin() + 62);
  CHECK_FALSE(dc.contaminated(join(split_runs)));

  // Short texts (fewer than 13 words) are one n-gram of all their words.
  Decontaminator shorts;
  shorts.add_reference("What is the capital of France?");
  CHECK(shorts.size() == 1);
  CHECK(shorts.contaminated("what is the CAPITAL of france"));
  CHECK_FALSE(shorts.contaminated("what is the capital of spain"));
  CHECK_FALSE(shorts.contaminated("Preamble. What is the capital of France? And more words here too."));
  CHECK_FALSE(shorts.contaminated(""));
  CHECK_THROWS_AS(Decontaminator(0), loom::value_error);
}

TEST_CASE("MinHash signature and hash throughput on tinyshakespeare", "[.bench]") {
  const std::string path = LOOM_SHARED_DATA_DIR "/tinyshakespeare.txt";
  const std::string text = read_text(path);
  if (text.empty()) {
    WARN("skipped: " << path << " not found");
    return;
  }
  // Documents: 2 KB chunks cut at a newline.
  std::vector<std::string_view> docs;
  for (size_t i = 0; i < text.size();) {
    size_t e = std::min(text.size(), i + 2048);
    while (e < text.size() && text[e] != '\n') ++e;
    docs.emplace_back(text.data() + i, e - i);
    i = e;
  }
  MinHasher mh;
  std::vector<uint32_t> sig(112);
  uint64_t sink = 0;
  const int reps = 5;
  auto t0 = std::chrono::steady_clock::now();
  for (int r = 0; r < reps; ++r)
    for (auto d : docs) {
      mh.signature(d, sig.data());
      sink += sig[0];
    }
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const double mb = double(text.size()) * reps / 1e6;
  std::cout << "MinHash signatures (112 hashes, 5-grams): " << mb / s << " MB/s on one core\n";

  t0 = std::chrono::steady_clock::now();
  for (int r = 0; r < 200; ++r)
    for (auto d : docs) sink += hash128(d).lo;
  s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::cout << "hash128 of 2 KB documents: " << double(text.size()) * 200 / 1e6 / s << " MB/s\n";

  ExactDedup ex;
  t0 = std::chrono::steady_clock::now();
  int64_t n = 0;
  for (int r = 0; r < 200; ++r)
    for (auto d : docs) sink += uint64_t(ex.insert(d, n++));
  s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::cout << "ExactDedup::insert of 2 KB documents: " << double(text.size()) * 200 / 1e6 / s << " MB/s\n";

  std::vector<uint64_t> words;
  t0 = std::chrono::steady_clock::now();
  for (int r = 0; r < 20; ++r) {
    word_hashes(text, words);
    sink += words.size();
  }
  s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::cout << "word_hashes: " << double(text.size()) * 20 / 1e6 / s << " MB/s\n";
  CHECK(sink != 0);
}
