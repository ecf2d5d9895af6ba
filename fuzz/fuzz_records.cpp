// Fuzzes the parsers of the JSONL lines that loom-finetune, loom-rl and loom-eval read: a
// conversation, a preference pair, a prompt, a multiple-choice item, a minimal pair and a bias
// pair. Each line must parse or give loom::io_error naming where it is; a conversation or a
// preference pair that parses must render through the chat template (value_error only for one
// whose answer does not fit max_len), with one loss-mask entry per token.
#include <loom/align/chat.hpp>
#include <loom/align/grpo.hpp>
#include <loom/align/preference.hpp>
#include <loom/align/scoring.hpp>
#include <loom/tokenizer/io.hpp>

#include "fuzz_common.hpp"

namespace {

const loom::align::ChatTemplate& chat() {
  static const loom::align::ChatTemplate t(loom::tokenizer::load_spec("bytes"));
  return t;
}

// Renders c (ending with an assistant turn) whole and cut to 64 tokens.
void render(const loom::align::Conversation& c) {
  const loom::align::Rendered whole = chat().render(c);
  LOOM_FUZZ_ASSERT(whole.ids.size() == whole.mask.size() && whole.truncated_prompt_tokens == 0);
  try {
    const loom::align::Rendered cut = chat().render(c, 64);
    LOOM_FUZZ_ASSERT(cut.ids.size() <= 64 && cut.ids.size() == cut.mask.size());
    LOOM_FUZZ_ASSERT(cut.ids.size() + size_t(cut.truncated_prompt_tokens) == whole.ids.size());
  } catch (const loom::value_error&) {  // the final answer alone is longer than 64 tokens
    LOOM_FUZZ_ASSERT(whole.ids.size() > 64);
  }
}

// Calls parse(line, where), allowing only an io_error that starts with `where`.
template <class Parse>
void parse_or_refuse(Parse parse, std::string_view line) {
  try {
    parse(line, std::string("f.jsonl:7"));
  } catch (const loom::io_error& e) {
    LOOM_FUZZ_ASSERT(std::string(e.what()).rfind("f.jsonl:7: ", 0) == 0);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const unsigned char* data, size_t size) {
  namespace align = loom::align;
  const std::string_view line(reinterpret_cast<const char*>(data), size);
  parse_or_refuse([](auto l, const std::string& w) { render(align::parse_conversation(l, w)); }, line);
  parse_or_refuse(
      [](auto l, const std::string& w) {
        const align::PreferencePair p = align::parse_preference(l, w);
        LOOM_FUZZ_ASSERT(p.chosen != p.rejected);
        for (const std::string& answer : {p.chosen, p.rejected}) {
          align::Conversation c = p.prompt;
          c.messages.push_back({"assistant", answer});
          render(c);
        }
      },
      line);
  parse_or_refuse([](auto l, const std::string& w) { align::parse_prompt(l, w); }, line);
  parse_or_refuse(
      [](auto l, const std::string& w) {
        const align::ChoiceItem item = align::parse_choice_item(l, w);
        LOOM_FUZZ_ASSERT(item.endings.size() >= 2 && item.label >= 0 && item.label < int64_t(item.endings.size()));
      },
      line);
  parse_or_refuse([](auto l, const std::string& w) { align::parse_minimal_pair(l, w); }, line);
  parse_or_refuse([](auto l, const std::string& w) { align::parse_bias_pair(l, w); }, line);
  return 0;
}
