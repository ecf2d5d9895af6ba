#pragma once
/// @file chat.hpp
/// Conversations for supervised fine-tuning: reading them from JSONL, and the chat template that
/// turns one into token ids plus a loss mask.
///
/// **Input.** One conversation per line of a JSONL file, in either of the two layouts that TRL's
/// SFTTrainer reads ("conversational" and "prompt-completion" datasets):
///
///     {"messages": [{"role": "system", "content": "..."}, {"role": "user", "content": "..."},
///                   {"role": "assistant", "content": "..."}]}
///     {"prompt": "2+3=", "completion": "5"}            (= one user turn and one assistant turn)
///
/// Roles are "system" (optional, first only), then "user" and "assistant" alternating, starting
/// with "user" and ending with "assistant". Other members of a line are ignored (datasets often
/// carry ids or metadata). Blank lines are skipped.
///
/// **The template** is ChatML-like (as nanochat and TRL's chat templates do it): every turn is
/// framed by special tokens, which ordinary text can never produce because message text is
/// encoded with encode_ordinary (a user who types "<|end|>" gets the seven bytes, not the token):
///
///     <|endoftext|> <|system|> ...system... <|end|> <|user|> ...user... <|end|>
///                   <|assistant|> ...answer... <|end|> <|user|> ... <|end|> <|assistant|> ... <|end|>
///
/// `<|endoftext|>` opens every conversation (the BOS token, GPT-2's document separator). The
/// loss mask is 1 exactly on the assistant's content tokens and on the assistant's `<|end|>`
/// (so the model learns to stop), and 0 on everything it is given: BOS, system and user turns,
/// and the `<|assistant|>` role tokens themselves (TRL's `assistant_only_loss`, nanochat's
/// `render_conversation` mask). Every assistant turn of a multi-turn conversation is trained on.
///
/// **Token ids.** ChatTemplate::add_chat_tokens gives the tokenizer the five special tokens at
/// the next free ids above its vocabulary, in the order `<|endoftext|>`, `<|system|>`, `<|user|>`,
/// `<|assistant|>`, `<|end|>`; a token that is already there keeps its id. For the 256-byte
/// tokenizer that is 256..260; for GPT-2 (which has `<|endoftext|>` = 50256) 50256..50260. A
/// model fine-tuned with the template needs a vocabulary of at least tokenizer().vocab_size().

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "loom/core/error.hpp"
#include "loom/io/file.hpp"
#include "loom/io/json.hpp"
#include "loom/tokenizer/bpe.hpp"

