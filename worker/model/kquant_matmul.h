// Matrix products on K-quantised weights (Q4_K, Q5_K, Q6_K) computed
// straight from the file's blocks, bit-identical to llama.cpp's x86 CPU
// backend (the AVX2 and AVX-512 libraries compute these the same way).
//
// llama.cpp rounds each activation row to Q8_K (blocks of 256, 8 bits, a
// float scale, sums per 16) and takes integer products with the weight's
// quants and 6- or 8-bit sub-block scales. Two float orders follow:
// - vec_dot (ggml_vec_dot_<type>_q8_K): the integer products of each block
//   land in 8 int32 lanes (lane L holds elements 4L..4L+3 of every 32);
//   each lane is converted to float and accumulated across blocks as
//   acc[L] = fma(dx * dw, lane[L], acc[L]); the result is ggml's
//   horizontal sum of the lanes plus the mins' term.
// - repacked (Q4_K only: ggml's q4_K_8x8 kernels, used for every Q4_K weight
//   whose rows come in eights): per block one integer sum for the scaled
//   products and one for the mins, acc = fma(sum, dw * dx, acc) and
//   acc_min = fma(mins, dmin * dx, acc_min); the result is acc - acc_min.
//   llama.cpp multiplies the activation rows of a call in groups of 4 (gemm)
//   and the last n % 4 one by one (gemv); its gemm sums the same way but per
//   64 elements instead of per block, and rounds ties of magnitude in the
//   activations' scale sign differently. `in_groups_of_4` says which rows
//   take that order, so that a caller can reproduce llama.cpp's grouping per
//   sequence.
// Every output is computed on its own, so results do not depend on the
// other rows of a call or on threads (continuous batching relies on it).
// The AVX2 code and the portable code give the same bits.
#ifndef LLORCH_WORKER_MODEL_KQUANT_MATMUL_H_
#define LLORCH_WORKER_MODEL_KQUANT_MATMUL_H_

#include <cstddef>
#include <cstdint>

#include "worker/gguf/ggml_types.h"
#include "worker/model/quant_matmul.h"

