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

KvPool::KvPool(const ModelConfig& config, int64_t num_blocks, int64_t block_size,
               c10::Device device, KvType type)
    : num_blocks_(num_blocks), block_size_(block_size), type_(type) {
  const auto options = at::TensorOptions().dtype(ScalarTypeOf(type)).device(device);
  const int64_t slots = num_blocks * block_size;
  keys_.reserve(config.num_layers);
  values_.reserve(config.num_layers);
  for (int64_t l = 0; l < config.num_layers; ++l) {
    keys_.push_back(at::empty({config.num_kv_heads, slots, config.head_dim}, options));
    values_.push_back(at::empty({config.num_kv_heads, slots, config.head_dim}, options));
  }
}

size_t KvPool::BytesPerBlock(const ModelConfig& config, int64_t block_size, KvType type) {
  return static_cast<size_t>(2 * config.num_layers * config.num_kv_heads * block_size *
                             config.head_dim) * KvTypeBytes(type);
}

size_t KvPool::num_bytes() const {
  size_t total = 0;
  for (const auto& t : keys_) total += t.nbytes();
  for (const auto& t : values_) total += t.nbytes();
  return total;
}

KvCache::KvCache(const ModelConfig& config, int64_t capacity, c10::Device device, KvType type)
    : owned_pool_(std::make_unique<KvPool>(config, 1, capacity, device, type)),
      pool_(owned_pool_.get()),
      block_table_{0} {}

size_t KvCache::BytesFor(const ModelConfig& config, int64_t capacity, KvType type) {
  return KvPool::BytesPerBlock(config, capacity, type);
}

size_t KvCache::num_bytes() const {
  return block_table_.size() * (pool_->num_bytes() / static_cast<size_t>(pool_->num_blocks()));
}

}  // namespace llorch
