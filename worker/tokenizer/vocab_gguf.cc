// VocabFromGguf: reads tokenizer.ggml.* with llama.cpp's defaults and its
// text-based detection of end-of-generation tokens (llama-vocab.cpp, load()).
#include <algorithm>
#include <cctype>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "worker/gguf/gguf.h"
#include "worker/tokenizer/tokenizer.h"
#include "worker/tokenizer/tokenizer_internal.h"

namespace llorch {
namespace {

constexpr char kModelKey[] = "tokenizer.ggml.model";
constexpr char kPreKey[] = "tokenizer.ggml.pre";
constexpr char kTokensKey[] = "tokenizer.ggml.tokens";
constexpr char kScoresKey[] = "tokenizer.ggml.scores";
constexpr char kTokenTypeKey[] = "tokenizer.ggml.token_type";
constexpr char kMergesKey[] = "tokenizer.ggml.merges";


// Optional key: absent leaves *value alone; present with a bad type is an error.
absl::Status ReadOptionalBool(const GgufFile& gguf, const char* key, bool* value) {
  auto result = gguf.GetBool(key);
  if (result.ok()) {
    *value = *result;
    return absl::OkStatus();
  }
  return absl::IsNotFound(result.status()) ? absl::OkStatus() : result.status();
}

// Optional token id: out-of-range ids keep the default, as llama.cpp does.
absl::Status ReadOptionalId(const GgufFile& gguf, const std::string& key, size_t n_tokens,
                            int32_t* id) {
  auto result = gguf.GetInt(key);
  if (!result.ok()) return absl::IsNotFound(result.status()) ? absl::OkStatus() : result.status();
  if (*result >= 0 && static_cast<uint64_t>(*result) < n_tokens) {
    *id = static_cast<int32_t>(*result);
  }
  return absl::OkStatus();
}

int32_t FindFirstText(const tokenizer_internal::TokenIndex& index,
                      std::initializer_list<const char*> texts) {
  for (const char* text : texts) {
    auto it = index.find(text);
    if (it != index.end()) return it->second;
  }
  return -1;
}

// Fill-in-the-middle ids: VocabData does not keep them, but they end
// generation when the text-based detection runs.
struct FimIds {
  int32_t pad = -1;
  int32_t rep = -1;
  int32_t sep = -1;
};

// tokenizer.ggml.model (required) and tokenizer.ggml.pre (optional).
absl::Status ReadModelNames(const GgufFile& gguf, VocabData* vocab) {
  auto model = gguf.GetString(kModelKey);
  if (!model.ok()) return model.status();
  vocab->model = *model;
  auto pre = gguf.GetString(kPreKey);
  if (pre.ok()) {
    vocab->pre = *pre;
  } else if (!absl::IsNotFound(pre.status())) {
    return pre.status();
  }
  return absl::OkStatus();
}

// Defaults per tokenizer model, as llama.cpp; gpt2 also needs its merges.
absl::Status ApplyModelDefaults(const GgufFile& gguf, VocabData* vocab) {
  const std::string& path = gguf.path();
  if (vocab->model == "llama") {
    vocab->bos_id = 1;
    vocab->eos_id = 2;
    vocab->unk_id = 0;
    vocab->add_bos = true;
    vocab->add_eos = false;
    vocab->add_space_prefix = true;
  } else if (vocab->model == "gpt2") {
    auto info = tokenizer_internal::LookupPreTokenizer(vocab->pre);
    if (!info.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": metadata key \"", kPreKey, "\": ", info.status().message()));
    }
    vocab->bos_id = 11;
    vocab->eos_id = 11;
    vocab->add_bos = info->default_add_bos;
    vocab->add_eos = false;
    vocab->add_space_prefix = false;
    auto merges = gguf.GetStringArray(kMergesKey);
    if (!merges.ok()) return merges.status();
    vocab->merges = *std::move(merges);
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": metadata key \"", kModelKey, "\" is \"", vocab->model,
        "\"; supported: \"llama\" (SentencePiece BPE), \"gpt2\" (byte-level BPE)"));
  }
  return absl::OkStatus();
}

