#include "worker/engine/served_model.h"

#include <chrono>
#include <map>
#include <utility>

#include "absl/strings/str_cat.h"
#include "worker/convert/hf_checkpoint.h"
#include "worker/gguf/ggml_types.h"

namespace llorch {

absl::StatusOr<ServedModel> FinishLoad(const std::string& path, const LoadOptions* load_options,
                                       ServedModel served);

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
    if (options.gelu == LoadOptions::Gelu::kAuto && IsDirectory(path)) {
      options.gelu = LoadOptions::Gelu::kExact;
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
