// ggml tensor types as stored in GGUF, their block layout, and conversion of
// a tensor's raw bytes to float32.
#ifndef LLORCH_WORKER_GGUF_GGML_TYPES_H_
#define LLORCH_WORKER_GGUF_GGML_TYPES_H_

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"

namespace llorch {

enum class GgmlType : uint32_t {
  kF32 = 0, kF16 = 1, kQ4_0 = 2, kQ4_1 = 3, kQ5_0 = 6, kQ5_1 = 7, kQ8_0 = 8,
  kQ8_1 = 9, kQ2_K = 10, kQ3_K = 11, kQ4_K = 12, kQ5_K = 13, kQ6_K = 14,
  kQ8_K = 15, kIQ2_XXS = 16, kIQ2_XS = 17, kIQ3_XXS = 18, kIQ1_S = 19,
  kIQ4_NL = 20, kIQ3_S = 21, kIQ2_S = 22, kIQ4_XS = 23, kI8 = 24, kI16 = 25,
  kI32 = 26, kI64 = 27, kF64 = 28, kIQ1_M = 29, kBF16 = 30, kTQ1_0 = 34,
  kTQ2_0 = 35,
};

// "F32", "Q4_1", ...; "type N" for values this build does not know.
const char* GgmlTypeName(GgmlType type);
// True for types this build knows the block layout of (size computations).
bool GgmlTypeKnown(GgmlType type);
// Elements per block (1 for plain types) and bytes per block.
int64_t GgmlBlockSize(GgmlType type);
size_t GgmlBlockBytes(GgmlType type);
// Bytes of a row of `num_elements` (must be a multiple of the block size).
size_t GgmlRowBytes(GgmlType type, int64_t num_elements);
// True if DequantizeToF32 supports the type.
bool GgmlCanDequantize(GgmlType type);
// Converts `num_elements` values (a multiple of the block size) to float32.
absl::Status DequantizeToF32(GgmlType type, const void* data,
                             int64_t num_elements, float* out);

}  // namespace llorch

#endif  // LLORCH_WORKER_GGUF_GGML_TYPES_H_