absl::Status ReadTokens(const GgufFile& gguf, VocabData* vocab) {
  auto tokens = gguf.GetStringArray(kTokensKey);
  if (!tokens.ok()) return tokens.status();
  vocab->tokens = *std::move(tokens);
  if (vocab->tokens.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(gguf.path(), ": metadata key \"", kTokensKey, "\" is empty"));
  }
  return absl::OkStatus();
}

// Optional; entries past the vocabulary are ignored, too few is an error.
absl::Status ReadScores(const GgufFile& gguf, VocabData* vocab) {
  const size_t n = vocab->tokens.size();
  auto scores = gguf.GetFloatArray(kScoresKey);
  if (scores.ok()) {
    if (scores->size() < n) {
      return absl::InvalidArgumentError(absl::StrCat(gguf.path(), ": metadata key \"", kScoresKey,
                                                     "\" has ", scores->size(), " entries for ",
                                                     n, " tokens"));
    }
    vocab->scores.assign(scores->begin(), scores->begin() + n);
  } else if (!absl::IsNotFound(scores.status())) {
    return scores.status();
  }
  return absl::OkStatus();
}

// Optional (absent: all normal); types outside 1..6 read as undefined.
absl::Status ReadTokenTypes(const GgufFile& gguf, VocabData* vocab) {
  const size_t n = vocab->tokens.size();
  auto types = gguf.GetIntArray(kTokenTypeKey);
  if (types.ok()) {
    if (types->size() < n) {
      return absl::InvalidArgumentError(absl::StrCat(gguf.path(), ": metadata key \"",
                                                     kTokenTypeKey, "\" has ", types->size(),
                                                     " entries for ", n, " tokens"));
    }
    vocab->token_types.resize(n);
    for (size_t i = 0; i < n; ++i) {
      const int64_t t = (*types)[i];
      vocab->token_types[i] =
          (t >= 1 && t <= 6) ? static_cast<TokenType>(t) : TokenType::kUndefined;
    }
  } else if (!absl::IsNotFound(types.status())) {
    return types.status();
  } else {
    vocab->token_types.assign(n, TokenType::kNormal);
  }
  return absl::OkStatus();
}

// The tokenizer.ggml.*_token_id keys over the model's defaults, which are
// dropped first when past the vocabulary.
absl::Status ReadSpecialIds(const GgufFile& gguf, VocabData* vocab, FimIds* fim) {
  const size_t n = vocab->tokens.size();
  for (int32_t* id : {&vocab->bos_id, &vocab->eos_id, &vocab->unk_id}) {
    if (*id >= static_cast<int32_t>(n)) *id = -1;
  }
  const std::pair<const char*, int32_t*> id_keys[] = {
      {"tokenizer.ggml.bos_token_id", &vocab->bos_id},
      {"tokenizer.ggml.eos_token_id", &vocab->eos_id},
      {"tokenizer.ggml.eot_token_id", &vocab->eot_id},
      {"tokenizer.ggml.eom_token_id", &vocab->eom_id},
      {"tokenizer.ggml.unknown_token_id", &vocab->unk_id},
      {"tokenizer.ggml.padding_token_id", &vocab->pad_id},
      {"tokenizer.ggml.fim_pad_token_id", &fim->pad},
      {"tokenizer.ggml.fim_rep_token_id", &fim->rep},
      {"tokenizer.ggml.fim_sep_token_id", &fim->sep},
  };
  for (const auto& [key, id] : id_keys) {
    if (auto s = ReadOptionalId(gguf, key, n, id); !s.ok()) return s;
  }
  return absl::OkStatus();
}

bool IsFromHuggingFace(const GgufFile& gguf) {
  const GgufValue* source = gguf.Find("llorch.tokenizer.source");
  return source != nullptr && source->s == "huggingface";
}

