// Tests for supervised fine-tuning data: reading conversations (both JSONL layouts, every error
// case with its FILE:LINE), the chat template (golden ids and masks with the byte tokenizer and
// GPT-2, truncation of the prompt side), and SFT batches (target shift, best-fit packing, packed
// segments and padding, the seeded loader, the loss-share guard, the masked cross-entropy value).
#include <cmath>
#include <map>
#include <random>
#include <set>

#include <loom/align/chat.hpp>
#include <loom/align/sft.hpp>
#include <loom/ops/loss.hpp>
#include <loom/tokenizer.hpp>

#include "catch.hpp"
#include "programs.hpp"

using namespace loom;
using namespace loom::align;
using V = std::vector<uint32_t>;
using M = std::vector<uint8_t>;

#ifndef LOOM_TEST_DATA_DIR
#define LOOM_TEST_DATA_DIR "tests/data"
#endif

namespace {

const std::string sft_dir = std::string(LOOM_TEST_DATA_DIR) + "/sft";

// The byte tokenizer (ids 0..255 = bytes) with the chat tokens at 256..260.
const ChatTemplate& bytes_chat() {
  static const ChatTemplate t{BpeTokenizer()};
  return t;
}
constexpr uint32_t BOS = 256, SYS = 257, USR = 258, AST = 259, END = 260;

const ChatTemplate& gpt2_chat() {
  static const ChatTemplate t{tokenizer::load_gpt2(std::string(LOOM_TEST_DATA_DIR) + "/tokenizer")};
  return t;
}

Conversation conv(std::vector<Message> m) { return Conversation{std::move(m)}; }

// The bytes of s as ids of the byte tokenizer.
V b(const std::string& s) {
  V out;
  for (unsigned char c : s) out.push_back(c);
  return out;
}
V cat(std::initializer_list<V> parts) {
  V out;
  for (const V& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

std::vector<int64_t> to_vec(const Tensor<int64_t>& t) { return std::vector<int64_t>(t.data(), t.data() + t.numel()); }

SftExample ex(V ids, M mask) { return SftExample{std::move(ids), std::move(mask)}; }

// The problem behind a generated question, whatever its phrasing: "a:47 + 38" for arithmetic,
// "w:planet" for a word to reverse ("" when the question has neither form).
std::string answer_key(const std::string& q) {
  std::vector<std::string> nums;
  std::string cur;
  for (char c : q + " ") {
    if (c >= '0' && c <= '9') cur += c;
    else if (!cur.empty()) nums.push_back(cur), cur.clear();
  }
  if (nums.size() == 2) return "a:" + nums[0] + (q.find(" + ") != std::string::npos ? " + " : " - ") + nums[1];
  const std::pair<std::string, std::string> forms[] = {{"Reverse the word: ", ""}, {"Write ", " backwards."},
                                                       {"Spell the word ", " in reverse."}, {"What is ", " reversed?"}};
  for (const auto& [pre, post] : forms)
    if (q.size() > pre.size() + post.size() && q.compare(0, pre.size(), pre) == 0 &&
        q.compare(q.size() - post.size(), post.size(), post) == 0)
      return "w:" + q.substr(pre.size(), q.size() - pre.size() - post.size());
  return "";
}

// Whether `a` is the right answer to generated question `q`.
bool check_answer(const std::string& q, const std::string& a) {
  const std::string key = answer_key(q);
  if (key.rfind("w:", 0) == 0) return a == std::string(key.rbegin(), key.rend() - 2);
  if (key.rfind("a:", 0) != 0) return false;
  const long x = std::stol(key.substr(2)), y = std::stol(key.substr(key.rfind(' ') + 1));
  return a == std::to_string(key.find(" + ") != std::string::npos ? x + y : x - y);
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// reading conversations

TEST_CASE("read_conversations reads both layouts and skips blank lines", "[align][chat]") {
  auto cs = read_conversations(sft_dir + "/tiny.jsonl");
  REQUIRE(cs.size() == 10);
  REQUIRE(cs[0].messages.size() == 2);
  CHECK(cs[0].messages[0].role == "user");
  CHECK(cs[0].messages[0].content == "2+3=");
  CHECK(cs[0].messages[1].role == "assistant");
  CHECK(cs[0].messages[1].content == "5");
  REQUIRE(cs[2].messages.size() == 3);
  CHECK(cs[2].messages[0].role == "system");
  CHECK(cs[2].messages[2].content == "tenalp");
  CHECK(cs[4].messages.size() == 4);              // multi-turn
  CHECK(cs[5].messages[1].content == "noom");     // extra members ("id") are ignored
  CHECK(cs[7].messages[1].content == "caf\xc3\xa9");  // UTF-8 kept
}

TEST_CASE("read_conversations names the file and line of each bad case", "[align][chat]") {
  struct Case {
    std::string file, line, what;
  };
  for (const Case& c : std::vector<Case>{{"bad_json", ":2: ", "not JSON"},
                                        {"bad_not_object", ":2: ", "expected a JSON object, got an array"},
                                        {"bad_role", ":1: ", "unknown role 'robot'"},
                                        {"bad_content", ":1: ", "\"content\" must be a string, got an integer"},
                                        {"bad_no_assistant", ":3: ", "no assistant turn"},
                                        {"bad_empty_assistant", ":1: ", "empty assistant turn"},
                                        {"bad_order", ":1: ", "roles out of order: message 1 is 'system'"},
                                        {"bad_last_user", ":1: ", "the last turn is 'user'"}}) {
    CAPTURE(c.file);
    const std::string path = sft_dir + "/" + c.file + ".jsonl";
    CHECK_THROWS_AS(read_conversations(path), io_error);
    CHECK_THROWS_WITH(read_conversations(path), LOOM_CONTAINS(path + c.line) && LOOM_CONTAINS(c.what));
  }
}

TEST_CASE("parse_conversation rejects malformed lines", "[align][chat]") {
  auto bad = [](const std::string& line, const std::string& what) {
    CAPTURE(line);
    CHECK_THROWS_WITH(parse_conversation(line, "f.jsonl:9"), LOOM_CONTAINS("f.jsonl:9: ") && LOOM_CONTAINS(what));
  };
  bad("", "not JSON");
  bad("\"text\"", "expected a JSON object, got a string");
  bad("{}", "expected {\"messages\"");
  bad("{\"prompt\": \"a\"}", "expected {\"messages\"");
  bad("{\"prompt\": 1, \"completion\": \"b\"}", "\"prompt\" must be a string");
  bad("{\"prompt\": \"a\", \"completion\": null}", "\"completion\" must be a string, got null");
  bad("{\"prompt\": \"a\", \"completion\": \"\"}", "empty assistant turn");
  bad("{\"messages\": {}}", "must be an array");
  bad("{\"messages\": []}", "no assistant turn");
  bad("{\"messages\": [1]}", "message 0 must be an object");
  bad("{\"messages\": [{\"content\": \"x\"}]}", "needs a string \"role\"");
  bad("{\"messages\": [{\"role\": \"user\"}]}", "has no \"content\"");
  bad("{\"messages\": [{\"role\": \"assistant\", \"content\": \"x\"}]}", "message 0 is 'assistant', expected 'user'");
  bad("{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}, {\"role\": \"user\", \"content\": \"y\"}, "
      "{\"role\": \"assistant\", \"content\": \"z\"}]}",
      "message 1 is 'user', expected 'assistant'");
  bad("{\"messages\": [], \"prompt\": \"a\", \"completion\": \"b\"}", "use one layout per line");
  auto ok = parse_conversation("{\"messages\": [{\"role\": \"system\", \"content\": \"\"}, {\"role\": \"user\", "
                               "\"content\": \"\"}, {\"role\": \"assistant\", \"content\": \"a\"}]}",
                               "x");
  CHECK(ok.messages.size() == 3);  // empty system and user turns are allowed
}

// ---------------------------------------------------------------------------------------------
// the chat template

TEST_CASE("add_chat_tokens adds the five tokens at the next free ids", "[align][chat]") {
  BpeTokenizer t = ChatTemplate::add_chat_tokens(BpeTokenizer());
  CHECK(t.vocab_size() == 261);
  CHECK(t.special_id("<|endoftext|>") == BOS);
  CHECK(t.special_id("<|system|>") == SYS);
  CHECK(t.special_id("<|user|>") == USR);
  CHECK(t.special_id("<|assistant|>") == AST);
  CHECK(t.special_id("<|end|>") == END);
  // idempotent, and a token already present keeps its id
  CHECK(ChatTemplate::add_chat_tokens(t).vocab_size() == 261);
  const BpeTokenizer& g = gpt2_chat().tokenizer();
  CHECK(g.vocab_size() == 50261);
  CHECK(g.special_id("<|endoftext|>") == 50256u);
  CHECK(g.special_id("<|system|>") == 50257u);
  CHECK(g.special_id("<|end|>") == 50260u);
  CHECK(g.encode_ordinary("hello world") == V{31373, 995});  // ordinary text unchanged
  // text that looks like a chat token stays text
  CHECK(bytes_chat().tokenizer().encode_ordinary("<|end|>") == b("<|end|>"));
}

TEST_CASE("chat template: golden ids and masks with the byte tokenizer", "[align][chat]") {
  const ChatTemplate& t = bytes_chat();
  auto r = t.render(parse_conversation("{\"prompt\":\"2+3=\",\"completion\":\"5\"}", "x"));
  CHECK(r.ids == V{BOS, USR, '2', '+', '3', '=', END, AST, '5', END});
  CHECK(r.mask == M{0, 0, 0, 0, 0, 0, 0, 0, 1, 1});
  CHECK(r.truncated_prompt_tokens == 0);

  // system + two exchanges: both assistant turns are trained on, role tokens never are
  auto r2 = t.render(conv({{"system", "Hi"}, {"user", "a?"}, {"assistant", "b"}, {"user", "c"}, {"assistant", "de"}}));
  CHECK(r2.ids == V{BOS, SYS, 'H', 'i', END, USR, 'a', '?', END, AST, 'b', END, USR, 'c', END, AST, 'd', 'e', END});
  CHECK(r2.mask == M{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 1, 1, 1});

  // chat-token text inside a message is ordinary bytes
  auto r3 = t.render(conv({{"user", "<|end|>"}, {"assistant", "ok"}}));
  CHECK(r3.ids == cat({V{BOS, USR}, b("<|end|>"), V{END, AST, 'o', 'k', END}}));

  // the prompt for generation
  CHECK(t.render_prompt(conv({{"user", "2+3="}})) == V{BOS, USR, '2', '+', '3', '=', END, AST});
  CHECK(t.is_end(END));
  CHECK(t.is_end(BOS));
  CHECK_FALSE(t.is_end(AST));
  CHECK_FALSE(t.is_end('5'));
  CHECK(t.end_id() == END);
  CHECK(t.tokenizer().decode(r.ids) == "<|endoftext|><|user|>2+3=<|end|><|assistant|>5<|end|>");
}

TEST_CASE("chat template: golden ids and masks with the GPT-2 tokenizer", "[align][chat]") {
  const ChatTemplate& t = gpt2_chat();
  auto c = conv({{"system", "Be exact."},
                 {"user", "What is 47 + 38?"},
                 {"assistant", "85"},
                 {"user", "And 85 - 38?"},
                 {"assistant", "47"}});
  auto r = t.render(c);
  // <|endoftext|> <|system|> Be ' exact' . <|end|> <|user|> What ' is' ' 47' ' +' ' 38' ? <|end|>
  // <|assistant|> 85 <|end|> <|user|> And ' 85' ' -' ' 38' ? <|end|> <|assistant|> 47 <|end|>
  CHECK(r.ids == V{50256, 50257, 3856, 2748, 13, 50260, 50258, 2061, 318, 6298, 1343, 4353, 30, 50260,
                   50259, 5332, 50260, 50258, 1870, 7600, 532, 4353, 30, 50260, 50259, 2857, 50260});
  CHECK(r.mask == M{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1});
  CHECK(t.tokenizer().decode(r.ids) == "<|endoftext|><|system|>Be exact.<|end|><|user|>What is 47 + 38?<|end|>"
                                       "<|assistant|>85<|end|><|user|>And 85 - 38?<|end|><|assistant|>47<|end|>");
  // the decoded masked tokens are the two answers and their ends
  V trained;
  for (size_t i = 0; i < r.ids.size(); ++i)
    if (r.mask[i]) trained.push_back(r.ids[i]);
  CHECK(t.tokenizer().decode(trained) == "85<|end|>47<|end|>");
}

TEST_CASE("chat template: truncation keeps BOS and the whole final turn", "[align][chat]") {
  const ChatTemplate& t = bytes_chat();
  auto c = conv({{"user", "abcdef"}, {"assistant", "xy"}});
  auto r = t.render(c, 10);
  CHECK(r.ids == V{BOS, 'c', 'd', 'e', 'f', END, AST, 'x', 'y', END});
  CHECK(r.mask == M{0, 0, 0, 0, 0, 0, 0, 1, 1, 1});
  CHECK(r.truncated_prompt_tokens == 3);
  // the smallest limit that still holds the answer: BOS + AST x y END
  auto r5 = t.render(c, 5);
  CHECK(r5.ids == V{BOS, AST, 'x', 'y', END});
  CHECK(r5.truncated_prompt_tokens == 8);
  CHECK_THROWS_AS(t.render(c, 4), value_error);
  CHECK_THROWS_WITH(t.render(c, 4), LOOM_CONTAINS("final assistant answer takes 4 tokens") && LOOM_CONTAINS("max_len = 4"));
  // multi-turn: older turns (including an earlier answer) go first
  auto m = conv({{"user", "q1"}, {"assistant", "a1"}, {"user", "q2"}, {"assistant", "a2"}});
  auto rm = t.render(m, 12);
  CHECK(rm.ids == V{BOS, 'a', '1', END, USR, 'q', '2', END, AST, 'a', '2', END});
  CHECK(rm.mask == M{0, 1, 1, 1, 0, 0, 0, 0, 0, 1, 1, 1});
  CHECK(rm.truncated_prompt_tokens == 5);
  // render_prompt with a limit drops the oldest tokens after BOS
  CHECK(t.render_prompt(conv({{"user", "abcdef"}}), 6) == V{BOS, 'd', 'e', 'f', END, AST});
  CHECK_THROWS_AS(t.render_prompt(conv({{"user", "a"}}), 1), value_error);
}

TEST_CASE("chat template: invalid conversations are value errors", "[align][chat]") {
  const ChatTemplate& t = bytes_chat();
  CHECK_THROWS_WITH(t.render(conv({{"user", "a"}})), LOOM_CONTAINS("no assistant turn"));
  CHECK_THROWS_WITH(t.render(conv({{"user", "a"}, {"bot", "b"}})), LOOM_CONTAINS("unknown role 'bot'"));
  CHECK_THROWS_AS(t.render(conv({{"assistant", "b"}})), value_error);
  CHECK_THROWS_WITH(t.render_prompt(conv({{"user", "a"}, {"assistant", "b"}})), LOOM_CONTAINS("must end with a user turn"));
  CHECK_THROWS_WITH(t.render_prompt(conv({})), LOOM_CONTAINS("must end with a user turn"));
}

// ---------------------------------------------------------------------------------------------
// SFT batches

TEST_CASE("make_batch shifts targets by one and keeps loss only where the mask is 1", "[align][sft]") {
  // the golden "2+3=" example: BOS USR 2 + 3 = END AST 5 END, mask on 5 and the final END
  auto r = bytes_chat().render(parse_conversation("{\"prompt\":\"2+3=\",\"completion\":\"5\"}", "x"));
  std::vector<SftExample> es{ex(r.ids, r.mask)};
  SftBatch bt = make_batch(es, {{0}}, 12, false);
  REQUIRE(bt.idx.shape() == Shape{1, 12});
  CHECK(to_vec(bt.idx) == std::vector<int64_t>{BOS, USR, '2', '+', '3', '=', END, AST, '5', 0, 0, 0});
  CHECK(to_vec(bt.targets) == std::vector<int64_t>{-1, -1, -1, -1, -1, -1, -1, '5', END, -1, -1, -1});
  CHECK_FALSE(bt.segments.defined());
  CHECK(bt.tokens == 9);
  CHECK(bt.loss_tokens == 2);
  CHECK(bt.loss_share() == Approx(2.0 / 9.0));
  // an example of T + 1 tokens fills a row exactly; one more does not fit
  CHECK(make_batch(es, {{0}}, 9, false).tokens == 9);
  CHECK_THROWS_WITH(make_batch(es, {{0}}, 8, false), LOOM_CONTAINS("render with max_len = T + 1"));
}

TEST_CASE("pack_best_fit on hand cases", "[align][sft]") {
  using Bins = std::vector<std::vector<int64_t>>;
  // decreasing: 8(0) 7(3) 5(1) 3(4) 2(2) 2(5); 5 goes to a new bin, 3 into 7's (room 3, exact),
  // 2 into 8's (room 2), 2 into 5's (room 5)
  CHECK(pack_best_fit({8, 5, 2, 7, 3, 2}, 10) == Bins{{0, 2}, {3, 4}, {1, 5}});
  // best fit, not first fit: 4 goes to the bin with room 5 (the fuller one), not room 6
  CHECK(pack_best_fit({4, 5, 4}, 10) == Bins{{1, 0}, {2}});
  CHECK(pack_best_fit({6, 5, 4}, 10) == Bins{{0, 2}, {1}});
  CHECK(pack_best_fit({10, 10, 1}, 10) == Bins{{0}, {1}, {2}});
  CHECK(pack_best_fit({3, 3, 3}, 9) == Bins{{0, 1, 2}});
  CHECK(pack_best_fit({}, 5).empty());
  CHECK_THROWS_WITH(pack_best_fit({3, 11}, 10), LOOM_CONTAINS("example 1 has length 11"));
  CHECK_THROWS_AS(pack_best_fit({0}, 10), value_error);
  CHECK_THROWS_AS(pack_best_fit({1}, 0), value_error);
}

TEST_CASE("pack_best_fit invariants on random lengths", "[align][sft]") {
  std::mt19937_64 rng(7);
  for (int trial = 0; trial < 50; ++trial) {
    const int64_t cap = 16 + int64_t(rng() % 200);
    const size_t n = 1 + size_t(rng() % 300);
    std::vector<int64_t> len(n);
    for (auto& l : len) l = 1 + int64_t(rng() % uint64_t(cap));
    auto bins = pack_best_fit(len, cap);
    std::vector<int> seen(n, 0);
    for (const auto& bin : bins) {
      int64_t used = 0;
      REQUIRE_FALSE(bin.empty());
      for (int64_t i : bin) ++seen[size_t(i)], used += len[size_t(i)];
      CHECK(used <= cap);
    }
    for (int s : seen) CHECK(s == 1);
    // first fit (in the given order) as the yardstick
    std::vector<int64_t> room;
    for (int64_t l : len) {
      auto it = std::find_if(room.begin(), room.end(), [&](int64_t r) { return r >= l; });
      if (it == room.end()) room.push_back(cap - l);
      else *it -= l;
    }
    CHECK(bins.size() <= room.size());
    CHECK(pack_best_fit(len, cap) == bins);  // deterministic
  }
}

TEST_CASE("packed rows: segments and padding", "[align][sft]") {
  // examples of 4, 3 and 5 tokens take 3, 2 and 4 positions
  std::vector<SftExample> es{ex({10, 11, 12, 13}, {0, 0, 1, 1}), ex({20, 21, 22}, {0, 1, 1}),
                             ex({30, 31, 32, 33, 34}, {0, 0, 0, 1, 1})};
  SftBatch bt = make_batch(es, {{0, 1}, {2}}, 6, true);
  REQUIRE(bt.segments.defined());
  REQUIRE(bt.segments.shape() == Shape{2, 6});
  CHECK(to_vec(bt.idx) == std::vector<int64_t>{10, 11, 12, 20, 21, 0, /**/ 30, 31, 32, 33, 0, 0});
  CHECK(to_vec(bt.targets) == std::vector<int64_t>{-1, 12, 13, 21, 22, -1, /**/ -1, -1, 33, 34, -1, -1});
  CHECK(to_vec(bt.segments) == std::vector<int64_t>{0, 0, 0, 1, 1, 2, /**/ 0, 0, 0, 0, 1, 1});
  CHECK(bt.tokens == 9);
  CHECK(bt.loss_tokens == 6);
  // a full packed row has no padding segment
  SftBatch full_row = make_batch(es, {{0, 1}}, 5, true);
  CHECK(to_vec(full_row.segments) == std::vector<int64_t>{0, 0, 0, 1, 1});
  CHECK_THROWS_WITH(make_batch(es, {{0, 2}}, 6, true), LOOM_CONTAINS("row 0 needs more than T = 6"));
  CHECK_THROWS_WITH(make_batch(es, {{0, 1}}, 6, false), LOOM_CONTAINS("an unpacked row holds one example"));
}

TEST_CASE("SftLoader: seeded epochs and evaluation batches", "[align][sft]") {
  const ChatTemplate& t = bytes_chat();
  const int64_t T = 32;
  RenderStats stats;
  auto es = render_examples(t, read_conversations(sft_dir + "/tiny.jsonl"), T + 1, &stats);
  REQUIRE(es.size() == 10);
  CHECK(stats.examples == 10);
  CHECK(stats.truncated_examples >= 1);  // the system/multi-turn lines are longer than 33 bytes
  for (const auto& e : es) CHECK(int64_t(e.ids.size()) <= T + 1);

  for (bool pack : {false, true}) {
    CAPTURE(pack);
    SftLoader a(es, 2, T, pack, 42), b(es, 2, T, pack, 42), c(es, 2, T, pack, 43);
    const size_t rows = a.rows().size();
    if (!pack) CHECK(rows == 10);
    else CHECK(rows < 10);
    // one epoch of next() sees every row once (rows divisible by 2 when unpacked)
    bool differs = false;
    for (int k = 0; k < 10; ++k) {
      SftBatch x = a.next(), y = b.next(), z = c.next();
      CHECK(to_vec(x.idx) == to_vec(y.idx));
      CHECK(to_vec(x.targets) == to_vec(y.targets));
      differs = differs || to_vec(x.idx) != to_vec(z.idx);
      REQUIRE(x.idx.shape() == Shape{2, T});
      CHECK(pack == x.segments.defined());
      check_loss_share(x);
    }
    CHECK(differs);
    CHECK(a.epoch() >= 2);
    // all(): every example once, in order
    auto batches = a.all();
    int64_t tokens = 0, loss = 0;
    for (const auto& bt : batches) {
      CHECK(bt.idx.size(0) <= 2);
      tokens += bt.tokens, loss += bt.loss_tokens;
    }
    int64_t want_tokens = 0, want_loss = 0;
    for (const auto& e : es) {
      want_tokens += int64_t(e.ids.size()) - 1;
      for (size_t k = 1; k < e.mask.size(); ++k) want_loss += e.mask[k];
    }
    CHECK(tokens == want_tokens);
    CHECK(loss == want_loss);
    if (!pack) {
      REQUIRE(batches.size() == 5);
      CHECK(batches[0].idx.data()[1] == USR);  // example 0, row 0: BOS USR '2' ...
      CHECK(batches[0].idx.data()[2] == '2');
    }
  }
  // unpacked epoch: 5 batches of 2 rows cover the 10 examples exactly once
  SftLoader u(es, 2, T, false, 5);
  std::multiset<std::vector<int64_t>> seen;
  for (int k = 0; k < 5; ++k) {
    SftBatch x = u.next();
    for (int64_t r = 0; r < 2; ++r) seen.insert(std::vector<int64_t>(x.idx.data() + r * T, x.idx.data() + (r + 1) * T));
  }
  std::multiset<std::vector<int64_t>> want;
  for (const auto& bt : u.all())
    for (int64_t r = 0; r < bt.idx.size(0); ++r)
      want.insert(std::vector<int64_t>(bt.idx.data() + r * T, bt.idx.data() + (r + 1) * T));
  CHECK(seen == want);
  CHECK(u.epoch() == 1);
  CHECK_THROWS_WITH(SftLoader(es, 2, 8, false, 0), LOOM_CONTAINS("render with max_len = T + 1"));
  CHECK_THROWS_WITH(render_examples(t, read_conversations(sft_dir + "/tiny.jsonl"), 4),
                    LOOM_CONTAINS("conversation 1: ") && LOOM_CONTAINS("final assistant answer"));
}

TEST_CASE("check_loss_share rejects all-zero and all-one masks", "[align][sft]") {
  std::vector<SftExample> none{ex({1, 2, 3}, {0, 0, 0})}, all{ex({1, 2, 3}, {1, 1, 1})}, ok{ex({1, 2, 3}, {0, 0, 1})};
  CHECK_THROWS_AS(check_loss_share(make_batch(none, {{0}}, 4, false)), value_error);
  CHECK_THROWS_WITH(check_loss_share(make_batch(none, {{0}}, 4, false)),
                    LOOM_CONTAINS("all zeros") && LOOM_CONTAINS("no assistant tokens"));
  CHECK_THROWS_WITH(check_loss_share(make_batch(all, {{0}}, 4, false)),
                    LOOM_CONTAINS("all ones") && LOOM_CONTAINS("prompt is being trained on"));
  CHECK(make_batch(all, {{0}}, 4, false).loss_share() == 1.0);
  CHECK_NOTHROW(check_loss_share(make_batch(ok, {{0}}, 4, false)));
  CHECK(make_batch(ok, {{0}}, 4, false).loss_share() == 0.5);
}

TEST_CASE("masked cross-entropy matches a double reference", "[align][sft]") {
  // logits (2, 3, 4) against targets with -1 where there is no loss; tolerance 1e-6
  const std::vector<float> lv{0.5f, -1.25f, 2.0f, 0.0f,  1.5f, 0.25f, -0.75f, 3.0f,  -2.0f, 0.125f, 1.0f, 0.5f,
                              2.5f, 1.0f, -0.5f, -1.0f,  0.0f, 0.0f, 0.75f, -0.25f,  1.75f, -1.5f, 0.375f, 2.25f};
  const std::vector<int64_t> tv{2, -1, 1, -1, 3, 0};
  Tensor<float> logits = from_vector(lv, Shape{2, 3, 4});
  Tensor<int64_t> targets = from_vector(tv, Shape{2, 3});
  double sum = 0;
  int n = 0;
  for (size_t r = 0; r < tv.size(); ++r) {
    if (tv[r] < 0) continue;
    double m = -1e300, z = 0;
    for (int k = 0; k < 4; ++k) m = std::max(m, double(lv[r * 4 + k]));
    for (int k = 0; k < 4; ++k) z += std::exp(double(lv[r * 4 + k]) - m);
    sum += -(double(lv[r * 4 + size_t(tv[r])]) - m - std::log(z));
    ++n;
  }
  REQUIRE(n == 4);
  const double want = sum / n;
  const double got = cross_entropy(logits, targets, -1).item();
  CHECK(std::abs(got - want) <= 1e-6);
  CHECK(std::abs(double(cross_entropy(logits, targets, -1, Reduction::sum).item()) - sum) <= 1e-5);
  // the same targets built by make_batch from ids and masks give the same loss
  std::vector<SftExample> es{ex({5, 2, 7, 1}, {0, 1, 0, 1}), ex({6, 4, 3, 0}, {0, 0, 1, 1})};
  SftBatch bt = make_batch(es, {{0}, {1}}, 3, false);
  CHECK(to_vec(bt.targets) == tv);
  CHECK(bt.loss_tokens == n);
  CHECK(std::abs(double(cross_entropy(logits, bt.targets, -1).item()) - want) <= 1e-6);
}

#if defined(LOOM_PYTHON3_EXE) && defined(LOOM_SOURCE_DIR)
TEST_CASE("make_sft_data.py writes disjoint splits that read and render", "[align][sft][script]") {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / ("loom_test_sft_" + std::to_string(long(::getpid())));
  fs::remove_all(dir);
  auto run = [&](const fs::path& out) {
    return loom_test::run_program(loom_test::shell_quote(LOOM_PYTHON3_EXE) + " " +
                                  loom_test::shell_quote(LOOM_SOURCE_DIR "/scripts/make_sft_data.py") + " " +
                                  loom_test::shell_quote(out.string()) +
                                  " --train 600 --val 50 --test 50 --test-add2 40 --pretrain 300 --seed 3");
  };
  const loom_test::ProgramRun r = run(dir / "a");
  INFO(r.output);
  REQUIRE(r.status == 0);
  CHECK(r.output.find("train=600 val=50 test=50 test_add2=40 pretrain=300") != std::string::npos);
  std::map<std::string, std::vector<Conversation>> split;
  for (const char* name : {"train", "val", "test", "test_add2"})
    split[name] = read_conversations((dir / "a" / (std::string(name) + ".jsonl")).string());
  CHECK(split["train"].size() == 600);
  CHECK(split["val"].size() == 50);
  CHECK(split["test"].size() == 50);
  CHECK(split["test_add2"].size() == 40);
  std::map<std::string, std::string> owner;
  const ChatTemplate& t = bytes_chat();
  for (auto& [name, convs] : split) {
    for (const Conversation& c : convs) {
      REQUIRE(c.messages.size() == 2);
      const std::string& q = c.messages[0].content;
      const std::string key = answer_key(q);
      auto [it, fresh] = owner.emplace(key, name);
      CAPTURE(q, it->second, name);
      CHECK(fresh);  // no problem twice, within or across splits
      CHECK(check_answer(q, c.messages[1].content));
      Rendered rr = t.render(c, 65);
      CHECK(rr.truncated_prompt_tokens == 0);
    }
  }
  for (const Conversation& c : split["test_add2"]) CHECK(c.messages[0].content.find(" + ") != std::string::npos);
  // train_add2: every 2-digit addition that no held-out split (val, test, test_add2) holds
  const std::vector<Conversation> add2 = read_conversations((dir / "a" / "train_add2.jsonl").string());
  int64_t held_add2 = 0;
  for (const char* name : {"val", "test", "test_add2"})
    for (const Conversation& c : split[name]) {
      const std::string& q = c.messages[0].content;
      int a = 0, b = 0;
      held_add2 += q.find(" + ") != std::string::npos && std::sscanf(q.c_str() + q.find_first_of("0123456789"), "%d + %d", &a, &b) == 2 &&
                   a < 100 && b < 100;
    }
  CHECK(int64_t(add2.size()) == 8100 - held_add2);
  for (const Conversation& c : add2) {
    const std::string key = answer_key(c.messages[0].content);
    CAPTURE(c.messages[0].content);
    CHECK((owner.count(key) == 0 || owner[key] == "train"));  // never a held-out problem
    CHECK(check_answer(c.messages[0].content, c.messages[1].content));
  }
  // seeded: a second run writes the same files
  REQUIRE(run(dir / "b").status == 0);
  for (const char* f : {"train.jsonl", "val.jsonl", "test.jsonl", "test_add2.jsonl", "train_add2.jsonl", "pretrain.txt"})
    CHECK(io::read_file((dir / "a" / f).string()) == io::read_file((dir / "b" / f).string()));
  // the pretraining text holds no held-out problem
  const std::string pre = io::read_file((dir / "a" / "pretrain.txt").string());
  for (const char* name : {"val", "test", "test_add2"})
    for (const Conversation& c : split[name]) {
      const std::string& q = c.messages[0].content;
      std::string fact = answer_key(q).front() == 'w' ? answer_key(q).substr(2) + " reversed is " : answer_key(q).substr(2) + " = ";
      CHECK(pre.find("\n" + fact) == std::string::npos);
    }
  fs::remove_all(dir);
}
#endif
