#include "worker/convert/hf_checkpoint.h"

#include <sys/stat.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "worker/convert/hf_tokenizer.h"
#include "worker/safetensors/safetensors.h"

namespace llorch {
namespace {

using json = nlohmann::json;

absl::Status Invalid(const std::string& dir, const std::string& message) {
  return absl::InvalidArgumentError(absl::StrCat(dir, ": ", message));
}

absl::StatusOr<json> ReadJson(const std::string& path) {
  return ReadJsonFile(path, /*missing_ok=*/false);
}

// Hyper-parameters as llama.cpp's converter writes them (it rejects other
// integer types for these keys).
GgufValue IntValue(int64_t v) { return GgufInt(GgufValueType::kUint32, v); }

// No real model comes near this size, head or layer count (the largest have
// hidden sizes of 2^14-2^15, intermediate sizes of 2^16, 2^17-2^18 token
// vocabularies, 2^7 layers); a config.json value beyond it is corrupt, and
// would make us loop or allocate for it.
constexpr int64_t kMaxConfigSize = int64_t{1} << 24;
// max_position_embeddings: written as uint32, as llama.cpp does.
constexpr int64_t kMaxContext = (int64_t{1} << 31) - 1;

// What the checkpoint says, with the model type's defaults.
struct HfConfig {
  std::string model_type, arch;
  int64_t hidden = 0, layers = 0, heads = 0, kv_heads = 0, ffn = 0, context = 0, vocab = 0;
  int64_t head_dim = 0, rope_dim = 0, sliding_window = 0;
  double rope_theta = 10000.0, norm_eps = 1e-5;
  bool tied = false;
  std::string rope_scaling_type;  // "", "linear" or "llama3"
  double rope_factor = 1.0;
  std::vector<float> rope_freq_factors;
};

// config.json and the directory its errors name.
struct ConfigJson {
  const std::string& dir;
  const json& c;
};

// model_type, and the architecture llama.cpp writes for it.
absl::Status ReadArchitecture(const ConfigJson& config, HfConfig* h) {
  const json& c = config.c;
  if (!c.is_object() || !c.contains("model_type") || !c["model_type"].is_string()) {
    return Invalid(config.dir, "config.json has no model_type");
  }
  h->model_type = c["model_type"].get<std::string>();
  static const std::map<std::string, std::string> kArch = {
      {"llama", "llama"}, {"mistral", "llama"}, {"qwen2", "qwen2"}, {"phi3", "phi3"}, {"phi", "phi2"}};
  auto arch = kArch.find(h->model_type);
  if (arch == kArch.end()) {
    return Invalid(config.dir, absl::StrCat("model_type '", h->model_type,
                                            "' is not supported (supported: ",
                                            kSupportedModelTypes, ")"));
  }
  h->arch = arch->second;
  return absl::OkStatus();
}

// Sets *out to config.json's `key`, a positive integer within kMaxConfigSize
// (kMaxContext for max_position_embeddings). Absent or null: an error if
// `required`, else *out is left as it is.
absl::Status ReadPositiveInt(const ConfigJson& config, const char* key, bool required,
                             int64_t* out) {
  const json& c = config.c;
  if (!c.contains(key) || c[key].is_null()) {
    return required ? Invalid(config.dir, absl::StrCat("config.json lacks ", key))
                    : absl::OkStatus();
  }
  if (!c[key].is_number_integer() || c[key].get<int64_t>() <= 0) {
    return Invalid(config.dir, absl::StrCat("config.json: ", key, " must be a positive integer"));
  }
  const int64_t limit = std::string(key) == "max_position_embeddings" ? kMaxContext
                                                                      : kMaxConfigSize;
  if (c[key].is_number_unsigned() && c[key].get<uint64_t>() > static_cast<uint64_t>(limit)) {
    return Invalid(config.dir, absl::StrCat("config.json: ", key, " ", c[key].get<uint64_t>(),
                                            " is implausible (more than ", limit, ")"));
  }
  *out = c[key].get<int64_t>();
  return absl::OkStatus();
}

// The sizes and head counts, which must divide into whole heads.
absl::Status ReadDimensions(const ConfigJson& config, HfConfig* h) {
  for (absl::Status s : {ReadPositiveInt(config, "hidden_size", true, &h->hidden),
                         ReadPositiveInt(config, "num_hidden_layers", true, &h->layers),
                         ReadPositiveInt(config, "num_attention_heads", true, &h->heads),
                         ReadPositiveInt(config, "intermediate_size", true, &h->ffn),
                         ReadPositiveInt(config, "max_position_embeddings", true, &h->context),
                         ReadPositiveInt(config, "vocab_size", true, &h->vocab)}) {
    if (!s.ok()) return s;
  }
  h->kv_heads = h->heads;
  if (absl::Status s = ReadPositiveInt(config, "num_key_value_heads", false, &h->kv_heads);
      !s.ok()) {
    return s;
  }
  if (h->hidden % h->heads != 0 || h->heads % h->kv_heads != 0) {
    return Invalid(config.dir, "config.json: hidden_size, num_attention_heads and "
                               "num_key_value_heads do not divide evenly");
  }
  h->head_dim = h->hidden / h->heads;
  const json& c = config.c;
  if (c.contains("head_dim") && !c["head_dim"].is_null() &&
      (!c["head_dim"].is_number_integer() || c["head_dim"].get<int64_t>() != h->head_dim)) {
    return Invalid(config.dir, "config.json: a head_dim other than hidden_size / "
                               "num_attention_heads is not supported");
  }
  return absl::OkStatus();
}

// phi rotates partial_rotary_factor of each head; its qk_layernorm is not
// supported.
absl::Status ReadPhi2Attention(const ConfigJson& config, HfConfig* h) {
  const double factor = config.c.value("partial_rotary_factor", 0.5);
  if (!(factor > 0 && factor <= 1)) {
    return Invalid(config.dir, "config.json: partial_rotary_factor must be in (0, 1]");
  }
  h->rope_dim = static_cast<int64_t>(h->head_dim * factor);
  if (config.c.value("qk_layernorm", false)) {
    return Invalid(config.dir, "phi with qk_layernorm is not supported");
  }
  return absl::OkStatus();
}

// The one activation each architecture is run with.
absl::Status CheckActivation(const ConfigJson& config, const HfConfig& h) {
  const std::string act = config.c.value("hidden_act", h.arch == "phi2" ? "gelu_new" : "silu");
  const std::string expected_act = h.arch == "phi2" ? "gelu_new" : "silu";
  if (act != expected_act) {
    return Invalid(config.dir, absl::StrCat("hidden_act '", act, "' is not supported for ",
                                            h.model_type, " (expected ", expected_act, ")"));
  }
  return absl::OkStatus();
}

// mistral's sliding_window is kept; qwen2's use_sliding_window is refused.
absl::Status ReadSlidingWindow(const ConfigJson& config, HfConfig* h) {
  const json& c = config.c;
  if (h->model_type == "mistral" && c.contains("sliding_window") &&
      c["sliding_window"].is_number_integer()) {
    h->sliding_window = c["sliding_window"].get<int64_t>();
  }
  if (h->model_type == "qwen2" && c.value("use_sliding_window", false)) {
    return Invalid(config.dir, "qwen2 with use_sliding_window is not supported");
  }
  return absl::OkStatus();
}

// llama3 rope scaling: a factor per rotated pair of dimensions (rope_factor
// for long wavelengths, 1 for short ones, a blend between), from the
// rope_theta, rope_dim and rope_factor already read. The blend divides by
// high - low: factors that would give infinities are refused.
absl::StatusOr<std::vector<float>> Llama3RopeFreqFactors(const ConfigJson& config,
                                                         const json& rope_scaling,
                                                         const HfConfig& h) {
  const json& r = rope_scaling;
  const double low = r.value("low_freq_factor", 1.0), high = r.value("high_freq_factor", 4.0);
  const double old_context = r.value("original_max_position_embeddings", 8192.0);
  if (!(low > 0 && high > low && std::isfinite(high) && old_context >= 1 &&
        std::isfinite(old_context))) {
    return Invalid(config.dir, absl::StrCat("config.json: llama3 rope_scaling needs 0 < "
                                            "low_freq_factor < high_freq_factor and "
                                            "original_max_position_embeddings >= 1, got ",
                                            low, ", ", high, ", ", old_context));
  }
  const double low_wavelen = old_context / low, high_wavelen = old_context / high;
  std::vector<float> factors;
  for (int64_t i = 0; i < h.rope_dim; i += 2) {
    const double freq = 1.0 / std::pow(h.rope_theta, static_cast<double>(i) / h.rope_dim);
    const double wavelen = 2 * M_PI / freq;
    double factor = 1.0;
    if (wavelen > low_wavelen) {
      factor = h.rope_factor;
    } else if (wavelen >= high_wavelen) {
      const double smooth = (old_context / wavelen - low) / (high - low);
      factor = 1.0 / ((1 - smooth) / h.rope_factor + smooth);
    }
    factors.push_back(static_cast<float>(factor));
  }
  return factors;
}

// rope_scaling, when present: linear or llama3.
absl::Status ReadRopeScaling(const ConfigJson& config, HfConfig* h) {
  const json& c = config.c;
  if (!c.contains("rope_scaling") || c["rope_scaling"].is_null()) return absl::OkStatus();
  const json& r = c["rope_scaling"];
  if (!r.is_object()) return Invalid(config.dir, "config.json: rope_scaling is not an object");
  std::string type = r.value("rope_type", r.value("type", std::string()));
  h->rope_factor = r.value("factor", 1.0);
  if (type == "linear" && h->rope_factor > 0) {
    h->rope_scaling_type = "linear";
  } else if (type == "llama3" && h->rope_factor > 0) {
    h->rope_scaling_type = "llama3";
    absl::StatusOr<std::vector<float>> factors = Llama3RopeFreqFactors(config, r, *h);
    if (!factors.ok()) return factors.status();
    h->rope_freq_factors = *std::move(factors);
  } else {
    return Invalid(config.dir, absl::StrCat("rope_scaling type '", type,
                                            "' is not supported (supported: linear, llama3)"));
  }
  return absl::OkStatus();
}

// The steps run in this order: it decides which error a bad config gets, and
// later steps use what earlier ones read (rope_theta and rope_dim for llama3).
absl::StatusOr<HfConfig> ParseConfigOrThrow(const std::string& dir, const json& c) {
  const ConfigJson config{dir, c};
  HfConfig h;
  if (absl::Status s = ReadArchitecture(config, &h); !s.ok()) return s;
  if (absl::Status s = ReadDimensions(config, &h); !s.ok()) return s;
  if (c.contains("rope_theta") && c["rope_theta"].is_number()) h.rope_theta = c["rope_theta"].get<double>();
  const char* eps_key = h.arch == "phi2" ? "layer_norm_eps" : "rms_norm_eps";
  if (c.contains(eps_key) && c[eps_key].is_number()) h.norm_eps = c[eps_key].get<double>();
  h.tied = c.value("tie_word_embeddings", false);
  h.rope_dim = h.head_dim;
  if (h.arch == "phi2") {
    if (absl::Status s = ReadPhi2Attention(config, &h); !s.ok()) return s;
  }
  if (absl::Status s = CheckActivation(config, h); !s.ok()) return s;
  if (absl::Status s = ReadSlidingWindow(config, &h); !s.ok()) return s;
  if (absl::Status s = ReadRopeScaling(config, &h); !s.ok()) return s;
  return h;
}

// config.json is untrusted: a value of an unexpected type (a string where a
// number belongs) makes nlohmann's accessors above throw; that is a malformed
// file, not a crash.
absl::StatusOr<HfConfig> ParseConfig(const std::string& dir, const json& c) {
  try {
    return ParseConfigOrThrow(dir, c);
  } catch (const json::exception& e) {
    return Invalid(dir, absl::StrCat("config.json holds a value of the wrong type (", e.what(), ")"));
  }
}

// The first error of a sequence of steps (the others are dropped).
struct FirstError {
  absl::Status status;
  void push_back(absl::Status s) {
    if (status.ok()) status = std::move(s);
  }
};

// llama.cpp's row order for llama Q/K: within each head, rows i and
// i + head_dim/2 (the halves HF rotates together) become rows 2i and 2i+1.
std::shared_ptr<std::vector<uint8_t>> PermuteRopeRows(const SafeTensor& t, int64_t num_heads) {
  const int64_t rows = t.shape[0];
  const size_t row_bytes = t.num_bytes / rows;
  const int64_t head_dim = rows / num_heads, half = head_dim / 2;
  auto out = std::make_shared<std::vector<uint8_t>>(t.num_bytes);
  for (int64_t h = 0; h < num_heads; ++h) {
    for (int64_t i = 0; i < half; ++i) {
      for (int64_t j = 0; j < 2; ++j) {
        const int64_t from = h * head_dim + j * half + i, to = h * head_dim + 2 * i + j;
        std::memcpy(out->data() + to * row_bytes, t.data + from * row_bytes, row_bytes);
      }
    }
  }
  return out;
}

// config.json, parsed; NotFound when the directory has none.
absl::StatusOr<HfConfig> ReadConfig(const std::string& dir) {
  absl::StatusOr<json> config_json = ReadJson(dir + "/config.json");
  if (!config_json.ok()) {
    if (absl::IsNotFound(config_json.status())) {
      return absl::NotFoundError(absl::StrCat(dir, ": no config.json (not a Hugging Face model "
                                              "directory)"));
    }
    return config_json.status();
  }
  return ParseConfig(dir, *config_json);
}

// The weights: one file, or shards listed by the index.
absl::StatusOr<std::vector<std::string>> ListWeightFiles(const std::string& dir) {
  absl::StatusOr<json> index = ReadJson(dir + "/model.safetensors.index.json");
  if (!index.ok() && !absl::IsNotFound(index.status())) return index.status();
  if (!index.ok()) return std::vector<std::string>{"model.safetensors"};
  if (!index->contains("weight_map") || !(*index)["weight_map"].is_object()) {
    return Invalid(dir, "model.safetensors.index.json has no weight_map");
  }
  std::set<std::string> unique;
  for (const auto& [name, file] : (*index)["weight_map"].items()) {
    if (!file.is_string()) return Invalid(dir, "model.safetensors.index.json: bad weight_map");
    unique.insert(file.get<std::string>());
  }
  return std::vector<std::string>(unique.begin(), unique.end());
}

// The HF tensors by name, over all the weight files.
using HfTensors = std::map<std::string, const SafeTensor*>;

// Opens the weight files, which `keep_alive` holds for the tensors' sake.
absl::StatusOr<HfTensors> OpenWeightFiles(const std::string& dir,
                                          const std::vector<std::string>& files,
                                          std::vector<std::shared_ptr<const void>>* keep_alive) {
  HfTensors hf;
  for (const std::string& file : files) {
    if (file.find('/') != std::string::npos) return Invalid(dir, "weight_map names a path");
    absl::StatusOr<std::unique_ptr<SafeTensorsFile>> st = SafeTensorsFile::Open(dir + "/" + file);
    if (!st.ok()) return st.status();
    std::shared_ptr<const SafeTensorsFile> shared(std::move(*st));
    for (const auto& [name, tensor] : shared->tensors()) hf[name] = &tensor;
    keep_alive->push_back(shared);
  }
  return hf;
}

// The GGUF tensors, which point into the SafeTensors mappings or into the
// buffers (permuted rows, rope factors) that keep_alive owns.
struct GgufTensors {
  std::vector<GgufTensorInfo> tensors;
  std::vector<std::shared_ptr<const void>> keep_alive;
};

// Adds HF tensors under their GGUF names. Keeps the first error; the calls
// after it still run (the caller stops between layers).
class TensorMapper {
 public:
  TensorMapper(const std::string& dir, const HfTensors& hf, GgufTensors* out)
      : dir_(dir), hf_(hf), out_(out) {}

