// Small AVX2 helpers shared by the matrix kernels (interleaved_matmul.cc,
// kquant_matmul.cc, float_matmul.cc, float_gemm.cc, bf16_matmul.cc). Include
// only where __AVX2__ is defined (and F16C, for Load8AsFloat of F16).
#ifndef LLORCH_WORKER_MODEL_AVX2_HELPERS_H_
#define LLORCH_WORKER_MODEL_AVX2_HELPERS_H_

#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "worker/gguf/ggml_types.h"

namespace llorch {
namespace avx2 {

// The 4 bytes at p in each 32-bit lane.
inline __m256i Broadcast4(const int8_t* p) {
  int32_t v;
  std::memcpy(&v, p, sizeof(v));
  return _mm256_set1_epi32(v);
}

// An empty asm on a running integer sum: without it GCC reassociates a chain
// of vector adds into a tree, computes every product first and spills them.
inline void KeepInRegister(__m256i& v) { asm("" : "+x"(v)); }

// The 8 lanes summed as (i + i+4), then (+ i+2), then (+ i+1).
inline float HorizontalSum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// Elements i..i+7 of an F32, F16 or BF16 row, widened to F32 (exactly).
template <GgmlType kType>
inline __m256 Load8AsFloat(const void* row, int64_t i) {
  if constexpr (kType == GgmlType::kF32) {
    return _mm256_loadu_ps(static_cast<const float*>(row) + i);
  } else {
    const __m128i bits =
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(row) + i));
    if constexpr (kType == GgmlType::kF16) {
      return _mm256_cvtph_ps(bits);
    } else {  // BF16: the upper half of an F32
      return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(bits), 16));
    }
  }
}

// Load8AsFloat of a type known at run time.
inline __m256 Load8AsFloat(GgmlType type, const void* row, int64_t i) {
  switch (type) {
    case GgmlType::kF16: return Load8AsFloat<GgmlType::kF16>(row, i);
    case GgmlType::kBF16: return Load8AsFloat<GgmlType::kBF16>(row, i);
    default: return Load8AsFloat<GgmlType::kF32>(row, i);
  }
}

}  // namespace avx2
}  // namespace llorch

#endif  // LLORCH_WORKER_MODEL_AVX2_HELPERS_H_
