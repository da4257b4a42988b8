// tokenizer.json (Hugging Face tokenizers) -> the tokenizer.ggml.* metadata
// llama.cpp's converter writes, so that the same Tokenizer class serves GGUF
// files and checkpoint directories, and `llorch convert` carries it over.
#ifndef LLORCH_WORKER_CONVERT_HF_TOKENIZER_H_
#define LLORCH_WORKER_CONVERT_HF_TOKENIZER_H_

#include <cstdint>
#include <map>
#include <string>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "worker/gguf/gguf.h"

namespace llorch {

// Adds tokenizer.ggml.* keys for the tokenizer in `dir` (tokenizer.json,
// with tokenizer_config.json, generation_config.json and config.json for
// special ids). OK and nothing added when the directory has no
// tokenizer.json. Supported: byte-level BPE with the GPT-2, Llama 3, Qwen2
// or SmolLM/StarCoder pre-tokenizers. `vocab_size` <= 0: as many ids as the
// files name (a tokenizer without a model).
// A JSON file of a checkpoint directory. NotFound when it cannot be opened,
// or JSON null when `missing_ok`; InvalidArgument naming the file and the
// byte when it does not parse.
absl::StatusOr<nlohmann::json> ReadJsonFile(const std::string& path, bool missing_ok);

absl::Status AddHfTokenizerMetadata(const std::string& dir, int64_t vocab_size,
                                    std::map<std::string, GgufValue>* metadata);

}  // namespace llorch

#endif  // LLORCH_WORKER_CONVERT_HF_TOKENIZER_H_
