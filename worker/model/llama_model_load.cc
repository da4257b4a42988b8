// LlamaModel::Load: the model's settings from its config and LoadOptions,
// then its weights, read once each from the GGUF in the layout the
// multiplying kernels want.

#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <ATen/ATen.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "worker/gguf/gguf.h"
#include "worker/model/amx_matmul.h"
#include "worker/model/device_graph.h"
#include "worker/model/device_kernels.h"
#include "worker/model/interleaved_matmul.h"
#include "worker/model/llama_model.h"
#include "worker/model/quant_matmul.h"

namespace llorch {
namespace {

// Dequantises a GGUF tensor into a float tensor of torch shape `shape`
// (ggml shape reversed: a {in, out} matrix becomes [out, in]).
absl::StatusOr<at::Tensor> LoadTensor(const GgufFile& gguf, const std::string& name) {
  const GgufTensorInfo* info = gguf.FindTensor(name);
  if (info == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(gguf.path(), ": missing tensor ", name));
  }
  std::vector<int64_t> shape(info->shape.rbegin(), info->shape.rend());  // [out, in]
  at::Tensor out = at::empty(shape, at::TensorOptions().dtype(at::kFloat));
  absl::Status status =
      DequantizeToF32(info->type, info->data, info->num_elements(), out.data_ptr<float>());
  if (!status.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(gguf.path(), ": tensor ", name, ": ", status.message()));
  }
  return out;
}

// The per-block offsets m of a Q4_1/Q5_1 matrix as floats [out, in / 32]
// (both block layouts start with f16 d, f16 m).
at::Tensor LoadBlockOffsets(const GgufTensorInfo& info) {
  const int64_t num_blocks = info.num_elements() / 32;
  const size_t block_bytes = GgmlBlockBytes(info.type);
  at::Tensor m = at::empty({info.shape[1], info.shape[0] / 32}, at::kFloat);
  float* out = m.data_ptr<float>();
  for (int64_t b = 0; b < num_blocks; ++b) {
    uint16_t bits;
    std::memcpy(&bits, info.data + b * block_bytes + 2, sizeof(bits));
    out[b] = static_cast<float>(c10::Half(bits, c10::Half::from_bits()));
  }
  return m;
}

ActivationQuant ActivationQuantFor(GgmlType type) {
  switch (type) {
    case GgmlType::kQ4_0:
    case GgmlType::kQ5_0:
    case GgmlType::kQ8_0:
      return ActivationQuant::kQ8_0;
    case GgmlType::kQ4_1:
    case GgmlType::kQ5_1:
      return ActivationQuant::kQ8_1;
    case GgmlType::kQ2_K:
    case GgmlType::kQ3_K:
    case GgmlType::kQ4_K:
    case GgmlType::kQ5_K:
    case GgmlType::kQ6_K:
      return ActivationQuant::kQ8_K;
    default:
      return ActivationQuant::kNone;
  }
}

