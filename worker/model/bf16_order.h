// The steps of the BF16 products' fixed orders (float_matmul.h, float_gemm.h),
// shared by the portable and AVX2 code. AVX512-BF16's vdpbf16ps adds a pair
// of BF16 products to an F32 lane as two fused multiply-adds, the odd
// element's first, reading denormal inputs as zero and flushing denormal
// results to zero (measured: bit-identical to these steps on random pairs,
// denormal ranges included, on an Intel Xeon with AVX512-BF16). The AVX2 code
// computes the same fmas under MXCSR's flush-to-zero and denormals-are-zero
// (Bf16FlushScope); the portable code flushes by hand.
#ifndef LLORCH_WORKER_MODEL_BF16_ORDER_H_
#define LLORCH_WORKER_MODEL_BF16_ORDER_H_

#include <cfloat>
#include <cmath>
#include <cstdint>

#include "common/float_bits.h"

#if defined(__SSE__)
#include <xmmintrin.h>
#endif

namespace llorch {

// An activation as the BF16 products read it: its upper 16 bits (exact for
// the model's activations, already rounded to the BF16 grid).
inline uint16_t Bf16Bits(float f) { return static_cast<uint16_t>(FloatToBits(f) >> 16); }
inline float Bf16Value(uint16_t b) { return BitsToFloat(static_cast<uint32_t>(b) << 16); }
inline float Bf16Truncate(float f) { return BitsToFloat(FloatToBits(f) & 0xFFFF0000u); }

inline float FlushDenormal(float v) { return std::fabs(v) < FLT_MIN ? std::copysign(0.0f, v) : v; }

// acc + w * x as one vdpbf16ps step. (x86 flushes a result that is tiny
// after rounding to 24 bits; this flushes after rounding to the denormal
// grid: they differ only for results within half an ulp below FLT_MIN.)
inline float Bf16Step(float acc, float w, float x) {
  return FlushDenormal(std::fma(FlushDenormal(w), FlushDenormal(x), FlushDenormal(acc)));
}

// 16 lanes summed as (j + j+8), then (+ j+4), (+ j+2), (+ j+1).
inline float Bf16Tree16(const float* lanes) {
  float s8[8], s4[4];
  for (int j = 0; j < 8; ++j) s8[j] = lanes[j] + lanes[j + 8];
  for (int j = 0; j < 4; ++j) s4[j] = s8[j] + s8[j + 4];
  const float s0 = s4[0] + s4[2], s1 = s4[1] + s4[3];
  return s0 + s1;
}

#if defined(__SSE__)
// MXCSR's flush-to-zero and denormals-are-zero on this thread while in scope.
class Bf16FlushScope {
 public:
  Bf16FlushScope() : saved_(_mm_getcsr()) { _mm_setcsr(saved_ | 0x8040u); }
  ~Bf16FlushScope() { _mm_setcsr(saved_); }
  Bf16FlushScope(const Bf16FlushScope&) = delete;
  Bf16FlushScope& operator=(const Bf16FlushScope&) = delete;

 private:
  unsigned saved_;
};
#endif

}  // namespace llorch

#endif  // LLORCH_WORKER_MODEL_BF16_ORDER_H_