namespace loom::align {

/// One turn of a conversation: who speaks ("system", "user" or "assistant") and what they say.
struct Message {
  std::string role;     ///< "system", "user" or "assistant"
  std::string content;  ///< the text of the turn (UTF-8)
};

/// A conversation: its turns in order.
struct Conversation {
  std::vector<Message> messages;  ///< the turns, system first (if any), then user/assistant alternating
};

namespace detail {

/// What is wrong with the conversation's turns for training ("" when nothing is): an unknown
/// role, roles out of order, no assistant turn, an empty assistant turn, or a last turn that is
/// not the assistant's.
inline std::string conversation_problem(const Conversation& c) {
  using loom::detail::concat;
  const auto& m = c.messages;
  bool any_assistant = false;
  for (size_t i = 0; i < m.size(); ++i) {
    const std::string& r = m[i].role;
    if (r != "system" && r != "user" && r != "assistant")
      return concat("message ", i, " has the unknown role '", r, "' (expected system, user or assistant)");
    if (r == "assistant") {
      any_assistant = true;
      if (m[i].content.empty()) return concat("message ", i, " is an empty assistant turn (nothing to learn)");
    }
  }
  if (!any_assistant) return "the conversation has no assistant turn (nothing to learn)";
  size_t first = (!m.empty() && m[0].role == "system") ? 1 : 0;
  for (size_t i = first; i < m.size(); ++i) {
    const char* want = (i - first) % 2 == 0 ? "user" : "assistant";
    if (m[i].role != want)
      return concat("roles out of order: message ", i, " is '", m[i].role, "', expected '", want,
                    "' (system only first, then user and assistant alternating, starting with user)");
  }
  if (m.back().role != "assistant")
    return concat("roles out of order: the last turn is '", m.back().role, "', expected 'assistant'");
  return {};
}

/// The JSON object on one JSONL line; throws io_error "WHERE: ..." when it is not JSON or not an object.
inline io::Json parse_json_object(std::string_view line, const std::string& where) {
  io::Json j;
  try {
    j = io::parse_json(line);
  } catch (const io::json_error& e) {
    throw io_error(loom::detail::concat(where, ": not JSON: ", e.what()));
  }
  LOOM_CHECK(j.is_object(), io_error, where, ": expected a JSON object, got ", j.type_phrase());
  return j;
}

}  // namespace detail

/// Parses one JSONL line into a conversation; throws io_error "WHERE: what is wrong" (where is
/// usually "FILE:LINE") for text that is not a JSON object, neither layout, a message that is
/// not {"role": string, "content": string}, or turns that fail the order rules above.
inline Conversation parse_conversation(std::string_view line, const std::string& where) {
  const io::Json j = detail::parse_json_object(line, where);
  Conversation c;
  const io::Json* messages = j.find("messages");
  const io::Json* prompt = j.find("prompt");
  const io::Json* completion = j.find("completion");
  if (messages) {
    LOOM_CHECK(!prompt && !completion, io_error, where,
               ": has both \"messages\" and \"prompt\"/\"completion\"; use one layout per line");
    LOOM_CHECK(messages->is_array(), io_error, where, ": \"messages\" must be an array, got ", messages->type_phrase());
    for (size_t i = 0; i < messages->size(); ++i) {
      const io::Json& mj = messages->at(i);
      LOOM_CHECK(mj.is_object(), io_error, where, ": message ", i, " must be an object, got ", mj.type_phrase());
      const io::Json* role = mj.find("role");
      const io::Json* content = mj.find("content");
      LOOM_CHECK(role && role->is_string(), io_error, where, ": message ", i, " needs a string \"role\"");
      LOOM_CHECK(content, io_error, where, ": message ", i, " has no \"content\"");
      LOOM_CHECK(content->is_string(), io_error, where, ": message ", i, " (", role->as_string(),
                 "): \"content\" must be a string, got ", content->type_phrase());
      c.messages.push_back({role->as_string(), content->as_string()});
    }
  } else {
    LOOM_CHECK(prompt && completion, io_error, where,
               ": expected {\"messages\": [...]} or {\"prompt\": ..., \"completion\": ...}");
    LOOM_CHECK(prompt->is_string(), io_error, where, ": \"prompt\" must be a string, got ", prompt->type_phrase());
    LOOM_CHECK(completion->is_string(), io_error, where, ": \"completion\" must be a string, got ",
               completion->type_phrase());
    c.messages.push_back({"user", prompt->as_string()});
    c.messages.push_back({"assistant", completion->as_string()});
  }
  const std::string problem = detail::conversation_problem(c);
  LOOM_CHECK(problem.empty(), io_error, where, ": ", problem);
  return c;
}

/// Every non-blank line of a JSONL file parsed by parse(line, "FILE:LINE") (CRLF accepted);
/// throws io_error "FILE: no WHAT (an empty file?)" when the file holds none. Conversations,
/// preference pairs and prompts are read through it.
template <class T, class Parse>
std::vector<T> read_jsonl(const std::string& path, const char* what, Parse parse) {
  const std::string text = io::read_file(path);
  std::vector<T> out;
  size_t pos = 0, line_no = 0;
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    if (nl == std::string::npos) nl = text.size();
    std::string_view line(text.data() + pos, nl - pos);
    ++line_no;
    pos = nl + 1;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.find_first_not_of(" \t") == std::string_view::npos) continue;
    out.push_back(parse(line, loom::detail::concat(path, ":", line_no)));
  }
  LOOM_CHECK(!out.empty(), io_error, path, ": no ", what, " (an empty file?)");
  return out;
}

