// SentencePiece tokenizer.model -> tokenizer.ggml.* metadata ("llama"
// vocabulary: pieces, scores, types, special ids, the dummy prefix), read by
// libsentencepiece itself through the dlopen'ed shim
// (worker/tokenizer/spm_shim). Tokenisation then runs in llorch's
// SentencePiece-BPE tokenizer, checked against libsentencepiece.
#ifndef LLORCH_WORKER_CONVERT_SPM_VOCAB_H_
#define LLORCH_WORKER_CONVERT_SPM_VOCAB_H_

#include <cstdint>
#include <map>
#include <string>

#include "absl/status/status.h"
#include "worker/gguf/gguf.h"

namespace llorch {

// `vocab_size` > 0 pads (or checks) the piece count to the embedding rows.
absl::Status AddSentencePieceMetadata(const std::string& model_path, int64_t vocab_size,
                                      std::map<std::string, GgufValue>* metadata);

}  // namespace llorch

#endif  // LLORCH_WORKER_CONVERT_SPM_VOCAB_H_
