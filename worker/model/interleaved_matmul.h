// Matrix products on Q4_0, Q4_1 and Q8_0 weights held with 8 rows
// interleaved per block, the layout llama.cpp's CPU backend repacks Q4_0 and
// Q8_0 weights into: one 32-byte load feeds eight rows, and a decode step
// reads one stream of bytes instead of one per row, which the hardware
// prefetches far better (3x the bytes per second on one core).
//
// Layout: rows in groups of 8; for each group and block b (32 elements), the
// 8 rows' fp16 scales (16 bytes; Q4_1: then their 8 fp16 mins), then chunks
// of 32 bytes, chunk c holding bytes [4c, 4c + 4) of each row's quants, row
// after row (Q4_0/Q4_1: 4 chunks of packed nibbles; Q8_0: 8 chunks). The
// same size as the ggml rows.
//
// Results, activations rounded to Q8_0 (Q4_1: Q8_1) as ggml does:
// - Q8_0 and Q4_1: bit-identical to QuantMatmul (ggml's vec_dot, which is
//   what llama.cpp uses for them on x86).
// - Q4_0: bit-identical to llama.cpp's repacked Q4_0 kernels, which it uses on
//   AVX2 machines for every Q4_0 matrix with rows % 8 == 0 (gemv and gemm both
//   sum each block's integer dot exactly, then acc = fma(dot, d_w * d_x, acc)
//   block after block), not to vec_dot.
// Every output is computed on its own in a fixed order: results do not depend
// on the batch or the threads; the AVX2 and portable code give the same bits.
#ifndef LLORCH_WORKER_MODEL_INTERLEAVED_MATMUL_H_
#define LLORCH_WORKER_MODEL_INTERLEAVED_MATMUL_H_

#include <cstdint>

#include "worker/gguf/ggml_types.h"
#include "worker/model/quant_matmul.h"

namespace llorch {

// True when a [rows, in] matrix of `type` can be held interleaved: Q4_0, Q4_1
// or Q8_0, rows % 8 == 0, in % 32 == 0 (llama.cpp's condition for repacking).
bool InterleavedMatmulSupports(GgmlType type, int64_t rows, int64_t in);

// Writes `rows` ggml rows of `in` elements into the interleaved layout
// (`out` has the same size, GgmlRowBytes(type, in) * rows bytes).
void InterleaveRows(GgmlType type, const uint8_t* ggml_rows, int64_t rows, int64_t in,
                    uint8_t* out);

// Copies row `row` of an interleaved matrix back out as one ggml row.
void DeinterleaveRow(GgmlType type, const uint8_t* interleaved, int64_t in, int64_t row,
                     uint8_t* ggml_row);

// out[t * rows + r] = dot(weight row r, Q8_0(x row t)) for t < n, r < rows.
// Requires InterleavedMatmulSupports(type, rows, in). `parallel_for` splits
// the row groups [0, rows / 8) across threads.
void InterleavedMatmul(GgmlType type, const uint8_t* interleaved, int64_t rows, int64_t in,
                       const float* x, int64_t n, float* out,
                       const ParallelFor& parallel_for = SerialFor);

namespace interleaved_matmul_internal {
// True when InterleavedMatmul takes its AVX-512 VNNI kernels (pairs of groups
// in 512-bit registers, Q4_0/Q8_0): built with AVX2, the CPU has AVX-512
// VNNI, and AllowVnni (default true).
bool UsesVnni();
// Lets tests run the AVX2 kernels on an AVX-512 CPU (the same bits).
void AllowVnni(bool allow);
// InterleavedMatmul computed with the portable scalar code.
void InterleavedMatmulPortable(GgmlType type, const uint8_t* interleaved, int64_t rows,
                               int64_t in, const float* x, int64_t n, float* out);
}  // namespace interleaved_matmul_internal

}  // namespace llorch

#endif  // LLORCH_WORKER_MODEL_INTERLEAVED_MATMUL_H_
