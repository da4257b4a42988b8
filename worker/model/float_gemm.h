// Prompt products on float weights kept in their file type (F32, F16,
// BF16): many activation rows against every weight row, register-blocked.
//
// Each output has one order of operations, whatever n is, which rows share
// the call, how they are tiled or split between threads: starting from 0,
// out[t, r] = fma(w[r, k], x[t, k], out[t, r]) for k = 0, 1, ..., in - 1.
// So a prompt row gives the same bits alone, in any chunk, or batched with
// other jobs' rows (libtorch's GEMM does not: its last bits depend on how
// many rows it is given), which is what lets cached prefixes and recomputed
// jobs be bit-identical. Decode rows use FloatMatmul (another fixed order,
// faster for a few rows).
#ifndef LLORCH_WORKER_MODEL_FLOAT_GEMM_H_
#define LLORCH_WORKER_MODEL_FLOAT_GEMM_H_

#include <cstdint>

#include "worker/gguf/ggml_types.h"
#include "worker/model/quant_matmul.h"  // ParallelFor, SerialFor

namespace llorch {

// out[t * rows + r] for t < n, r < rows, in the order above. `weight`: `rows`
// rows of `in` elements of `type` (F32, F16 or BF16), contiguous; `x`: n rows
// of `in` floats. `parallel_for` splits the weight rows. Aborts with a
// message on an unsupported type or negative size. x must not alias out.
void FloatGemm(GgmlType type, const void* weight, int64_t rows, int64_t in, const float* x,
               int64_t n, float* out, const ParallelFor& parallel_for = SerialFor);

namespace float_gemm_internal {
// True when FloatGemm uses the AVX2 kernels.
bool UsesAvx2();
// True when its prompt panels use the AVX-512 kernel (float_gemm_avx512.h):
// built with AVX2, the CPU has AVX-512F, and AllowAvx512 (default true).
bool UsesAvx512();
// Lets tests run the AVX2 panels on an AVX-512 CPU (the same bits).
void AllowAvx512(bool allow);
// FloatGemm by plain scalar fma(): the same order, so the same bits.
void FloatGemmPortable(GgmlType type, const void* weight, int64_t rows, int64_t in,
                       const float* x, int64_t n, float* out);
}  // namespace float_gemm_internal

}  // namespace llorch

#endif  // LLORCH_WORKER_MODEL_FLOAT_GEMM_H_