absl::StatusOr<c10::Device> ParseDevice(const std::string& device) {
  if (device == "cpu") return c10::Device(c10::kCPU);
  if (device == "cuda") {
    if (!at::hasCUDA()) {
      return absl::FailedPreconditionError("device cuda requested but this libtorch has no CUDA "
                                           "support or no GPU is visible");
    }
    return c10::Device(c10::kCUDA, 0);
  }
  if (device == "mps") {
    if (!at::hasMPS()) {
      return absl::FailedPreconditionError(
          "device mps requested but this libtorch has no MPS support");
    }
    return c10::Device(c10::kMPS);
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown device '", device, "' (expected cpu, cuda or mps)"));
}

// The named tensors as one [rows, row_bytes] matrix straight over the GGUF's
// data, holding its owner (no copy: the page cache's pages are the weights),
// where they lie back to back in the order given; undefined otherwise.
at::Tensor MappedRows(const GgufFile& gguf, const std::vector<std::string>& names, int64_t rows,
                      int64_t row_bytes) {
  std::shared_ptr<const void> owner = gguf.data_owner();
  const GgufTensorInfo* first = gguf.FindTensor(names[0]);
  if (owner == nullptr || first->data == nullptr) return at::Tensor();
  const uint8_t* end = first->data;
  for (const std::string& name : names) {
    const GgufTensorInfo* info = gguf.FindTensor(name);
    if (info->data != end) return at::Tensor();
    end += info->num_bytes;
  }
  if (end - first->data != rows * row_bytes) return at::Tensor();
  return at::from_blob(
      const_cast<uint8_t*>(first->data), {rows, row_bytes},
      [owner](void*) mutable { owner.reset(); }, at::TensorOptions().dtype(at::kByte));
}

// The libtorch path's element type for `dtype` on a device named as
// LoadOptions::device names it; nullopt where the CPU's own kernels run.
std::optional<at::ScalarType> LibtorchDtype(LoadOptions::Dtype dtype, absl::string_view device) {
  switch (dtype) {
    case LoadOptions::Dtype::kF32: return at::kFloat;
    case LoadOptions::Dtype::kF16: return at::kHalf;
    case LoadOptions::Dtype::kBF16: return at::kBFloat16;
    case LoadOptions::Dtype::kAuto: break;
  }
  if (device == "cuda") return at::kBFloat16;
  if (device == "mps") return at::kHalf;
  return std::nullopt;
}

}  // namespace

absl::StatusOr<LoadOptions::Dtype> ParseDtype(absl::string_view name) {
  if (name == "auto") return LoadOptions::Dtype::kAuto;
  if (name == "f32") return LoadOptions::Dtype::kF32;
  if (name == "f16") return LoadOptions::Dtype::kF16;
  if (name == "bf16") return LoadOptions::Dtype::kBF16;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown dtype '", name, "' (expected auto, f32, f16 or bf16)"));
}

KvType DefaultKvType(const LoadOptions& options) {
  switch (LibtorchDtype(options.dtype, options.device).value_or(at::kFloat)) {
    case at::kHalf: return KvType::kF16;
    case at::kBFloat16: return KvType::kBF16;
    default: return KvType::kF32;
  }
}

absl::StatusOr<KvType> ParseKvTypeFor(absl::string_view name, const LoadOptions& options) {
  if (name == "auto") return DefaultKvType(options);
  if (absl::StatusOr<KvType> type = ParseKvType(name); type.ok()) return type;
  return absl::InvalidArgumentError(
      absl::StrCat("KV cache type must be auto, f32, f16, bf16 or q8_0, got '", name, "'"));
}

// Reads a GGUF's weights into a configured model: each tensor once, the
// file's pages dropped once its rows are copied, and the parameters counted
// as they go (a tied embedding once).
class LlamaModel::Loader {
 public:
  Loader(const GgufFile& gguf, const LoadOptions& options, LlamaModel* model)
      : gguf_(gguf), options_(options), model_(*model) {}

  // A model with every setting that the config and options decide, and no
  // weights yet.
  static absl::StatusOr<std::unique_ptr<LlamaModel>> Configure(const ModelConfig& config,
                                                               const LoadOptions& options);

  // The output norm and its bias, the LM head, then the embedding.
  absl::Status LoadOutput();
  absl::Status LoadLayer(int64_t l);
  int64_t num_parameters() const { return num_parameters_; }

