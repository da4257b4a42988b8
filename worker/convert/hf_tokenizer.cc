#include "worker/convert/hf_tokenizer.h"

#include <algorithm>
#include <fstream>
#include <sstream>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "worker/convert/spm_vocab.h"

namespace llorch {
namespace {

using json = nlohmann::json;

// No real tokenizer comes near this many ids (the largest, Gemma's, has
// 262,144); an id or vocab_size beyond it is corrupt, and would make us
// allocate for every id up to it.
constexpr int64_t kMaxTokenIds = int64_t{1} << 20;

// A token id as the files give it: an integer (not a float, which would not
// convert), else -1.
int64_t IdValue(const json& value) {
  if (value.is_number_unsigned()) {
    const uint64_t id = value.get<uint64_t>();
    return id <= static_cast<uint64_t>(kMaxTokenIds) ? static_cast<int64_t>(id) : kMaxTokenIds;
  }
  if (value.is_number_integer()) return std::max<int64_t>(value.get<int64_t>(), -1);
  return -1;
}

// Hugging Face's spellings of the split regexes of the pre-tokenizers we
// implement (see worker/tokenizer/bpe_tokenizer.cc for llama.cpp's).
constexpr char kLlama3Split[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+"
    "[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
constexpr char kQwen2Split[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+"
    "[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

absl::StatusOr<json> ReadJsonIfPresent(const std::string& path) {
  return ReadJsonFile(path, /*missing_ok=*/true);
}

// The model's chat template, as transformers finds it: chat_template.jinja,
// else tokenizer_config.json's `chat_template` (a string, or a list of named
// templates of which "default" is the one used). "" when there is none.
absl::StatusOr<std::string> HfChatTemplate(const std::string& dir, const json& tokenizer_config) {
  std::ifstream file(dir + "/chat_template.jinja");
  if (file) {
    std::stringstream text;
    text << file.rdbuf();
    return text.str();
  }
  if (!tokenizer_config.is_object()) return std::string();
  const json& value = tokenizer_config.value("chat_template", json());
  if (value.is_string()) return value.get<std::string>();
  if (value.is_array()) {
    for (const json& named : value) {
      if (named.is_object() && named.value("name", "") == "default" &&
          named.value("template", json()).is_string()) {
        return named["template"].get<std::string>();
      }
    }
  }
  if (value.is_null()) return std::string();
  return absl::InvalidArgumentError(absl::StrCat(
      dir, "/tokenizer_config.json: chat_template is neither a string nor a list with a "
      "\"default\" template"));
}

// The pre-tokenizer's llama.cpp name, from its tokenizer.json description.
absl::StatusOr<std::string> PreTokenizerName(const json& pre) {
  auto is_byte_level = [](const json& p, bool use_regex) {
    return p.is_object() && p.value("type", "") == "ByteLevel" &&
           !p.value("add_prefix_space", false) && p.value("use_regex", true) == use_regex;
  };
  if (is_byte_level(pre, true)) return std::string("gpt-2");
  if (pre.is_object() && pre.value("type", "") == "Sequence" && pre.contains("pretokenizers")) {
    const json& steps = pre["pretokenizers"];
    if (!steps.is_array()) return absl::InvalidArgumentError("pre-tokenizer Sequence without a list");
    if (steps.size() == 2 && steps[0].value("type", "") == "Split" &&
        is_byte_level(steps[1], false) && steps[0].contains("pattern")) {
      const std::string regex = steps[0]["pattern"].value("Regex", "");
      if (regex == kLlama3Split) return std::string("llama-bpe");
      if (regex == kQwen2Split) return std::string("qwen2");
    }
    if (steps.size() == 2 && steps[0].value("type", "") == "Digits" &&
        steps[0].value("individual_digits", false) && is_byte_level(steps[1], true)) {
      return std::string("smollm");
    }
  }
  return absl::InvalidArgumentError(
      absl::StrCat("tokenizer.json: pre-tokenizer not supported: ", pre.dump().substr(0, 300)));
}

// Whether a SentencePiece-style tokenizer.json prepends "▁" to the text:
// normalizer Prepend("▁") + Replace(" ", "▁") (Llama 2 / Mistral), or a
// Metaspace pre-tokenizer with prepend_scheme first/always.
absl::StatusOr<bool> SentencePieceSpacePrefix(const json& normalizer, const json& pre) {
  const std::string kSpace = "\xe2\x96\x81";
  std::vector<json> steps;
  if (normalizer.is_object() && normalizer.value("type", "") == "Sequence") {
    for (const json& step : normalizer.value("normalizers", json::array())) steps.push_back(step);
  } else if (!normalizer.is_null()) {
    steps.push_back(normalizer);
  }
  bool prepend = false, replace = false;
  for (const json& step : steps) {
    const std::string type = step.value("type", "");
    if (type == "Prepend" && step.value("prepend", "") == kSpace) {
      prepend = true;
    } else if (type == "Replace" && step.value("content", "") == kSpace &&
               step.value("pattern", json::object()).value("String", "") == " ") {
      replace = true;
    } else {
      return absl::InvalidArgumentError(absl::StrCat("normalizer step not supported: ",
                                                     step.dump().substr(0, 200)));
    }
  }
  if (pre.is_object() && pre.value("type", "") == "Metaspace" &&
      pre.value("replacement", "") == kSpace) {
    return pre.value("prepend_scheme", std::string("always")) != "never";
  }
  if (!pre.is_null()) {
    return absl::InvalidArgumentError(
        absl::StrCat("pre-tokenizer not supported: ", pre.dump().substr(0, 200)));
  }
  if (!replace) return absl::InvalidArgumentError("SentencePiece-style BPE without Replace(\" \")");
  return prepend;
}

// tokenizer.json must describe a BPE model with a vocabulary and merges.
absl::Status CheckBpeModel(const std::string& where, json& tokenizer) {
  if (!tokenizer.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": not a JSON object"));
  }
  const json& model = tokenizer["model"];
  if (!model.is_object() || model.value("type", "") != "BPE" || !model.contains("vocab") ||
      !model["vocab"].is_object() || !model.contains("merges")) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": only BPE models are supported"));
  }
  if (!model["merges"].is_array()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": model.merges is not a list"));
  }
  return absl::OkStatus();
}

