// Small AVX2 helpers shared by the matrix kernels (interleaved_matmul.cc,
// kquant_matmul.cc, float_matmul.cc, bf16_matmul.cc). Include only where
// __AVX2__ is defined.
#ifndef LLORCH_WORKER_MODEL_AVX2_HELPERS_H_
#define LLORCH_WORKER_MODEL_AVX2_HELPERS_H_

#include <immintrin.h>

#include <cstdint>
#include <cstring>

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

}  // namespace avx2
}  // namespace llorch

#endif  // LLORCH_WORKER_MODEL_AVX2_HELPERS_H_
