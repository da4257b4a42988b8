// Small AVX-512 helpers shared by the kernels that put two groups of 8
// weight rows side by side in one 512-bit register (kquant_avx512.cc,
// interleaved_matmul.cc) and by amx_kernels.cc.
//
// Those files are compiled with different instruction sets (file flags or
// target attributes): the helpers carry their own target and are static, so
// that no file exports a weak copy that the linker could hand to code
// running on a CPU without AVX-512 (worker/model/CMakeLists.txt checks the
// AVX-512 objects for weak symbols).
#ifndef LLORCH_WORKER_MODEL_AVX512_HELPERS_H_
#define LLORCH_WORKER_MODEL_AVX512_HELPERS_H_

#if defined(__x86_64__)
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#define LLORCH_AVX512_HELPER \
  static inline __attribute__((always_inline, target("avx512f,avx512bw,avx512vl")))

namespace llorch {
namespace avx512 {

// The first group's bytes in the low half, the second's in the high half:
// 32, 16 or 8 bytes of each.
LLORCH_AVX512_HELPER __m512i LoadPair256(const uint8_t* p0, const uint8_t* p1) {
  return _mm512_inserti64x4(
      _mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p0))),
      _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p1)), 1);
}
LLORCH_AVX512_HELPER __m256i LoadPair128(const uint8_t* p0, const uint8_t* p1) {
  return _mm256_inserti128_si256(
      _mm256_castsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p0))),
      _mm_loadu_si128(reinterpret_cast<const __m128i*>(p1)), 1);
}
LLORCH_AVX512_HELPER __m128i LoadPair64(const uint8_t* p0, const uint8_t* p1) {
  return _mm_unpacklo_epi64(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p0)),
                            _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p1)));
}

// The 4 activation bytes at p in every 32-bit lane.
LLORCH_AVX512_HELPER __m512i Broadcast4(const int8_t* p) {
  int32_t word;
  std::memcpy(&word, p, sizeof(word));
  return _mm512_set1_epi32(word);
}

}  // namespace avx512
}  // namespace llorch

#undef LLORCH_AVX512_HELPER

#endif  // defined(__x86_64__)
#endif  // LLORCH_WORKER_MODEL_AVX512_HELPERS_H_
