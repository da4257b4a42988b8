#include "worker/model/model_config.h"

#include <cmath>
#include <optional>
#include <utility>
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

// Far beyond any real model's sizes; bigger values are corrupt, and would
// overflow the products and sums of sizes below (2 * ffn, q + 2 * kv rows).
constexpr int64_t kMaxHyperParameter = int64_t{1} << 32;

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
  if (*value > kMaxHyperParameter) {
    return Invalid(gguf, absl::StrCat("key ", key, " is implausibly large: ", *value));
  }
  return *value;
}

absl::Status CheckType(const GgufFile& gguf, const GgufTensorInfo& info) {
  if (!GgmlCanDequantize(info.type)) {
    return Invalid(gguf, absl::StrCat("tensor ", info.name, " has unsupported type ",
                                      GgmlTypeName(info.type)));
  }
  return absl::OkStatus();
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
  return CheckType(gguf, *info);
}

// The rows of each of `names` stacked in one product: `parts` (Q, K, V; gate,
// up) where there is a tensor per part, else their sum in one fused tensor.
std::vector<int64_t> PartRows(const std::vector<std::string>& names,
                              const std::vector<int64_t>& parts) {
  if (names.size() == parts.size()) return parts;
  int64_t total = 0;
  for (const int64_t rows : parts) total += rows;
  return {total};
}

// Matrices stacked by rows: each {in, rows_i}, rows summing to those of
// `part_rows` (one entry per tensor, or the fused tensor's total).
absl::Status ExpectStacked(const GgufFile& gguf, const std::vector<std::string>& names, int64_t in,
                           const std::vector<int64_t>& part_rows) {
  int64_t total = 0, rows = 0;
  for (const int64_t r : part_rows) rows += r;
  for (size_t i = 0; i < names.size(); ++i) {
    const std::string& name = names[i];
    const GgufTensorInfo* info = gguf.FindTensor(name);
    if (info == nullptr) return Invalid(gguf, absl::StrCat("missing tensor ", name));
    if (info->shape.size() != 2 || info->shape[0] != in) {
      return Invalid(gguf, absl::StrCat("tensor ", name, " has shape [",
                                        absl::StrJoin(info->shape, ", "), "], expected [", in,
                                        ", ...] from the metadata"));
    }
    if (absl::Status s = CheckType(gguf, *info); !s.ok()) return s;
    // Each part its own rows: a Q narrower and a K wider than the metadata
    // says would add up and be split at the wrong row.
    if (part_rows.size() == names.size() && info->shape[1] != part_rows[i]) {
      return Invalid(gguf, absl::StrCat("tensor ", name, " has ", info->shape[1],
                                        " rows, expected ", part_rows[i], " from the metadata"));
    }
    total += info->shape[1];
  }
  if (total != rows) {
    return Invalid(gguf, absl::StrCat("tensors ", absl::StrJoin(names, " + "), " have ", total,
                                      " rows, expected ", rows, " from the metadata"));
  }
  return absl::OkStatus();
}

// Vectors stacked: lengths summing to `length`.
absl::Status ExpectStackedVector(const GgufFile& gguf, const std::vector<std::string>& names,
                                 const std::vector<int64_t>& part_lengths) {
  int64_t total = 0, length = 0;
  for (const int64_t n : part_lengths) length += n;
  for (size_t i = 0; i < names.size(); ++i) {
    const std::string& name = names[i];
    const GgufTensorInfo* info = gguf.FindTensor(name);
    if (info == nullptr) return Invalid(gguf, absl::StrCat("missing tensor ", name));
    if (info->shape.size() != 1) return Invalid(gguf, absl::StrCat("tensor ", name, " is not 1-D"));
    if (absl::Status s = CheckType(gguf, *info); !s.ok()) return s;
    if (part_lengths.size() == names.size() && info->shape[0] != part_lengths[i]) {
      return Invalid(gguf, absl::StrCat("tensor ", name, " has ", info->shape[0],
                                        " elements, expected ", part_lengths[i]));
    }
    total += info->shape[0];
  }
  if (total != length) {
    return Invalid(gguf, absl::StrCat("tensors ", absl::StrJoin(names, " + "), " have ", total,
                                      " elements, expected ", length));
  }
  return absl::OkStatus();
}