  // permute_heads > 0: Q or K rows of that many heads, put in llama.cpp's
  // RoPE order.
  void Add(const std::string& gguf_name, const std::string& hf_name, int64_t permute_heads) {
    statuses_.push_back(AddTensor(gguf_name, hf_name, permute_heads));
  }
  // As Add when the checkpoint has the tensor (an optional bias).
  void AddIfPresent(const std::string& gguf_name, const std::string& hf_name,
                    int64_t permute_heads = 0) {
    statuses_.push_back(hf_.count(hf_name) == 0 ? absl::OkStatus()
                                                : AddTensor(gguf_name, hf_name, permute_heads));
  }
  const absl::Status& status() const { return statuses_.status; }

 private:
  absl::Status AddTensor(const std::string& gguf_name, const std::string& hf_name,
                         int64_t permute_heads) {
    auto it = hf_.find(hf_name);
    if (it == hf_.end()) return Invalid(dir_, absl::StrCat("missing tensor ", hf_name));
    const SafeTensor& t = *it->second;
    GgufTensorInfo info;
    info.name = gguf_name;
    info.shape.assign(t.shape.rbegin(), t.shape.rend());  // ggml order
    info.type = t.type;
    info.data = t.data;
    info.num_bytes = t.num_bytes;
    if (permute_heads > 0) {
      if (t.shape.empty() || t.shape[0] == 0 || t.shape[0] % (2 * permute_heads) != 0) {
        return Invalid(dir_, absl::StrCat("tensor ", hf_name, " cannot be split into ",
                                          permute_heads, " heads"));
      }
      auto permuted = PermuteRopeRows(t, permute_heads);
      info.data = permuted->data();
      out_->keep_alive.push_back(permuted);
    }
    out_->tensors.push_back(std::move(info));
    return absl::OkStatus();
  }

