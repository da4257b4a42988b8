// llorch inspect: a model's metadata as JSON.
#include <iostream>
#include <map>
#include <string>

#include "tools/llorch/common.h"
#include "worker/gguf/gguf.h"
#include "worker/model/ggml_ops.h"
#include "worker/model/kv_cache.h"
#include "worker/model/model_config.h"

namespace llorch {
namespace tool {
namespace {

constexpr char kUsage[] = "llorch inspect --model PATH";

json ConfigJson(const ModelConfig& c) {
  return {{"architecture", c.architecture},
          {"name", c.name},
          {"layers", c.num_layers},
          {"hidden_size", c.hidden_size},
          {"heads", c.num_heads},
          {"kv_heads", c.num_kv_heads},
          {"head_dim", c.head_dim},
          {"ffn_size", c.ffn_size},
          {"vocab_size", c.vocab_size},
          {"context_length", c.context_length},
          {"rope_freq_base", c.rope_freq_base},
          {"rope_dim", c.rope_dim},
          {"norm", c.norm == NormType::kRms ? "rms" : "layer"},
          {"norm_eps", c.norm_eps},
          {"rope_type", c.rope_type == RopeType::kAdjacent ? "adjacent" : "halves"},
          {"ffn", c.ffn == FfnType::kSiluGated ? "silu-gated" : "gelu"},
          {"parallel_residual", c.parallel_residual},
          {"sliding_window", c.sliding_window},
          {"tied_embeddings", c.tied_embeddings}};
}

json VocabJson(const VocabData& vocab) {
  return {{"tokenizer", vocab.model == "llama" ? "sentencepiece-bpe" : "byte-level-bpe"},
          {"tokenizer_pre", vocab.pre},
          {"bos_id", vocab.bos_id},
          {"eos_id", vocab.eos_id},
          {"eog_ids", vocab.eog_ids},
          {"add_bos", vocab.add_bos}};
}


// Bytes of one position of one job at each --kv_type the model can use on
// the CPU (q8_0 needs head_dim % 32 == 0).
json KvBytesPerToken(const ModelConfig& config) {
  json out = json::object();
  for (KvType type : {KvType::kF32, KvType::kF16, KvType::kBF16, KvType::kQ8_0}) {
    if (!CheckKvType(type, config.head_dim, c10::Device(c10::kCPU)).ok()) continue;
    out[KvTypeName(type)] = KvCache::BytesFor(config, 1, type);
  }
  return out;
}

absl::Status Inspect() {
  LoadRequest request;
  request.weights = false;
  absl::StatusOr<ServedModel> loaded = LoadModel(request);
  if (!loaded.ok()) return loaded.status();
  int64_t num_parameters = 0;
  int64_t weight_bytes = 0;
  std::map<std::string, int> tensor_types;
  for (const GgufTensorInfo& t : loaded->gguf->tensors()) {
    num_parameters += t.num_elements();
    weight_bytes += static_cast<int64_t>(t.num_bytes);
    tensor_types[GgmlTypeName(t.type)] += 1;
  }
  std::string variant_source;
  absl::StatusOr<GgmlVariant> variant = GgmlVariantFromEnvironment(&variant_source);
  if (!variant.ok()) return variant.status();
  if (absl::StatusOr<CpuIsa> isa = MaxCpuIsaFromEnvironment(); !isa.ok()) return isa.status();
  json out = {{"file", loaded->gguf->path()},
              {"gguf_version", loaded->gguf->version()},
              {"parameters", num_parameters},
              // The weights as the file holds them; a worker's Info says
              // what they take once loaded (weight_bytes).
              {"weight_bytes", weight_bytes},
              // One position of one job at each --kv_type this model can use.
              {"kv_bytes_per_token", KvBytesPerToken(loaded->config)},
              {"tensor_types", tensor_types},
              // The float order llorch's CPU path follows here (ggml_ops.h).
              {"ggml_variant", GgmlVariantName(*variant)},
              {"ggml_variant_source", variant_source},
              // The widest instruction set its kernels use (LLORCH_MAX_CPU_ISA caps it).
              {"cpu_kernels", CpuIsaName(CpuKernelIsa())}};
  out.update(ConfigJson(loaded->config));
  out.update(VocabJson(loaded->tokenizer->vocab()));
  std::cout << out.dump(2) << "\n";
  return absl::OkStatus();
}

}  // namespace

cli::Subcommand InspectCommand() {
  return MakeSubcommand("inspect", "model metadata as JSON", kUsage, {{ModelFlag()}}, &Inspect);
}

}  // namespace tool
}  // namespace llorch
