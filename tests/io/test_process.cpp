// Running external programs: run_process round-trips bytes through a child in both directions
// without deadlock, reports exit statuses and signals, kills a child (and its group) that runs
// past its time limit, and survives a child that does not read its input; command_scores turns
// a judge's stdout into scores and names every way a judge can fail.
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <thread>
#include <vector>

#include <signal.h>

#include "catch.hpp"
#include "temp_dir.hpp"

#include <loom/align/command_reward.hpp>
#include <loom/io/json.hpp>
#include <loom/io/process.hpp>

using namespace loom;
using Catch::Contains;

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// True when `pid` has ended: no such process, or a zombie not yet reaped by its new parent.
bool process_gone(long pid) {
  if (::kill(pid_t(pid), 0) != 0) return true;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
  size_t close = text.rfind(") ");
  return close != std::string::npos && close + 2 < text.size() && (text[close + 2] == 'Z' || text[close + 2] == 'X');
}

align::JudgeSample sample(const std::string& question, const std::string& completion, const std::string& answer) {
  align::JudgeSample s;
  s.prompt.messages = {{"system", "Be brief."}, {"user", question}};
  s.completion = completion;
  s.answer = answer;
  return s;
}

// A judge in awk: 1 when "completion" equals "answer" (both plain strings without escapes).
const std::string exact_match_judge =
    "awk '{ c = $0; sub(/.*\"completion\":\"/, \"\", c); sub(/\".*/, \"\", c);"
    " a = $0; sub(/.*\"answer\":\"/, \"\", a); sub(/\".*/, \"\", a);"
    " print (c == a) ? 1 : 0 }'";

}  // namespace

TEST_CASE("run_process round-trips stdin to stdout through cat") {
  const std::string text = "hello\nworld\0with a zero byte\n";
  io::ProcessResult r = io::run_process("cat", std::string(text.data(), text.size()), 10);
  CHECK(r.exit_code == 0);
  CHECK(r.signal == 0);
  CHECK(r.out == text);
  CHECK(r.err.empty());
  // Empty input: stdin is closed at once.
  r = io::run_process("cat; echo done", "", 10);
  CHECK(r.out == "done\n");
}

TEST_CASE("run_process collects 10 MB of output") {
  io::ProcessResult r = io::run_process("head -c 10000000 /dev/zero", "", 30);
  CHECK(r.exit_code == 0);
  REQUIRE(r.out.size() == 10000000u);
  CHECK(r.out.find_first_not_of('\0') == std::string::npos);
}

TEST_CASE("run_process feeds 20 MB to a child that writes as it reads") {
  // cat echoes while it reads: neither side may block the other.
  std::string input(20000000, 'x');
  for (size_t i = 0; i < input.size(); i += 997) input[i] = char('a' + i % 26);
  io::ProcessResult r = io::run_process("cat", input, 30);
  CHECK(r.exit_code == 0);
  CHECK(r.out == input);
  // A child that reads everything and answers only at the end.
  r = io::run_process("wc -c", input, 30);
  CHECK(r.exit_code == 0);
  CHECK(std::stoll(r.out) == 20000000);
}

TEST_CASE("run_process captures stderr apart from stdout") {
  io::ProcessResult r = io::run_process("echo to-out; echo to-err >&2; head -c 200000 /dev/zero >&2", "", 10);
  CHECK(r.exit_code == 0);
  CHECK(r.out == "to-out\n");
  CHECK(r.err.substr(0, 7) == "to-err\n");
  CHECK(r.err.size() == 7 + 200000u);
}

TEST_CASE("run_process reports the exit status") {
  io::ProcessResult r = io::run_process("echo partial; exit 3", "", 10);
  CHECK(r.exit_code == 3);
  CHECK(r.signal == 0);
  CHECK(r.out == "partial\n");
  r = io::run_process("no-such-program-loom-test", "", 10);
  CHECK(r.exit_code == 127);  // the shell's "not found"
  CHECK_THAT(r.err, Contains("no-such-program-loom-test"));
}

TEST_CASE("run_process reports the signal that killed the child") {
  io::ProcessResult r = io::run_process("ulimit -c 0; kill -SEGV $$", "", 10);
  CHECK(r.signal == SIGSEGV);
  CHECK(r.exit_code == -1);
}

TEST_CASE("run_process stops a child that runs past its time limit") {
  auto t0 = std::chrono::steady_clock::now();
  REQUIRE_THROWS_WITH(io::run_process("sleep 10", "", 0.5),
                      Contains("command 'sleep 10' did not finish within 0.5 s; it was stopped"));
  const double took = seconds_since(t0);
  CHECK(took >= 0.45);
  CHECK(took < 2.0);  // the sleep was killed, not waited for
}