// A vocabulary read from tokenizer.json keeps its types; only the configured
// EOS ids (and EOT/EOM) end generation.
void ApplyHuggingFaceSemantics(const GgufFile& gguf, VocabData* vocab) {
  const size_t n = vocab->tokens.size();
  vocab->hf_semantics = true;
  const GgufValue* normalizer = gguf.Find("llorch.tokenizer.normalizer");
  vocab->nfc = normalizer != nullptr && normalizer->s == "NFC";
  for (int32_t id : {vocab->eos_id, vocab->eot_id, vocab->eom_id}) {
    if (id >= 0) vocab->eog_ids.push_back(id);
  }
  if (auto list = gguf.GetIntArray("llorch.tokenizer.eos_token_ids"); list.ok()) {
    for (int64_t id : *list) {
      if (id >= 0 && id < static_cast<int64_t>(n)) {
        vocab->eog_ids.push_back(static_cast<int32_t>(id));
      }
    }
  }
  std::sort(vocab->eog_ids.begin(), vocab->eog_ids.end());
  vocab->eog_ids.erase(std::unique(vocab->eog_ids.begin(), vocab->eog_ids.end()),
                       vocab->eog_ids.end());
}

void MakeControl(int32_t id, VocabData* vocab) {
  if (id >= 0 && vocab->token_types[id] != TokenType::kControl) {
    vocab->token_types[id] = TokenType::kControl;
  }
}

// EOT, EOM and FIM ids the metadata leaves unset, found by their text.
void FindTurnTokensByText(const tokenizer_internal::TokenIndex& index, VocabData* vocab,
                          FimIds* fim) {
  if (vocab->eot_id < 0) {
    vocab->eot_id = FindFirstText(
        index, {"<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>",
                "<|end_of_text|>", "<EOT>", "_<EOT>", "[EOT]",
                "<\xef\xbd\x9c" "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>",
                "<end_of_utterance>"});
    MakeControl(vocab->eot_id, vocab);
  }
  if (vocab->eom_id < 0) {
    vocab->eom_id = FindFirstText(index, {"<|eom_id|>"});
    MakeControl(vocab->eom_id, vocab);
  }
  if (fim->pad < 0) {
    fim->pad = FindFirstText(index, {"<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"});
    MakeControl(fim->pad, vocab);
  }
  if (fim->rep < 0) {
    fim->rep = FindFirstText(
        index, {"<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"});
    MakeControl(fim->rep, vocab);
  }
  if (fim->sep < 0) {
    fim->sep = FindFirstText(index, {"<|file_sep|>"});
    MakeControl(fim->sep, vocab);
  }
}

// Every id that ends generation: FIM ids, known end-of-turn texts (forced to
// control type), and EOS/EOT/EOM.
std::set<int32_t> CollectEogIds(const tokenizer_internal::TokenIndex& index, const FimIds& fim,
                                VocabData* vocab) {
  std::set<int32_t> eog;
  for (int32_t id : {fim.pad, fim.rep, fim.sep}) {
    if (id >= 0) eog.insert(id);
  }
  static const char* const kEogTexts[] = {
      "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>",
      "<|calls|>", "<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>",
      "[EOT]", "[EOS]", "<|end_of_text|>", "<end_of_utterance>", "<eos>", "<turn|>",
      "<|tool_response>",
      "<\xef\xbd\x9c" "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>", "[e~["};
  for (const char* text : kEogTexts) {
    auto it = index.find(text);
    if (it == index.end()) continue;
    eog.insert(it->second);
    MakeControl(it->second, vocab);
  }
  // gpt-oss: these are always rendered.
  for (const char* text : {"<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"}) {
    auto it = index.find(text);
    if (it != index.end()) vocab->token_types[it->second] = TokenType::kUserDefined;
  }
  for (int32_t id : {vocab->eos_id, vocab->eot_id, vocab->eom_id}) {
    if (id >= 0) eog.insert(id);
  }
  return eog;
}