 private:
  // Below F32 the libtorch path computes as transformers does: no ggml roundings.
  bool f32() const { return model_.dtype_ == at::kFloat; }
  // A tensor dequantised to F32 on the CPU.
  absl::StatusOr<at::Tensor> F32Tensor(const std::string& name);
  // *out = the named tensor on the model's device, in its dtype.
  absl::Status Vector(const std::string& name, at::Tensor* out);
  // As Vector; leaves *out undefined where `name` is empty.
  absl::Status OptionalVector(const std::string& name, at::Tensor* out);
  // The named tensors stacked (fused Q/K/V biases); undefined for no names.
  absl::Status StackedVector(const std::vector<std::string>& names, at::Tensor* out);
  // One weight matrix from the named GGUF tensors stacked by rows (fused
  // q/k/v and gate/up: one product instead of three or two per step, which
  // matters for small models where per-call overhead is a large part of a
  // decode step).
  absl::StatusOr<Matrix> LoadMatrix(const std::vector<std::string>& names);
  // CPU: the rows as the file holds them (ggml blocks, or F32/F16/BF16 in
  // their own type), multiplied directly: mapped, or copied in the layout
  // the kernels for this variant read.
  Matrix RawMatrix(const std::vector<std::string>& names, ActivationQuant quant,
                   bool quant_kernel);
  // The libtorch path: dequantised and stacked, on the device in its dtype.
  absl::StatusOr<Matrix> LibtorchMatrix(const std::vector<std::string>& names,
                                        ActivationQuant quant);
  absl::Status LoadEmbedding();

  const GgufFile& gguf_;
  const LoadOptions& options_;
  LlamaModel& model_;
  int64_t num_parameters_ = 0;
};

absl::StatusOr<std::unique_ptr<LlamaModel>> LlamaModel::Loader::Configure(
    const ModelConfig& config, const LoadOptions& options) {
  absl::StatusOr<c10::Device> device = ParseDevice(options.device);
  if (!device.ok()) return device.status();
  if (absl::Status kv = CheckKvType(options.kv_type, config.head_dim, *device); !kv.ok()) {
    return kv;
  }
  if (absl::StatusOr<CpuIsa> isa = MaxCpuIsaFromEnvironment(); !isa.ok()) return isa.status();

  const std::optional<at::ScalarType> libtorch_dtype =
      LibtorchDtype(options.dtype, options.device);
  if (libtorch_dtype.has_value() && options.kv_type == KvType::kQ8_0) {
    return absl::InvalidArgumentError(
        "a q8_0 KV cache needs the CPU kernels (dtype auto on the CPU)");
  }
  if (libtorch_dtype == at::kHalf && device->is_cpu()) {
    return absl::InvalidArgumentError(
        "dtype f16 needs a GPU: libtorch's CPU matrix products have no F16 (use bf16 or f32)");
  }
  const bool f32 = !libtorch_dtype.has_value() || *libtorch_dtype == at::kFloat;

  std::unique_ptr<LlamaModel> model(new LlamaModel());
  model->config_ = config;
  model->ggml_gelu_ = options.gelu != LoadOptions::Gelu::kExact && f32;
  model->device_ = *device;
  model->cpu_kernels_ = !libtorch_dtype.has_value();
  model->dtype_ = libtorch_dtype.value_or(at::kFloat);
  model->kv_type_ = options.kv_type;
  const bool graphs = options.cuda_graphs && !f32 && DeviceGraph::Available(*device);
  model->decode_pad_ = options.decode_pad >= 0 ? options.decode_pad : (graphs ? 256 : 0);
  if (graphs && model->decode_pad_ > 0) {
    model->graphs_ = std::make_unique<DecodeGraphs>(*device, /*max_graphs=*/256);
  }
  model->device_kernels_ = options.cuda_kernels && !f32 && DeviceKernelsAvailable(*device);
  model->round_activations_to_weight_type_ = options.round_activations_to_weight_type;
  if (options.ggml_variant.has_value()) {
    model->ggml_variant_ = *options.ggml_variant;
  } else {
    absl::StatusOr<GgmlVariant> variant = GgmlVariantFromEnvironment();
    if (!variant.ok()) return variant.status();
    model->ggml_variant_ = *variant;
  }
  return model;
}

absl::StatusOr<at::Tensor> LlamaModel::Loader::F32Tensor(const std::string& name) {
  absl::StatusOr<at::Tensor> t = LoadTensor(gguf_, name);
  if (t.ok()) {
    num_parameters_ += t->numel();
    gguf_.ReleasePages(*gguf_.FindTensor(name));
  }
  return t;
}

