// Hugging Face model directories (config.json + model.safetensors or shards)
// presented as the GGUF that llama.cpp's converter writes for them: the same
// metadata keys, tensor names and, for llama/mistral, Q/K rows permuted into
// llama.cpp's RoPE order. Weights stay in the memory-mapped SafeTensors
// (F32, F16 or BF16) except the permuted rows, so the engine has one loader
// and `llorch convert` only has to write this object out.
#ifndef LLORCH_WORKER_CONVERT_HF_CHECKPOINT_H_
#define LLORCH_WORKER_CONVERT_HF_CHECKPOINT_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "worker/gguf/gguf.h"

namespace llorch {

inline constexpr char kSupportedModelTypes[] = "llama, mistral, qwen2, phi3, phi";

// Errors name the directory and the problem: NotFound (no config.json or
// weights), InvalidArgument (an unsupported model_type or setting, a missing
// or misshapen tensor).
absl::StatusOr<std::unique_ptr<GgufFile>> OpenHfCheckpoint(const std::string& dir);

// True when `path` is a directory (a Hugging Face checkpoint), not a file.
bool IsDirectory(const std::string& path);

}  // namespace llorch

#endif  // LLORCH_WORKER_CONVERT_HF_CHECKPOINT_H_