// How the text is prepared before BPE.
struct PreTokenization {
  bool sentencepiece_style = false;
  bool add_space_prefix = false;  // SentencePiece-style only
  std::string normalization;      // byte-level only: "NFC" or ""
  std::string pre_name;           // byte-level only: llama.cpp's pre-tokenizer name
};

// `tokenizer` is not const: operator[] on a missing key must insert null
// rather than assert.
absl::StatusOr<PreTokenization> ReadPreTokenization(const std::string& where, json& tokenizer) {
  PreTokenization result;
  // Byte-level BPE (GPT-2 style), or SentencePiece-style BPE with byte
  // fallback (Llama 2, Mistral): pieces with U+2581 for spaces, a "▁"
  // prepended to the text, "<0xNN>" tokens for bytes.
  result.sentencepiece_style = tokenizer["model"].value("byte_fallback", false);
  const json& normalizer = tokenizer["normalizer"];
  if (result.sentencepiece_style) {
    absl::StatusOr<bool> prefix = SentencePieceSpacePrefix(normalizer, tokenizer["pre_tokenizer"]);
    if (!prefix.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": ", prefix.status().message()));
    }
    result.add_space_prefix = *prefix;
  } else {
    if (normalizer.is_object() && normalizer.value("type", "") == "NFC") {
      result.normalization = "NFC";
    } else if (!normalizer.is_null()) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, ": normalizer not supported: ", normalizer.dump().substr(0, 200)));
    }
    absl::StatusOr<std::string> pre = PreTokenizerName(tokenizer["pre_tokenizer"]);
    if (!pre.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": ", pre.status().message()));
    }
    result.pre_name = *pre;
  }
  return result;
}