absl::Status LlamaModel::Loader::Vector(const std::string& name, at::Tensor* out) {
  absl::StatusOr<at::Tensor> t = F32Tensor(name);
  if (!t.ok()) return t.status();
  *out = std::move(*t).to(model_.device_, model_.dtype_);
  return absl::OkStatus();
}

absl::Status LlamaModel::Loader::OptionalVector(const std::string& name, at::Tensor* out) {
  if (name.empty()) return absl::OkStatus();
  return Vector(name, out);
}

absl::Status LlamaModel::Loader::StackedVector(const std::vector<std::string>& names,
                                               at::Tensor* out) {
  if (names.empty()) return absl::OkStatus();
  std::vector<at::Tensor> parts;
  for (const std::string& name : names) {
    absl::StatusOr<at::Tensor> part = F32Tensor(name);
    if (!part.ok()) return part.status();
    parts.push_back(*part);
  }
  *out = at::cat(parts, 0).to(model_.device_, model_.dtype_);
  return absl::OkStatus();
}

absl::StatusOr<LlamaModel::Matrix> LlamaModel::Loader::LoadMatrix(
    const std::vector<std::string>& names) {
  const GgufTensorInfo* first = gguf_.FindTensor(names[0]);
  bool same_type = true;
  for (const std::string& name : names) same_type &= gguf_.FindTensor(name)->type == first->type;
  const ActivationQuant quant = options_.quantize_activations && same_type && f32()
                                    ? ActivationQuantFor(first->type)
                                    : ActivationQuant::kNone;
  const bool cpu_quant_kernel =
      quant != ActivationQuant::kNone && same_type &&
      (QuantMatmulSupports(first->type) || KQuantSupports(first->type));
  const bool cpu_float_kernel =
      quant == ActivationQuant::kNone && same_type && FloatMatmulSupports(first->type);
  if (model_.cpu_kernels_ && (cpu_quant_kernel || cpu_float_kernel)) {
    return RawMatrix(names, quant, cpu_quant_kernel);
  }
  return LibtorchMatrix(names, quant);
}

LlamaModel::Matrix LlamaModel::Loader::RawMatrix(const std::vector<std::string>& names,
                                                 ActivationQuant quant, bool quant_kernel) {
  const GgufTensorInfo* first = gguf_.FindTensor(names[0]);
  int64_t rows = 0;
  // Q4_0/Q8_0/Q4_K tensors of whole groups of 8 rows are interleaved by 8,
  // as llama.cpp repacks each such tensor (and computes Q4_0 and Q4_K in its
  // repacked kernels' orders).
  bool interleave = quant_kernel;
  bool kquant_repacked = true;
  // Where llama.cpp uses its AMX buffer, Q4_0/Q4_1/Q8_0/Q4_K/Q5_K/Q6_K
  // tensors of whole groups of 32 rows are packed by 16 and computed in its
  // AMX order.
  bool amx = quant_kernel && model_.ggml_variant_ == GgmlVariant::kAmx;
  for (const std::string& name : names) {
    const GgufTensorInfo* info = gguf_.FindTensor(name);
    rows += info->shape[1];
    interleave &= InterleavedMatmulSupports(info->type, info->shape[1], info->shape[0]) ||
                  KQuantInterleaveSupports(info->type, info->shape[1], info->shape[0]);
    kquant_repacked &= KQuantOrderFor(info->type, info->shape[1]) == KQuantOrder::kRepacked;
    amx &= AmxMatmulSupports(info->type, info->shape[1], info->shape[0]);
  }
  interleave &= !amx;
  const bool kquant_interleave = interleave && KQuantSupports(first->type);
  const int64_t row_bytes =
      amx ? static_cast<int64_t>(AmxPackedBytes(first->type, 32, first->shape[0]) / 32)
      : kquant_interleave
          ? static_cast<int64_t>(KQuantInterleavedBytes(1, first->shape[0]))
          : static_cast<int64_t>(GgmlRowBytes(first->type, first->shape[0]));

  Matrix matrix;
  // Rows as the file holds them are multiplied where they lie; packed or
  // interleaved ones are copied and the file's pages dropped.
  if (options_.map_weights && !amx && !interleave) {
    matrix.raw = MappedRows(gguf_, names, rows, row_bytes);
  }
  const bool mapped = matrix.raw.defined();
  if (!mapped) matrix.raw = at::empty({rows, row_bytes}, at::kByte);
  uint8_t* dst = matrix.raw.data_ptr<uint8_t>();
  for (const std::string& name : names) {
    const GgufTensorInfo* info = gguf_.FindTensor(name);
    num_parameters_ += info->num_elements();
    if (mapped) continue;
    const auto* src = static_cast<const uint8_t*>(info->data);
    if (amx) {
      PackAmxRows(info->type, src, info->shape[1], info->shape[0], dst);
    } else if (kquant_interleave) {
      InterleaveKQuantRows(src, info->shape[1], info->shape[0], dst);
    } else if (interleave) {
      InterleaveRows(info->type, src, info->shape[1], info->shape[0], dst);
    } else {
      std::memcpy(dst, src, info->num_bytes);
    }
    dst += info->shape[1] * row_bytes;
    gguf_.ReleasePages(*info);
  }
  matrix.interleaved = interleave;
  matrix.amx = amx;
  matrix.kquant_order = kquant_repacked ? KQuantOrder::kRepacked : KQuantOrder::kVecDot;
  matrix.raw_type = first->type;
  matrix.rows = rows;
  matrix.in = first->shape[0];
  matrix.quant = quant;
  return matrix;
}

