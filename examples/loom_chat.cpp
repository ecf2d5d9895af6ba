// loom-chat: talk to a fine-tuned model, and record the user's verdicts as preference pairs.
//
//   loom-chat --ckpt DIR/ckpt.safetensors [--system TEXT] [--temperature X] [--top-k N] [--top-p X]
//             [--max-tokens N] [--seed N] [--feedback FILE]
//
// Reads one user message per line from stdin and answers it, streaming the tokens as they are
// sampled (KV cache). The whole conversation stays in the chat template, so the model sees the
// earlier turns; when it outgrows the context, the oldest turns are dropped from the prompt.
// An empty line or end of input ends the chat. The last line on stdout:
// final turns=N tokens=M pairs=K (N user messages answered, M tokens sampled, /retry included,
// K preference pairs written).
//
// A line that starts with '/' is a command (messages go to stderr, the chat goes on):
//   /good, /bad     rate the last answer
//   /retry          sample a new answer to the same user message; it replaces the last answer in
//                   the conversation, and the replaced one (with its rating) stays for pairing
//   /better TEXT    your own better answer: a pair TEXT over the last answer is written at once,
//                   and TEXT replaces the last answer, so the chat continues from it
//   /help           the commands
// A line that starts with "//" is sent as a message without its first '/'.
//
// With --feedback FILE, pairs are appended to FILE, one JSON object per line, in the
// conversational preference layout of TRL (what `loom-rl dpo` and `loom-rl rm` read):
//   {"prompt": [{"role": "system", ...}, {"role": "user", "content": "..."}, ...],
//    "chosen": [{"role": "assistant", "content": "..."}],
//    "rejected": [{"role": "assistant", "content": "..."}], "source": "loom-chat"}
// The prompt is the conversation up to and including the user message. The answers to one user
// message are kept until the next one; whenever one of them is rated good and another bad, the
// pair is written (each good/bad combination once), and /better writes its pair at once. Each
// line goes out in one write(2) to a file opened with O_APPEND, so a killed session loses no
// pair and sessions sharing a file do not interleave lines. Text that is not valid UTF-8 (a
// byte-level model can sample half a character) is written with U+FFFD in its place. A pair
// whose two answers are the same text is not written. Without --feedback, /retry and /better
// still change the conversation, and nothing is recorded.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <loom/align/finetune.hpp>
#include <loom/io/cli.hpp>
#include <loom/loom.hpp>

using namespace loom;