TEST_CASE("run_process kills the whole process group on a time-out") {
  loom_test::TempDir dir;
  const std::string pidfile = dir / "pid";
  // The shell starts a background sleep that keeps stdout open, records its pid and waits.
  auto t0 = std::chrono::steady_clock::now();
  REQUIRE_THROWS_WITH(io::run_process("sleep 30 & echo $! > '" + pidfile + "'; wait", "", 0.5),
                      Contains("did not finish within 0.5 s"));
  CHECK(seconds_since(t0) < 2.0);
  std::ifstream in(pidfile);
  long pid = 0;
  REQUIRE(in >> pid);
  REQUIRE(pid > 0);
  // The grandchild got SIGKILL too (it may stay a zombie until its new parent reaps it).
  bool gone = false;
  for (int i = 0; i < 100 && !gone; ++i) {
    gone = process_gone(pid);
    if (!gone) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  CHECK(gone);
  if (!gone) ::kill(pid_t(pid), SIGKILL);  // do not leave it behind when the check fails
}

TEST_CASE("run_process waits for a background child that holds stdout open") {
  // The shell exits at once, but its child keeps the pipe open until it ends.
  io::ProcessResult r = io::run_process("(sleep 0.3; echo late) & echo early", "", 10);
  CHECK(r.exit_code == 0);
  CHECK(r.out == "early\nlate\n");
}

TEST_CASE("run_process survives a child that exits without reading its input") {
  const std::string big(8 << 20, 'y');  // far more than a pipe holds
  io::ProcessResult r = io::run_process("echo ignoring", big, 10);
  CHECK(r.exit_code == 0);
  CHECK(r.out == "ignoring\n");
  // A child that reads a little and then closes its stdin.
  r = io::run_process("head -c 5; exec 0<&-; echo; echo closed", big, 10);
  CHECK(r.exit_code == 0);
  CHECK(r.out == "yyyyy\nclosed\n");
  // This process is still here, and a SIGPIPE is not left pending.
  sigset_t pending;
  sigemptyset(&pending);
  ::sigpending(&pending);
  CHECK(sigismember(&pending, SIGPIPE) == 0);
}

TEST_CASE("run_process stops a child that writes more than 64 MiB") {
  REQUIRE_THROWS_WITH(io::run_process("head -c 70000000 /dev/zero", "", 30),
                      Contains("wrote more than 64 MiB to stdout; it was stopped"));
  REQUIRE_THROWS_WITH(io::run_process("head -c 70000000 /dev/zero >&2", "", 30),
                      Contains("wrote more than 64 MiB to stderr"));
}

TEST_CASE("run_process rejects a time limit that is not positive") {
  REQUIRE_THROWS_AS(io::run_process("true", "", 0), value_error);
  REQUIRE_THROWS_AS(io::run_process("true", "", -1), value_error);
}

TEST_CASE("run_process closes every pipe on every path") {
  const auto open_fds = [] {
    size_t n = 0;
    for (const auto& e : std::filesystem::directory_iterator("/proc/self/fd")) n += !e.path().empty();
    return n;
  };
  if (!std::filesystem::exists("/proc/self/fd")) return;  // not Linux: nothing to count
  const size_t before = open_fds();
  for (int i = 0; i < 20; ++i) io::run_process("cat", "x", 10);
  CHECK_THROWS(io::run_process("sleep 5", "", 0.05));
  CHECK_THROWS(io::run_process("head -c 70000000 /dev/zero", "", 30));
  io::run_process("exit 1", std::string(1 << 20, 'z'), 10);
  CHECK(open_fds() == before);
}

TEST_CASE("judge_line parses back with every field") {
  align::JudgeSample s = sample("What is \"2+3\"?\n", "5\t\xff", "5");
  s.prompt.messages.push_back({"assistant", "Earlier answer"});
  s.prompt.messages.push_back({"user", "And 2+4?"});
  const std::string line = align::judge_line(s);
  CHECK(line.find('\n') == std::string::npos);
  io::Json j = io::parse_json(line);
  REQUIRE(j.is_object());
  CHECK(j.at("prompt").as_string() == "And 2+4?");  // the last user turn
  REQUIRE(j.at("messages").size() == 4);
  CHECK(j.at("messages").at(0).at("role").as_string() == "system");
  CHECK(j.at("messages").at(0).at("content").as_string() == "Be brief.");
  CHECK(j.at("messages").at(1).at("role").as_string() == "user");
  CHECK(j.at("messages").at(1).at("content").as_string() == "What is \"2+3\"?\n");
  CHECK(j.at("messages").at(2).at("role").as_string() == "assistant");
  CHECK(j.at("messages").at(3).at("content").as_string() == "And 2+4?");
  CHECK(j.at("completion").as_string() == "5\t\xEF\xBF\xBD");  // invalid UTF-8 became U+FFFD
  CHECK(j.at("answer").as_string() == "5");
  // Keys in the documented order.
  CHECK(j.as_object()[0].first == "prompt");
  CHECK(j.as_object()[3].first == "answer");
}

TEST_CASE("command_scores scores with an exact-match judge") {
  std::vector<align::JudgeSample> samples = {sample("2+3?", "5", "5"), sample("2+4?", "7", "6"),
                                             sample("1+1?", "2", "2"), sample("3+3?", "", "6")};
  std::vector<double> scores = align::command_scores(exact_match_judge, samples);
  CHECK(scores == std::vector<double>{1, 0, 1, 0});
  CHECK(align::command_scores(exact_match_judge, {}).empty());
}

TEST_CASE("command_scores reads spaces and a blank last line") {
  std::vector<align::JudgeSample> samples(3, sample("q", "a", "a"));
  std::vector<double> scores =
      align::command_scores("cat > /dev/null; printf ' 0.5 \\n-2e-3\\r\\n+1\\n\\n'", samples);
  REQUIRE(scores.size() == 3);
  CHECK(scores[0] == 0.5);
  CHECK(scores[1] == -0.002);
  CHECK(scores[2] == 1.0);
}

TEST_CASE("command_scores names each way a judge can fail") {
  std::vector<align::JudgeSample> four(4, sample("q", "a", "a"));
  SECTION("a non-zero exit status, with the end of its stderr") {
    REQUIRE_THROWS_WITH(
        align::command_scores("cat > /dev/null; for i in 1 2 3 4 5 6 7; do echo err$i >&2; done; exit 2", four),
        Contains("reward command 'cat > /dev/null; for i in") && Contains("': exited with status 2") &&
            Contains("err3\nerr4\nerr5\nerr6\nerr7") && !Contains("err2"));
  }
  SECTION("a crash") {
    REQUIRE_THROWS_WITH(align::command_scores("ulimit -c 0; kill -SEGV $$", four),
                        Contains("reward command 'ulimit -c 0; kill -SEGV $$': crashed (signal " +
                                 std::to_string(SIGSEGV) + ": " + ::strsignal(SIGSEGV) + ")"));
  }
  SECTION("a time-out") {
    auto t0 = std::chrono::steady_clock::now();
    REQUIRE_THROWS_WITH(align::command_scores("sleep 10", four, 0.5),
                        Contains("reward command 'sleep 10': did not finish within 0.5 s; it was stopped"));
    CHECK(seconds_since(t0) < 2.0);
  }
  SECTION("too few or too many scores") {
    REQUIRE_THROWS_WITH(align::command_scores("printf '1\\n0\\n1\\n'", four),
                        Contains("reward command 'printf '1\\n0\\n1\\n'': printed 3 scores for 4 samples"));
    REQUIRE_THROWS_WITH(align::command_scores("printf '1\\n0\\n1\\n1\\n1\\n'", four),
                        Contains("printed 5 scores for 4 samples"));
    REQUIRE_THROWS_WITH(align::command_scores("true", four), Contains("printed 0 scores for 4 samples"));
  }
  SECTION("a line that is not a number") {
    REQUIRE_THROWS_WITH(align::command_scores("printf '1\\nabc\\n1\\n1\\n'", four),
                        Contains("reward command") && Contains("line 2 is 'abc', not a number"));
    REQUIRE_THROWS_WITH(align::command_scores("printf '1\\n\\n1\\n1\\n'", four),
                        Contains("line 2 is '', not a number"));
    REQUIRE_THROWS_WITH(align::command_scores("printf '1\\n2 3\\n1\\n1\\n'", four),
                        Contains("line 2 is '2 3', not a number"));
  }
  SECTION("NaN or infinite") {
    REQUIRE_THROWS_WITH(align::command_scores("printf '1\\n1\\nnan\\n1\\n'", four),
                        Contains("line 3 is 'nan', not a finite number"));
    REQUIRE_THROWS_WITH(align::command_scores("printf '1\\n-inf\\n1\\n1\\n'", four),
                        Contains("line 2 is '-inf', not a finite number"));
  }
  SECTION("a program that does not exist") {
    REQUIRE_THROWS_WITH(align::command_scores("no-such-judge-loom-test", four),
                        Contains("exited with status 127") && Contains("no-such-judge-loom-test"));
  }
}
