// `llorch convert`: writes a model (a Hugging Face directory opened as
// OpenHfCheckpoint presents it, or another GGUF) as a GGUF file llama.cpp
// loads, with its matrices in one type. Vectors (norms, biases, RoPE
// factors) stay F32, as llama.cpp's converter writes them.
#ifndef LLORCH_WORKER_CONVERT_CONVERT_H_
#define LLORCH_WORKER_CONVERT_CONVERT_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "worker/gguf/gguf.h"

namespace llorch {

enum class ConvertType { kF32, kF16, kQ8_0 };
absl::StatusOr<ConvertType> ParseConvertType(const std::string& name);  // f32 | f16 | q8_0

absl::Status ConvertToGguf(const GgufFile& source, ConvertType type, const std::string& out_path);

}  // namespace llorch

#endif  // LLORCH_WORKER_CONVERT_CONVERT_H_
