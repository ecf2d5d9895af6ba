#pragma once
/// @file format_hf.hpp
/// Hugging Face tokenizer.json for byte-level BPE models (GPT-2 and cl100k style): the model's
/// vocab and merges, added_tokens as special tokens, and the pre-tokenizer recognised by its
/// regex.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "loom/core/error.hpp"
#include "loom/io/file.hpp"
#include "loom/io/json.hpp"
#include "loom/tokenizer/bpe.hpp"
#include "loom/tokenizer/byte_unicode.hpp"
#include "loom/tokenizer/format_common.hpp"
#include "loom/tokenizer/pretokenizer.hpp"

namespace loom::tokenizer {

namespace detail {
/// Collects every "Regex" string in a pre_tokenizer tree.
inline void find_regexes(const io::Json& v, std::vector<std::string>& out) {
  if (v.is_object()) {
    for (const auto& kv : v.as_object()) {
      if (kv.first == "Regex" && kv.second.is_string()) out.push_back(kv.second.as_string());
      find_regexes(kv.second, out);
    }
  } else if (v.is_array()) {
    for (const io::Json& e : v.as_array()) find_regexes(e, out);
  }
}
/// Whether any object in the tree has "type": "ByteLevel" with use_regex not false.
inline bool byte_level_uses_regex(const io::Json& v) {
  if (v.is_object()) {
    const io::Json* t = v.find("type");
    if (t && t->is_string() && t->as_string() == "ByteLevel") {
      const io::Json* u = v.find("use_regex");
      if (!u || !u->is_bool() || u->as_bool()) return true;
    }
    for (const auto& kv : v.as_object())
      if (byte_level_uses_regex(kv.second)) return true;
  } else if (v.is_array()) {
    for (const io::Json& e : v.as_array())
      if (byte_level_uses_regex(e)) return true;
  }
  return false;
}
}  // namespace detail

/// Parses a Hugging Face tokenizer.json for a byte-level BPE model held in memory. Merges may be
/// "a b" strings or ["a", "b"] arrays; added_tokens become special tokens. The pre-tokenizer is
/// recognised as GPT-2 (ByteLevel with use_regex), cl100k (a Split with that regex) or none.
inline BpeTokenizer parse_hf_json(std::string_view content, std::string_view name) {
  using io::Json;
  const detail::JsonDocument doc(content, name);
  const Json& root = doc.root();
  LOOM_CHECK(root.is_object(), io_error, name, ": expected a JSON object");
  const Json* model = root.find("model");
  LOOM_CHECK(model && model->is_object(), io_error, name, ": no \"model\" object");
  const Json* type = model->find("type");
  LOOM_CHECK(!type || (type->is_string() && type->as_string() == "BPE"), io_error, doc.where(*model),
             ": model type is not BPE");
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix", "dropout"}) {
    const Json* v = model->find(key);
    LOOM_CHECK(!v || v->is_null() || (v->is_string() && v->as_string().empty()), io_error, doc.where(*v),
               ": unsupported model option \"", key, "\"");
  }
  const Json* ignore = model->find("ignore_merges");
  LOOM_CHECK(!ignore || !ignore->is_bool() || !ignore->as_bool(), io_error, doc.where(*ignore),
             ": \"ignore_merges\": true is not supported");
  const Json* vocab_json = model->find("vocab");
  const Json* merges_json = model->find("merges");
  LOOM_CHECK(vocab_json && vocab_json->is_object(), io_error, name, ": no model.vocab object");
  LOOM_CHECK(merges_json && merges_json->is_array(), io_error, name, ": no model.merges array");
  LOOM_CHECK(vocab_json->size() <= max_vocab_size, io_error, name, ": too many tokens");
  const std::size_t limit = 2 * vocab_json->size() + 256;

