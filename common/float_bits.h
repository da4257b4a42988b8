#ifndef LLORCH_COMMON_FLOAT_BITS_H_
#define LLORCH_COMMON_FLOAT_BITS_H_

// A float's IEEE bits and back (memcpy: no aliasing questions; compiles to a move).

#include <cstdint>
#include <cstring>

namespace llorch {

inline float BitsToFloat(uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

inline uint32_t FloatToBits(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof(bits));
  return bits;
}

// Exact IEEE half -> single, portable (the algorithm of ggml's
// ggml_compute_fp16_to_fp32; its one product and one difference are exact).
inline float HalfToFloat(uint16_t h) {
  const uint32_t w = static_cast<uint32_t>(h) << 16;
  const uint32_t sign = w & 0x80000000u;
  const uint32_t two_w = w + w;
  const float normalized = BitsToFloat((two_w >> 4) + (0xE0u << 23)) * BitsToFloat(0x07800000u);
  const float denormalized = BitsToFloat((two_w >> 17) | (126u << 23)) - 0.5f;
  const uint32_t magnitude =
      two_w < (1u << 27) ? FloatToBits(denormalized) : FloatToBits(normalized);
  return BitsToFloat(sign | magnitude);
}

// IEEE single -> half, rounded to nearest even (overflow to infinity,
// subnormals exact; NaN -> 0x7E00 with its sign): the FP16 library's
// algorithm, as ggml's ggml_compute_fp32_to_fp16 and F16C's vcvtps2ph give.
// The first product scales |f| so that the later addition rounds it at the
// half's precision; both products are exact or overflow as intended.
inline uint16_t FloatToHalf(float f) {
  const float scale_to_inf = BitsToFloat(0x77800000u);   // 2^112
  const float scale_to_zero = BitsToFloat(0x08800000u);  // 2^-110
  const uint32_t w = FloatToBits(f);
  const float magnitude = BitsToFloat(w & 0x7FFFFFFFu);
  float base = (magnitude * scale_to_inf) * scale_to_zero;
  const uint32_t shl1_w = w + w;
  const uint32_t sign = w & 0x80000000u;
  uint32_t bias = shl1_w & 0xFF000000u;
  if (bias < 0x71000000u) bias = 0x71000000u;
  base = BitsToFloat((bias >> 1) + 0x07800000u) + base;
  const uint32_t bits = FloatToBits(base);
  const uint32_t nonsign = ((bits >> 13) & 0x00007C00u) + (bits & 0x00000FFFu);
  return static_cast<uint16_t>((sign >> 16) | (shl1_w > 0xFF000000u ? 0x7E00u : nonsign));
}

// IEEE single -> bfloat16, rounded to nearest even (NaN -> a quiet NaN of
// the same sign), as ggml's ggml_compute_fp32_to_bf16.
inline uint16_t FloatToBfloat16(float f) {
  const uint32_t u = FloatToBits(f);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((u >> 16) | 64);
  return static_cast<uint16_t>((u + (0x7FFFu + ((u >> 16) & 1))) >> 16);
}

}  // namespace llorch

#endif  // LLORCH_COMMON_FLOAT_BITS_H_
