#include "worker/model/kv_cache.h"

#include <ATen/ATen.h>

namespace llorch {

KvCache::KvCache(const ModelConfig& config, int64_t capacity, c10::Device device)
    : capacity_(capacity) {
  const auto options = at::TensorOptions().dtype(at::kFloat).device(device);
  keys_.reserve(config.num_layers);
  values_.reserve(config.num_layers);
  for (int64_t l = 0; l < config.num_layers; ++l) {
    // Zero-filled so that no uninitialised memory is ever read, even by a
    // masked-out position.
    keys_.push_back(at::zeros({config.num_kv_heads, capacity, config.head_dim}, options));
    values_.push_back(at::zeros({config.num_kv_heads, capacity, config.head_dim}, options));
  }
}

size_t KvCache::BytesFor(const ModelConfig& config, int64_t capacity) {
  return static_cast<size_t>(2 * config.num_layers * config.num_kv_heads * capacity *
                             config.head_dim) * sizeof(float);
}

size_t KvCache::num_bytes() const {
  size_t total = 0;
  for (const auto& t : keys_) total += t.numel() * sizeof(float);
  for (const auto& t : values_) total += t.numel() * sizeof(float);
  return total;
}

}  // namespace llorch