// A numeric key that may be absent: nullopt then; present with another
// type it is an error, not its default.
absl::StatusOr<std::optional<double>> OptionalNumber(const GgufFile& gguf,
                                                     const std::string& key) {
  if (gguf.Find(key) == nullptr) return std::nullopt;
  absl::StatusOr<double> value = gguf.GetFloat(key);
  if (!value.ok()) return Invalid(gguf, absl::StrCat(key, " is not a number"));
  return *value;
}

std::string IfPresent(const GgufFile& gguf, const std::string& name) {
  return gguf.FindTensor(name) != nullptr ? name : "";
}

}  // namespace

LayerTensors LayerTensorsOf(const ModelConfig& config, const GgufFile& gguf, int64_t layer) {
  const std::string b = absl::StrCat("blk.", layer, ".");
  LayerTensors t;
  t.attn_norm = b + "attn_norm.weight";
  if (config.norm == NormType::kLayer) t.attn_norm_bias = IfPresent(gguf, b + "attn_norm.bias");
  if (gguf.FindTensor(b + "attn_qkv.weight") != nullptr) {
    t.qkv = {b + "attn_qkv.weight"};
    if (gguf.FindTensor(b + "attn_qkv.bias") != nullptr) t.qkv_bias = {b + "attn_qkv.bias"};
  } else {
    t.qkv = {b + "attn_q.weight", b + "attn_k.weight", b + "attn_v.weight"};
    if (gguf.FindTensor(b + "attn_q.bias") != nullptr) {
      t.qkv_bias = {b + "attn_q.bias", b + "attn_k.bias", b + "attn_v.bias"};
    }
  }
  t.attn_output = b + "attn_output.weight";
  t.attn_output_bias = IfPresent(gguf, b + "attn_output.bias");
  if (!config.parallel_residual) t.ffn_norm = b + "ffn_norm.weight";
  if (config.ffn == FfnType::kSiluGated && gguf.FindTensor(b + "ffn_gate.weight") != nullptr) {
    t.ffn_in = {b + "ffn_gate.weight", b + "ffn_up.weight"};
  } else {
    t.ffn_in = {b + "ffn_up.weight"};  // GELU, or phi3's fused gate+up
  }
  t.ffn_in_bias = IfPresent(gguf, b + "ffn_up.bias");
  t.ffn_down = b + "ffn_down.weight";
  t.ffn_down_bias = IfPresent(gguf, b + "ffn_down.bias");
  return t;
}