  // Added tokens first: they are special, even when the vocabulary lists them too.
  std::vector<SpecialToken> specials;
  if (const Json* added = root.find("added_tokens")) {
    LOOM_CHECK(added->is_array(), io_error, doc.where(*added), ": added_tokens is not an array");
    for (const Json& a : added->as_array()) {
      const Json* id = a.is_object() ? a.find("id") : nullptr;
      const Json* content_v = a.is_object() ? a.find("content") : nullptr;
      LOOM_CHECK(id && detail::is_token_id(*id, limit) && content_v && content_v->is_string() &&
                     !content_v->as_string().empty(),
                 io_error, doc.where(a), ": an added token needs an integer \"id\" and a non-empty \"content\"");
      specials.push_back({content_v->as_string(), static_cast<std::uint32_t>(id->as_int())});
    }
  }
  auto is_special_id = [&](std::uint32_t id) {
    for (const SpecialToken& s : specials)
      if (s.id == id) return true;
    return false;
  };
  std::unordered_map<std::string, std::uint32_t> encoder;
  std::vector<std::string> vocab;
  for (const auto& [key, v] : vocab_json->as_object()) {
    LOOM_CHECK(detail::is_token_id(v, limit), io_error, doc.where(v), ": token id must be an integer in [0, ", limit,
               ")");
    const auto id = static_cast<std::uint32_t>(v.as_int());
    LOOM_CHECK(encoder.emplace(key, id).second, io_error, doc.where(v), ": duplicate token '", key.substr(0, 64), "'");
    if (is_special_id(id)) continue;
    auto bytes = byte_level_to_bytes(key);
    LOOM_CHECK(bytes && !bytes->empty(), io_error, doc.where(v), ": token '", key.substr(0, 64),
               "' is not in the byte-level alphabet (only byte-level BPE models are supported)");
    if (vocab.size() <= id) vocab.resize(id + 1);
    LOOM_CHECK(vocab[id].empty(), io_error, doc.where(v), ": id ", id, " is used twice");
    vocab[id] = std::move(*bytes);
  }
  LOOM_CHECK(merges_json->size() <= max_vocab_size, io_error, name, ": too many merges");
  std::vector<MergeRule> merges;
  for (const Json& m : merges_json->as_array()) {
    std::string left, right;
    if (m.is_string()) {
      const std::string& s = m.as_string();
      std::size_t sp = s.find(' ');
      LOOM_CHECK(sp != std::string::npos && s.find(' ', sp + 1) == std::string::npos, io_error, doc.where(m),
                 ": merge '", s.substr(0, 64), "' is not 'left right'");
      left = s.substr(0, sp);
      right = s.substr(sp + 1);
    } else {
      LOOM_CHECK(m.is_array() && m.size() == 2 && m.at(0).is_string() && m.at(1).is_string(), io_error, doc.where(m),
                 ": a merge must be \"left right\" or [\"left\", \"right\"]");
      left = m.at(0).as_string();
      right = m.at(1).as_string();
    }
    auto l = encoder.find(left), r = encoder.find(right), t = encoder.find(left + right);
    LOOM_CHECK(l != encoder.end() && r != encoder.end(), io_error, doc.where(m), ": merge '",
               (left + " " + right).substr(0, 64), "' uses a token that is not in the vocabulary");
    LOOM_CHECK(t != encoder.end(), io_error, doc.where(m), ": the result of merge '",
               (left + " " + right).substr(0, 64), "' is not in the vocabulary");
    merges.push_back({l->second, r->second, t->second, static_cast<std::uint32_t>(merges.size())});
  }
  Pattern pattern = Pattern::none;
  if (const Json* pre = root.find("pre_tokenizer")) {
    std::vector<std::string> regexes;
    detail::find_regexes(*pre, regexes);
    const std::string gpt2_orig = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
    const std::string cl100k_hf = R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
    for (const std::string& re : regexes) {
      if (re == pattern_regex(Pattern::cl100k) || re == cl100k_hf) pattern = Pattern::cl100k;
      else if (re == pattern_regex(Pattern::gpt2) || re == gpt2_orig) pattern = Pattern::gpt2;
      else throw io_error(loom::detail::concat(doc.where(*pre), ": unsupported pre-tokenizer regex '", re.substr(0, 80), "'"));
    }
    if (regexes.empty() && detail::byte_level_uses_regex(*pre)) pattern = Pattern::gpt2;
  }
  return detail::build(name, pattern, std::move(vocab), std::move(merges), std::move(specials));
}

/// Loads a Hugging Face tokenizer.json (byte-level BPE).
inline BpeTokenizer load_hf_json(const std::string& path) {
  return parse_hf_json(io::read_file(path, max_file_bytes), path);
}

/// The tokenizer as a Hugging Face tokenizer.json document.
inline std::string to_hf_json(const BpeTokenizer& tok) {
  detail::require_unique_tokens(tok, "to_hf_json");
  std::string o = "{\n  \"version\": \"1.0\",\n  \"truncation\": null,\n  \"padding\": null,\n  \"added_tokens\": [";
  bool first = true;
  for (const SpecialToken& s : tok.special_tokens()) {
    o += first ? "\n    " : ",\n    ";
    first = false;
    o += "{\"id\": " + std::to_string(s.id) + ", \"content\": ";
    io::json_write_string(o, s.text);
    o += ", \"single_word\": false, \"lstrip\": false, \"rstrip\": false, \"normalized\": false, \"special\": true}";
  }
  o += "\n  ],\n  \"normalizer\": null,\n  \"pre_tokenizer\": ";
  if (tok.pattern() == Pattern::gpt2) {
    o += "{\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"trim_offsets\": true, \"use_regex\": true}";
  } else if (tok.pattern() == Pattern::cl100k) {
    o += "{\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Split\", \"pattern\": {\"Regex\": ";
    io::json_write_string(o, pattern_regex(Pattern::cl100k));
    o += "}, \"behavior\": \"Isolated\", \"invert\": false}, {\"type\": \"ByteLevel\", \"add_prefix_space\": false, "
         "\"trim_offsets\": true, \"use_regex\": false}]}";
  } else {
    o += "{\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"trim_offsets\": true, \"use_regex\": false}";
  }
  o += ",\n  \"post_processor\": null,\n  \"decoder\": {\"type\": \"ByteLevel\", \"add_prefix_space\": true, "
       "\"trim_offsets\": true, \"use_regex\": true},\n  \"model\": {\n    \"type\": \"BPE\",\n    \"dropout\": null,\n"
       "    \"unk_token\": null,\n    \"continuing_subword_prefix\": null,\n    \"end_of_word_suffix\": null,\n"
       "    \"fuse_unk\": false,\n    \"byte_fallback\": false,\n    \"vocab\": {";
  first = true;
  for (std::size_t id = 0; id < tok.vocab().size(); ++id) {
    if (tok.vocab()[id].empty()) continue;
    o += first ? "\n      " : ",\n      ";
    first = false;
    io::json_write_string(o, bytes_to_byte_level(tok.vocab()[id]));
    o += ": " + std::to_string(id);
  }
  o += "\n    },\n    \"merges\": [";
  first = true;
  for (const MergeRule& m : tok.merges()) {
    o += first ? "\n      " : ",\n      ";
    first = false;
    io::json_write_string(o, bytes_to_byte_level(tok.vocab()[m.left]) + " " + bytes_to_byte_level(tok.vocab()[m.right]));
  }
  o += "\n    ]\n  }\n}\n";
  return o;
}

/// Writes the tokenizer as a Hugging Face tokenizer.json.
inline void save_hf_json(const BpeTokenizer& tok, const std::string& path) {
  io::write_file_atomic(path, to_hf_json(tok));
}

}  // namespace loom::tokenizer