absl::Status CheckAddedTokens(const std::string& where, const json& added_tokens) {
  if (!added_tokens.is_array()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": added_tokens is not a list"));
  }
  for (const json& added : added_tokens) {
    if (!added.is_object()) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": an added token is not an object"));
    }
  }
  return absl::OkStatus();
}

// The number of token ids: `vocab_size` (the embedding's rows), or when that
// is <= 0, one past the largest id the files name.
absl::StatusOr<int64_t> CountTokenIds(const std::string& where, const json& model,
                                      const json& added_tokens, int64_t vocab_size) {
  if (vocab_size > kMaxTokenIds) {
    return absl::InvalidArgumentError(absl::StrCat(
        where, ": vocab_size ", vocab_size, " is implausible (more than ", kMaxTokenIds, ")"));
  }
  if (vocab_size <= 0) {  // tokenizer only: as many ids as the files name
    for (const auto& [text, id] : model["vocab"].items()) {
      vocab_size = std::max<int64_t>(vocab_size, IdValue(id) + 1);
    }
    for (const json& added : added_tokens) {
      vocab_size = std::max<int64_t>(vocab_size, IdValue(added.value("id", json())) + 1);
    }
    if (vocab_size > kMaxTokenIds) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, ": token ids up to ", kMaxTokenIds, " and beyond are implausible"));
    }
  }
  return vocab_size;
}

// Tokens by id, with their GGUF token types and the reverse map.
struct TokenTable {
  std::vector<std::string> tokens;
  std::vector<int64_t> types;  // 0 while an id is unnamed
  std::map<std::string, int64_t> ids;
  std::string unk_text;  // the model's unk_token, "" when none
};

absl::Status PlaceToken(const std::string& where, const std::string& text, const json& id_value,
                        int64_t type, TokenTable* table) {
  const int64_t vocab_size = static_cast<int64_t>(table->tokens.size());
  if (!id_value.is_number_integer()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": token ", text, " has the id ",
                                                   id_value.dump().substr(0, 40),
                                                   ", not an integer"));
  }
  const int64_t id = IdValue(id_value);
  if (id < 0 || id >= vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": token id ", id, " (", text,
                                                   ") is outside the embedding's ", vocab_size,
                                                   " rows"));
  }
  table->tokens[id] = text;
  table->types[id] = type;
  table->ids[text] = id;
  return absl::OkStatus();
}

// Tokens by id: the model's vocabulary, then added tokens; ids the files
// leave unnamed (padding up to the embedding's rows) become unused.
absl::StatusOr<TokenTable> BuildTokenTable(const std::string& where, const json& model,
                                           const json& added_tokens, bool sentencepiece_style,
                                           int64_t vocab_size) {
  TokenTable table;
  table.tokens = std::vector<std::string>(vocab_size);
  table.types = std::vector<int64_t>(vocab_size, 0);
  table.unk_text = model.value("unk_token", json()).is_string()
                       ? model["unk_token"].get<std::string>() : "";
  for (const auto& [text, id] : model["vocab"].items()) {
    int64_t type = /*normal=*/1;
    if (sentencepiece_style && text.size() == 6 && text.rfind("<0x", 0) == 0 && text[5] == '>') {
      type = /*byte=*/6;
    } else if (!table.unk_text.empty() && text == table.unk_text) {
      type = /*unknown=*/2;
    }
    if (absl::Status s = PlaceToken(where, text, id, type, &table); !s.ok()) return s;
  }
  for (const json& added : added_tokens) {
    const int64_t type = added.value("special", false) ? /*control=*/3 : /*user-defined=*/4;
    if (absl::Status s =
            PlaceToken(where, added.value("content", ""), added.value("id", json()), type, &table);
        !s.ok()) {
      return s;
    }
  }
  for (int64_t id = 0; id < vocab_size; ++id) {
    if (table.types[id] == 0) {
      table.tokens[id] = absl::StrCat("[PAD", id, "]"), table.types[id] = /*unused=*/5;
    }
  }
  return table;
}

