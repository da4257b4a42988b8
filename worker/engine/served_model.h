// Everything one model file gives a process: config, tokenizer and, when
// asked for, the weights. Shared by the CLI and the worker process.
#ifndef LLORCH_WORKER_ENGINE_SERVED_MODEL_H_
#define LLORCH_WORKER_ENGINE_SERVED_MODEL_H_

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "worker/chat/chat_template.h"
#include "worker/gguf/gguf.h"
#include "worker/model/llama_model.h"
#include "worker/model/model_config.h"
#include "worker/tokenizer/tokenizer.h"

namespace llorch {

struct ServedModel {
  std::unique_ptr<GgufFile> gguf;
  ModelConfig config;
  // Null for a checkpoint directory without tokenizer files (weights only).
  std::unique_ptr<Tokenizer> tokenizer;
  std::unique_ptr<LlamaModel> model;  // null unless weights were requested
  std::string name;                   // general.name, else the file name
  std::string weight_type;            // type of most 2-D weights, e.g. "q4_1"
  double load_seconds = 0;            // time to build the weights
  // The model's own chat template (GGUF tokenizer.chat_template), or the
  // operator's (SetChatTemplateFile). Empty with the reason in
  // chat_template_status when there is none or it does not compile.
  std::optional<ChatTemplate> chat_template;
  absl::Status chat_template_status;
};

// Opens `path` (a GGUF file or a Hugging Face model directory) and builds
// the tokenizer; loads the weights when `load_options` is given. Errors name
// the file.
absl::StatusOr<ServedModel> LoadServedModel(const std::string& path,
                                            const LoadOptions* load_options);

// Replaces the model's chat template by the one in `path` (--chat_template);
// InvalidArgument if it cannot be read or does not compile.
absl::Status SetChatTemplateFile(ServedModel* served, const std::string& path);

// Renders `messages` with the chat template and tokenises the text as
// transformers does (no BOS beyond the template's, special text parsed).
// FailedPrecondition without a template (naming --chat_template), or
// InvalidArgument when the template raises. `rendered` gets the text if set.
absl::StatusOr<std::vector<int32_t>> ChatPromptIds(const ServedModel& served,
                                                   absl::Span<const ChatMessage> messages,
                                                   bool add_generation_prompt,
                                                   std::string* rendered = nullptr);

}  // namespace llorch

#endif  // LLORCH_WORKER_ENGINE_SERVED_MODEL_H_