/// Reads a JSONL file of conversations (blank lines skipped; CRLF accepted); throws io_error
/// "FILE:LINE: ..." for a bad line and "FILE: ..." for a file with no conversation.
inline std::vector<Conversation> read_conversations(const std::string& path) {
  return read_jsonl<Conversation>(path, "conversations", parse_conversation);
}

/// A conversation rendered for training: token ids, the loss mask (1 = the model is trained to
/// produce this token) and how many prompt tokens a length limit removed.
struct Rendered {
  std::vector<uint32_t> ids;              ///< the token ids
  std::vector<uint8_t> mask;              ///< 1 on assistant content and the assistant's <|end|>, else 0
  int64_t truncated_prompt_tokens = 0;    ///< prompt tokens dropped to fit max_len
};

/// The chat template above, over a byte-level BPE tokenizer extended with the chat tokens.
class ChatTemplate {
 public:
  static constexpr const char* bos_text = "<|endoftext|>";      ///< opens every conversation (BOS)
  static constexpr const char* system_text = "<|system|>";      ///< opens a system turn
  static constexpr const char* user_text = "<|user|>";          ///< opens a user turn
  static constexpr const char* assistant_text = "<|assistant|>";///< opens an assistant turn
  static constexpr const char* end_text = "<|end|>";            ///< closes every turn

  /// `tok` with the five chat tokens added at the next free ids (those already present keep
  /// theirs); the ordinary vocabulary and merges are unchanged.
  static BpeTokenizer add_chat_tokens(const BpeTokenizer& tok) {
    std::vector<tokenizer::SpecialToken> specials = tok.special_tokens();
    auto next = static_cast<uint32_t>(tok.vocab_size());
    bool added = false;
    for (const char* text : {bos_text, system_text, user_text, assistant_text, end_text}) {
      if (tok.special_id(text)) continue;
      specials.push_back({text, next++});
      added = true;
    }
    if (!added) return tok;
    return BpeTokenizer(tok.pattern(), tok.vocab(), tok.merges(), specials);
  }

  /// A template over `tok`, to which the chat tokens are added (add_chat_tokens) if missing.
  explicit ChatTemplate(const BpeTokenizer& tok) : tok_(add_chat_tokens(tok)) {
    bos_ = *tok_.special_id(bos_text);
    system_ = *tok_.special_id(system_text);
    user_ = *tok_.special_id(user_text);
    assistant_ = *tok_.special_id(assistant_text);
    end_ = *tok_.special_id(end_text);
  }

  /// The tokenizer with the chat tokens (use it to decode, and for the model's vocabulary size).
  const BpeTokenizer& tokenizer() const { return tok_; }
  /// The id of <|endoftext|>, which opens every conversation.
  uint32_t bos_id() const { return bos_; }
  /// The id of <|end|>, which closes every turn.
  uint32_t end_id() const { return end_; }
  /// The id of <|assistant|>.
  uint32_t assistant_id() const { return assistant_; }
  /// The id of the token that opens a turn of `role`; throws value_error for an unknown role.
  uint32_t role_id(const std::string& role) const {
    if (role == "system") return system_;
    if (role == "user") return user_;
    if (role == "assistant") return assistant_;
    throw value_error(loom::detail::concat("ChatTemplate: unknown role '", role, "' (expected system, user or assistant)"));
  }
  /// Whether generation should stop at `id`: <|end|> (the end of the assistant's turn) or
  /// <|endoftext|> (a model that skipped <|end|>).
  bool is_end(uint32_t id) const { return id == end_ || id == bos_; }

