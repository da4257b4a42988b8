// The KV cache of one job. Each job owns its own: nothing request-specific
// lives in the model. Keys and values are preallocated for `capacity`
// positions (prompt + the tokens the job may generate), gpt-fast style, in
// the element type the worker was started with (--kv_type).
#ifndef LLORCH_WORKER_MODEL_KV_CACHE_H_
#define LLORCH_WORKER_MODEL_KV_CACHE_H_

#include <cstdint>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

#include "worker/model/model_config.h"

namespace llorch {

// How keys and values are stored. Attention always computes in F32: a
// 16-bit cache halves KV memory, and its only numerical effect is each key
// and value rounded to 16 bits when it is written.
enum class KvType { kF32, kF16, kBF16 };

// "f32", "f16" or "bf16".
const char* KvTypeName(KvType type);
// Parses what KvTypeName prints.
absl::StatusOr<KvType> ParseKvType(absl::string_view name);
size_t KvTypeBytes(KvType type);

class KvCache {
 public:
  // Allocates [num_kv_heads, capacity, head_dim] keys and values per layer.
  KvCache(const ModelConfig& config, int64_t capacity, c10::Device device,
          KvType type = KvType::kF32);

  int64_t capacity() const { return capacity_; }
  KvType type() const { return type_; }
  // Positions [0, num_tokens) hold valid keys/values.
  int64_t num_tokens() const { return num_tokens_; }
  void set_num_tokens(int64_t n) { num_tokens_ = n; }
  size_t num_bytes() const;

  at::Tensor& keys(int64_t layer) { return keys_[layer]; }      // [kv_heads, capacity, head_dim]
  at::Tensor& values(int64_t layer) { return values_[layer]; }  // [kv_heads, capacity, head_dim]

  // Bytes a cache of `capacity` positions of `type` takes for this model.
  static size_t BytesFor(const ModelConfig& config, int64_t capacity, KvType type);

 private:
  int64_t capacity_;
  KvType type_;
  int64_t num_tokens_ = 0;
  std::vector<at::Tensor> keys_;
  std::vector<at::Tensor> values_;
};

}  // namespace llorch

#endif  // LLORCH_WORKER_MODEL_KV_CACHE_H_