absl::StatusOr<LlamaModel::Matrix> LlamaModel::Loader::LibtorchMatrix(
    const std::vector<std::string>& names, ActivationQuant quant) {
  std::vector<at::Tensor> parts;
  for (const std::string& name : names) {
    absl::StatusOr<at::Tensor> part = F32Tensor(name);
    if (!part.ok()) return part.status();
    parts.push_back(*part);
  }
  Matrix matrix;
  matrix.weight = (parts.size() == 1 ? parts[0] : at::cat(parts, 0))
                      .contiguous()
                      .to(model_.device_, model_.dtype_);
  matrix.quant = quant;
  if (quant == ActivationQuant::kQ8_1) {
    std::vector<at::Tensor> offsets;
    for (const std::string& name : names) {
      offsets.push_back(LoadBlockOffsets(*gguf_.FindTensor(name)));
      gguf_.ReleasePages(*gguf_.FindTensor(name));
    }
    matrix.block_offsets = at::cat(offsets, 0).contiguous().to(model_.device_);
  }
  return matrix;
}

absl::Status LlamaModel::Loader::LoadOutput() {
  if (absl::Status s = Vector("output_norm.weight", &model_.output_norm_); !s.ok()) return s;
  absl::Status s = OptionalVector(gguf_.FindTensor("output_norm.bias") ? "output_norm.bias" : "",
                                  &model_.output_norm_bias_);
  if (!s.ok()) return s;
  s = OptionalVector(gguf_.FindTensor("output.bias") ? "output.bias" : "", &model_.output_bias_);
  if (!s.ok()) return s;
  const bool tied = model_.config_.tied_embeddings;
  // The LM head, then the embedding (counted once when the two are tied).
  const int64_t before_output = num_parameters_;
  absl::StatusOr<Matrix> output = LoadMatrix({tied ? "token_embd.weight" : "output.weight"});
  if (!output.ok()) return output.status();
  model_.output_ = std::move(*output);
  if (tied) num_parameters_ = before_output;
  return LoadEmbedding();
}

