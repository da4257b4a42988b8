// Matrix products on K-quantised weights (Q4_K, Q5_K, Q6_K) the way
// llama.cpp computes them: each activation row is rounded to ggml's Q8_K
// (blocks of 256, 8 bits, a float scale) and multiplied by the weights'
// integers with integer sums per 16 elements, scaled per block. Every output
// is computed on its own in a fixed order, so results do not depend on how
// many rows share a call or on threads (continuous batching relies on it).
//
// The weights are unpacked once at load into a uniform layout (1.3 bytes per
// weight): 8-bit quants, and per 16 elements an integer scale and min. The
// integer part runs on AVX2 where built (LLORCH_QUANT_MATMUL_AVX2) and gives
// the same integers as the portable code, so results are identical; the
// float part is the same code everywhere. Summation order is llorch's own,
// not a particular ggml SIMD kernel's.
#ifndef LLORCH_WORKER_MODEL_KQUANT_MATMUL_H_
#define LLORCH_WORKER_MODEL_KQUANT_MATMUL_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/gguf/ggml_types.h"
#include "worker/model/quant_matmul.h"

namespace llorch {

inline constexpr int64_t kKBlock = 256;

struct KQuantBlock {
  float d = 0;              // scale of the integer products
  float dmin = 0;           // scale of the mins (0 for Q6_K)
  int16_t scale[16] = {0};  // per 16 elements
  int16_t min[16] = {0};    // per 16 elements (Q4_K/Q5_K: the 32-element min, twice)
  // Quants stored unsigned (Q4_K 0..15, Q5_K 0..31, Q6_K 0..63); the value
  // is q - offset (offset 32 for Q6_K, else 0).
  uint8_t q[kKBlock] = {0};
  int16_t offset = 0;
};

struct KQuantMatrix {
  int64_t rows = 0;
  int64_t in = 0;                   // a multiple of 256
  std::vector<KQuantBlock> blocks;  // rows x (in / 256), row-major
};

bool KQuantSupports(GgmlType type);

// Appends `rows` rows of `in` elements in ggml's `type` blocks to `matrix`
// (whose `in` must match when it already has rows).
absl::Status AppendKQuantRows(GgmlType type, const uint8_t* data, int64_t rows, int64_t in,
                              KQuantMatrix* matrix);

// out[t * rows + r] = dot(weight row r, Q8_K(x row t)) for t < n.
void KQuantMatmul(const KQuantMatrix& weight, const float* x, int64_t n, float* out,
                  const ParallelFor& parallel_for = SerialFor);

}  // namespace llorch

#endif  // LLORCH_WORKER_MODEL_KQUANT_MATMUL_H_
