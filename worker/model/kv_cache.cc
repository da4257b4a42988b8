#include "worker/model/kv_cache.h"

#include <ATen/ATen.h>

#include "absl/strings/str_cat.h"

namespace llorch {
namespace {

at::ScalarType ScalarTypeOf(KvType type) {
  switch (type) {
    case KvType::kF16:
      return at::kHalf;
    case KvType::kBF16:
      return at::kBFloat16;
    case KvType::kF32:
      break;
  }
  return at::kFloat;
}

}  // namespace

const char* KvTypeName(KvType type) {
  switch (type) {
    case KvType::kF16:
      return "f16";
    case KvType::kBF16:
      return "bf16";
    case KvType::kF32:
      break;
  }
  return "f32";
}

absl::StatusOr<KvType> ParseKvType(absl::string_view name) {
  for (KvType type : {KvType::kF32, KvType::kF16, KvType::kBF16}) {
    if (name == KvTypeName(type)) return type;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("KV cache type must be f32, f16 or bf16, got '", name, "'"));
}

size_t KvTypeBytes(KvType type) { return type == KvType::kF32 ? 4 : 2; }

KvCache::KvCache(const ModelConfig& config, int64_t capacity, c10::Device device, KvType type)
    : capacity_(capacity), type_(type) {
  const auto options = at::TensorOptions().dtype(ScalarTypeOf(type)).device(device);
  keys_.reserve(config.num_layers);
  values_.reserve(config.num_layers);
  for (int64_t l = 0; l < config.num_layers; ++l) {
    // Zero-filled so that no uninitialised memory is ever read, even by a
    // masked-out position.
    keys_.push_back(at::zeros({config.num_kv_heads, capacity, config.head_dim}, options));
    values_.push_back(at::zeros({config.num_kv_heads, capacity, config.head_dim}, options));
  }
}

size_t KvCache::BytesFor(const ModelConfig& config, int64_t capacity, KvType type) {
  return static_cast<size_t>(2 * config.num_layers * config.num_kv_heads * capacity *
                             config.head_dim) * KvTypeBytes(type);
}

size_t KvCache::num_bytes() const {
  size_t total = 0;
  for (const auto& t : keys_) total += t.nbytes();
  for (const auto& t : values_) total += t.nbytes();
  return total;
}

}  // namespace llorch