absl::Status LlamaModel::Loader::LoadEmbedding() {
  const bool tied = model_.config_.tied_embeddings;
  const Matrix& head = model_.output_;
  const GgufTensorInfo& embd = *gguf_.FindTensor("token_embd.weight");
  Embedding& embedding = model_.token_embd_;
  embedding.type = embd.type;
  embedding.hidden = embd.shape[0];
  if (model_.cpu_kernels_ && embd.type != GgmlType::kF32 && GgmlCanDequantize(embd.type)) {
    if (tied && head.raw.defined() && head.raw_type == embd.type) {
      embedding.raw = head.raw;  // the same rows: held once
      embedding.interleaved = head.interleaved;
      embedding.amx = head.amx;
    } else {
      embedding.raw = at::empty(
          {embd.shape[1], static_cast<int64_t>(embd.num_bytes / embd.shape[1])}, at::kByte);
      std::memcpy(embedding.raw.data_ptr<uint8_t>(), embd.data, embd.num_bytes);
      gguf_.ReleasePages(embd);
    }
    num_parameters_ += embd.num_elements();
  } else if (tied && head.weight.defined()) {
    embedding.table = head.weight;  // the same F32 table: held once
    num_parameters_ += embd.num_elements();
  } else if (tied && head.raw.defined() && head.raw_type == GgmlType::kF32) {
    embedding.table = head.raw.view(at::kFloat);  // [vocab, hidden], held once
    num_parameters_ += embd.num_elements();
  } else {
    return Vector("token_embd.weight", &embedding.table);
  }
  return absl::OkStatus();
}

absl::Status LlamaModel::Loader::LoadLayer(int64_t l) {
  const LayerTensors t = LayerTensorsOf(model_.config_, gguf_, l);
  Layer& layer = model_.layers_[l];
  absl::Status s = Vector(t.attn_norm, &layer.attn_norm);
  if (s.ok()) s = OptionalVector(t.attn_norm_bias, &layer.attn_norm_bias);
  if (s.ok()) s = OptionalVector(t.ffn_norm, &layer.ffn_norm);
  if (s.ok()) s = StackedVector(t.qkv_bias, &layer.qkv_bias);
  if (s.ok()) s = OptionalVector(t.attn_output_bias, &layer.wo_bias);
  if (s.ok()) s = OptionalVector(t.ffn_in_bias, &layer.ffn_in_bias);
  if (s.ok()) s = OptionalVector(t.ffn_down_bias, &layer.down_bias);
  if (!s.ok()) return s;
  struct {
    const std::vector<std::string> names;
    Matrix* matrix;
  } const matrices[] = {{t.qkv, &layer.wqkv},
                        {{t.attn_output}, &layer.wo},
                        {t.ffn_in, &layer.w_ffn_in},
                        {{t.ffn_down}, &layer.w_down}};
  for (const auto& [names, matrix] : matrices) {
    absl::StatusOr<Matrix> m = LoadMatrix(names);
    if (!m.ok()) return m.status();
    *matrix = std::move(*m);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<LlamaModel>> LlamaModel::Load(const GgufFile& gguf,
                                                             const LoadOptions& options) {
  absl::StatusOr<ModelConfig> config = ModelConfigFromGguf(gguf);
  if (!config.ok()) return config.status();
  absl::StatusOr<std::unique_ptr<LlamaModel>> model = Loader::Configure(*config, options);
  if (!model.ok()) return model.status();
  const ModelConfig& c = (*model)->config_;

  Loader loader(gguf, options, model->get());
  if (absl::Status s = loader.LoadOutput(); !s.ok()) return s;
  (*model)->layers_.resize(c.num_layers);
  for (int64_t l = 0; l < c.num_layers; ++l) {
    if (absl::Status s = loader.LoadLayer(l); !s.ok()) return s;
  }
  (*model)->num_parameters_ = loader.num_parameters();

  // A device step (a replayed CUDA graph among them) looks its rows up in
  // tables of the whole context; the CPU computes a step's rows as it goes
  // (RopeRows; a table of a 1M-token context is 512 MiB at rope_dim 128).
  if (!(*model)->device_.is_cpu()) {
    std::vector<int64_t> every(static_cast<size_t>(c.context_length));
    for (int64_t p = 0; p < c.context_length; ++p) every[p] = p;
    auto [cos, sin] = RopeAngles(c, every);
    (*model)->rope_cos_ = cos.to((*model)->device_);
    (*model)->rope_sin_ = sin.to((*model)->device_);
  }
  return model;
}

}  // namespace llorch
