// Everything one model file gives a process: config, tokenizer and, when
// asked for, the weights. Shared by the CLI and the worker process.
#ifndef LLORCH_WORKER_ENGINE_SERVED_MODEL_H_
#define LLORCH_WORKER_ENGINE_SERVED_MODEL_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
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
};

// Opens `path` (a GGUF file or a Hugging Face model directory) and builds
// the tokenizer; loads the weights when `load_options` is given. Errors name
// the file.
absl::StatusOr<ServedModel> LoadServedModel(const std::string& path,
                                            const LoadOptions* load_options);

}  // namespace llorch

#endif  // LLORCH_WORKER_ENGINE_SERVED_MODEL_H_
