// Hyper-parameters and architecture variant of a decoder, read from GGUF
// metadata (or, later, a Hugging Face config.json). The forward pass is one
// pre-norm decoder; the variants differ in the few places listed below.
#ifndef LLORCH_WORKER_MODEL_MODEL_CONFIG_H_
#define LLORCH_WORKER_MODEL_MODEL_CONFIG_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace llorch {

class GgufFile;

enum class NormType { kRms, kLayer };  // RMSNorm (llama, qwen2, phi3) | LayerNorm with bias (phi2)
// Which dimensions RoPE rotates together: adjacent pairs (x[2i], x[2i+1]),
// the order llama.cpp stores llama Q/K rows in; or the two halves
// (x[i], x[i + rope_dim/2]), Hugging Face's and GPT-NeoX's order.
enum class RopeType { kAdjacent, kHalves };
enum class FfnType { kSiluGated, kGelu };  // down(silu(gate(x)) * up(x)) | down(gelu(up(x)))

struct ModelConfig {
  std::string architecture;  // "llama", "qwen2", "phi3", "phi2"
  std::string name;          // general.name, may be empty
  int64_t num_layers = 0;
  int64_t hidden_size = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t ffn_size = 0;
  int64_t vocab_size = 0;
  int64_t context_length = 0;
  int64_t rope_dim = 0;          // rotated dimensions per head (phi2 rotates part of each head)
  float rope_freq_base = 10000.0f;
  float rope_freq_scale = 1.0f;  // linear scaling: positions multiplied by this
  // Llama 3 scaling: each pair's frequency is divided by its factor
  // (llama.cpp's rope_freqs tensor). Empty: all 1.
  std::vector<float> rope_freq_factors;
  RopeType rope_type = RopeType::kAdjacent;
  NormType norm = NormType::kRms;
  float norm_eps = 1e-5f;
  FfnType ffn = FfnType::kSiluGated;
  bool parallel_residual = false;  // phi2: x + attn(norm(x)) + ffn(norm(x)), one norm
  int64_t sliding_window = 0;      // > 0: a query sees only the last this-many keys
  bool tied_embeddings = false;    // the LM head is the token embedding

  int64_t q_dim() const { return num_heads * head_dim; }
  int64_t kv_dim() const { return num_kv_heads * head_dim; }
};

inline constexpr char kSupportedArchitectures[] = "llama, mistral (as llama), qwen2, phi3, phi2";

// Reads and checks the metadata and the tensor shapes it implies.
absl::StatusOr<ModelConfig> ModelConfigFromGguf(const GgufFile& gguf);

// The GGUF tensors of one layer, as the loader stacks them. Bias names are
// empty where the file has none.
struct LayerTensors {
  std::string attn_norm, attn_norm_bias;
  std::vector<std::string> qkv;       // rows stacked: q, k, v (or one fused attn_qkv)
  std::vector<std::string> qkv_bias;  // same order
  std::string attn_output, attn_output_bias;
  std::string ffn_norm;               // empty with a parallel residual
  std::vector<std::string> ffn_in;    // gate then up rows (gated), or up rows (GELU)
  std::string ffn_in_bias;
  std::string ffn_down, ffn_down_bias;
};
LayerTensors LayerTensorsOf(const ModelConfig& config, const GgufFile& gguf, int64_t layer);

}  // namespace llorch

#endif  // LLORCH_WORKER_MODEL_MODEL_CONFIG_H_
