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

}  // namespace llorch

#endif  // LLORCH_COMMON_FLOAT_BITS_H_
