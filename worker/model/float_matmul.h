// Matrix products on float weights kept in the type the file stores them in
// (F32, F16 or BF16), for the few activation rows of a decode step.
//
// Decode multiplies each weight matrix by one row per running job: the time
// is reading the weights, so each weight row is read once per call and meets
// every activation row while it is in cache, over all threads. F16 and BF16
// rows are widened to F32 in registers (F16C, a shift), so a 16-bit model is
// held in 16 bits and read at half the bytes. Prompt rows go to FloatGemm.
//
// Every output is one fixed order of operations (below), whatever n is, how
// the rows are split between threads, or whether the AVX2 or the portable
// code runs: a job's results do not depend on what it is batched with.
#ifndef LLORCH_WORKER_MODEL_FLOAT_MATMUL_H_
#define LLORCH_WORKER_MODEL_FLOAT_MATMUL_H_

#include <cstdint>

#include "worker/gguf/ggml_types.h"
#include "worker/model/quant_matmul.h"  // ParallelFor, SerialFor

namespace llorch {

// F32, F16 and BF16.
bool FloatMatmulSupports(GgmlType type);

// out[t * rows + r] = dot(weight row r, x row t) for t < n, r < rows.
// `weight`: `rows` rows of `in` elements of `type`, contiguous. `x`: n rows
// of `in` floats, contiguous. The dot product: 16 lanes (two registers of 8)
// of fused multiply-adds over consecutive 16-element chunks, the two
// registers added, the 8 lanes summed pairwise (i + 4, then + 2, then + 1),
// then the in % 16 tail added one product at a time. `parallel_for` splits
// [0, rows). Aborts with a message if the type is unsupported or a size
// negative. x must not alias out.
void FloatMatmul(GgmlType type, const void* weight, int64_t rows, int64_t in, const float* x,
                 int64_t n, float* out, const ParallelFor& parallel_for = SerialFor);

// dst[i] = weight element i widened to F32 (exact), for i < count; `src`
// holds `count` elements of `type` (F32, F16 or BF16). `parallel_for`
// splits the elements. For prompts: GEMM on widened blocks of rows.
void WidenToFloat(GgmlType type, const void* src, int64_t count, float* dst,
                  const ParallelFor& parallel_for = SerialFor);
// The same on this thread, for short runs (a KV row) where a ParallelFor
// would cost more than the work.
void WidenRowToFloat(GgmlType type, const void* src, int64_t count, float* dst);

// The reverse for F16 and BF16 (and F32, copied): dst[i] = src[i] rounded to
// the nearest value of `type`, ties to even (F16C's vcvtps2ph where built
// with it; common/float_bits.h otherwise: the same bits). For KV rows.
void NarrowRowFromFloat(GgmlType type, const float* src, int64_t count, void* dst);

namespace float_matmul_internal {
// True when FloatMatmul uses the AVX2 kernels (built with AVX2, FMA, F16C).
bool UsesAvx2();
// FloatMatmul by the portable code: the same lanes and order, so the same bits.
void FloatMatmulPortable(GgmlType type, const void* weight, int64_t rows, int64_t in,
                         const float* x, int64_t n, float* out);
}  // namespace float_matmul_internal

}  // namespace llorch

#endif  // LLORCH_WORKER_MODEL_FLOAT_MATMUL_H_