  /// Ids and loss mask of a conversation that ends with an assistant turn (see the file comment).
  /// With max_len > 0 and a longer rendering, tokens are dropped from the start of the prompt
  /// side (after the BOS, before the final assistant turn: older turns go first), so the final
  /// answer is kept whole; their number is in truncated_prompt_tokens. Throws value_error when
  /// BOS + <|assistant|> + the final answer + <|end|> alone is longer than max_len, and for a
  /// conversation that breaks the role rules.
  Rendered render(const Conversation& c, int64_t max_len = 0) const {
    const std::string problem = detail::conversation_problem(c);
    LOOM_CHECK(problem.empty(), value_error, "ChatTemplate::render: ", problem);
    LOOM_CHECK(max_len >= 0, value_error, "ChatTemplate::render: max_len must be >= 0, got ", max_len);
    Rendered r;
    r.ids.push_back(bos_);
    r.mask.push_back(0);
    const size_t last = c.messages.size() - 1;  // the final assistant turn
    size_t prompt_end = 1;                      // where the final turn's <|assistant|> sits
    for (size_t i = 0; i < c.messages.size(); ++i) {
      const Message& m = c.messages[i];
      if (i == last) prompt_end = r.ids.size();
      const uint8_t train = m.role == "assistant" ? 1 : 0;
      r.ids.push_back(role_id(m.role));
      r.mask.push_back(0);
      const std::vector<uint32_t> body = tok_.encode_ordinary(m.content);
      r.ids.insert(r.ids.end(), body.begin(), body.end());
      r.mask.insert(r.mask.end(), body.size(), train);
      r.ids.push_back(end_);
      r.mask.push_back(train);
    }
    const int64_t n = static_cast<int64_t>(r.ids.size());
    if (max_len > 0 && n > max_len) {
      const int64_t answer = n - static_cast<int64_t>(prompt_end);  // <|assistant|> ... <|end|>
      LOOM_CHECK(1 + answer <= max_len, value_error, "ChatTemplate::render: the final assistant answer takes ",
                 answer, " tokens (with its <|assistant|> and <|end|>), which with the BOS do not fit max_len = ",
                 max_len, "; raise the length limit or drop this example (answers are never cut)");
      const int64_t drop = n - max_len;
      r.ids.erase(r.ids.begin() + 1, r.ids.begin() + 1 + drop);
      r.mask.erase(r.mask.begin() + 1, r.mask.begin() + 1 + drop);
      r.truncated_prompt_tokens = drop;
    }
    return r;
  }

  /// Ids that ask the model for the next assistant turn: BOS, every message framed as in
  /// render(), then <|assistant|>. The conversation must end with a user turn (it is a training
  /// conversation without its last assistant answer). With max_len > 0, the oldest tokens after
  /// the BOS are dropped to fit (max_len must be at least 2).
  std::vector<uint32_t> render_prompt(const Conversation& without_last_assistant, int64_t max_len = 0) const {
    const auto& m = without_last_assistant.messages;
    LOOM_CHECK(!m.empty() && m.back().role == "user", value_error,
               "ChatTemplate::render_prompt: the conversation must end with a user turn, it ends with ",
               m.empty() ? std::string("nothing") : "'" + m.back().role + "'");
    Conversation probe = without_last_assistant;
    probe.messages.push_back({"assistant", "x"});  // reuse the role checks of a full conversation
    const std::string problem = detail::conversation_problem(probe);
    LOOM_CHECK(problem.empty(), value_error, "ChatTemplate::render_prompt: ", problem);
    std::vector<uint32_t> ids{bos_};
    for (const Message& msg : m) {
      ids.push_back(role_id(msg.role));
      const std::vector<uint32_t> body = tok_.encode_ordinary(msg.content);
      ids.insert(ids.end(), body.begin(), body.end());
      ids.push_back(end_);
    }
    ids.push_back(assistant_);
    LOOM_CHECK(max_len == 0 || max_len >= 2, value_error, "ChatTemplate::render_prompt: max_len must be 0 or >= 2, got ",
               max_len);
    if (max_len > 0 && static_cast<int64_t>(ids.size()) > max_len)
      ids.erase(ids.begin() + 1, ids.begin() + 1 + (static_cast<int64_t>(ids.size()) - max_len));
    return ids;
  }

 private:
  BpeTokenizer tok_;
  uint32_t bos_ = 0, system_ = 0, user_ = 0, assistant_ = 0, end_ = 0;
};

}  // namespace loom::align
