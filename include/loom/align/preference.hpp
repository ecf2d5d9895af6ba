#pragma once
/// @file preference.hpp
/// Preference data: for a prompt, an answer people (or a program) prefer and one they do not.
/// The reward model and DPO read it. One JSON object per line, in any of TRL's layouts:
///
///   {"prompt": "What is 2 + 3?", "chosen": "5", "rejected": "6"}
///   {"prompt": [{"role": "user", "content": "What is 2 + 3?"}],
///    "chosen": [{"role": "assistant", "content": "5"}], "rejected": [{"role": "assistant", "content": "6"}]}
///   {"chosen": [...whole conversation...], "rejected": [...whole conversation...]}
///
/// In the last layout the prompt is the chosen conversation without its final (assistant) turn,
/// and the rejected conversation must start with the same turns. Other fields ("kind", "source",
/// ...) are ignored. loom-chat's /good, /bad and /better write the second layout.

#include <string>
#include <utility>
#include <vector>

#include "loom/align/chat.hpp"
#include "loom/align/sft.hpp"

namespace loom::align {

/// One preference: the prompt (a conversation ending with a user turn) and two answers to it.
struct PreferencePair {
  Conversation prompt;   ///< the turns before the answer, ending with a user turn
  std::string chosen;    ///< the preferred answer
  std::string rejected;  ///< the other answer
};

namespace detail {

// The messages of a JSON array of {"role", "content"} objects; io_error "WHERE: FIELD ..." otherwise.
inline std::vector<Message> message_list(const io::Json& j, const std::string& where, const char* field) {
  LOOM_CHECK(j.is_array(), io_error, where, ": \"", field, "\" must be a string or a list of messages, got ",
             j.type_phrase());
  std::vector<Message> out;
  for (size_t i = 0; i < j.size(); ++i) {
    const io::Json& m = j.at(i);
    const io::Json* role = m.is_object() ? m.find("role") : nullptr;
    const io::Json* content = m.is_object() ? m.find("content") : nullptr;
    LOOM_CHECK(role && role->is_string() && content && content->is_string(), io_error, where, ": \"", field,
               "\" message ", i, " must be {\"role\": string, \"content\": string}");
    out.push_back({role->as_string(), content->as_string()});
  }
  return out;
}

// An answer given as a string or as a one-message assistant list.
inline std::string answer_text(const io::Json& j, const std::string& where, const char* field) {
  if (j.is_string()) return j.as_string();
  const std::vector<Message> m = message_list(j, where, field);
  LOOM_CHECK(m.size() == 1 && m[0].role == "assistant", io_error, where, ": \"", field,
             "\" must hold one assistant message (or be a string), got ", m.size(), " messages",
             m.empty() ? std::string() : ", the first by '" + m[0].role + "'");
  return m[0].content;
}

}  // namespace detail

/// Parses one JSONL line of preference data (the layouts above); throws io_error "WHERE: what is
/// wrong" for a missing or mistyped field, an empty answer, a prompt that does not end with a user
/// turn, or chosen == rejected (nothing to learn from).
inline PreferencePair parse_preference(std::string_view line, const std::string& where) {
  const io::Json j = detail::parse_json_object(line, where);
  const io::Json* prompt = j.find("prompt");
  const io::Json* chosen = j.find("chosen");
  const io::Json* rejected = j.find("rejected");
  LOOM_CHECK(chosen && rejected, io_error, where, ": expected \"chosen\" and \"rejected\" (and \"prompt\", unless both "
             "are whole conversations)");
  PreferencePair p;
  if (prompt) {
    if (prompt->is_string()) {
      LOOM_CHECK(!prompt->as_string().empty(), io_error, where, ": the prompt is empty");
      p.prompt.messages.push_back({"user", prompt->as_string()});
    } else {
      p.prompt.messages = detail::message_list(*prompt, where, "prompt");
    }
    p.chosen = detail::answer_text(*chosen, where, "chosen");
    p.rejected = detail::answer_text(*rejected, where, "rejected");
  } else {  // whole conversations sharing every turn but the last
    std::vector<Message> c = detail::message_list(*chosen, where, "chosen");
    std::vector<Message> r = detail::message_list(*rejected, where, "rejected");
    LOOM_CHECK(c.size() >= 2 && c.back().role == "assistant" && r.size() == c.size() && r.back().role == "assistant",
               io_error, where, ": without \"prompt\", \"chosen\" and \"rejected\" must be conversations of equal length "
               "ending with an assistant turn");
    for (size_t i = 0; i + 1 < c.size(); ++i)
      LOOM_CHECK(c[i].role == r[i].role && c[i].content == r[i].content, io_error, where, ": chosen and rejected differ "
                 "at message ", i, ", before their last turn (they must share the prompt)");
    p.chosen = c.back().content, p.rejected = r.back().content;
    c.pop_back();
    p.prompt.messages = std::move(c);
  }
  LOOM_CHECK(!p.chosen.empty() && !p.rejected.empty(), io_error, where, ": an answer is empty");
  LOOM_CHECK(p.chosen != p.rejected, io_error, where, ": chosen and rejected are the same answer ('", p.chosen,
             "'): nothing to prefer");
  Conversation probe = p.prompt;
  probe.messages.push_back({"assistant", p.chosen});
  const std::string problem = align::detail::conversation_problem(probe);
  LOOM_CHECK(problem.empty(), io_error, where, ": the prompt does not lead to an answer: ", problem);
  return p;
}

/// Reads a JSONL file of preference pairs (blank lines skipped); throws io_error "FILE:LINE: ..."
/// for a bad line and "FILE: ..." for a file without pairs.
inline std::vector<PreferencePair> read_preferences(const std::string& path) {
  return read_jsonl<PreferencePair>(path, "preference pairs", parse_preference);
}

/// The conversation of `prompt` answered with `answer`.
inline Conversation with_answer(const Conversation& prompt, const std::string& answer) {
  Conversation c = prompt;
  c.messages.push_back({"assistant", answer});
  return c;
}

/// The pairs rendered with the template (max_len as in render_examples): examples 2i and 2i + 1
/// are pair i's chosen and rejected conversations, the answer alone carrying loss.
inline std::vector<SftExample> render_pairs(const ChatTemplate& tmpl, const std::vector<PreferencePair>& pairs,
                                            int64_t max_len) {
  std::vector<Conversation> convs;
  convs.reserve(2 * pairs.size());
  for (const PreferencePair& p : pairs) {
    convs.push_back(with_answer(p.prompt, p.chosen));
    convs.push_back(with_answer(p.prompt, p.rejected));
  }
  return render_examples(tmpl, convs, max_len);
}

}  // namespace loom::align