// Merges as "a b" strings; tokenizer.json gives them so or as ["a", "b"].
absl::StatusOr<std::vector<std::string>> ReadMerges(const std::string& where, const json& model) {
  std::vector<std::string> merges;
  for (const json& merge : model["merges"]) {
    if (merge.is_string()) {
      merges.push_back(merge.get<std::string>());
    } else if (merge.is_array() && merge.size() == 2 && merge[0].is_string() &&
               merge[1].is_string()) {
      merges.push_back(absl::StrCat(merge[0].get<std::string>(), " ", merge[1].get<std::string>()));
    } else {
      return absl::InvalidArgumentError(absl::StrCat(where, ": malformed merge"));
    }
  }
  return merges;
}

// Special ids: config.json and generation_config.json give ids (EOS may
// be a list: the first is the EOS, all end generation); tokenizer_config
// gives texts and add_bos_token.
struct SpecialIds {
  int64_t bos = -1;
  int64_t eos = -1;
  std::vector<int64_t> eos_list;
  bool add_bos = false;
  bool add_eos = false;
};

// BOS and EOS ids from config.json, then generation_config.json (the later wins).
absl::Status ReadConfigIds(const std::string& dir, const json& config, const json& generation,
                           SpecialIds* special) {
  for (const json* source : {&config, &generation}) {
    if (!source->is_object()) continue;
    if (source->contains("bos_token_id") && (*source)["bos_token_id"].is_number_integer()) {
      special->bos = (*source)["bos_token_id"].get<int64_t>();
    }
    const json& e = source->value("eos_token_id", json());
    if (e.is_number_integer()) special->eos_list = {e.get<int64_t>()};
    if (e.is_array() && !e.empty()) {
      special->eos_list.clear();
      for (const json& id : e) {
        if (!id.is_number_integer()) {
          return absl::InvalidArgumentError(
              absl::StrCat(dir, ": eos_token_id lists ", id.dump().substr(0, 40), ", not an id"));
        }
        special->eos_list.push_back(id.get<int64_t>());
      }
    }
  }
  return absl::OkStatus();
}

// tokenizer_config.json: BOS/EOS by text where the configs gave no id, and
// the add_bos_token / add_eos_token flags.
void ReadTokenizerConfigIds(const json& tokenizer_config, const std::map<std::string, int64_t>& ids,
                            SpecialIds* special) {
  if (!tokenizer_config.is_object()) return;
  auto token_id = [&](const char* key) -> int64_t {
    const json& t = tokenizer_config.value(key, json());
    const std::string text = t.is_string() ? t.get<std::string>()
                             : t.is_object() ? t.value("content", "") : "";
    auto it = ids.find(text);
    return it == ids.end() ? -1 : it->second;
  };
  if (special->bos < 0) special->bos = token_id("bos_token");
  if (special->eos_list.empty() && token_id("eos_token") >= 0) {
    special->eos_list = {token_id("eos_token")};
  }
  special->add_bos = tokenizer_config.value("add_bos_token", false);
  special->add_eos = tokenizer_config.value("add_eos_token", false);
}

// SentencePiece merges by the score of the merged piece: a piece made by
// merge rank r scores -r, so that lower ranks merge first, as the BPE
// model's merge order says.
GgufValue MergeRankScores(const std::vector<std::string>& merges,
                          const std::map<std::string, int64_t>& ids, int64_t vocab_size) {
  GgufValue scores;
  scores.type = GgufValueType::kArray;
  scores.array_type = GgufValueType::kFloat32;
  std::vector<double> score(vocab_size, 0.0);
  std::vector<bool> merged(vocab_size, false);
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const size_t space = merges[rank].find(' ');
    if (space == std::string::npos) continue;
    const std::string piece = merges[rank].substr(0, space) + merges[rank].substr(space + 1);
    auto it = ids.find(piece);
    if (it == ids.end() || merged[it->second]) continue;
    merged[it->second] = true;
    score[it->second] = -static_cast<double>(rank);
  }
  for (double v : score) {
    GgufValue element;
    element.type = GgufValueType::kFloat32;
    element.f = v;
    scores.array.push_back(element);
  }
  return scores;
}

