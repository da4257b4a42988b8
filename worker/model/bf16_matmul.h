// Products on BF16 weights against activations on the BF16 grid, as ggml
// multiplies a GGUF's BF16 weights (it rounds the activations to BF16, its
// vec_dot_type): in the orders of llama.cpp's AVX512-BF16 kernels, so that
// a BF16 GGUF gives llama.cpp's logits bit for bit on such CPUs. Where the
// CPU has AVX512-BF16 the products are vdpbf16ps; elsewhere the AVX2 or
// portable code computes the same steps (bf16_order.h), so every CPU gives
// the same bits. The activations x are read on the BF16 grid (their upper 16
// bits; the model has rounded them). Hugging Face checkpoints, whose BF16
// weights transformers multiplies by F32 activations, use FloatMatmul.
#ifndef LLORCH_WORKER_MODEL_BF16_MATMUL_H_
#define LLORCH_WORKER_MODEL_BF16_MATMUL_H_

#include <cstdint>

#include "worker/model/quant_matmul.h"  // ParallelFor, SerialFor

namespace llorch {

// Decode steps: out[t * rows + r] = dot(weight row r, x row t) for t < n,
// r < rows, in the order of ggml's vec_dot_bf16 under AVX512-BF16: two
// accumulators of 16 lanes over 64-element steps, lane j of the first taking
// the pair (2j, 2j + 1) of each step, of the second the pair 32 + 2j, each
// pair by Bf16Step (odd element first, denormals flushed); each accumulator
// summed by Bf16Tree16, the two sums and then the in % 64 tail's float
// products added in double. `parallel_for` splits [0, rows).
void Bf16Matmul(const void* weight, int64_t rows, int64_t in, const float* x, int64_t n,
                float* out, const ParallelFor& parallel_for = SerialFor);

// Prompts: the same outputs. For in % 32 == 0 in the order of llama.cpp's
// llamafile sgemm (tinyBLAS) under AVX512-BF16, which llama.cpp uses for
// batches of 2+ rows: one accumulator of 16 lanes over 32-element steps,
// lane j taking the pair (2j, 2j + 1) of each step by Bf16Step, summed by
// Bf16Tree16. Otherwise Bf16Matmul's order (llama.cpp's fallback too).
void Bf16Gemm(const void* weight, int64_t rows, int64_t in, const float* x, int64_t n, float* out,
              const ParallelFor& parallel_for = SerialFor);

namespace bf16_matmul_internal {
// True where the products use vdpbf16ps: the CPU has AVX512-BF16 and neither
// AllowAvx512(false) nor LLORCH_BF16_AVX512=0 in the environment turned it
// off (then the AVX2 code, or without AVX2 the portable code, runs).
bool UsesAvx512();
void AllowAvx512(bool allowed);
// The portable code: the same steps one lane at a time.
void Bf16MatmulPortable(const void* weight, int64_t rows, int64_t in, const float* x, int64_t n,
                        float* out);
void Bf16GemmPortable(const void* weight, int64_t rows, int64_t in, const float* x, int64_t n,
                      float* out);
}  // namespace bf16_matmul_internal

}  // namespace llorch

#endif  // LLORCH_WORKER_MODEL_BF16_MATMUL_H_
