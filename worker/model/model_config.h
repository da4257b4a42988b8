// Hyper-parameters of a decoder, read from GGUF metadata and checked against
// the tensor directory before any weight is touched.
#ifndef LLORCH_WORKER_MODEL_MODEL_CONFIG_H_
#define LLORCH_WORKER_MODEL_MODEL_CONFIG_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace llorch {

class GgufFile;

struct ModelConfig {
  std::string architecture;  // "llama"
  std::string name;          // general.name, may be empty
  int64_t num_layers = 0;
  int64_t hidden_size = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t ffn_size = 0;
  int64_t vocab_size = 0;
  int64_t context_length = 0;
  int64_t rope_dim = 0;         // rotated dimensions per head
  float rope_freq_base = 10000.0f;
  float rope_freq_scale = 1.0f;  // linear scaling: positions multiplied by this
  float rms_norm_eps = 1e-5f;
  bool tied_embeddings = false;  // no output.weight: the LM head is token_embd
};

// Reads `<arch>.*` keys and validates the shape of every tensor the
// architecture needs. Errors start with the file path and name the key or
// tensor. Supported architectures: llama.
absl::StatusOr<ModelConfig> ModelConfigFromGguf(const GgufFile& gguf);

}  // namespace llorch

#endif  // LLORCH_WORKER_MODEL_MODEL_CONFIG_H_
