#include "worker/engine/served_model.h"

#include <chrono>
#include <fstream>
#include <map>
#include <sstream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "worker/convert/hf_checkpoint.h"
#include "worker/gguf/ggml_types.h"

namespace llorch {

absl::StatusOr<ServedModel> FinishLoad(const std::string& path, const LoadOptions* load_options,
                                       ServedModel served);

namespace {

// A token's text for the template's bos_token/eos_token ("" when absent).
std::string SpecialText(const Tokenizer& tokenizer, int32_t id) {
  return id >= 0 && id < tokenizer.vocab_size() ? tokenizer.vocab().tokens[id] : std::string();
}

absl::Status SetChatTemplate(ServedModel* served, std::string source) {
  const VocabData& vocab = served->tokenizer->vocab();
  absl::StatusOr<ChatTemplate> chat_template =
      ChatTemplate::Create(std::move(source), SpecialText(*served->tokenizer, vocab.bos_id),
                           SpecialText(*served->tokenizer, vocab.eos_id));
  if (!chat_template.ok()) return chat_template.status();
  served->chat_template = std::move(*chat_template);
  served->chat_template_status = absl::OkStatus();
  return absl::OkStatus();
}

// A model whose template is missing or broken still serves text and token
// prompts; chat requests get the reason.
void LoadChatTemplate(const std::string& path, ServedModel* served) {
  absl::StatusOr<std::string> source = served->gguf->GetString("tokenizer.chat_template");
  if (!source.ok()) {
    served->chat_template_status = absl::FailedPreconditionError(absl::StrCat(
        path, " has no chat template (tokenizer.chat_template); give one with --chat_template FILE"));
    return;
  }
  if (absl::Status s = SetChatTemplate(served, std::move(*source)); !s.ok()) {
    served->chat_template_status = absl::FailedPreconditionError(absl::StrCat(
        path, ": its chat template does not compile (", s.message(),
        "); give a working one with --chat_template FILE"));
  }
}

}  // namespace

absl::Status SetChatTemplateFile(ServedModel* served, const std::string& path) {
  if (served->tokenizer == nullptr) {
    return absl::FailedPreconditionError("a chat template needs the model's tokenizer");
  }
  std::ifstream in(path);
  if (!in) return absl::InvalidArgumentError(absl::StrCat("--chat_template: cannot read ", path));
  std::stringstream text;
  text << in.rdbuf();
  if (absl::Status s = SetChatTemplate(served, text.str()); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("--chat_template ", path, ": ", s.message()));
  }
  return absl::OkStatus();
}


absl::StatusOr<ServedModel> LoadServedModel(const std::string& path,
                                            const LoadOptions* load_options) {
  ServedModel served;
  absl::StatusOr<std::unique_ptr<GgufFile>> gguf =
      IsDirectory(path) ? OpenHfCheckpoint(path) : GgufFile::Open(path);
  if (!gguf.ok()) return gguf.status();
  served.gguf = std::move(*gguf);
  absl::StatusOr<ModelConfig> config = ModelConfigFromGguf(*served.gguf);
  if (!config.ok()) return config.status();
  served.config = *config;
  if (served.gguf->Find("tokenizer.ggml.model") == nullptr && IsDirectory(path)) {
    // A checkpoint without tokenizer files: weights-only use (scoring ids).
    return FinishLoad(path, load_options, std::move(served));
  }
  absl::StatusOr<VocabData> vocab = VocabFromGguf(*served.gguf);
  if (!vocab.ok()) return vocab.status();
  if (static_cast<int64_t>(vocab->tokens.size()) != served.config.vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": the tokenizer has ", vocab->tokens.size(), " tokens but the embedding has ",
        served.config.vocab_size, " rows"));
  }
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = Tokenizer::Create(std::move(*vocab));
  if (!tokenizer.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", tokenizer.status().message()));
  }
  served.tokenizer = std::move(*tokenizer);
  // The tokenizer holds its own vocabulary; the file's copy is the largest
  // metadata by far (an element per token).
  for (const char* key : {"tokenizer.ggml.tokens", "tokenizer.ggml.scores",
                          "tokenizer.ggml.token_type", "tokenizer.ggml.merges"}) {
    served.gguf->DropMetadata(key);
  }
  LoadChatTemplate(path, &served);
  return FinishLoad(path, load_options, std::move(served));
}

absl::StatusOr<ServedModel> FinishLoad(const std::string& path, const LoadOptions* load_options,
                                       ServedModel served) {
  served.name = served.config.name;
  if (served.name.empty()) {
    const size_t slash = path.find_last_of('/');
    served.name = slash == std::string::npos ? path : path.substr(slash + 1);
  }
  std::map<std::string, int> matrix_types;
  for (const GgufTensorInfo& t : served.gguf->tensors()) {
    if (t.shape.size() == 2) matrix_types[GgmlTypeName(t.type)] += 1;
  }
  int best = 0;
  for (const auto& [type, count] : matrix_types) {
    if (count > best) served.weight_type = type, best = count;
  }

  if (load_options != nullptr) {
    const auto start = std::chrono::steady_clock::now();
    LoadOptions options = *load_options;
    if (IsDirectory(path)) {
      if (options.gelu == LoadOptions::Gelu::kAuto) options.gelu = LoadOptions::Gelu::kExact;
      options.round_activations_to_weight_type = false;
    }
    absl::StatusOr<std::unique_ptr<LlamaModel>> model = LlamaModel::Load(*served.gguf, options);
    if (!model.ok()) return model.status();
    served.model = std::move(*model);
    served.load_seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }
  return served;
}

}  // namespace llorch
