#include "worker/model/kv_cache.h"

#include <ATen/ATen.h>

#include <atomic>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/float_bits.h"
#include "worker/model/quant_matmul.h"

namespace llorch {
namespace {

uint64_t NextPoolId() {
  static std::atomic<uint64_t> next{1};
  return next.fetch_add(1);
}

constexpr int64_t kQ8Block = 32;       // values per block_q8_0
constexpr int64_t kQ8BlockBytes = 34;  // F16 scale + 32 int8

at::ScalarType ScalarTypeOf(KvType type) {
  switch (type) {
    case KvType::kF16:
      return at::kHalf;
    case KvType::kBF16:
      return at::kBFloat16;
    case KvType::kQ8_0:
      return at::kByte;
    case KvType::kF32:
      break;
  }
  return at::kFloat;
}

// IEEE half of a float already rounded to one (exactly representable).
uint16_t ExactHalfBits(float f) {
  return at::Half(f).x;
}

}  // namespace

const char* KvTypeName(KvType type) {
  switch (type) {
    case KvType::kF16:
      return "f16";
    case KvType::kBF16:
      return "bf16";
    case KvType::kQ8_0:
      return "q8_0";
    case KvType::kF32:
      break;
  }
  return "f32";
}

absl::StatusOr<KvType> ParseKvType(absl::string_view name) {
  for (KvType type : {KvType::kF32, KvType::kF16, KvType::kBF16, KvType::kQ8_0}) {
    if (name == KvTypeName(type)) return type;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("KV cache type must be f32, f16, bf16 or q8_0, got '", name, "'"));
}

size_t KvRowBytes(KvType type, int64_t head_dim) {
  switch (type) {
    case KvType::kF16:
    case KvType::kBF16:
      return 2 * head_dim;
    case KvType::kQ8_0:
      return head_dim / kQ8Block * kQ8BlockBytes;
    case KvType::kF32:
      break;
  }
  return 4 * head_dim;
}

absl::Status CheckKvType(KvType type, int64_t head_dim, c10::Device device) {
  if (type != KvType::kQ8_0) return absl::OkStatus();
  if (!device.is_cpu()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "a q8_0 KV cache is CPU only (device ", device.str(), "): use f16 or bf16 there"));
  }
  if (head_dim % kQ8Block != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "a q8_0 KV cache needs head_dim to be a multiple of 32; this model's is ", head_dim));
  }
  return absl::OkStatus();
}

void KvPool::QuantizeRows(const float* x, int64_t num_rows, int64_t head_dim, uint8_t* out) {
  const int64_t blocks = head_dim / kQ8Block;
  const bool avx2 = quant_matmul_internal::UsesAvx2();
  for (int64_t r = 0; r < num_rows; ++r) {
    uint8_t* row = out + r * blocks * kQ8BlockBytes;
    for (int64_t b = 0; b < blocks; ++b) {
      // ggml's quantize_row_q8_0 (d = max|x| / 127, q = round(x / d)), the
      // same bits on every CPU; one block at a time, nothing allocated.
      quant_matmul_internal::ActBlock rounded;
      quant_matmul_internal::QuantizeActivations(x + r * head_dim + b * kQ8Block, 1,
                                                 /*with_sum=*/false, avx2, &rounded);
      const uint16_t d = ExactHalfBits(rounded.d);
      std::memcpy(row + b * kQ8BlockBytes, &d, 2);
      std::memcpy(row + b * kQ8BlockBytes + 2, rounded.qs, kQ8Block);
    }
  }
}

void KvPool::DequantizeRow(const uint8_t* row, int64_t head_dim, float* out) {
  // ggml's dequantize_row_q8_0: y = q * d.
  for (int64_t b = 0; b < head_dim / kQ8Block; ++b) {
    const uint8_t* block = row + b * kQ8BlockBytes;
    uint16_t bits;
    std::memcpy(&bits, block, 2);
    const float d = HalfToFloat(bits);
    const auto* qs = reinterpret_cast<const int8_t*>(block + 2);
    for (int64_t i = 0; i < kQ8Block; ++i) out[b * kQ8Block + i] = qs[i] * d;
  }
}

KvPool::KvPool(const ModelConfig& config, int64_t num_blocks, int64_t block_size,
               c10::Device device, KvType type)
    : id_(NextPoolId()), num_blocks_(num_blocks), block_size_(block_size), type_(type) {
  const auto options = at::TensorOptions().dtype(ScalarTypeOf(type)).device(device);
  const int64_t slots = num_blocks * block_size;
  keys_.reserve(config.num_layers);
  values_.reserve(config.num_layers);
  // Q8_0 rows are bytes; the other types hold head_dim elements.
  const int64_t row = type == KvType::kQ8_0
                          ? static_cast<int64_t>(KvRowBytes(type, config.head_dim))
                          : config.head_dim;
  for (int64_t l = 0; l < config.num_layers; ++l) {
    keys_.push_back(at::empty({config.num_kv_heads, slots, row}, options));
    values_.push_back(at::empty({config.num_kv_heads, slots, row}, options));
  }
}

size_t KvPool::BytesPerBlock(const ModelConfig& config, int64_t block_size, KvType type) {
  return static_cast<size_t>(2 * config.num_layers * config.num_kv_heads * block_size) *
         KvRowBytes(type, config.head_dim);
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
