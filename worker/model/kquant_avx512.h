// K-quant products (kquant_matmul.h) on AVX-512 VNNI. Interleaved Q4_K: two
// groups of 8 rows side by side in one 512-bit register, so that one
// vpdpbusd with a broadcast activation word sums 4 quant products for each
// of 16 rows; the integer sums are exact and the float steps are those of
// the repacked order (per block or per 64 elements), in the same sequence as
// the AVX2 kernel. Q5_K rows: two rows per register in vec_dot's order. The
// same bits as the AVX2 kernels. Q6_K rows likewise. This file is compiled with AVX-512 enabled:
// call it only where Supported().
#ifndef LLORCH_WORKER_MODEL_KQUANT_AVX512_H_
#define LLORCH_WORKER_MODEL_KQUANT_AVX512_H_

#include <cstddef>
#include <cstdint>

#include "worker/model/kquant_matmul.h"

namespace llorch {
namespace kquant_avx512 {

// Built with the kernel and running on a CPU with AVX-512F, BW, VL and VNNI.
bool Supported();

// Two adjacent groups of an interleaved Q4_K matrix (`group`: the first's
// block 0; the second starts `group_bytes` later) times `cols` (1..4)
// activation rows act[c] (num_blocks Q8_K blocks each): out[c][0..16), the
// 16 rows' results, per 64 elements where per_64[c] (llama.cpp's gemm) and
// per block elsewhere (its gemv).
void Q4KGroupPair(const uint8_t* group, size_t group_bytes, int64_t num_blocks, int cols,
                  const kquant_matmul_internal::Q8KBlock* const act[], const bool per_64[],
                  float* const out[]);

// Two adjacent Q5_K rows in the file's layout (`row0` and the row after it,
// num_blocks blocks each) times `cols` (1..4) activation rows act[c *
// act_stride] in ggml's vec_dot order: out[c * out_stride + 0..1].
void Q5KRowPair(const uint8_t* row0, int64_t num_blocks, int cols,
                const kquant_matmul_internal::Q8KBlock* act, int64_t act_stride, float* out,
                int64_t out_stride);

// Two adjacent Q6_K rows the same way (the AVX2 kernel's steps per row).
void Q6KRowPair(const uint8_t* row0, int64_t num_blocks, int cols,
                const kquant_matmul_internal::Q8KBlock* act, int64_t act_stride, float* out,
                int64_t out_stride);

}  // namespace kquant_avx512
}  // namespace llorch

#endif  // LLORCH_WORKER_MODEL_KQUANT_AVX512_H_