  const std::string& dir_;
  const HfTensors& hf_;
  GgufTensors* out_;
  FirstError statuses_;
};

// One layer's name prefixes: "blk.N." in GGUF, "model.layers.N." in HF.
struct LayerPrefixes {
  std::string gguf, hf;
};

// phi3: fused QKV and gate/up projections.
void MapPhi3Layer(const LayerPrefixes& p, TensorMapper* mapper) {
  mapper->Add(p.gguf + "attn_qkv.weight", p.hf + "self_attn.qkv_proj.weight", 0);
  mapper->Add(p.gguf + "attn_output.weight", p.hf + "self_attn.o_proj.weight", 0);
  mapper->Add(p.gguf + "ffn_norm.weight", p.hf + "post_attention_layernorm.weight", 0);
  mapper->Add(p.gguf + "ffn_up.weight", p.hf + "mlp.gate_up_proj.weight", 0);
  mapper->Add(p.gguf + "ffn_down.weight", p.hf + "mlp.down_proj.weight", 0);
}

// Separate Q, K and V, each with an optional bias.
void MapQkv(const HfConfig& h, const LayerPrefixes& p, TensorMapper* mapper) {
  const bool llama_order = h.arch == "llama";  // llama.cpp permutes Q/K for llama only
  const int64_t q_heads = llama_order ? h.heads : 0, k_heads = llama_order ? h.kv_heads : 0;
  for (const auto& [gguf, name, heads] : std::vector<std::tuple<std::string, std::string, int64_t>>{
           {"attn_q", "q_proj", q_heads}, {"attn_k", "k_proj", k_heads}, {"attn_v", "v_proj", 0}}) {
    mapper->Add(p.gguf + gguf + ".weight", p.hf + "self_attn." + name + ".weight", heads);
    mapper->AddIfPresent(p.gguf + gguf + ".bias", p.hf + "self_attn." + name + ".bias", heads);
  }
}

// phi2: a biased LayerNorm, dense output and fc1/fc2 MLP, all with biases.
void MapPhi2LayerRest(const LayerPrefixes& p, TensorMapper* mapper) {
  mapper->Add(p.gguf + "attn_norm.bias", p.hf + "input_layernorm.bias", 0);
  mapper->Add(p.gguf + "attn_output.weight", p.hf + "self_attn.dense.weight", 0);
  mapper->Add(p.gguf + "attn_output.bias", p.hf + "self_attn.dense.bias", 0);
  mapper->Add(p.gguf + "ffn_up.weight", p.hf + "mlp.fc1.weight", 0);
  mapper->Add(p.gguf + "ffn_up.bias", p.hf + "mlp.fc1.bias", 0);
  mapper->Add(p.gguf + "ffn_down.weight", p.hf + "mlp.fc2.weight", 0);
  mapper->Add(p.gguf + "ffn_down.bias", p.hf + "mlp.fc2.bias", 0);
}

// llama and qwen2: output projection, post-attention norm, gated MLP.
void MapLlamaLayerRest(const LayerPrefixes& p, TensorMapper* mapper) {
  mapper->Add(p.gguf + "attn_output.weight", p.hf + "self_attn.o_proj.weight", 0);
  mapper->AddIfPresent(p.gguf + "attn_output.bias", p.hf + "self_attn.o_proj.bias", 0);
  mapper->Add(p.gguf + "ffn_norm.weight", p.hf + "post_attention_layernorm.weight", 0);
  mapper->Add(p.gguf + "ffn_gate.weight", p.hf + "mlp.gate_proj.weight", 0);
  mapper->Add(p.gguf + "ffn_up.weight", p.hf + "mlp.up_proj.weight", 0);
  mapper->Add(p.gguf + "ffn_down.weight", p.hf + "mlp.down_proj.weight", 0);
}

// One layer: its input norm, then attention and MLP as the architecture lays
// them out.
void MapLayer(const HfConfig& h, int64_t layer, TensorMapper* mapper) {
  const LayerPrefixes p{absl::StrCat("blk.", layer, "."),
                        absl::StrCat("model.layers.", layer, ".")};
  mapper->Add(p.gguf + "attn_norm.weight", p.hf + "input_layernorm.weight", 0);
  if (h.arch == "phi3") {
    MapPhi3Layer(p, mapper);
    return;
  }
  MapQkv(h, p, mapper);
  if (h.arch == "phi2") {
    MapPhi2LayerRest(p, mapper);
  } else {
    MapLlamaLayerRest(p, mapper);
  }
}

// llama.cpp's names and order for the checkpoint's tensors.
void MapTensorNames(const HfConfig& h, TensorMapper* mapper) {
  mapper->Add("token_embd.weight", "model.embed_tokens.weight", 0);
  // Stops at the first missing tensor: num_hidden_layers may be absurd.
  for (int64_t l = 0; l < h.layers && mapper->status().ok(); ++l) MapLayer(h, l, mapper);
  if (h.arch == "phi2") {
    mapper->Add("output_norm.weight", "model.final_layernorm.weight", 0);
    mapper->Add("output_norm.bias", "model.final_layernorm.bias", 0);
  } else {
    mapper->Add("output_norm.weight", "model.norm.weight", 0);
  }
  if (!h.tied) {
    mapper->Add("output.weight", "lm_head.weight", 0);
    mapper->AddIfPresent("output.bias", "lm_head.bias", 0);
  }
}

// llama3 rope scaling's factors, as the rope_freqs.weight tensor.
void AddRopeFreqs(const HfConfig& h, GgufTensors* out) {
  if (h.rope_freq_factors.empty()) return;
  auto factors = std::make_shared<std::vector<float>>(h.rope_freq_factors);
  GgufTensorInfo info;
  info.name = "rope_freqs.weight";
  info.shape = {static_cast<int64_t>(factors->size())};
  info.type = GgmlType::kF32;
  info.data = reinterpret_cast<const uint8_t*>(factors->data());
  info.num_bytes = factors->size() * sizeof(float);
  out->tensors.push_back(info);
  out->keep_alive.push_back(factors);
}

// The hyper-parameters under llama.cpp's keys (the tokenizer's are added apart).
std::map<std::string, GgufValue> ModelMetadata(const std::string& dir, const HfConfig& h) {
  std::map<std::string, GgufValue> metadata;
  const std::string p = h.arch + ".";
  const size_t slash = dir.find_last_of('/', dir.size() > 1 ? dir.size() - 2 : 0);
  metadata["general.architecture"] = GgufString(h.arch);
  metadata["general.name"] = GgufString(slash == std::string::npos ? dir : dir.substr(slash + 1));
  metadata[p + "block_count"] = IntValue(h.layers);
  metadata[p + "context_length"] = IntValue(h.context);
  metadata[p + "embedding_length"] = IntValue(h.hidden);
  metadata[p + "feed_forward_length"] = IntValue(h.ffn);
  metadata[p + "attention.head_count"] = IntValue(h.heads);
  metadata[p + "attention.head_count_kv"] = IntValue(h.kv_heads);
  metadata[p + "rope.freq_base"] = GgufFloat32(h.rope_theta);
  metadata[p + "rope.dimension_count"] = IntValue(h.rope_dim);
  metadata[p + (h.arch == "phi2" ? "attention.layer_norm_epsilon"
                                  : "attention.layer_norm_rms_epsilon")] = GgufFloat32(h.norm_eps);
  if (h.sliding_window > 0) metadata[p + "attention.sliding_window"] = IntValue(h.sliding_window);
  if (h.rope_scaling_type == "linear") {
    metadata[p + "rope.scaling.type"] = GgufString("linear");
    metadata[p + "rope.scaling.factor"] = GgufFloat32(h.rope_factor);
  }
  return metadata;
}

}  // namespace

bool IsDirectory(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

absl::StatusOr<std::unique_ptr<GgufFile>> OpenHfCheckpoint(const std::string& dir) {
  absl::StatusOr<HfConfig> parsed = ReadConfig(dir);
  if (!parsed.ok()) return parsed.status();
  const HfConfig& h = *parsed;
  absl::StatusOr<std::vector<std::string>> files = ListWeightFiles(dir);
  if (!files.ok()) return files.status();
  GgufTensors parts;
  absl::StatusOr<HfTensors> hf = OpenWeightFiles(dir, *files, &parts.keep_alive);
  if (!hf.ok()) return hf.status();
  TensorMapper mapper(dir, *hf, &parts);
  MapTensorNames(h, &mapper);
  if (!mapper.status().ok()) return mapper.status();
  AddRopeFreqs(h, &parts);

  std::map<std::string, GgufValue> metadata = ModelMetadata(dir, h);
  if (absl::Status s = AddHfTokenizerMetadata(dir, h.vocab, &metadata); !s.ok()) return s;
  return GgufFile::FromParts(dir, std::move(metadata), std::move(parts.tensors),
                             std::move(parts.keep_alive));
}

}  // namespace llorch
