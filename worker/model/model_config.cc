#include "worker/model/model_config.h"

#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "worker/gguf/gguf.h"

namespace llorch {
namespace {

absl::Status Invalid(const GgufFile& gguf, absl::string_view message) {
  return absl::InvalidArgumentError(absl::StrCat(gguf.path(), ": ", message));
}

absl::StatusOr<int64_t> RequiredInt(const GgufFile& gguf, const std::string& key) {
  absl::StatusOr<int64_t> value = gguf.GetInt(key);
  if (!value.ok()) {
    if (absl::IsNotFound(value.status())) {
      return Invalid(gguf, absl::StrCat("missing required key ", key));
    }
    return value.status();
  }
  if (*value <= 0) {
    return Invalid(gguf, absl::StrCat("key ", key, " must be positive, got ", *value));
  }
  return *value;
}

// Checks that tensor `name` exists with ggml shape `shape` ({in, out} for
// matrices).
absl::Status ExpectTensor(const GgufFile& gguf, const std::string& name,
                          const std::vector<int64_t>& shape) {
  const GgufTensorInfo* info = gguf.FindTensor(name);
  if (info == nullptr) return Invalid(gguf, absl::StrCat("missing tensor ", name));
  if (info->shape != shape) {
    return Invalid(gguf, absl::StrCat("tensor ", name, " has shape [",
                                      absl::StrJoin(info->shape, ", "), "], expected [",
                                      absl::StrJoin(shape, ", "), "] from the metadata"));
  }
  if (!GgmlCanDequantize(info->type)) {
    return Invalid(gguf, absl::StrCat("tensor ", name, " has unsupported type ",
                                      GgmlTypeName(info->type)));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ModelConfig> ModelConfigFromGguf(const GgufFile& gguf) {
  ModelConfig config;
  absl::StatusOr<std::string> arch = gguf.GetString("general.architecture");
  if (!arch.ok()) return Invalid(gguf, "missing required key general.architecture");
  config.architecture = *arch;
  if (config.architecture != "llama") {
    return Invalid(gguf, absl::StrCat("unsupported architecture '", config.architecture,
                                      "' (supported: llama)"));
  }
  if (auto name = gguf.GetString("general.name"); name.ok()) config.name = *name;
  const std::string p = config.architecture + ".";

  absl::StatusOr<int64_t> v;
  if (!(v = RequiredInt(gguf, p + "block_count")).ok()) return v.status();
  config.num_layers = *v;
  if (!(v = RequiredInt(gguf, p + "embedding_length")).ok()) return v.status();
  config.hidden_size = *v;
  if (!(v = RequiredInt(gguf, p + "feed_forward_length")).ok()) return v.status();
  config.ffn_size = *v;
  if (!(v = RequiredInt(gguf, p + "attention.head_count")).ok()) return v.status();
  config.num_heads = *v;
  if (!(v = RequiredInt(gguf, p + "context_length")).ok()) return v.status();
  config.context_length = *v;
  config.num_kv_heads = config.num_heads;
  if (gguf.Find(p + "attention.head_count_kv") != nullptr) {
    if (!(v = RequiredInt(gguf, p + "attention.head_count_kv")).ok()) return v.status();
    config.num_kv_heads = *v;
  }
  if (config.hidden_size % config.num_heads != 0) {
    return Invalid(gguf, absl::StrCat(p, "embedding_length ", config.hidden_size,
                                      " is not a multiple of head_count ", config.num_heads));
  }
  if (config.num_heads % config.num_kv_heads != 0) {
    return Invalid(gguf, absl::StrCat(p, "attention.head_count ", config.num_heads,
                                      " is not a multiple of head_count_kv ",
                                      config.num_kv_heads));
  }
  config.head_dim = config.hidden_size / config.num_heads;
  config.rope_dim = config.head_dim;
  if (gguf.Find(p + "rope.dimension_count") != nullptr) {
    if (!(v = RequiredInt(gguf, p + "rope.dimension_count")).ok()) return v.status();
    config.rope_dim = *v;
  }
  if (config.rope_dim > config.head_dim || config.rope_dim % 2 != 0) {
    return Invalid(gguf, absl::StrCat(p, "rope.dimension_count ", config.rope_dim,
                                      " must be even and at most the head size ",
                                      config.head_dim));
  }
  if (auto base = gguf.GetFloat(p + "rope.freq_base"); base.ok()) {
    config.rope_freq_base = static_cast<float>(*base);
  }
  if (auto type = gguf.GetString(p + "rope.scaling.type"); type.ok() && *type == "linear") {
    if (auto factor = gguf.GetFloat(p + "rope.scaling.factor"); factor.ok() && *factor > 0) {
      config.rope_freq_scale = static_cast<float>(1.0 / *factor);
    }
  }
  if (auto eps = gguf.GetFloat(p + "attention.layer_norm_rms_epsilon"); eps.ok()) {
    config.rms_norm_eps = static_cast<float>(*eps);
  } else {
    return Invalid(gguf, absl::StrCat("missing required key ", p,
                                      "attention.layer_norm_rms_epsilon"));
  }

  // The vocabulary size is the embedding's row count (llama.vocab_size is
  // optional and must agree when present).
  const GgufTensorInfo* embd = gguf.FindTensor("token_embd.weight");
  if (embd == nullptr) return Invalid(gguf, "missing tensor token_embd.weight");
  if (embd->shape.size() != 2) return Invalid(gguf, "tensor token_embd.weight is not 2-D");
  config.vocab_size = embd->shape[1];
  if (gguf.Find(p + "vocab_size") != nullptr) {
    if (!(v = RequiredInt(gguf, p + "vocab_size")).ok()) return v.status();
    if (*v != config.vocab_size) {
      return Invalid(gguf, absl::StrCat(p, "vocab_size ", *v,
                                        " disagrees with token_embd.weight rows ",
                                        config.vocab_size));
    }
  }

  const int64_t h = config.hidden_size;
  const int64_t kv = config.num_kv_heads * config.head_dim;
  if (absl::Status s = ExpectTensor(gguf, "token_embd.weight", {h, config.vocab_size}); !s.ok()) {
    return s;
  }
  if (absl::Status s = ExpectTensor(gguf, "output_norm.weight", {h}); !s.ok()) return s;
  config.tied_embeddings = gguf.FindTensor("output.weight") == nullptr;
  if (!config.tied_embeddings) {
    if (absl::Status s = ExpectTensor(gguf, "output.weight", {h, config.vocab_size}); !s.ok()) {
      return s;
    }
  }
  for (int64_t l = 0; l < config.num_layers; ++l) {
    const std::string b = absl::StrCat("blk.", l, ".");
    const std::vector<std::pair<std::string, std::vector<int64_t>>> expected = {
        {"attn_norm.weight", {h}},
        {"attn_q.weight", {h, h}},
        {"attn_k.weight", {h, kv}},
        {"attn_v.weight", {h, kv}},
        {"attn_output.weight", {h, h}},
        {"ffn_norm.weight", {h}},
        {"ffn_gate.weight", {h, config.ffn_size}},
        {"ffn_up.weight", {h, config.ffn_size}},
        {"ffn_down.weight", {config.ffn_size, h}},
    };
    for (const auto& [suffix, shape] : expected) {
      if (absl::Status s = ExpectTensor(gguf, b + suffix, shape); !s.ok()) return s;
    }
  }
  return config;
}

}  // namespace llorch
