#pragma once
/// @file command_reward.hpp
/// Rewards from an external judge program (`--reward cmd:"PROGRAM"`): any program, in any
/// language, that reads sampled answers and prints one score for each.
///
/// **The protocol** (what a judge is written against):
/// - loom runs `/bin/sh -c PROGRAM` in its own working directory, with its environment, once for
///   each batch of answers to score (command_scores), and waits for it to exit.
/// - On the program's stdin: one JSON object per line, one line per answer, then end of input:
///
///       {"prompt": "What is 2+3?", "messages": [{"role": "user", "content": "What is 2+3?"}],
///        "completion": "5", "answer": "5"}
///
///   (one line each in reality). `prompt` is the text of the last user turn; `messages` is the
///   whole prompt conversation (a system turn first if there is one, then user and assistant
///   turns, ending with the user's); `completion` is the model's sampled answer; `answer` is the
///   reference answer when the data has one, else "". Strings are UTF-8 (bytes of a sampled
///   answer that are not valid UTF-8 become U+FFFD). More keys may be added later: ignore unknown ones.
/// - On its stdout: one number per line, the score of each answer, in the order of the input,
///   and nothing else (send debugging output to stderr). Spaces around a number and a blank
///   last line are fine; "1", "0.5", "-2e-3" are numbers; NaN and infinities are not accepted.
/// - It must exit with status 0 within the time limit (60 s by default). Anything else (a
///   non-zero status, a crash, a time-out, too few or too many scores, a line that is not a
///   number) stops loom with an error that says which, quoting the end of the judge's stderr.
///
/// A judge that gives 1 to an answer equal to the reference and 0 otherwise, in Python:
///
///     import sys, json
///     for line in sys.stdin:
///         s = json.loads(line); print(1.0 if s["completion"].strip() == s["answer"].strip() else 0.0)
///
/// The judge may read all its input before it writes (as above, it need not flush): loom writes
/// stdin and reads stdout at the same time, so neither side can block the other.

#include <charconv>
#include <cmath>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "loom/align/chat.hpp"
#include "loom/core/error.hpp"
#include "loom/io/json.hpp"
#include "loom/io/process.hpp"
#include "loom/tokenizer/utf8.hpp"

