// FloatGemm's panel kernel with AVX-512 (float_gemm.h): 32 weight rows per
// packed panel (two registers), 12 activation rows per register tile (24 of
// the 32 registers accumulate). Each output's chain is the one FloatGemm
// defines, k = 0 .. in - 1 with one fma each: the same bits as the AVX2 and
// portable code. This file is compiled with AVX-512 enabled: call it only
// where Supported().
#ifndef LLORCH_WORKER_MODEL_FLOAT_GEMM_AVX512_H_
#define LLORCH_WORKER_MODEL_FLOAT_GEMM_AVX512_H_

#include <cstdint>

namespace llorch {
namespace float_gemm_avx512 {

inline constexpr int kPanel = 32;

// Built with the kernel and running on a CPU with AVX-512F.
bool Supported();

// n activation rows (x at the depth block's first column, rows `in` apart)
// times a packed panel (panel[k * 32 + c]: weight row c, column k, for
// k < depth): out[t * rows + c] for c < cols, continuing the sums already
// there unless `first`.
void PanelTimesRows(const float* panel, int64_t depth, const float* x, int64_t in, int64_t n,
                    float* out, int64_t rows, int cols, bool first);

}  // namespace float_gemm_avx512
}  // namespace llorch

#endif  // LLORCH_WORKER_MODEL_FLOAT_GEMM_AVX512_H_