namespace {

// RequiredInt into `out`.
absl::Status ReadRequiredInt(const GgufFile& gguf, const std::string& key, int64_t* out) {
  absl::StatusOr<int64_t> value = RequiredInt(gguf, key);
  if (!value.ok()) return value.status();
  *out = *value;
  return absl::OkStatus();
}

// An integer key that may be absent (`out` then keeps its default); present,
// it is checked as a required one.
absl::Status ReadOptionalInt(const GgufFile& gguf, const std::string& key, int64_t* out) {
  if (gguf.Find(key) == nullptr) return absl::OkStatus();
  return ReadRequiredInt(gguf, key, out);
}

// general.architecture and the variant it implies; general.name.
absl::Status ReadArchitecture(const GgufFile& gguf, ModelConfig* config) {
  absl::StatusOr<std::string> arch = gguf.GetString("general.architecture");
  if (!arch.ok()) return Invalid(gguf, "missing required key general.architecture");
  config->architecture = *arch;
  const std::string& a = config->architecture;
  if (a == "llama") {
    // Defaults above.
  } else if (a == "qwen2" || a == "phi3") {
    config->rope_type = RopeType::kHalves;
  } else if (a == "phi2") {
    config->rope_type = RopeType::kHalves;
    config->norm = NormType::kLayer;
    config->ffn = FfnType::kGelu;
    config->parallel_residual = true;
  } else {
    return Invalid(gguf, absl::StrCat("unsupported architecture '", a,
                                      "' (supported: ", kSupportedArchitectures, ")"));
  }
  if (auto name = gguf.GetString("general.name"); name.ok()) config->name = *name;
  return absl::OkStatus();
}

// Layer count, widths, heads and context; `p` is the "<arch>." key prefix.
absl::Status ReadSizes(const GgufFile& gguf, const std::string& p, ModelConfig* config) {
  const std::pair<const char*, int64_t*> required[] = {
      {"block_count", &config->num_layers},
      {"embedding_length", &config->hidden_size},
      {"feed_forward_length", &config->ffn_size},
      {"attention.head_count", &config->num_heads},
      {"context_length", &config->context_length},
  };
  for (const auto& [key, field] : required) {
    if (absl::Status s = ReadRequiredInt(gguf, p + key, field); !s.ok()) return s;
  }
  config->num_kv_heads = config->num_heads;
  if (absl::Status s = ReadOptionalInt(gguf, p + "attention.head_count_kv", &config->num_kv_heads);
      !s.ok()) {
    return s;
  }
  if (config->hidden_size % config->num_heads != 0) {
    return Invalid(gguf, absl::StrCat(p, "embedding_length ", config->hidden_size,
                                      " is not a multiple of head_count ", config->num_heads));
  }
  if (config->num_heads % config->num_kv_heads != 0) {
    return Invalid(gguf, absl::StrCat(p, "attention.head_count ", config->num_heads,
                                      " is not a multiple of head_count_kv ",
                                      config->num_kv_heads));
  }
  config->head_dim = config->hidden_size / config->num_heads;
  return absl::OkStatus();
}

// Rotated dimensions, frequency base and linear scaling.
absl::Status ReadRope(const GgufFile& gguf, const std::string& p, ModelConfig* config) {
  config->rope_dim = config->head_dim;
  if (absl::Status s = ReadOptionalInt(gguf, p + "rope.dimension_count", &config->rope_dim);
      !s.ok()) {
    return s;
  }
  if (config->rope_dim > config->head_dim || config->rope_dim % 2 != 0) {
    return Invalid(gguf, absl::StrCat(p, "rope.dimension_count ", config->rope_dim,
                                      " must be even and at most the head size ",
                                      config->head_dim));
  }
  absl::StatusOr<std::optional<double>> base = OptionalNumber(gguf, p + "rope.freq_base");
  if (!base.ok()) return base.status();
  if (base->has_value()) {
    config->rope_freq_base = static_cast<float>(**base);
    if (!std::isfinite(config->rope_freq_base) || config->rope_freq_base <= 1.0f) {
      return Invalid(gguf, absl::StrCat(p, "rope.freq_base ", **base,
                                        " must be a finite number above 1"));
    }
  }
  absl::StatusOr<std::optional<double>> factor = OptionalNumber(gguf, p + "rope.scaling.factor");
  if (!factor.ok()) return factor.status();
  if (auto type = gguf.GetString(p + "rope.scaling.type"); type.ok() && *type == "linear") {
    if (factor->has_value() && **factor > 0) {
      config->rope_freq_scale = static_cast<float>(1.0 / **factor);
      if (!std::isfinite(config->rope_freq_scale) || config->rope_freq_scale <= 0.0f) {
        return Invalid(gguf, absl::StrCat(p, "rope.scaling.factor ", **factor,
                                          " gives no finite frequency scale"));
      }
    }
  }
  return absl::OkStatus();
}

// The norm's epsilon, under the key of its kind (RMS or layer norm).
absl::Status ReadNormEpsilon(const GgufFile& gguf, const std::string& p, ModelConfig* config) {
  const std::string eps_key = config->norm == NormType::kRms
                                  ? p + "attention.layer_norm_rms_epsilon"
                                  : p + "attention.layer_norm_epsilon";
  absl::StatusOr<std::optional<double>> eps = OptionalNumber(gguf, eps_key);
  if (!eps.ok()) return eps.status();
  if (!eps->has_value()) return Invalid(gguf, absl::StrCat("missing required key ", eps_key));
  config->norm_eps = static_cast<float>(**eps);
  if (!std::isfinite(config->norm_eps) || config->norm_eps < 0.0f) {
    return Invalid(gguf, absl::StrCat(eps_key, " ", **eps, " must be finite and >= 0"));
  }
  return absl::OkStatus();
}

absl::Status ReadSlidingWindow(const GgufFile& gguf, const std::string& p, ModelConfig* config) {
  // (llama.cpp ignores phi3's window for contexts up to it; so do we.)
  if (config->architecture == "phi3") return absl::OkStatus();
  return ReadOptionalInt(gguf, p + "attention.sliding_window", &config->sliding_window);
}

// The vocabulary size is the embedding's row count (<arch>.vocab_size is
// optional and must agree when present).
absl::Status ReadVocabSize(const GgufFile& gguf, const std::string& p, ModelConfig* config) {
  const GgufTensorInfo* embd = gguf.FindTensor("token_embd.weight");
  if (embd == nullptr) return Invalid(gguf, "missing tensor token_embd.weight");
  if (embd->shape.size() != 2) return Invalid(gguf, "tensor token_embd.weight is not 2-D");
  config->vocab_size = embd->shape[1];
  int64_t declared = config->vocab_size;
  if (absl::Status s = ReadOptionalInt(gguf, p + "vocab_size", &declared); !s.ok()) return s;
  if (declared != config->vocab_size) {
    return Invalid(gguf, absl::StrCat(p, "vocab_size ", declared,
                                      " disagrees with token_embd.weight rows ",
                                      config->vocab_size));
  }
  return absl::OkStatus();
}

// Llama 3's per-pair frequency factors, when the file has them.
absl::Status ReadRopeFreqFactors(const GgufFile& gguf, ModelConfig* config) {
  const GgufTensorInfo* freqs = gguf.FindTensor("rope_freqs.weight");
  if (freqs == nullptr) return absl::OkStatus();
  if (absl::Status s = ExpectTensor(gguf, "rope_freqs.weight", {config->rope_dim / 2}); !s.ok()) {
    return s;
  }
  config->rope_freq_factors.resize(config->rope_dim / 2);
  if (absl::Status s = DequantizeToF32(freqs->type, freqs->data, freqs->num_elements(),
                                       config->rope_freq_factors.data());
      !s.ok()) {
    return Invalid(gguf, absl::StrCat("tensor rope_freqs.weight: ", s.message()));
  }
  return absl::OkStatus();
}

// The tensors outside the layers: embedding, final norm, LM head (absent:
// tied to the embedding) and their optional biases.
absl::Status CheckEmbeddingAndOutput(const GgufFile& gguf, ModelConfig* config) {
  const int64_t h = config->hidden_size;
  if (absl::Status s = ExpectTensor(gguf, "token_embd.weight", {h, config->vocab_size}); !s.ok()) {
    return s;
  }
  if (absl::Status s = ExpectTensor(gguf, "output_norm.weight", {h}); !s.ok()) return s;
  config->tied_embeddings = gguf.FindTensor("output.weight") == nullptr;
  if (!config->tied_embeddings) {
    if (absl::Status s = ExpectTensor(gguf, "output.weight", {h, config->vocab_size}); !s.ok()) {
      return s;
    }
  }
  for (const char* bias : {"output_norm.bias", "output.bias"}) {
    if (gguf.FindTensor(bias) == nullptr) continue;
    const int64_t n = std::string(bias) == "output.bias" ? config->vocab_size : h;
    if (absl::Status s = ExpectTensor(gguf, bias, {n}); !s.ok()) return s;
  }
  return absl::OkStatus();
}

// The rows of each part of a layer's stacked products.
struct LayerPartRows {
  std::vector<int64_t> qkv;     // q, k, v
  std::vector<int64_t> ffn_in;  // gate, up (gated) or up (GELU)
};

LayerPartRows LayerPartRowsOf(const ModelConfig& config) {
  LayerPartRows parts;
  parts.qkv = {config.q_dim(), config.kv_dim(), config.kv_dim()};
  parts.ffn_in = config.ffn == FfnType::kSiluGated
                     ? std::vector<int64_t>{config.ffn_size, config.ffn_size}
                     : std::vector<int64_t>{config.ffn_size};
  return parts;
}

// A gated FFN's gate and up rows are one product here, with no bias
// (transformers' mlp_bias would add one to each half): refused rather
// than added to the wrong rows or dropped.
absl::Status RefuseGatedFfnBiases(const GgufFile& gguf, int64_t layer) {
  for (const char* name : {"ffn_up.bias", "ffn_gate.bias"}) {
    const std::string bias = absl::StrCat("blk.", layer, ".", name);
    if (gguf.FindTensor(bias) != nullptr) {
      return Invalid(gguf, absl::StrCat("tensor ", bias,
                                        ": biases on a gated FFN are not supported"));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckLayerTensors(const GgufFile& gguf, const ModelConfig& config,
                               const LayerPartRows& parts, int64_t layer) {
  const int64_t h = config.hidden_size;
  const LayerTensors t = LayerTensorsOf(config, gguf, layer);
  for (absl::Status s : {
           ExpectTensor(gguf, t.attn_norm, {h}),
           ExpectStacked(gguf, t.qkv, h, PartRows(t.qkv, parts.qkv)),
           ExpectStacked(gguf, {t.attn_output}, config.q_dim(), {h}),
           ExpectStacked(gguf, t.ffn_in, h, PartRows(t.ffn_in, parts.ffn_in)),
           ExpectStacked(gguf, {t.ffn_down}, config.ffn_size, {h}),
       }) {
    if (!s.ok()) return s;
  }
  if (!t.ffn_norm.empty()) {
    if (absl::Status s = ExpectTensor(gguf, t.ffn_norm, {h}); !s.ok()) return s;
  }
  if (!t.qkv_bias.empty()) {
    if (absl::Status s = ExpectStackedVector(gguf, t.qkv_bias, PartRows(t.qkv_bias, parts.qkv));
        !s.ok()) {
      return s;
    }
  }
  if (config.ffn == FfnType::kSiluGated) {
    if (absl::Status s = RefuseGatedFfnBiases(gguf, layer); !s.ok()) return s;
  }
  for (const auto& [bias, n] : std::vector<std::pair<std::string, int64_t>>{
           {t.attn_norm_bias, h}, {t.attn_output_bias, h},
           {t.ffn_in_bias, config.ffn_size}, {t.ffn_down_bias, h}}) {
    if (bias.empty()) continue;
    if (absl::Status s = ExpectTensor(gguf, bias, {n}); !s.ok()) return s;
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ModelConfig> ModelConfigFromGguf(const GgufFile& gguf) {
  ModelConfig config;
  if (absl::Status s = ReadArchitecture(gguf, &config); !s.ok()) return s;
  const std::string p = config.architecture + ".";
  // In this order: it decides which error a file with several problems gets.
  if (absl::Status s = ReadSizes(gguf, p, &config); !s.ok()) return s;
  if (absl::Status s = ReadRope(gguf, p, &config); !s.ok()) return s;
  if (absl::Status s = ReadNormEpsilon(gguf, p, &config); !s.ok()) return s;
  if (absl::Status s = ReadSlidingWindow(gguf, p, &config); !s.ok()) return s;
  if (absl::Status s = ReadVocabSize(gguf, p, &config); !s.ok()) return s;
  if (absl::Status s = ReadRopeFreqFactors(gguf, &config); !s.ok()) return s;
  if (absl::Status s = CheckEmbeddingAndOutput(gguf, &config); !s.ok()) return s;
  const LayerPartRows parts = LayerPartRowsOf(config);
  for (int64_t l = 0; l < config.num_layers; ++l) {
    if (absl::Status s = CheckLayerTensors(gguf, config, parts, l); !s.ok()) return s;
  }
  return config;
}

}  // namespace llorch
