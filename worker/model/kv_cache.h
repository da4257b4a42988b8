// The KV cache of one job. Each job owns its own: nothing request-specific
// lives in the model. Keys and values are preallocated for `capacity`
// positions (prompt + the tokens the job may generate), gpt-fast style.
#ifndef LLORCH_WORKER_MODEL_KV_CACHE_H_
#define LLORCH_WORKER_MODEL_KV_CACHE_H_

#include <cstdint>
#include <vector>

#include <ATen/core/Tensor.h>

#include "worker/model/model_config.h"

namespace llorch {

class KvCache {
 public:
  // Allocates [num_kv_heads, capacity, head_dim] keys and values per layer.
  KvCache(const ModelConfig& config, int64_t capacity, c10::Device device);

  int64_t capacity() const { return capacity_; }
  // Positions [0, num_tokens) hold valid keys/values.
  int64_t num_tokens() const { return num_tokens_; }
  void set_num_tokens(int64_t n) { num_tokens_ = n; }
  size_t num_bytes() const;

  at::Tensor& keys(int64_t layer) { return keys_[layer]; }      // [kv_heads, capacity, head_dim]
  at::Tensor& values(int64_t layer) { return values_[layer]; }  // [kv_heads, capacity, head_dim]

  // Bytes a cache of `capacity` positions takes for this model (F32).
  static size_t BytesFor(const ModelConfig& config, int64_t capacity);

 private:
  int64_t capacity_;
  int64_t num_tokens_ = 0;
  std::vector<at::Tensor> keys_;
  std::vector<at::Tensor> values_;
};

}  // namespace llorch

#endif  // LLORCH_WORKER_MODEL_KV_CACHE_H_
