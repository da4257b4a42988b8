// BF16 weight products by AVX512-BF16's vdpbf16ps, in the orders of
// Bf16Matmul and Bf16Gemm (float_matmul.h, float_gemm.h). One instruction multiplies 16 pairs of BF16 values and adds
// them to 16 F32 lanes, each lane as two fused multiply-adds in a row (the
// odd element of the pair first) with denormal inputs read as zero and
// denormal results flushed to zero; the AVX2 and portable code compute the
// same steps, so every CPU gives the same bits. This file is compiled with
// AVX-512 enabled: call it only where Bf16Avx512Supported().
#ifndef LLORCH_WORKER_MODEL_BF16_AVX512_H_
#define LLORCH_WORKER_MODEL_BF16_AVX512_H_

#include <cstdint>

namespace llorch {
namespace bf16_avx512 {

// Built with the kernels and running on a CPU with AVX512F/BW/VL and
// AVX512-BF16.
bool Bf16Avx512Supported();

// Bf16Matmul's order: out[t * out_stride + r] for weight rows
// r in [begin, end) and t < n. `w`: rows of `in` BF16 values; `xb`: n rows of
// `in` BF16 activations.
void DotRows(const uint16_t* w, int64_t in, const uint16_t* xb, int64_t n, float* out,
             int64_t out_stride, int64_t begin, int64_t end);

// Bf16Gemm's order for in % 32 == 0 (float_gemm.h): out[t * out_stride + r]
// for weight rows r in [begin, end) and t < n. `xb`: n rows of `in` BF16
// activations.
void GemmRows(const uint16_t* w, int64_t in, const uint16_t* xb, int64_t n, float* out,
              int64_t out_stride, int64_t begin, int64_t end);

}  // namespace bf16_avx512
}  // namespace llorch

#endif  // LLORCH_WORKER_MODEL_BF16_AVX512_H_