// Chat formats in which a usual end-of-turn text is not an end.
void DropFormatSpecificEogIds(const tokenizer_internal::TokenIndex& index, std::set<int32_t>* eog,
                              VocabData* vocab) {
  const auto eog_has_text = [&](const char* text) {
    return std::any_of(eog->begin(), eog->end(),
                       [&](int32_t id) { return vocab->tokens[id] == text; });
  };
  // Harmony / solar-open chat formats: "<|end|>" is not the end there.
  if ((eog_has_text("<|return|>") && eog_has_text("<|call|>") && eog_has_text("<|end|>")) ||
      (eog_has_text("<|calls|>") && eog_has_text("<|flush|>") && eog_has_text("<|end|>"))) {
    const int32_t end_id = index.at("<|end|>");
    eog->erase(end_id);
    vocab->token_types[end_id] = TokenType::kUserDefined;
  }
  // Gemma 4 / PaddleOCR: "</s>" is not an end of generation there.
  if (eog_has_text("<|tool_response>") && eog_has_text("</s>")) {
    const int32_t s_id = index.at("</s>");
    eog->erase(s_id);
    vocab->token_types[s_id] = TokenType::kNormal;
  }
}

// Phi-3: special tokens swallow the whitespace after them (llama.cpp keys
// this on the model name).
void MarkPhi3Rstrip(const GgufFile& gguf, const tokenizer_internal::TokenIndex& index,
                    VocabData* vocab) {
  auto name = gguf.GetString("general.name");
  if (!name.ok()) return;
  std::string lower = *name;
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (!absl::StrContains(lower, "phi-3") && !absl::StrContains(lower, "phi3")) return;
  std::set<int32_t> rstrip;
  for (size_t id = 0; id < vocab->tokens.size(); ++id) {
    const TokenType t = vocab->token_types[id];
    if (t == TokenType::kControl || t == TokenType::kUserDefined || t == TokenType::kUnknown) {
      rstrip.insert(static_cast<int32_t>(id));
    }
  }
  if (auto it = index.find("</s>"); it != index.end()) rstrip.insert(it->second);
  for (const char* text : {"<unk>", "<s>", "<|endoftext|>"}) {
    if (auto it = index.find(text); it != index.end()) rstrip.erase(it->second);
  }
  vocab->rstrip_ids.assign(rstrip.begin(), rstrip.end());
}

}  // namespace

absl::StatusOr<VocabData> VocabFromGguf(const GgufFile& gguf) {
  VocabData vocab;
  if (auto s = ReadModelNames(gguf, &vocab); !s.ok()) return s;
  if (auto s = ApplyModelDefaults(gguf, &vocab); !s.ok()) return s;
  if (auto s = ReadOptionalBool(gguf, "tokenizer.ggml.add_space_prefix", &vocab.add_space_prefix);
      !s.ok()) {
    return s;
  }
  if (auto s = ReadTokens(gguf, &vocab); !s.ok()) return s;
  if (auto s = ReadScores(gguf, &vocab); !s.ok()) return s;
  if (auto s = ReadTokenTypes(gguf, &vocab); !s.ok()) return s;
  FimIds fim;
  if (auto s = ReadSpecialIds(gguf, &vocab, &fim); !s.ok()) return s;
  if (auto s = ReadOptionalBool(gguf, "tokenizer.ggml.add_bos_token", &vocab.add_bos); !s.ok()) {
    return s;
  }
  if (auto s = ReadOptionalBool(gguf, "tokenizer.ggml.add_eos_token", &vocab.add_eos); !s.ok()) {
    return s;
  }

  if (IsFromHuggingFace(gguf)) {
    ApplyHuggingFaceSemantics(gguf, &vocab);
    return vocab;
  }
  // Text-based detection, as llama.cpp: tokens that end a turn are found by
  // their text and forced to control type.
  const auto index = tokenizer_internal::BuildTokenIndex(vocab.tokens);
  FindTurnTokensByText(index, &vocab, &fim);
  std::set<int32_t> eog = CollectEogIds(index, fim, &vocab);
  DropFormatSpecificEogIds(index, &eog, &vocab);
  vocab.eog_ids.assign(eog.begin(), eog.end());
  MarkPhi3Rstrip(gguf, index, &vocab);
  return vocab;
}

}  // namespace llorch
