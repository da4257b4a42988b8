// Matrix products on Q4_0, Q4_1 and Q8_0 weights in the order of llama.cpp's
// AMX buffer (ggml-cpu/amx/mmq.cpp), which ggml's Sapphire Rapids library
// uses on CPUs with AMX-INT8 for every such matrix with rows % 32 == 0.
//
// That order: the activations are rounded to Q8_0 (Q4_1: Q8_1) as ggml does;
// each output starts at 0 and takes, block after block, one fused multiply-add
//   acc = fma(float(exact integer dot of the block), d_w * d_x, acc)
// (Q4_1 then acc = fma(m_w, s_x, acc)). llama.cpp computes the integer dots
// with int8 tiles for batches and with AVX-512 VNNI for one token; both end in
// the same float steps, and so does every kernel here: results do not depend
// on the batch, the threads or the CPU (tiles, VNNI or portable code).
//
// K-quants (Q4_K, Q5_K, Q6_K; activations rounded to Q8_K): per block of 256
// the exact integer S = sum over sub-blocks of scale * (quants . activations)
// (Q6_K: quants - 32), and for Q4_K/Q5_K M = sum of min * activation sums;
// acc = fma(S, d_w * d_x, acc), then acc = fma(M, -(dmin_w * d_x), acc).
//
// Layout ("x16"): rows in groups of 16; per group and block of 32 elements:
// the 16 rows' fp16 scales (32 bytes; Q4_1: then their 16 fp16 mins), then
// chunks of 64 bytes, chunk c holding bytes [4c, 4c + 4) of each row's quants
// row after row (Q8_0: 8 chunks, which is an AMX B tile as it stands; Q4_0/
// Q4_1: 4 chunks of the block's packed nibbles, low nibbles elements 4c..4c+3,
// high nibbles elements 16 + 4c..). The same size as the ggml rows.
// K-quants, per group and block of 256 (amx_kernels.h KLayoutOf): the 16 rows'
// fp16 d (and dmin), their sub-block scales (and mins) as bytes, scale j of
// row r at 16 j + r, then the ggml block's qh and qs (Q6_K: ql) arrays
// interleaved by 4 bytes as above (chunk c: bytes [4c, 4c + 4) of each row).
#ifndef LLORCH_WORKER_MODEL_AMX_MATMUL_H_
#define LLORCH_WORKER_MODEL_AMX_MATMUL_H_

#include <cstddef>
#include <cstdint>

#include "worker/gguf/ggml_types.h"
#include "worker/model/quant_matmul.h"

namespace llorch {

// True when a [rows, in] matrix of `type` takes llama.cpp's AMX path: Q4_0,
// Q4_1 or Q8_0 with in % 32 == 0, Q4_K, Q5_K or Q6_K (in % 256 == 0), and
// rows % 32 == 0.
bool AmxMatmulSupports(GgmlType type, int64_t rows, int64_t in);

// Bytes of a packed [rows, in] matrix: the ggml size, except Q4_K (148 bytes
// per row and block of 256 against 144) and Q5_K (180 against 176), whose
// 6-bit scales and mins are held as bytes.
size_t AmxPackedBytes(GgmlType type, int64_t rows, int64_t in);

// Writes `rows` ggml rows of `in` elements in the x16 layout
// (AmxPackedBytes(type, rows, in) bytes at `out`).
void PackAmxRows(GgmlType type, const uint8_t* ggml_rows, int64_t rows, int64_t in,
                 uint8_t* out);

// Copies row `row` of a packed matrix back out as one ggml row.
void UnpackAmxRow(GgmlType type, const uint8_t* packed, int64_t in, int64_t row,
                  uint8_t* ggml_row);

// out[t * rows + r] = dot(weight row r, Q8_0(x row t)) (Q4_1: Q8_1) for
// t < n, r < rows, in the AMX order above. Requires AmxMatmulSupports(type,
// rows, in). `parallel_for` splits the pairs of groups [0, rows / 32). x must
// not alias out. Not reentrant from inside parallel_for's body on the same
// thread.
void AmxMatmul(GgmlType type, const uint8_t* packed, int64_t rows, int64_t in, const float* x,
               int64_t n, float* out, const ParallelFor& parallel_for = SerialFor);

namespace amx_matmul_internal {
// Which code AmxMatmul runs: int8 tiles for batches (kTiles: CPU with AMX-INT8
// and the kernel's permission to use it), AVX-512 VNNI (kVnni), portable code.
enum class Kernel { kPortable, kVnni, kTiles };
// The best kernel this CPU runs (kTiles where available, else kVnni, else
// kPortable). LLORCH_AMX=0 in the environment caps it at kVnni.
Kernel BestKernel();
// AmxMatmul with at most `kernel`. kTiles takes whole 16-row tiles of the
// activations, and a last partial one only when enough of its rows are live
// (a per-type threshold); VNNI computes the remaining rows (the same bits).
void AmxMatmulWith(Kernel kernel, GgmlType type, const uint8_t* packed, int64_t rows,
                   int64_t in, const float* x, int64_t n, float* out,
                   const ParallelFor& parallel_for = SerialFor);
}  // namespace amx_matmul_internal

}  // namespace llorch

#endif  // LLORCH_WORKER_MODEL_AMX_MATMUL_H_