// tokenizer.ggml.model and what that model needs, then tokens and types.
void AddVocabularyKeys(const PreTokenization& pre, TokenTable table,
                       std::vector<std::string> merges,
                       std::map<std::string, GgufValue>* metadata) {
  std::map<std::string, GgufValue>& m = *metadata;
  if (pre.sentencepiece_style) {
    const int64_t vocab_size = static_cast<int64_t>(table.tokens.size());
    m["tokenizer.ggml.model"] = GgufString("llama");
    m["tokenizer.ggml.scores"] = MergeRankScores(merges, table.ids, vocab_size);
    m["tokenizer.ggml.add_space_prefix"] =
        GgufInt(GgufValueType::kBool, pre.add_space_prefix ? 1 : 0);
    if (auto it = table.ids.find(table.unk_text);
        !table.unk_text.empty() && it != table.ids.end()) {
      m["tokenizer.ggml.unknown_token_id"] = GgufInt(GgufValueType::kUint32, it->second);
    }
  } else {
    m["tokenizer.ggml.model"] = GgufString("gpt2");
    m["tokenizer.ggml.pre"] = GgufString(pre.pre_name);
    m["tokenizer.ggml.merges"] = GgufStringArray(std::move(merges));
  }
  m["tokenizer.ggml.tokens"] = GgufStringArray(std::move(table.tokens));
  GgufValue type_array;
  type_array.type = GgufValueType::kArray;
  type_array.array_type = GgufValueType::kInt32;
  for (int64_t t : table.types) type_array.array.push_back(GgufInt(GgufValueType::kInt32, t));
  m["tokenizer.ggml.token_type"] = std::move(type_array);
}

void AddSpecialIdKeys(const SpecialIds& special, std::map<std::string, GgufValue>* metadata) {
  std::map<std::string, GgufValue>& m = *metadata;
  if (special.bos >= 0) {
    m["tokenizer.ggml.bos_token_id"] = GgufInt(GgufValueType::kUint32, special.bos);
  }
  if (special.eos >= 0) {
    m["tokenizer.ggml.eos_token_id"] = GgufInt(GgufValueType::kUint32, special.eos);
  }
  if (special.eos_list.size() > 1) {
    // llama.cpp has one EOS key; the second ends generation as end-of-turn
    // in converted files, and in memory every listed id does.
    m["tokenizer.ggml.eot_token_id"] = GgufInt(GgufValueType::kUint32, special.eos_list[1]);
    GgufValue all;
    all.type = GgufValueType::kArray;
    all.array_type = GgufValueType::kInt32;
    for (int64_t id : special.eos_list) all.array.push_back(GgufInt(GgufValueType::kInt32, id));
    m["llorch.tokenizer.eos_token_ids"] = std::move(all);
  }
}