namespace loom::align {

/// One sampled answer for a judge: the prompt conversation (ending with a user turn), the model's answer, and the reference answer when the data has one ("" otherwise).
struct JudgeSample {
  Conversation prompt;     ///< the conversation the model answered (ends with a user turn)
  std::string completion;  ///< the model's sampled answer
  std::string answer;      ///< the reference answer, "" when the data has none
};

/// The JSON line a judge reads for `s`: {"prompt": LAST_USER_TEXT, "messages": [{"role":..,"content":..}...], "completion": ..., "answer": ...}.
/// No newline at the end; invalid UTF-8 in any text becomes U+FFFD; "prompt" is "" when no turn is the user's.
inline std::string judge_line(const JudgeSample& s) {
  using tokenizer::to_valid_utf8;
  std::string last_user;
  for (auto it = s.prompt.messages.rbegin(); it != s.prompt.messages.rend(); ++it)
    if (it->role == "user") {
      last_user = it->content;
      break;
    }
  io::Json messages = io::Json::array();
  for (const Message& m : s.prompt.messages) {
    io::Json mj = io::Json::object();
    mj.set("role", to_valid_utf8(m.role));
    mj.set("content", to_valid_utf8(m.content));
    messages.push_back(std::move(mj));
  }
  io::Json j = io::Json::object();
  j.set("prompt", to_valid_utf8(last_user));
  j.set("messages", std::move(messages));
  j.set("completion", to_valid_utf8(s.completion));
  j.set("answer", to_valid_utf8(s.answer));
  return j.dump();
}

namespace detail {

/// `text` without the spaces, tabs and carriage returns around it.
inline std::string_view trim_blanks(std::string_view text) {
  const char* blanks = " \t\r\v\f";
  size_t b = text.find_first_not_of(blanks);
  if (b == std::string_view::npos) return {};
  size_t e = text.find_last_not_of(blanks);
  return text.substr(b, e - b + 1);
}

/// At most the last `n` lines of `text` (trailing blank lines dropped).
inline std::string last_lines(std::string_view text, size_t n) {
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r' || text.back() == ' ')) text.remove_suffix(1);
  size_t start = text.size();
  for (size_t found = 0; start > 0; --start)
    if (text[start - 1] == '\n' && ++found == n) break;
  return std::string(text.substr(start));
}

/// `text` cut to at most `max` bytes, with "..." when it was cut (for quoting a bad line).
inline std::string shorten(std::string_view text, size_t max = 80) {
  if (text.size() <= max) return std::string(text);
  return std::string(text.substr(0, max)) + "...";
}

/// ": its stderr ends with:\n..." with the last lines of `err`, or "" when it wrote nothing there.
inline std::string stderr_tail(const std::string& err) {
  std::string tail = last_lines(err, 5);
  if (tail.empty()) return " (its stderr is empty)";
  return "; its stderr ends with:\n" + tail;
}

}  // namespace detail

/// Scores from an external program: every sample's judge_line on its stdin (one per line), one number per line expected on its stdout, in order.
/// Throws io_error (start failure, time-out, crash, non-zero exit status) or value_error (what it
/// printed is not one finite number per sample); every message starts "reward command 'CMD': ".
/// No samples: returns {} without running the program.
inline std::vector<double> command_scores(const std::string& command, const std::vector<JudgeSample>& samples,
                                          double timeout_s = 60) {
  using loom::detail::concat;
  if (samples.empty()) return {};
  const std::string who = concat("reward command '", command, "': ");
  std::string input;
  for (const JudgeSample& s : samples) {
    input += judge_line(s);
    input += '\n';
  }

  io::ProcessResult r;
  try {
    r = io::run_process(command, input, timeout_s);
  } catch (const io_error& e) {
    // run_process says "command 'CMD' did ..." or "command 'CMD': ..."; name the command once.
    std::string_view what = e.what();
    const std::string own = concat("command '", command, "'");
    if (what.substr(0, own.size()) == own) {
      what.remove_prefix(own.size());
      if (what.substr(0, 1) == ":") what.remove_prefix(1);
      if (what.substr(0, 1) == " ") what.remove_prefix(1);
    }
    throw io_error(who + std::string(what));
  }

  if (r.signal != 0) {
    const char* name = ::strsignal(r.signal);
    throw io_error(concat(who, "crashed (signal ", r.signal, ": ", name ? name : "unknown signal", ")",
                          detail::stderr_tail(r.err)));
  }
  LOOM_CHECK(r.exit_code == 0, io_error, who, "exited with status ", r.exit_code, detail::stderr_tail(r.err));

  // One number per line; blank lines at the end are allowed.
  std::vector<std::string_view> lines;
  std::string_view out = r.out;
  for (size_t pos = 0; pos < out.size();) {
    size_t nl = out.find('\n', pos);
    if (nl == std::string_view::npos) nl = out.size();
    lines.push_back(detail::trim_blanks(out.substr(pos, nl - pos)));
    pos = nl + 1;
  }
  while (!lines.empty() && lines.back().empty()) lines.pop_back();

  std::vector<double> scores;
  scores.reserve(lines.size());
  for (size_t i = 0; i < lines.size(); ++i) {
    std::string_view t = lines[i];
    if (t.size() > 1 && t[0] == '+' && t[1] != '-') t.remove_prefix(1);  // from_chars takes no '+'
    double v = 0;
    auto res = std::from_chars(t.data(), t.data() + t.size(), v);
    LOOM_CHECK(!t.empty() && res.ec == std::errc() && res.ptr == t.data() + t.size(), value_error, who, "line ",
               i + 1, " is '", detail::shorten(lines[i]), "', not a number (print one score per line on stdout, "
               "and anything else on stderr)");
    LOOM_CHECK(std::isfinite(v), value_error, who, "line ", i + 1, " is '", detail::shorten(lines[i]),
               "', not a finite number");
    scores.push_back(v);
  }
  LOOM_CHECK(scores.size() == samples.size(), value_error, who, "printed ", scores.size(), " scores for ",
             samples.size(), " samples (one number per line is expected, in the order of the input)");
  return scores;
}

}  // namespace loom::align
