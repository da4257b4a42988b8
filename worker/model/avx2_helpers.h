// Small AVX2 helpers shared by the integer matrix kernels (interleaved_matmul.cc,
// kquant_matmul.cc). Include only where __AVX2__ is defined.
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

}  // namespace avx2
}  // namespace llorch

#endif  // LLORCH_WORKER_MODEL_AVX2_HELPERS_H_
