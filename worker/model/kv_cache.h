// KV memory: a pool of fixed-size blocks (vLLM's paged KV) and each job's
// own cache, a table of the blocks its positions live in. Nothing
// request-specific lives in the model. Keys and values are stored in the
// element type the worker was started with (--kv_type).
#ifndef LLORCH_WORKER_MODEL_KV_CACHE_H_
#define LLORCH_WORKER_MODEL_KV_CACHE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include <c10/core/Device.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

#include "worker/model/model_config.h"

namespace llorch {

// How keys and values are stored. Attention always computes in F32: a
// 16-bit cache halves KV memory, and its only numerical effect is each key
// and value rounded to 16 bits when it is written. Q8_0 (ggml's block_q8_0:
// per 32 values one F16 scale and 32 int8, 34 bytes) takes 0.27x of F32;
// each head's row of head_dim values is rounded as ggml's quantize_row_q8_0
// rounds it, and widened to F32 for attention. CPU only, head_dim % 32 == 0.
enum class KvType { kF32, kF16, kBF16, kQ8_0 };

// "f32", "f16", "bf16" or "q8_0".
const char* KvTypeName(KvType type);
// Parses what KvTypeName prints.
absl::StatusOr<KvType> ParseKvType(absl::string_view name);
// Bytes one position of one KV head takes (head_dim values of `type`).
size_t KvRowBytes(KvType type, int64_t head_dim);
// OK when a model with this head size can hold its cache as `type` on
// `device`; else why not (INVALID_ARGUMENT).
absl::Status CheckKvType(KvType type, int64_t head_dim, c10::Device device);

// Keys and values of every layer for a pool of `num_blocks` blocks of
// `block_size` positions: per layer [kv_heads, num_blocks * block_size,
// head_dim] (Q8_0: [kv_heads, slots, KvRowBytes] bytes), so one block of one
// KV head is `block_size` contiguous rows.
// Which job owns which block is the engine's BlockManager's business. Not
// zero-filled: a position is read only after it is written, and pages of a
// large pool that are never used are never touched.
class KvPool {
 public:
  KvPool(const ModelConfig& config, int64_t num_blocks, int64_t block_size, c10::Device device,
         KvType type = KvType::kF32);

  int64_t num_blocks() const { return num_blocks_; }
  int64_t block_size() const { return block_size_; }
  int64_t num_slots() const { return num_blocks_ * block_size_; }
  KvType type() const { return type_; }
  size_t num_bytes() const;
  // Unique in the process (never reused): names this pool's storage, which
  // a captured decode step (DecodeGraphs) reads by address.
  uint64_t id() const { return id_; }

  at::Tensor& keys(int64_t layer) { return keys_[layer]; }      // [kv_heads, num_slots, head_dim]
  at::Tensor& values(int64_t layer) { return values_[layer]; }  // [kv_heads, num_slots, head_dim]
  // Q8_0: rows of a pool tensor above, as bytes, and as floats again.
  static void QuantizeRows(const float* x, int64_t num_rows, int64_t head_dim, uint8_t* out);
  static void DequantizeRow(const uint8_t* row, int64_t head_dim, float* out);

  // Bytes one block of `block_size` positions of `type` takes for this model.
  static size_t BytesPerBlock(const ModelConfig& config, int64_t block_size, KvType type);

 private:
  uint64_t id_;
  int64_t num_blocks_;
  int64_t block_size_;
  KvType type_;
  std::vector<at::Tensor> keys_;
  std::vector<at::Tensor> values_;
};

// One job's KV cache: the blocks of a pool its positions live in, in order
// (position p sits in block_table()[p / block_size] at row p % block_size).
class KvCache {
 public:
  // A contiguous cache of its own for `capacity` positions (one block), for
  // jobs run outside the engine (CLI, warm-up, tests).
  KvCache(const ModelConfig& config, int64_t capacity, c10::Device device,
          KvType type = KvType::kF32);
  // An empty cache in a shared pool; blocks come from whoever manages it.
  explicit KvCache(KvPool* pool) : pool_(pool) {}

  KvPool& pool() { return *pool_; }
  int64_t block_size() const { return pool_->block_size(); }
  const std::vector<int32_t>& block_table() const { return block_table_; }
  void AppendBlock(int32_t block) { block_table_.push_back(block); }
  // Forgets every position and block (a preempted job, to be recomputed).
  void Reset() {
    block_table_.clear();
    num_tokens_ = 0;
  }
  // The pool row of absolute position `pos` (< capacity()).
  int64_t Slot(int64_t pos) const {
    return int64_t{block_table_[pos / block_size()]} * block_size() + pos % block_size();
  }

  int64_t capacity() const { return static_cast<int64_t>(block_table_.size()) * block_size(); }
  KvType type() const { return pool_->type(); }
  // Positions [0, num_tokens) hold valid keys/values.
  int64_t num_tokens() const { return num_tokens_; }
  void set_num_tokens(int64_t n) { num_tokens_ = n; }
  // Bytes of the blocks it holds.
  size_t num_bytes() const;

  // Bytes a cache of `capacity` positions of `type` takes for this model.
  static size_t BytesFor(const ModelConfig& config, int64_t capacity, KvType type);

 private:
  std::unique_ptr<KvPool> owned_pool_;  // the contiguous constructor's
  KvPool* pool_;
  std::vector<int32_t> block_table_;
  int64_t num_tokens_ = 0;
};

}  // namespace llorch

#endif  // LLORCH_WORKER_MODEL_KV_CACHE_H_