absl::Status AddMetadata(const std::string& dir, int64_t vocab_size,
                         std::map<std::string, GgufValue>* metadata) {
  absl::StatusOr<json> tokenizer = ReadJsonIfPresent(dir + "/tokenizer.json");
  if (!tokenizer.ok()) return tokenizer.status();
  if (tokenizer->is_null()) {
    // No tokenizer.json: a SentencePiece model, if there is one.
    const std::string spm = dir + "/tokenizer.model";
    if (std::ifstream(spm).good()) return AddSentencePieceMetadata(spm, vocab_size, metadata);
    return absl::OkStatus();
  }
  const std::string where = dir + "/tokenizer.json";
  if (absl::Status s = CheckBpeModel(where, *tokenizer); !s.ok()) return s;
  const json& model = (*tokenizer)["model"];
  absl::StatusOr<PreTokenization> pre = ReadPreTokenization(where, *tokenizer);
  if (!pre.ok()) return pre.status();
  const json& added_tokens = tokenizer->value("added_tokens", json::array());
  if (absl::Status s = CheckAddedTokens(where, added_tokens); !s.ok()) return s;
  absl::StatusOr<int64_t> n_ids = CountTokenIds(where, model, added_tokens, vocab_size);
  if (!n_ids.ok()) return n_ids.status();
  absl::StatusOr<TokenTable> table =
      BuildTokenTable(where, model, added_tokens, pre->sentencepiece_style, *n_ids);
  if (!table.ok()) return table.status();
  absl::StatusOr<std::vector<std::string>> merges = ReadMerges(where, model);
  if (!merges.ok()) return merges.status();

  absl::StatusOr<json> config = ReadJsonIfPresent(dir + "/config.json");
  absl::StatusOr<json> generation = ReadJsonIfPresent(dir + "/generation_config.json");
  absl::StatusOr<json> tokenizer_config = ReadJsonIfPresent(dir + "/tokenizer_config.json");
  for (const auto* s : {&config, &generation, &tokenizer_config}) {
    if (!s->ok()) return s->status();
  }
  SpecialIds special;
  if (absl::Status s = ReadConfigIds(dir, *config, *generation, &special); !s.ok()) return s;
  ReadTokenizerConfigIds(*tokenizer_config, table->ids, &special);
  if (!special.eos_list.empty()) special.eos = special.eos_list[0];

  std::map<std::string, GgufValue>& m = *metadata;
  AddVocabularyKeys(*pre, *std::move(table), *std::move(merges), &m);
  AddSpecialIdKeys(special, &m);
  if (absl::StatusOr<std::string> chat_template = HfChatTemplate(dir, *tokenizer_config);
      !chat_template.ok()) {
    return chat_template.status();
  } else if (!chat_template->empty()) {
    // llama.cpp's key, so `llorch convert` keeps the template in the GGUF.
    m["tokenizer.chat_template"] = GgufString(*chat_template);
  }
  // In memory only (ConvertToGguf drops llorch.* keys): this vocabulary
  // follows Hugging Face's rules, not llama.cpp's.
  m["llorch.tokenizer.source"] = GgufString("huggingface");
  if (!pre->normalization.empty()) {
    m["llorch.tokenizer.normalizer"] = GgufString(pre->normalization);
  }
  GgufValue add_bos_value = GgufInt(GgufValueType::kBool, special.add_bos ? 1 : 0);
  m["tokenizer.ggml.add_bos_token"] = add_bos_value;
  m["tokenizer.ggml.add_eos_token"] = GgufInt(GgufValueType::kBool, special.add_eos ? 1 : 0);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<json> ReadJsonFile(const std::string& path, bool missing_ok) {
  std::ifstream in(path);
  if (!in) {
    if (missing_ok) return json();  // null: absent
    return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  }
  std::stringstream text;
  text << in.rdbuf();
  try {
    return json::parse(text.str());
  } catch (const json::parse_error& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": not valid JSON (error at byte ", e.byte, ")"));
  } catch (const json::exception& e) {  // e.g. a number past double's range
    return absl::InvalidArgumentError(absl::StrCat(path, ": not valid JSON (", e.what(), ")"));
  }
}

absl::Status AddHfTokenizerMetadata(const std::string& dir, int64_t vocab_size,
                                    std::map<std::string, GgufValue>* metadata) {
  // The files are untrusted JSON: a value of an unexpected type (a number
  // where a name belongs, a list where an object does) makes nlohmann throw
  // from the accessors above; it is a malformed file, not a crash.
  std::map<std::string, GgufValue> added;
  try {
    if (absl::Status s = AddMetadata(dir, vocab_size, &added); !s.ok()) return s;
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(dir, ": tokenizer files hold an unexpected value: ", e.what()));
  }
  for (auto& [key, value] : added) (*metadata)[key] = std::move(value);
  return absl::OkStatus();
}

}  // namespace llorch