namespace {

/// Prints bytes as they come, holding back an incomplete UTF-8 sequence until its last byte.
struct Utf8Stream {
  std::string pending;
  void put(const std::string& bytes) {
    pending += bytes;
    size_t cut = pending.size();  // the end of the last complete character
    for (size_t k = 1; k <= 4 && k <= pending.size(); ++k) {
      const unsigned char c = (unsigned char)pending[pending.size() - k];
      if ((c & 0xC0) == 0x80) continue;  // a continuation byte: look further back
      const size_t need = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 1;
      if (need > k) cut = pending.size() - k;
      break;
    }
    std::cout << pending.substr(0, cut) << std::flush;
    pending.erase(0, cut);
  }
  void flush() {
    std::cout << pending << std::flush;
    pending.clear();
  }
};

/// A file that preference pairs are appended to: opened with O_APPEND, one write(2) per line.
class FeedbackFile {
 public:
  /// Opens (creating it if need be) `path` for appending; throws io_error naming it when it cannot.
  explicit FeedbackFile(std::string path) : path_(std::move(path)) {
    fd_ = ::open(path_.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    const int err = errno;
    LOOM_CHECK(fd_ >= 0, io_error, "cannot open the --feedback file '", path_, "' for appending: ", std::strerror(err));
  }
  FeedbackFile(const FeedbackFile&) = delete;
  FeedbackFile& operator=(const FeedbackFile&) = delete;
  ~FeedbackFile() { ::close(fd_); }
  /// The file's path.
  const std::string& path() const { return path_; }
  /// Appends `line` (which ends in a newline) in one write; once it returns, the line is in the
  /// file for any reader, whatever happens to this process.
  void append(const std::string& line) {
    size_t done = 0;
    while (done < line.size()) {  // a regular file takes it all at once; the loop is for a short write
      const ssize_t n = ::write(fd_, line.data() + done, line.size() - done);
      const int err = errno;
      if (n < 0 && err == EINTR) continue;
      LOOM_CHECK(n > 0, io_error, "cannot write to the --feedback file '", path_, "': ",
                 n < 0 ? std::strerror(err) : "nothing written");
      done += size_t(n);
    }
  }

 private:
  std::string path_;
  int fd_ = -1;
};

/// Messages as a JSON array of {"role", "content"} objects (text made valid UTF-8).
io::Json messages_json(std::vector<align::Message>::const_iterator begin, std::vector<align::Message>::const_iterator end) {
  io::Json a = io::Json::array();
  for (auto it = begin; it != end; ++it) {
    io::Json m = io::Json::object();
    m.set("role", it->role);
    m.set("content", tokenizer::to_valid_utf8(it->content));
    a.push_back(std::move(m));
  }
  return a;
}

/// One preference pair as a JSON line (see the file comment): `prompt` ends with the user turn.
std::string pair_line(const std::vector<align::Message>& prompt, const std::string& chosen, const std::string& rejected) {
  const std::vector<align::Message> c{{"assistant", chosen}}, r{{"assistant", rejected}};
  io::Json j = io::Json::object();
  j.set("prompt", messages_json(prompt.begin(), prompt.end()));
  j.set("chosen", messages_json(c.begin(), c.end()));
  j.set("rejected", messages_json(r.begin(), r.end()));
  j.set("source", "loom-chat");
  return j.dump() + "\n";
}

/// One answer to the current user message and the user's verdict on it.
struct Answer {
  std::string text;  ///< what the model (or, after /better, the user) said
  int rating = 0;    ///< +1 good, -1 bad, 0 not rated
};

const char* const help_text =
    "commands:\n"
    "  /good          the last answer is good\n"
    "  /bad           the last answer is bad\n"
    "  /retry         sample a new answer to the same message (the old one stays for pairing)\n"
    "  /better TEXT   TEXT is a better answer: record it over the last answer, and continue from it\n"
    "  /help          this list\n"
    "  //text         send the message \"/text\"\n"
    "an answer rated good and another rated bad (to the same message) make a pair; pairs are\n"
    "written to the --feedback file\n";

}  // namespace

int main(int argc, char** argv) {
  try {
    std::string ckpt, system, feedback_path;
    train::SamplingOptions opt{0.7, 0, 1.0};
    int64_t max_tokens = 0;  // 0: 200, or half the model's context when that is shorter
    uint64_t seed = 1337;
    io::OptionTable table;
    using io::store;
    table.values = {
        {"--ckpt", store(ckpt)},       {"--system", store(system)},         {"--temperature", store(opt.temperature)},
        {"--top-k", store(opt.top_k)}, {"--top-p", store(opt.top_p)},       {"--max-tokens", store(max_tokens)},
        {"--seed", store(seed)},       {"--feedback", store(feedback_path)}};
    if (!io::parse_options(argc, argv, 1, table)) {
      std::cout << "usage: loom-chat --ckpt FILE [--system TEXT] [--temperature X] [--top-k N] [--top-p X]\n"
                   "                 [--max-tokens N] [--seed N] [--feedback FILE]\n"
                   "  --max-tokens N   longest answer (default 200, or half the model's context if shorter)\n"
                   "  --feedback FILE  append preference pairs from /good, /bad and /better to FILE (JSONL,\n"
                   "                   {\"prompt\": [...], \"chosen\": [...], \"rejected\": [...]}, for loom-rl)\n"
                   "One message per line on stdin; an empty line ends the chat. Lines starting with '/' are\n"
                << help_text;
      return 0;
    }
    LOOM_CHECK(!ckpt.empty(), usage_error, "--ckpt FILE is required (see --help)");
    LOOM_CHECK(max_tokens >= 0, usage_error, "--max-tokens must be positive");
    std::unique_ptr<FeedbackFile> feedback;
    if (!feedback_path.empty()) feedback = std::make_unique<FeedbackFile>(feedback_path);
    align::ChatModel cm = align::load_chat_model(ckpt);
    nn::CausalLM& model = *cm.model;
    if (max_tokens == 0) max_tokens = std::min<int64_t>(200, model.block_size() / 2);
    LOOM_CHECK(max_tokens < model.block_size(), usage_error, "--max-tokens ", max_tokens,
               " must be below the model's context of ", model.block_size(), " tokens");
    const bool tty = isatty(0) != 0;
    align::Conversation conv;
    if (!system.empty()) conv.messages.push_back({"system", system});
    Generator gen(seed);
    int64_t turns = 0, tokens = 0, pairs = 0;
    std::vector<Answer> answers;                // to the current user message; the last is in `conv`
    std::set<std::pair<size_t, size_t>> paired; // (chosen, rejected) indices already written
    bool told_unrecorded = false;
    auto note = [](const std::string& text) { std::cerr << "loom-chat: " << text << "\n"; };
    // Samples an answer to `conv` (which ends with the user turn), streaming it to stdout.
    auto sample = [&]() {
      Utf8Stream out;
      const std::vector<uint32_t> reply = align::answer(model, cm.chat, conv, max_tokens, opt, gen, [&](int64_t id) {
        out.put(std::string(cm.chat.tokenizer().token_bytes(uint32_t(id))));
      });
      out.flush();
      std::cout << "\n" << std::flush;
      tokens += int64_t(reply.size());
      return cm.chat.tokenizer().decode(reply);
    };
    // Whether a pair can be written; says once when it cannot.
    auto recording = [&]() {
      if (feedback) return true;
      if (!told_unrecorded) note("nothing is recorded without --feedback FILE");
      told_unrecorded = true;
      return false;
    };
    // Writes the pair answers[c] over answers[r] (once), for the user message before the last answer.
    auto write_pair = [&](size_t c, size_t r) {
      if (!paired.insert({c, r}).second) return;
      if (answers[c].text == answers[r].text) {
        note("the two answers are the same text; no pair written");
        return;
      }
      const std::vector<align::Message> prompt(conv.messages.begin(), conv.messages.end() - 1);
      feedback->append(pair_line(prompt, answers[c].text, answers[r].text));
      ++pairs;
      note("pair " + std::to_string(pairs) + " written to " + feedback->path());
    };
    std::string line;
    while (true) {
      if (tty) std::cerr << "> " << std::flush;
      if (!std::getline(std::cin, line)) break;
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (line.empty()) break;
      if (line[0] == '/' && (line.size() == 1 || line[1] != '/')) {
        const size_t space = line.find(' ');
        const std::string cmd = line.substr(0, space);
        std::string arg = space == std::string::npos ? "" : line.substr(space + 1);
        arg.erase(0, std::min(arg.size(), arg.find_first_not_of(' ')));
        if (cmd == "/help") {
          std::cerr << help_text;
          continue;
        }
        if (cmd != "/good" && cmd != "/bad" && cmd != "/retry" && cmd != "/better") {
          note("unknown command '" + cmd + "' (/help lists the commands)");
          continue;
        }
        if (cmd == "/better" ? arg.empty() : !arg.empty()) {
          note(cmd == "/better" ? "/better needs the better answer: /better TEXT" : cmd + " takes no argument");
          continue;
        }
        if (answers.empty()) {
          note(cmd + ": there is no answer yet (send a message first)");
          continue;
        }
        const size_t last = answers.size() - 1;
        if (cmd == "/retry") {
          conv.messages.pop_back();
          answers.push_back({sample(), 0});
          conv.messages.push_back({"assistant", answers.back().text});
        } else if (cmd == "/better") {
          answers.push_back({arg, 0});
          if (recording()) write_pair(last + 1, last);
          conv.messages.back().content = arg;
        } else {
          const int rating = cmd == "/good" ? 1 : -1;
          answers[last].rating = rating;
          if (!recording()) continue;
          for (size_t j = 0; j < last; ++j)
            if (answers[j].rating == -rating) rating > 0 ? write_pair(last, j) : write_pair(j, last);
        }
        continue;
      }
      if (line[0] == '/') line.erase(0, 1);  // "//text" sends "/text"
      conv.messages.push_back({"user", line});
      answers.clear();
      paired.clear();
      answers.push_back({sample(), 0});
      conv.messages.push_back({"assistant", answers.back().text});
      ++turns;
    }
    std::printf("final turns=%lld tokens=%lld pairs=%lld\n", (long long)turns, (long long)tokens, (long long)pairs);
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "loom-chat: " << e.what() << "\n";
    return io::exit_status(e);  // 2 for a usage error
  }
}
