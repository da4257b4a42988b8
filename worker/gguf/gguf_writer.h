// Writes GGUF v3 files: metadata of every value type, tensor infos, and
// tensor data aligned as llama.cpp expects (general.alignment, default 32).
#ifndef LLORCH_WORKER_GGUF_GGUF_WRITER_H_
#define LLORCH_WORKER_GGUF_GGUF_WRITER_H_

#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "worker/gguf/gguf.h"

namespace llorch {

// One tensor to write: `info.name`, `info.shape` (ggml order), `info.type`
// and `info.num_bytes` bytes at `info.data`; `info.offset` is ignored.
// Writes to `path` + ".tmp" and renames, so a failed write leaves no file.
absl::Status WriteGguf(const std::string& path, const std::map<std::string, GgufValue>& metadata,
                       const std::vector<GgufTensorInfo>& tensors);

}  // namespace llorch

#endif  // LLORCH_WORKER_GGUF_GGUF_WRITER_H_
