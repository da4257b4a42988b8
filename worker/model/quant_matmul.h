// Matrix products computed directly on ggml block-quantised weights (Q4_0,
// Q4_1, Q5_0, Q5_1, Q8_0), bit-identical to llama.cpp's CPU backend.
//
// llama.cpp multiplies a quantised weight by activations by first rounding
// each activation row to 8 bits per block of 32 (Q8_0 for Q4_0/Q5_0/Q8_0
// weights, Q8_1 for Q4_1/Q5_1) and then taking integer block dot products.
// QuantMatmul does the same, with the same float lane structure and summation
// order as ggml's x86 AVX2 kernels (quantize_row_q8_0/q8_1 and
// ggml_vec_dot_<type>_q8_<0|1>), so every output equals ggml's vec_dot result
// exactly and does not depend on how many activation rows share the call.
//
// Note: for Q4_0, Q5_0 and Q8_0, llama.cpp does not always use vec_dot: its
// tinyBLAS (llamafile sgemm) and repacked-weight paths sum in another order.
// For Q4_1 and Q5_1 on x86 it always uses vec_dot.
#ifndef LLORCH_WORKER_MODEL_QUANT_MATMUL_H_
#define LLORCH_WORKER_MODEL_QUANT_MATMUL_H_

#include <cstdint>
#include <functional>

#include "worker/gguf/ggml_types.h"

namespace llorch {

// Work on the index range [begin, end).
using RangeFn = std::function<void(int64_t begin, int64_t end)>;
// Runs `body` over [begin, end), possibly split into sub-ranges on several
// threads (e.g. a wrapper around at::parallel_for with a grain size). Each
// index must be covered exactly once.
using ParallelFor =
    std::function<void(int64_t begin, int64_t end, const RangeFn& body)>;
// Runs body(begin, end) on the calling thread.
void SerialFor(int64_t begin, int64_t end, const RangeFn& body);

// True for the weight types QuantMatmul handles.
bool QuantMatmulSupports(GgmlType type);

// out[t * rows + r] = dot(weight row r, x row t) for t < n, r < rows.
// `weight`: `rows` rows of `in` elements in ggml block format, rows contiguous
// (GgmlRowBytes(type, in) bytes each, no alignment needed). `x`: n rows of
// `in` floats, contiguous. Requires QuantMatmulSupports(type), in % 32 == 0,
// rows >= 0, n >= 0 (the process aborts with a message otherwise).
// `parallel_for` splits the weight rows [0, rows) across threads (and, for
// n >= 64, the activation rows to quantise); the result does not depend on
// the split. x must not alias out. Not reentrant from inside parallel_for's
// body on the same thread (a per-thread scratch buffer holds the quantised
// activations).
void QuantMatmul(GgmlType type, const uint8_t* weight, int64_t rows,
                 int64_t in, const float* x, int64_t n, float* out,
                 const ParallelFor& parallel_for = SerialFor);

namespace quant_matmul_internal {
// An activation block rounded to 8 bits (ggml's block_q8_0 / block_q8_1): d
// and s hold the fp16-rounded values (as float) that ggml would store; s is
// fp16(d * sum(qs)) for Q8_1, else 0.
struct ActBlock {
  float d;
  float s;
  int8_t qs[32];
};
// Rounds `num_blocks` blocks of 32 floats of x as ggml's quantize_row_q8_0
// (q8_1 when with_sum); the AVX2 and portable code give the same bits.
void QuantizeActivations(const float* x, int64_t num_blocks, bool with_sum, bool avx2,
                         ActBlock* out);
// Rounds n activation rows of `in` floats (in % 32 == 0) for a `type` weight
// (Q4_0, Q4_1 or Q8_0) into n * in / 32 blocks of `act`: Q8_1 for Q4_1, Q8_0
// otherwise; for Q4_0 also each block's sum of qs into `act_sum` (same
// length; the interleaved and AMX kernels fold ggml's -8 offset with it).
// Batches of 64 rows or more are split by `parallel_for`.
void QuantizeActivationRows(GgmlType type, const float* x, int64_t n, int64_t in, bool avx2,
                            const ParallelFor& parallel_for, ActBlock* act, int32_t* act_sum);
// True when QuantMatmul uses the AVX2 kernels (built with AVX2, FMA, F16C).
bool UsesAvx2();
// QuantMatmul computed with the portable scalar code, which reproduces the
// AVX2 kernels' lanes and summation order: the same results everywhere.
void QuantMatmulPortable(GgmlType type, const uint8_t* weight, int64_t rows,
                         int64_t in, const float* x, int64_t n, float* out);
}  // namespace quant_matmul_internal

}  // namespace llorch

#endif  // LLORCH_WORKER_MODEL_QUANT_MATMUL_H_