namespace llorch {

inline constexpr int64_t kKBlock = 256;

// Which of llama.cpp's two float orders a weight follows (see above).
enum class KQuantOrder { kVecDot, kRepacked };

bool KQuantSupports(GgmlType type);

// The order llama.cpp's x86 CPU backend (AVX2 or AVX-512) uses for a weight
// of `rows` rows of `type` used as a matrix: Q4_K tensors of whole groups of
// 8 rows are repacked, everything else runs vec_dot.
KQuantOrder KQuantOrderFor(GgmlType type, int64_t rows);

// out[t * rows + r] = dot(weight row r, Q8_K(x row t)) for t < n, r < rows.
// `weight`: `rows` rows of `in` elements in ggml's `type` blocks (GgmlRowBytes
// each, no alignment needed). Requires KQuantSupports(type), in % 256 == 0
// (the process aborts with a message otherwise). `parallel_for` splits the
// weight rows; the result does not depend on the split. x must not alias
// out. Not reentrant from inside parallel_for's body on the same thread.
// `in_groups_of_4`: null, or n flags; for kRepacked, rows t with a nonzero
// flag follow llama.cpp's 4-row gemm order, the others its 1-row gemv order.
void KQuantMatmul(GgmlType type, const uint8_t* weight, int64_t rows, int64_t in,
                  const float* x, int64_t n, float* out, KQuantOrder order,
                  const ParallelFor& parallel_for = SerialFor,
                  const uint8_t* in_groups_of_4 = nullptr);

// Q4_K weights held with 8 rows interleaved per block (llorch's layout,
// after llama.cpp's block_q4_Kx8): the same results as KQuantMatmul with
// KQuantOrder::kRepacked on the ggml rows, with the vector work spread over
// 8 weight rows instead of reduced across one: a 32-byte load of quants
// holds 4 bytes of each of the 8 rows, multiplied by 4 activation bytes
// broadcast, so each 32-bit lane sums one row and no horizontal sums remain.
// Layout: rows in groups of 8; per group and block of 256 elements (1,184
// bytes, 148 per row where ggml takes 144): the 8 rows' f16 d, their f16
// dmin, the 6-bit scales unpacked to bytes (8 per sub-block of 32, row after
// row), the mins as bytes (per pair of sub-blocks 2j, 2j + 1: row r's two at
// 2r, 2r + 1), then 32 chunks of 32 bytes, chunk 8j + k holding quant bytes
// [32j + 4k, 32j + 4k + 4) of each row in turn.
inline constexpr size_t kQ4KInterleavedRowBlockBytes = 148;

// True when a [rows, in] matrix of `type` can be held interleaved: Q4_K,
// rows % 8 == 0, in % 256 == 0 (then KQuantOrderFor gives kRepacked).
bool KQuantInterleaveSupports(GgmlType type, int64_t rows, int64_t in);

// Bytes of a [rows, in] Q4_K matrix held interleaved.
size_t KQuantInterleavedBytes(int64_t rows, int64_t in);

// Writes `rows` Q4_K ggml rows of `in` elements into the interleaved layout
// (KQuantInterleavedBytes(rows, in) bytes at `out`).
void InterleaveKQuantRows(const uint8_t* ggml_rows, int64_t rows, int64_t in, uint8_t* out);

// Copies row `row` of an interleaved matrix back out as one ggml Q4_K row.
void DeinterleaveKQuantRow(const uint8_t* interleaved, int64_t in, int64_t row,
                           uint8_t* ggml_row);

// KQuantMatmul(kQ4_K, ..., KQuantOrder::kRepacked, ...) on interleaved rows:
// the same bits. Requires KQuantInterleaveSupports(kQ4_K, rows, in).
// `parallel_for` splits the groups of 8 rows.
void KQuantInterleavedMatmul(const uint8_t* interleaved, int64_t rows, int64_t in,
                             const float* x, int64_t n, float* out,
                             const ParallelFor& parallel_for = SerialFor,
                             const uint8_t* in_groups_of_4 = nullptr);

namespace kquant_matmul_internal {
// Offsets within one group block of interleaved Q4_K (the layout above).
inline constexpr int64_t kGroupRows = 8;
inline constexpr size_t kGroupBlockBytes = kGroupRows * kQ4KInterleavedRowBlockBytes;
inline constexpr size_t kGroupD = 0, kGroupDmin = 16, kGroupScales = 32, kGroupMins = 96;
inline constexpr size_t kGroupQs = 160;
static_assert(kGroupQs + kGroupRows * 128 == kGroupBlockBytes, "interleaved Q4_K layout");
// One activation block rounded as ggml's quantize_row_q8_K_ref.
struct Q8KBlock {
  float d;
  int8_t q[kKBlock];
  int16_t bsums[16];  // sums of q per 16 elements
};
// Rounds `num_blocks` blocks of 256 floats of x as quantize_row_q8_K_ref.
// `four_row_rule`: as ggml_quantize_mat_q8_K_4x8 (the rows llama.cpp's
// repacked gemm takes), which differs only on ties of magnitude.
void QuantizeRowQ8K(const float* x, int64_t num_blocks, bool four_row_rule, Q8KBlock* out);
// True when KQuantMatmul uses the AVX2 kernels.
bool UsesAvx2();
// True when interleaved Q4_K takes the AVX-512 VNNI kernel (kquant_avx512.h)
// for pairs of groups: built with AVX2, the CPU has AVX-512 VNNI, and
// AllowAvx512 (default true).
bool UsesAvx512();
// Lets tests run the AVX2 kernel on an AVX-512 CPU (the same bits).
void AllowAvx512(bool allow);
// KQuantMatmul computed with the portable scalar code.
void KQuantMatmulPortable(GgmlType type, const uint8_t* weight, int64_t rows, int64_t in,
                          const float* x, int64_t n, float* out, KQuantOrder order,
                          const uint8_t* in_groups_of_4 = nullptr);
// KQuantInterleavedMatmul computed with the portable scalar code.
void KQuantInterleavedMatmulPortable(const uint8_t* interleaved, int64_t rows, int64_t in,
                                     const float* x, int64_t n, float* out,
                                     const uint8_t* in_groups_of_4 = nullptr);
}  // namespace kquant_matmul_internal

}  // namespace llorch

#endif  // LLORCH_WORKER_MODEL_KQUANT_MATMUL_H_
